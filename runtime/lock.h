/*
 * lock.h - per-name cross-process locks (no Lua here).
 *
 * A lock is flock(2) on DIR/NAME.lock. flock locks belong to an open file
 * description, so two processes (or two opens in one process) exclude each
 * other, and the kernel drops the lock when its holder exits or crashes:
 * a dead holder never leaves an instance locked. A released lock's file is
 * removed (a killed holder's file stays until the next holder releases it).
 */
#ifndef CP_LOCK_H
#define CP_LOCK_H

#include <stddef.h>
#include <sys/types.h>

enum {
  CP_LOCK_OK = 0,
  CP_LOCK_BUSY = 1,        /* still held by another holder when the time ran out */
  CP_LOCK_INTERRUPTED = 2, /* cp_interrupted was set while waiting */
  CP_LOCK_ERROR = -1       /* bad name, directory or file (message in err) */
};

/* Acquires DIR/NAME.lock, exclusive or shared, waiting up to timeout_ms
 * (0: one try, <0: no bound). Creates DIR (mode 01777, like /run/lock)
 * when missing. On CP_LOCK_OK *fd holds the lock; an exclusive holder
 * writes its pid into the file. On CP_LOCK_BUSY, *holder is the pid last
 * written (0 when unknown). */
int cp_lock_acquire(const char *dir, const char *name, int exclusive, long timeout_ms,
                    int *fd, pid_t *holder, char *err, size_t errlen);

/* Releases and closes; safe on -1. An exclusive holder passes
 * exclusive = 1 to clear its pid from the file first. With path (the
 * DIR/NAME.lock it was acquired as) the file is removed while still held
 * (by the last shared holder, for shared locks), so released locks leave
 * nothing on disk; cp_lock_acquire re-checks that the file it locked is
 * still the one at the path. */
void cp_lock_release(int fd, int exclusive, const char *path);

/* Whether name is acceptable as a lock file name: 1..128 characters of
 * [A-Za-z0-9._-], not starting with '.'. */
int cp_lock_name_ok(const char *name);

#endif
