/*
 * demux_fuzz.c - libFuzzer target for the log demultiplexer (runtime/demux.c).
 *
 * The first two bytes choose the options (mode, timestamps, keep_cr, a tiny
 * line cap or piece size); the rest is the stream. Checks, besides what
 * ASan/UBSan catch:
 *   - feeding the stream whole and in pieces (sizes drawn from the input)
 *     gives the same events and the same result;
 *   - every event is well-formed: a known stream, a line no longer than the
 *     cap (a partial piece exactly the cap), a timestamp that parses;
 *   - the JSON rendering of every event is valid UTF-8 with no raw control
 *     characters.
 *   make fuzz [FUZZ_TIME=seconds]
 */
#include "../../runtime/demux.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct rec {
  cp_demux_out log;  /* serialized events */
  cp_demux_out json; /* JSON rendering */
  const cp_demux_opts *o;
  const cp_demux *d; /* the run in progress */
} rec;

static void check(int ok, const char *what) {
  if (!ok) {
    fprintf(stderr, "demux_fuzz: invariant broken: %s\n", what);
    abort();
  }
}

static int valid_utf8(const unsigned char *s, size_t n) {
  size_t i = 0;
  while (i < n) {
    unsigned c = s[i];
    size_t k;
    unsigned long v, min;
    if (c < 0x80) {
      if (c < 0x20) return 0; /* a raw control character in JSON text */
      i++;
      continue;
    }
    if (c >= 0xC2 && c < 0xE0) k = 1, v = c & 0x1F, min = 0x80;
    else if (c >= 0xE0 && c < 0xF0) k = 2, v = c & 0x0F, min = 0x800;
    else if (c >= 0xF0 && c < 0xF5) k = 3, v = c & 0x07, min = 0x10000;
    else return 0;
    if (i + k >= n) return 0;
    for (size_t j = 1; j <= k; j++) {
      if ((s[i + j] & 0xC0) != 0x80) return 0;
      v = v << 6 | (s[i + j] & 0x3F);
    }
    if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) return 0;
    i += k + 1;
  }
  return 1;
}

static int on_event(void *ud, const cp_demux_event *ev) {
  rec *r = ud;
  size_t cap = r->o->max_line ? r->o->max_line : CP_DEMUX_MAX_LINE;
  check(ev->stream >= 0 && ev->stream < CP_DEMUX_STREAMS, "stream in range");
  check(r->d->mode != CP_DEMUX_RAW || ev->stream == CP_STREAM_STDOUT, "raw streams are stdout");
  check(ev->len <= cap, "line within the cap");
  check(!ev->partial || ev->len == cap, "a partial piece is exactly the cap");
  check(ev->ts_len <= CP_DEMUX_TS_MAX, "timestamp length");
  if (ev->ts_len) {
    char buf[CP_DEMUX_TS_MAX + 2];
    memcpy(buf, ev->ts, ev->ts_len);
    buf[ev->ts_len] = ' ';
    check(cp_demux_ts_prefix(buf, ev->ts_len + 1) == (int)ev->ts_len + 1, "timestamp parses");
  }
  unsigned char head[2 + sizeof(size_t) * 2];
  size_t len = ev->len;
  head[0] = (unsigned char)ev->stream;
  head[1] = (unsigned char)ev->partial;
  memcpy(head + 2, &ev->ts_len, sizeof(size_t));
  memcpy(head + 2 + sizeof(size_t), &len, sizeof(size_t));
  if (cp_demux_out_put(&r->log, (const char *)head, sizeof head) ||
      cp_demux_out_put(&r->log, ev->ts, ev->ts_len) ||
      cp_demux_out_put(&r->log, ev->line, ev->len))
    return CP_DEMUX_ENOMEM;
  size_t before = r->json.len;
  if (cp_demux_json_line(&r->json, ev, "svc", 3)) return CP_DEMUX_ENOMEM;
  /* the rendering ends in "\n"; the rest must be UTF-8 without controls */
  check(r->json.len > before && r->json.data[r->json.len - 1] == '\n', "JSON line ends in newline");
  check(valid_utf8((const unsigned char *)r->json.data + before, r->json.len - before - 1),
        "JSON text is valid UTF-8 without raw controls");
  return 0;
}

static int run(const cp_demux_opts *o, const uint8_t *p, size_t n, const uint8_t *cuts,
               size_t ncuts, rec *r) {
  cp_demux d;
  cp_demux_init(&d, o);
  r->d = &d;
  int rc = 0;
  size_t i = 0, k = 0;
  while (i < n && rc == 0) {
    size_t step = n - i;
    if (ncuts) step = (size_t)cuts[k++ % ncuts] % 17 + 1;
    if (step > n - i) step = n - i;
    rc = cp_demux_feed(&d, (const char *)p + i, step, on_event, r);
    i += step;
  }
  if (rc == 0) rc = cp_demux_finish(&d, on_event, r);
  cp_demux_free(&d);
  cp_demux_free(&d); /* twice is harmless */
  return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 2) return 0;
  cp_demux_opts o;
  memset(&o, 0, sizeof o);
  o.mode = data[0] & 3;
  if (o.mode == 3) o.mode = CP_DEMUX_AUTO;
  o.timestamps = (data[0] >> 2) & 1;
  o.keep_cr = (data[0] >> 3) & 1;
  if (data[0] & 0x10) o.max_line = (size_t)(data[1] % 64) + 1;
  if (data[0] & 0x20) o.partial_size = (size_t)(data[1] % 32) + 1;
  const uint8_t *p = data + 2;
  size_t n = size - 2;

  rec a, b;
  memset(&a, 0, sizeof a);
  memset(&b, 0, sizeof b);
  a.o = b.o = &o;
  int ra = run(&o, p, n, NULL, 0, &a);
  int rb = run(&o, p, n, p, n, &b);
  check(ra == rb, "same result whole and in pieces");
  check(a.log.len == b.log.len && (a.log.len == 0 || memcmp(a.log.data, b.log.data, a.log.len) == 0),
        "same events whole and in pieces");
  cp_demux_out_free(&a.log);
  cp_demux_out_free(&a.json);
  cp_demux_out_free(&b.log);
  cp_demux_out_free(&b.json);
  return 0;
}
