/*
 * sampler.c - concurrent and persistent stats sampling (see sampler.h).
 */
#include "sampler.h"
#include "clock.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

cp_sampler *cp_sampler_new(unsigned ring_cap) {
  cp_sampler *s = calloc(1, sizeof *s);
  if (!s) return NULL;
  if (ring_cap < 2) ring_cap = 2; /* rates need the sample before */
  if (ring_cap > CP_SAMPLER_RING_MAX) ring_cap = CP_SAMPLER_RING_MAX;
  s->ring_cap = ring_cap;
  return s;
}

static void smp_entry_free(cp_sampler_entry *e) {
  if (!e) return;
  cp_xfer_free(e->x);
  cp_buf_free(&e->line);
  free(e->ring);
  free(e->id);
  free(e);
}

void cp_sampler_free(cp_sampler *s) {
  if (!s) return;
  for (size_t i = 0; i < s->n; i++) smp_entry_free(s->e[i]);
  free(s->e);
  free(s);
}

cp_sampler_entry *cp_sampler_find(cp_sampler *s, const char *id) {
  for (size_t i = 0; i < s->n; i++)
    if (strcmp(s->e[i]->id, id) == 0) return s->e[i];
  return NULL;
}

cp_sampler_entry *cp_sampler_add(cp_sampler *s, const char *id) {
  cp_sampler_entry *e = cp_sampler_find(s, id);
  if (e) return e;
  if (s->n == s->cap) {
    size_t cap = s->cap ? s->cap * 2 : 8;
    cp_sampler_entry **ne = realloc(s->e, cap * sizeof *ne);
    if (!ne) return NULL;
    s->e = ne;
    s->cap = cap;
  }
  e = calloc(1, sizeof *e);
  if (!e) return NULL;
  size_t n = strlen(id) + 1;
  e->id = malloc(n);
  e->ring = calloc(s->ring_cap, sizeof *e->ring);
  if (!e->id || !e->ring) {
    smp_entry_free(e);
    return NULL;
  }
  memcpy(e->id, id, n);
  e->ring_cap = s->ring_cap;
  s->e[s->n++] = e;
  return e;
}

void cp_sampler_remove(cp_sampler *s, const char *id) {
  for (size_t i = 0; i < s->n; i++) {
    if (strcmp(s->e[i]->id, id) == 0) {
      smp_entry_free(s->e[i]);
      s->e[i] = s->e[--s->n];
      return;
    }
  }
}

const cp_stats_sample *cp_sampler_get(const cp_sampler_entry *e, unsigned i) {
  if (i >= e->count) return NULL;
  return &e->ring[(e->head + e->count - 1 - i) % e->ring_cap];
}

static void smp_push(cp_sampler *s, cp_sampler_entry *e, const cp_stats_sample *smp) {
  /* ring: samples live at (head .. head+count) mod ring_cap, oldest first */
  (void)s;
  if (e->count < e->ring_cap) {
    e->ring[(e->head + e->count) % e->ring_cap] = *smp;
    e->count++;
  } else {
    e->ring[e->head] = *smp;
    e->head = (e->head + 1) % e->ring_cap;
  }
  e->received++;
  e->updated = cp_monotonic();
}

int cp_sampler_usage(const cp_sampler_entry *e, cp_stats_usage *u) {
  const cp_stats_sample *cur = cp_sampler_get(e, 0);
  if (!cur) return -1;
  cp_stats_compute(cur, cp_sampler_get(e, 1), u);
  return 0;
}

/* ---- documents ------------------------------------------------------------- */

static void smp_fail(cp_sampler_entry *e, const char *code, const char *msg, long status) {
  e->failed = 1;
  e->status = status;
  snprintf(e->code, sizeof e->code, "%s", code);
  size_t n = strlen(msg);
  if (n >= sizeof e->err) n = sizeof e->err - 1;
  memcpy(e->err, msg, n);
  e->err[n] = '\0';
}

/* Parses every complete (newline-terminated, or final) document in the
 * line buffer. Returns the number of samples added. */
static int smp_parse_lines(cp_sampler *s, cp_sampler_entry *e, int final) {
  int added = 0;
  size_t start = 0;
  cp_buf *b = &e->line;
  while (start < b->len) {
    char *nl = memchr(b->data + start, '\n', b->len - start);
    size_t end = nl ? (size_t)(nl - b->data) : b->len;
    if (!nl && !final) break;
    /* skip blank lines */
    size_t a = start;
    while (a < end && (b->data[a] == ' ' || b->data[a] == '\r' || b->data[a] == '\t')) a++;
    if (a < end) {
      cp_stats_sample smp;
      char err[160];
      if (cp_stats_parse(b->data + a, end - a, &smp, err, sizeof err) == 0) {
        smp_push(s, e, &smp);
        e->failed = 0;
        added++;
      } else {
        smp_fail(e, "protocol", err, 0);
      }
    }
    start = nl ? end + 1 : end;
  }
  if (start > 0) {
    memmove(b->data, b->data + start, b->len - start);
    b->len -= start;
    if (b->data) b->data[b->len] = '\0';
  }
  return added;
}

/* Moves buffered body bytes into the line buffer, parses, and retires a
 * finished transfer. Returns samples added. */
static int smp_consume(cp_sampler *s, cp_sampler_entry *e) {
  cp_xfer *x = e->x;
  if (!x) return 0;
  int added = 0;
  if (x->status >= 400 || x->result != CURLE_OK) {
    if (!x->done) return 0; /* read the whole (short) error body first */
  } else if (x->body.len > 0) {
    cp_buf chunk;
    cp_xfer_take(x, &chunk);
    int r = cp_buf_append(&e->line, chunk.data, chunk.len);
    cp_buf_free(&chunk);
    if (r != 0) {
      smp_fail(e, "out_of_memory", "out of memory buffering a stats document", 0);
      e->line.len = 0;
    } else {
      added += smp_parse_lines(s, e, 0);
    }
  }
  if (!x->done) {
    if (!x->client) { /* its client was closed under it */
      smp_fail(e, "closed", "Docker client closed", 0);
      cp_xfer_free(x);
      e->x = NULL;
    }
    return added;
  }
  if (x->result != CURLE_OK) {
    char msg[512];
    cp_xfer_error_message(x, msg, sizeof msg);
    smp_fail(e, cp_xfer_error_code(x), msg, 0);
  } else if (x->status >= 400) {
    char text[200], msg[256];
    cp_error_text(x->body.data, x->body.len, text, sizeof text);
    snprintf(msg, sizeof msg, "Docker daemon: %s", text[0] ? text : "error");
    smp_fail(e, cp_status_code(x->status), msg, x->status);
  } else {
    added += smp_parse_lines(s, e, 1);
  }
  e->line.len = 0;
  cp_xfer_free(x);
  e->x = NULL;
  return added;
}

/* ---- transfers -------------------------------------------------------------- */

static int smp_start(cp_client *c, cp_sampler_entry *e, int mode) {
  static const char hex[] = "0123456789ABCDEF";
  char path[512];
  size_t o = 0;
  o += (size_t)snprintf(path, sizeof path, "/v%s/containers/",
                        c->api_version[0] ? c->api_version : CP_API_MIN);
  for (const char *p = e->id; *p && o + 4 < sizeof path - 48; p++) {
    unsigned char ch = (unsigned char)*p;
    if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
        ch == '-' || ch == '_' || ch == '.') {
      path[o++] = (char)ch;
    } else {
      path[o++] = '%';
      path[o++] = hex[ch >> 4];
      path[o++] = hex[ch & 15];
    }
  }
  path[o] = '\0';
  const char *q = mode == CP_FETCH_STREAM    ? "/stats?stream=true"
                  : mode == CP_FETCH_ONESHOT ? "/stats?stream=false&one-shot=true"
                                             : "/stats?stream=false";
  snprintf(path + o, sizeof path - o, "%s", q);
  cp_xfer_free(e->x);
  e->line.len = 0;
  /* a stream sends a document a second: 30 s of silence means it is stuck */
  e->x = cp_xfer_new(c, "GET", path, NULL, 0, NULL, mode == CP_FETCH_STREAM,
                     mode == CP_FETCH_STREAM ? 0 : c->timeout_ms,
                     mode == CP_FETCH_STREAM ? 30 : 0);
  e->mode = mode;
  if (!e->x) return -1;
  e->failed = 0;
  return 0;
}

/* Whether e has a one-document transfer in flight. */
static int fetching(const cp_sampler_entry *e) {
  return e->x && e->mode != CP_FETCH_STREAM && !e->x->done;
}

size_t cp_sampler_fetch_start(cp_sampler *s, cp_client *c, const char *const *ids, size_t n,
                              int mode) {
  size_t k = 0;
  for (size_t i = 0; i < n; i++) {
    cp_sampler_entry *e = cp_sampler_add(s, ids[i]);
    if (!e) continue; /* out of memory: no entry, reported as such */
    if (e->x && e->mode == CP_FETCH_STREAM && e->x->client == c && !e->x->done) continue;
    if (fetching(e)) continue; /* listed twice, or another fetch's: shared */
    if (e->x) smp_consume(s, e); /* a finished one nobody took yet */
    if (smp_start(c, e, mode) != 0) {
      smp_fail(e, "out_of_memory", "cannot create a transfer", 0);
      continue;
    }
    k++;
  }
  return k;
}

int cp_sampler_fetch_settle(cp_sampler *s, const char *const *ids, size_t n) {
  int all = 1;
  for (size_t i = 0; i < n; i++) {
    cp_sampler_entry *e = cp_sampler_find(s, ids[i]);
    if (!e || !e->x || e->mode == CP_FETCH_STREAM) continue;
    if (e->x->done) smp_consume(s, e);
    else all = 0;
  }
  return all;
}

void cp_sampler_fetch_abandon(cp_sampler *s, const char *const *ids, size_t n, int r) {
  for (size_t i = 0; i < n; i++) {
    cp_sampler_entry *e = cp_sampler_find(s, ids[i]);
    if (!e || !fetching(e)) continue;
    smp_fail(e, r < 0 ? "interrupted" : "timeout",
             r < 0 ? "interrupted" : "timed out waiting for a stats document", 0);
    cp_xfer_free(e->x);
    e->x = NULL;
  }
}

int cp_sampler_fetch(cp_sampler *s, cp_client *c, const char *const *ids, size_t n,
                     int mode, long timeout_ms) {
  cp_sampler_fetch_start(s, c, ids, n, mode);
  cp_xfer **xs = calloc(n ? n : 1, sizeof *xs);
  if (!xs) {
    cp_sampler_fetch_abandon(s, ids, n, -1);
    return -1;
  }
  size_t k = 0;
  for (size_t i = 0; i < n; i++) {
    cp_sampler_entry *e = cp_sampler_find(s, ids[i]);
    int seen = 0;
    for (size_t j = 0; e && j < k; j++) seen |= xs[j] == e->x;
    if (e && fetching(e) && !seen) xs[k++] = e->x;
  }
  int r = k ? cp_client_drive(c, xs, k, cp_ready_done, 0, timeout_ms) : 0;
  free(xs);
  if (!cp_sampler_fetch_settle(s, ids, n)) cp_sampler_fetch_abandon(s, ids, n, r < 0 ? -1 : 1);
  return r;
}

int cp_sampler_watch(cp_sampler *s, cp_client *c, const char *const *ids, size_t n) {
  int opened = 0;
  for (size_t i = 0; i < s->n; i++) s->e[i]->mark = 0;
  for (size_t i = 0; i < n; i++) {
    cp_sampler_entry *e = cp_sampler_add(s, ids[i]);
    if (!e) return -1;
    e->mark = 1;
    int live = e->x && e->mode == CP_FETCH_STREAM && e->x->client == c;
    if (live) continue;
    if (smp_start(c, e, CP_FETCH_STREAM) != 0) return -1;
    opened++;
  }
  for (size_t i = 0; i < s->n;) {
    if (!s->e[i]->mark) {
      smp_entry_free(s->e[i]);
      s->e[i] = s->e[--s->n];
    } else {
      s->e[i++]->mark = 0;
    }
  }
  return opened;
}

int cp_sampler_pump(cp_sampler *s, cp_client *c, long wait_ms) {
  int r = 0;
  if (wait_ms > 0) {
    cp_xfer **xs = calloc(s->n ? s->n : 1, sizeof *xs);
    if (!xs) return -1;
    size_t k = 0;
    for (size_t i = 0; i < s->n; i++)
      if (s->e[i]->x && s->e[i]->x->client == c) xs[k++] = s->e[i]->x;
    if (k) r = cp_client_drive(c, xs, k, cp_ready_data, 1, wait_ms);
    free(xs);
  } else {
    r = cp_client_step(c, 0);
  }
  int added = 0;
  for (size_t i = 0; i < s->n; i++) added += smp_consume(s, s->e[i]);
  return r < 0 ? -1 : added;
}

size_t cp_sampler_live(const cp_sampler *s) {
  size_t k = 0;
  for (size_t i = 0; i < s->n; i++)
    if (s->e[i]->x) k++;
  return k;
}
