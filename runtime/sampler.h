/*
 * sampler.h - fetching stats documents for many containers at once (no Lua).
 *
 * A sampler keeps, per container, a small ring of its latest samples. Two
 * ways to fill it, both as transfers on the client's one curl multi:
 *
 *   cp_sampler_fetch   one document per container, all requested at once
 *                      and waited for together: stream=false (the daemon
 *                      waits for a second reading and supplies precpu_stats)
 *                      or one-shot (answers at once; CPU % then comes from
 *                      the ring's previous sample)
 *   cp_sampler_watch   persistent: one stream=true connection per container,
 *                      kept open; cp_sampler_pump moves whatever documents
 *                      have arrived into the rings, so a warm sampler answers
 *                      without waiting for the daemon
 *
 * The client is passed to every call that does I/O and never stored, so a
 * client closed first only ends the sampler's transfers (cp_client_free
 * detaches them).
 */
#ifndef CP_SAMPLER_H
#define CP_SAMPLER_H

#include "http.h"
#include "stats.h"

#define CP_SAMPLER_RING_DEFAULT 8
#define CP_SAMPLER_RING_MAX 256

enum { CP_FETCH_SAMPLE = 0, CP_FETCH_ONESHOT = 1, CP_FETCH_STREAM = 2 };

typedef struct cp_sampler_entry {
  char *id;               /* container id or name, as given */
  cp_xfer *x;             /* transfer in progress, or NULL */
  int mode;               /* CP_FETCH_* of x */
  cp_buf line;            /* bytes of a document not yet complete */
  cp_stats_sample *ring;  /* ring_cap samples, newest at head */
  unsigned ring_cap, head, count;
  unsigned long received; /* documents parsed in total */
  double updated;         /* monotonic seconds of the newest sample */
  int failed;             /* last transfer failed: err/code/status say why */
  long status;
  char code[24];
  char err[256];
  int mark;
} cp_sampler_entry;

typedef struct cp_sampler {
  cp_sampler_entry **e;
  size_t n, cap;
  unsigned ring_cap;
} cp_sampler;

cp_sampler *cp_sampler_new(unsigned ring_cap);
void cp_sampler_free(cp_sampler *s);

cp_sampler_entry *cp_sampler_find(cp_sampler *s, const char *id);
/* Finds or adds; NULL when out of memory. */
cp_sampler_entry *cp_sampler_add(cp_sampler *s, const char *id);
void cp_sampler_remove(cp_sampler *s, const char *id);

/* The i-th newest sample (0 = latest), or NULL. */
const cp_stats_sample *cp_sampler_get(const cp_sampler_entry *e, unsigned i);

/* Usage from the latest sample and the one before it. Returns 0, or -1
 * when the entry holds no sample yet. */
int cp_sampler_usage(const cp_sampler_entry *e, cp_stats_usage *u);

/* Fetches one document for each of ids[0..n) concurrently (entries that
 * have a live stream are left to it) and waits for all, bounded by
 * timeout_ms (<0: no bound). Returns 0, -1 on interruption or a multi
 * failure, 1 on timeout; per-entry failures are recorded in the entries. */
int cp_sampler_fetch(cp_sampler *s, cp_client *c, const char *const *ids, size_t n,
                     int mode, long timeout_ms);

/* cp_sampler_fetch in steps, for a caller that drives the client's
 * transfers itself (a scheduler's task), over the same ids each time, so
 * that fetches running at once never touch each other's containers but
 * share a transfer for the same one: _start makes the transfers (ids with
 * one in flight already share it) and returns how many it made; _settle
 * takes the documents of the finished ones and returns 1 when none of ids
 * has one in flight; _abandon (r: 1 timed out, -1 interrupted) fails the
 * ones still in flight. */
size_t cp_sampler_fetch_start(cp_sampler *s, cp_client *c, const char *const *ids, size_t n,
                              int mode);
int cp_sampler_fetch_settle(cp_sampler *s, const char *const *ids, size_t n);
void cp_sampler_fetch_abandon(cp_sampler *s, const char *const *ids, size_t n, int r);

/* Keeps a stats stream open for each of ids[0..n) (reopening ended ones)
 * and drops the entries of containers not listed. Returns the number of
 * streams opened, or -1 when out of memory. */
int cp_sampler_watch(cp_sampler *s, cp_client *c, const char *const *ids, size_t n);

/* Drives the client's transfers for up to wait_ms (0: no waiting; returns
 * as soon as any stream has data) and moves complete documents into the
 * rings. Returns the number of new samples, or -1 on interruption. */
int cp_sampler_pump(cp_sampler *s, cp_client *c, long wait_ms);

/* Number of entries with a live transfer. */
size_t cp_sampler_live(const cp_sampler *s);

#endif
