/*
 * lock.c - per-name cross-process locks over flock(2) (see lock.h).
 */
#define _DEFAULT_SOURCE /* flock */
#include "lock.h"
#include "clock.h"
#include "http.h" /* cp_interrupted */

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int cp_lock_name_ok(const char *name) {
  size_t n = strlen(name);
  if (n == 0 || n > 128 || name[0] == '.') return 0;
  for (size_t i = 0; i < n; i++) {
    char c = name[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
          c == '.' || c == '_' || c == '-'))
      return 0;
  }
  return 1;
}

/* mkdir -p; the last component gets mode 01777 (any user may lock). */
static int lock_mkdirs(const char *dir, char *err, size_t errlen) {
  char path[PATH_MAX];
  size_t n = strlen(dir);
  if (n == 0 || n >= sizeof path) {
    snprintf(err, errlen, "lock directory '%s': invalid path", dir);
    return -1;
  }
  memcpy(path, dir, n + 1);
  while (n > 1 && path[n - 1] == '/') path[--n] = '\0';
  for (char *p = path + 1; *p; p++) {
    if (*p != '/') continue;
    *p = '\0';
    if (mkdir(path, 0755) != 0 && errno != EEXIST) {
      snprintf(err, errlen, "lock directory '%s': cannot create %s: %s", dir, path,
               strerror(errno));
      return -1;
    }
    *p = '/';
  }
  if (mkdir(path, 01777) == 0) {
    if (chmod(path, 01777) != 0) { /* the umask cut the mode down: not fatal */
    }
  } else if (errno != EEXIST) {
    snprintf(err, errlen, "lock directory '%s': %s", dir, strerror(errno));
    return -1;
  }
  return 0;
}

static pid_t lock_read_holder(int fd) {
  char buf[32];
  ssize_t k = pread(fd, buf, sizeof buf - 1, 0);
  if (k <= 0) return 0;
  buf[k] = '\0';
  long v = strtol(buf, NULL, 10);
  return v > 0 && v <= INT_MAX ? (pid_t)v : 0;
}

int cp_lock_acquire(const char *dir, const char *name, int exclusive, long timeout_ms,
                    int *fd, pid_t *holder, char *err, size_t errlen) {
  char path[PATH_MAX];
  *fd = -1;
  if (holder) *holder = 0;
  err[0] = '\0';
  if (!cp_lock_name_ok(name)) {
    snprintf(err, errlen, "invalid lock name '%s'", name);
    return CP_LOCK_ERROR;
  }
  int k = snprintf(path, sizeof path, "%s/%s.lock", dir, name);
  if (k < 0 || (size_t)k >= sizeof path) {
    snprintf(err, errlen, "lock path too long");
    return CP_LOCK_ERROR;
  }
  long deadline = timeout_ms >= 0 ? cp_monotonic_ms() + timeout_ms : -1;
  long pause_ms = 2;
  int f, writable;
  for (;;) { /* once per lock file: a released file is unlinked, so re-open then */
    f = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0666);
    if (f < 0 && errno == ENOENT) {
      if (lock_mkdirs(dir, err, errlen) != 0) return CP_LOCK_ERROR;
      f = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0666);
    }
    writable = f >= 0;
    if (f < 0 && errno == EACCES) /* another user's lock file: flock needs no write access */
      f = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (f < 0) {
      snprintf(err, errlen, "lock file %s: %s", path, strerror(errno));
      return CP_LOCK_ERROR;
    }
    for (;;) {
      if (flock(f, (exclusive ? LOCK_EX : LOCK_SH) | LOCK_NB) == 0) break;
      if (errno != EWOULDBLOCK && errno != EINTR) {
        snprintf(err, errlen, "lock file %s: %s", path, strerror(errno));
        close(f);
        return CP_LOCK_ERROR;
      }
      if (cp_interrupted) {
        close(f);
        return CP_LOCK_INTERRUPTED;
      }
      long left = deadline >= 0 ? deadline - cp_monotonic_ms() : pause_ms;
      if (left <= 0) {
        if (holder) *holder = lock_read_holder(f);
        close(f);
        return CP_LOCK_BUSY;
      }
      long nap = pause_ms < left ? pause_ms : left;
      struct timespec ts = {nap / 1000, (nap % 1000) * 1000000L};
      nanosleep(&ts, NULL);
      if (pause_ms < 50) pause_ms *= 2; /* quick for short holds, cheap for long ones */
    }
    /* The previous holder unlinks the file when it lets go (cp_lock_release):
     * a lock on a file that is no longer at the path protects nothing, and
     * a newcomer may already hold the new file. Holding the lock on the file
     * the path names now is what counts. */
    struct stat held, now;
    if (fstat(f, &held) == 0 && stat(path, &now) == 0 && held.st_dev == now.st_dev &&
        held.st_ino == now.st_ino)
      break;
    close(f);
  }
  if (exclusive && writable) {
    char buf[32];
    int len = snprintf(buf, sizeof buf, "%ld\n", (long)getpid());
    if (ftruncate(f, 0) == 0 && pwrite(f, buf, (size_t)len, 0) != len) {
      /* the pid is only for messages */
    }
  }
  *fd = f;
  return CP_LOCK_OK;
}

void cp_lock_release(int fd, int exclusive, const char *path) {
  if (fd < 0) return;
  if (exclusive && ftruncate(fd, 0) != 0) { /* read-only file: nothing was written */
  }
  /* The file goes while it is still locked (exclusively: a shared holder
   * removes it only when it is the last one in), so a waiter that wins it
   * afterwards sees it is gone and opens the path again; nothing is left
   * behind once every holder is done. Unlink may fail (another user's file
   * in a sticky directory): then the file stays, which is harmless. */
  if (path && (exclusive || flock(fd, LOCK_EX | LOCK_NB) == 0)) {
    if (unlink(path) != 0) { /* see above */
    }
  }
  flock(fd, LOCK_UN);
  close(fd);
}
