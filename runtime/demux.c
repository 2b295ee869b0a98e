/*
 * demux.c - Docker log stream demultiplexer: frames and timestamped
 * messages in, line events out. See demux.h for the contract.
 */
#include "demux.h"

#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>

/* ---- timestamps ------------------------------------------------------------ */

static int is_digit(char c) { return c >= '0' && c <= '9'; }

int cp_demux_ts_prefix(const char *p, size_t n) {
  /* "YYYY-MM-DDTHH:MM:SS": D digit, other characters literal */
  static const char shape[] = "DDDD-DD-DDTDD:DD:DD";
  size_t i = 0;
  for (; shape[i]; i++) {
    if (i >= n) return -1;
    if (shape[i] == 'D' ? !is_digit(p[i]) : p[i] != shape[i]) return 0;
  }
  if (i >= n) return -1;
  if (p[i] == '.') {
    size_t digits = 0;
    for (i++; i < n && is_digit(p[i]); i++)
      if (++digits > 9) return 0;
    if (i >= n) return -1;
    if (digits == 0) return 0;
  }
  if (p[i] == 'Z') {
    i++;
  } else if (p[i] == '+' || p[i] == '-') {
    static const char zone[] = "DD:DD";
    i++;
    for (size_t k = 0; zone[k]; k++, i++) {
      if (i >= n) return -1;
      if (zone[k] == 'D' ? !is_digit(p[i]) : p[i] != zone[k]) return 0;
    }
  } else {
    return 0;
  }
  if (i >= n) return -1;
  return p[i] == ' ' ? (int)(i + 1) : 0;
}

/* ---- state ------------------------------------------------------------------- */

int cp_frame_header(const char *p, size_t n, int *stream, size_t *size) {
  if (n < 8) return 0;
  const unsigned char *u = (const unsigned char *)p;
  if (u[0] > 2) return -1; /* bytes 1-3 are padding */
  *stream = u[0];
  *size = ((size_t)u[4] << 24) | ((size_t)u[5] << 16) | ((size_t)u[6] << 8) | (size_t)u[7];
  return 1;
}

void cp_demux_init(cp_demux *d, const cp_demux_opts *o) {
  memset(d, 0, sizeof *d);
  if (o) d->o = *o;
  if (d->o.max_line == 0) d->o.max_line = CP_DEMUX_MAX_LINE;
  if (d->o.partial_size == 0) d->o.partial_size = CP_DEMUX_PARTIAL;
  d->mode = d->o.mode;
  for (int s = 0; s < CP_DEMUX_STREAMS; s++) d->at_start[s] = 1;
}

void cp_demux_free(cp_demux *d) {
  for (int s = 0; s < CP_DEMUX_STREAMS; s++) {
    free(d->lines[s].data);
    d->lines[s].data = NULL;
    d->lines[s].len = d->lines[s].cap = 0;
  }
}

const char *cp_demux_stream_name(int stream) {
  switch (stream) {
  case CP_STREAM_STDIN: return "stdin";
  case CP_STREAM_STDOUT: return "stdout";
  case CP_STREAM_STDERR: return "stderr";
  default: return "system";
  }
}

/* The feed in progress: where events go and the first failure. */
typedef struct feed_ctx {
  cp_demux_emit emit;
  void *ud;
  int rc;
} feed_ctx;

static void deliver(cp_demux *d, feed_ctx *f, int s, const char *ts, size_t ts_len,
                    const char *p, size_t n, int partial) {
  if (f->rc) return;
  if (!partial && d->mode == CP_DEMUX_RAW && !d->o.keep_cr && n > 0 && p[n - 1] == '\r') n--;
  cp_demux_event ev = {s, ts, ts_len, p, n, partial};
  d->events++;
  f->rc = f->emit(f->ud, &ev);
}

static int line_reserve(cp_demux_line *ln, size_t extra) {
  if (ln->len + extra <= ln->cap) return 0;
  size_t cap = ln->cap ? ln->cap : 256;
  while (cap < ln->len + extra) cap *= 2;
  char *p = realloc(ln->data, cap);
  if (!p) return -1;
  ln->data = p;
  ln->cap = cap;
  return 0;
}

/* Appends n content bytes that contain no line end to stream s. A piece of
 * exactly max_line bytes goes out (partial) once the line is known to be
 * longer than that, so a line of exactly max_line bytes is one event. */
static int append(cp_demux *d, feed_ctx *f, int s, const char *p, size_t n) {
  cp_demux_line *ln = &d->lines[s];
  size_t cap = d->o.max_line;
  while (ln->len + n > cap) {
    size_t room = cap - ln->len;
    if (ln->len == 0) {
      deliver(d, f, s, ln->ts, ln->ts_len, p, room, 1);
    } else {
      if (line_reserve(ln, room)) return CP_DEMUX_ENOMEM;
      memcpy(ln->data + ln->len, p, room);
      deliver(d, f, s, ln->ts, ln->ts_len, ln->data, cap, 1);
      ln->len = 0;
    }
    p += room;
    n -= room;
  }
  if (n == 0) return 0;
  if (line_reserve(ln, n)) return CP_DEMUX_ENOMEM;
  memcpy(ln->data + ln->len, p, n);
  ln->len += n;
  return 0;
}

/* End of a line: the buffered bytes plus n more from p. */
static int end_line(cp_demux *d, feed_ctx *f, int s, const char *p, size_t n) {
  cp_demux_line *ln = &d->lines[s];
  if (ln->len + n > d->o.max_line) {
    int r = append(d, f, s, p, n); /* emits the full pieces, keeps the rest */
    if (r) return r;
    p = NULL;
    n = 0;
  }
  if (ln->len == 0) {
    deliver(d, f, s, ln->ts, ln->ts_len, p ? p : "", n, 0);
  } else {
    if (n) {
      if (line_reserve(ln, n)) return CP_DEMUX_ENOMEM;
      memcpy(ln->data + ln->len, p, n);
      ln->len += n;
    }
    deliver(d, f, s, ln->ts, ln->ts_len, ln->data, ln->len, 0);
  }
  ln->len = 0;
  ln->ts_len = 0;
  ln->msg_len = 0;
  return 0;
}

static int raw_ts(const cp_demux *d) { return d->mode == CP_DEMUX_RAW && d->o.timestamps; }

static void start_probe(cp_demux *d, int optional) {
  d->probe_on = 1;
  d->probe_optional = optional;
  d->probe_len = 0;
}

static int content(cp_demux *d, feed_ctx *f, int s, const char *p, size_t n);

/* The probe failed: its bytes are ordinary content. */
static int probe_fail(cp_demux *d, feed_ctx *f, int s) {
  char tmp[CP_DEMUX_TS_MAX + 1];
  size_t k = d->probe_len;
  memcpy(tmp, d->probe, k);
  d->probe_on = 0;
  d->probe_len = 0;
  return content(d, f, s, tmp, k);
}

/* Timestamp text (without the space) of a matched probe. */
static void probe_match(cp_demux *d, int s, const char *ts, size_t len) {
  cp_demux_line *ln = &d->lines[s];
  d->probe_on = 0;
  d->probe_len = 0;
  ln->msg_len = 0;
  if (ln->ts_len == 0) { /* a line reports the time of its first piece */
    memcpy(ln->ts, ts, len);
    ln->ts_len = len;
  }
}

/* Content bytes of stream s (already unframed). */
static int content(cp_demux *d, feed_ctx *f, int s, const char *p, size_t n) {
  cp_demux_line *ln = &d->lines[s];
  while (n > 0) {
    if (d->probe_on) {
      size_t before = d->probe_len;
      size_t k = sizeof d->probe - before;
      if (k > n) k = n;
      memcpy(d->probe + before, p, k);
      int r = cp_demux_ts_prefix(d->probe, before + k);
      if (r < 0 && before + k >= sizeof d->probe) r = 0;
      if (r > 0) {
        size_t used = (size_t)r - before;
        probe_match(d, s, d->probe, (size_t)r - 1);
        p += used;
        n -= used;
      } else if (r == 0) {
        d->probe_len = before; /* the new bytes are taken again below */
        int e = probe_fail(d, f, s);
        if (e) return e;
      } else {
        d->probe_len = before + k;
        p += k;
        n -= k;
      }
      continue;
    }
    if (d->at_start[s]) {
      d->at_start[s] = 0;
      if (d->o.timestamps) {
        start_probe(d, 0);
        continue;
      }
    }
    size_t limit = n;
    int at_partial = 0;
    if (raw_ts(d)) {
      size_t left = d->o.partial_size > ln->msg_len ? d->o.partial_size - ln->msg_len : 0;
      if (left <= limit) {
        limit = left;
        at_partial = 1;
      }
    }
    const char *nl = limit ? memchr(p, '\n', limit) : NULL;
    if (nl) {
      size_t seg = (size_t)(nl - p);
      int e = end_line(d, f, s, p, seg);
      if (e) return e;
      p += seg + 1;
      n -= seg + 1;
      if (d->mode == CP_DEMUX_RAW) d->at_start[s] = 1;
      continue;
    }
    int e = append(d, f, s, p, limit);
    if (e) return e;
    ln->msg_len += limit;
    p += limit;
    n -= limit;
    if (at_partial && d->o.partial_size > 0) {
      ln->msg_len = 0;
      start_probe(d, 1);
    }
  }
  return 0;
}

/* at: offset (from 0) of the bad bytes in the whole stream */
static void fail_proto(cp_demux *d, const char *what, unsigned long long at) {
  d->failed = 1;
  snprintf(d->err, sizeof d->err, "invalid Docker stream: %s at byte %llu", what, at);
}

static int header_ok(const unsigned char *h) {
  return h[0] <= 3 && h[1] == 0 && h[2] == 0 && h[3] == 0;
}

/* The end of a frame: a timestamp cut short is content after all. */
static int end_frame(cp_demux *d, feed_ctx *f) {
  d->at_start[d->cur] = 0;
  if (d->probe_on) return probe_fail(d, f, d->cur);
  return 0;
}

static int start_frame(cp_demux *d, feed_ctx *f) {
  const unsigned char *h = d->hdr;
  if (!header_ok(h)) {
    fail_proto(d, "bad frame header", d->offset - 8);
    return CP_DEMUX_EPROTO;
  }
  d->cur = h[0];
  d->frame_left = (size_t)h[4] << 24 | (size_t)h[5] << 16 | (size_t)h[6] << 8 | (size_t)h[7];
  d->hdr_len = 0;
  d->at_start[d->cur] = 1;
  if (d->frame_left == 0) return end_frame(d, f);
  return 0;
}

static int feed(cp_demux *d, feed_ctx *f, const char *p, size_t n) {
  int e = 0;
  while (n > 0 && !e) {
    if (d->mode == CP_DEMUX_AUTO) {
      /* a frame header starts with a stream byte 0..3 and three zeros */
      while (n > 0 && d->hdr_len < 8) {
        unsigned char c = (unsigned char)*p++;
        size_t i = d->hdr_len++;
        n--;
        d->offset++;
        d->hdr[i] = c;
        if ((i == 0 && c > 3) || (i >= 1 && i <= 3 && c != 0)) {
          d->mode = CP_DEMUX_RAW;
          break;
        }
      }
      if (d->mode == CP_DEMUX_RAW) {
        size_t k = d->hdr_len;
        d->hdr_len = 0;
        e = content(d, f, CP_STREAM_STDOUT, (const char *)d->hdr, k);
        continue;
      }
      if (d->hdr_len < 8) break;
      d->mode = CP_DEMUX_MUX;
      e = start_frame(d, f);
      continue;
    }
    if (d->mode == CP_DEMUX_RAW) {
      e = content(d, f, CP_STREAM_STDOUT, p, n);
      d->offset += n;
      break;
    }
    if (d->frame_left == 0) {
      size_t k = 8 - d->hdr_len;
      if (k > n) k = n;
      memcpy(d->hdr + d->hdr_len, p, k);
      d->hdr_len += k;
      p += k;
      n -= k;
      d->offset += k;
      if (d->hdr_len == 8) e = start_frame(d, f);
      continue;
    }
    size_t k = d->frame_left < n ? d->frame_left : n;
    e = content(d, f, d->cur, p, k);
    d->frame_left -= k;
    d->offset += k;
    p += k;
    n -= k;
    if (!e && d->frame_left == 0) e = end_frame(d, f);
  }
  return e;
}

int cp_demux_feed(cp_demux *d, const char *p, size_t n, cp_demux_emit emit, void *ud) {
  if (d->failed) return CP_DEMUX_EPROTO;
  feed_ctx f = {emit, ud, 0};
  int e = feed(d, &f, p, n);
  return e ? e : f.rc;
}

int cp_demux_finish(cp_demux *d, cp_demux_emit emit, void *ud) {
  if (d->failed) return CP_DEMUX_EPROTO;
  feed_ctx f = {emit, ud, 0};
  int e = 0;
  if (d->mode == CP_DEMUX_AUTO && d->hdr_len > 0) {
    d->mode = CP_DEMUX_RAW; /* too short to be a frame */
    size_t k = d->hdr_len;
    d->hdr_len = 0;
    e = content(d, &f, CP_STREAM_STDOUT, (const char *)d->hdr, k);
  }
  if (!e && d->probe_on) e = probe_fail(d, &f, d->mode == CP_DEMUX_MUX ? d->cur : CP_STREAM_STDOUT);
  for (int s = 0; s < CP_DEMUX_STREAMS && !e; s++) {
    cp_demux_line *ln = &d->lines[s];
    if (ln->len > 0) {
      deliver(d, &f, s, ln->ts, ln->ts_len, ln->data, ln->len, 0);
      ln->len = 0;
      ln->ts_len = 0;
    }
  }
  if (!e && d->mode == CP_DEMUX_MUX && (d->hdr_len > 0 || d->frame_left > 0)) {
    fail_proto(d, d->hdr_len ? "stream ended inside a frame header"
                              : "stream ended inside a frame", d->offset);
    e = CP_DEMUX_EPROTO;
  }
  return e ? e : f.rc;
}

/* ---- rendering ------------------------------------------------------------------ */

int cp_demux_out_put(cp_demux_out *b, const char *p, size_t n) {
  if (b->len + n > b->cap) {
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + n) cap *= 2;
    char *q = realloc(b->data, cap);
    if (!q) return CP_DEMUX_ENOMEM;
    b->data = q;
    b->cap = cap;
  }
  if (n) memcpy(b->data + b->len, p, n);
  b->len += n;
  return 0;
}

void cp_demux_out_free(cp_demux_out *b) {
  free(b->data);
  b->data = NULL;
  b->len = b->cap = 0;
}

/* Length of the valid UTF-8 sequence at s (n bytes left), 0 when invalid.
 * Same acceptance as Lua 5.4's strict utf8.len. */
static size_t utf8_seq(const unsigned char *s, size_t n) {
  unsigned c = s[0];
  size_t count;
  unsigned long res, min;
  if (c < 0x80) return 1;
  if (c < 0xC0) return 0;
  if (c < 0xE0) count = 1, res = c & 0x1F, min = 0x80;
  else if (c < 0xF0) count = 2, res = c & 0x0F, min = 0x800;
  else if (c < 0xF8) count = 3, res = c & 0x07, min = 0x10000;
  else return 0;
  if (count >= n) return 0;
  for (size_t i = 1; i <= count; i++) {
    if ((s[i] & 0xC0) != 0x80) return 0;
    res = (res << 6) | (s[i] & 0x3F);
  }
  if (res < min || res > 0x10FFFF || (res >= 0xD800 && res <= 0xDFFF)) return 0;
  return count + 1;
}

int cp_demux_json_string(cp_demux_out *b, const char *str, size_t n) {
  static const char hex[] = "0123456789abcdef";
  const unsigned char *s = (const unsigned char *)str;
  /* worst case: every byte becomes a 6-byte escape */
  if (b->len + 6 * n + 2 > b->cap) {
    size_t need = b->len + 6 * n + 2;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < need) cap *= 2;
    char *q = realloc(b->data, cap);
    if (!q) return CP_DEMUX_ENOMEM;
    b->data = q;
    b->cap = cap;
  }
  char *o = b->data + b->len;
  *o++ = '"';
  size_t i = 0;
  while (i < n) {
    /* fast path: eight bytes at a time while none needs escaping (no
     * control byte, quote, backslash, DEL or byte >= 0x80); a false alarm
     * only sends a word down the byte-wise path below */
    while (i + 8 <= n) {
      uint64_t w;
      memcpy(&w, s + i, 8);
      const uint64_t ones = 0x0101010101010101u, high = 0x8080808080808080u;
      uint64_t q = w ^ (ones * '"'), bs = w ^ (ones * '\\'), del = w ^ (ones * 0x7F);
      uint64_t special = (w & high) | ((w - ones * 0x20) & ~w & high) |
                         ((q - ones) & ~q & high) | ((bs - ones) & ~bs & high) |
                         ((del - ones) & ~del & high);
      if (special) break;
      memcpy(o, s + i, 8);
      o += 8;
      i += 8;
    }
    if (i >= n) break;
    unsigned char c = s[i];
    if (c >= 0x20 && c < 0x7F && c != '"' && c != '\\') {
      *o++ = (char)c;
      i++;
      continue;
    }
    if (c < 0x80) {
      *o++ = '\\';
      switch (c) {
      case '"': *o++ = '"'; break;
      case '\\': *o++ = '\\'; break;
      case '\b': *o++ = 'b'; break;
      case '\f': *o++ = 'f'; break;
      case '\n': *o++ = 'n'; break;
      case '\r': *o++ = 'r'; break;
      case '\t': *o++ = 't'; break;
      default:
        *o++ = 'u';
        *o++ = '0';
        *o++ = '0';
        *o++ = hex[c >> 4];
        *o++ = hex[c & 15];
      }
      i++;
      continue;
    }
    size_t k = utf8_seq(s + i, n - i);
    if (k == 0) {
      *o++ = (char)0xEF;
      *o++ = (char)0xBF;
      *o++ = (char)0xBD;
      i++;
    } else {
      memcpy(o, s + i, k);
      o += k;
      i += k;
    }
  }
  *o++ = '"';
  b->len = (size_t)(o - b->data);
  return 0;
}

#define PUT_LIT(b, s) cp_demux_out_put((b), (s), sizeof(s) - 1)

int cp_demux_json_line(cp_demux_out *b, const cp_demux_event *ev, const char *service,
                       size_t service_len) {
  int e = PUT_LIT(b, "{\"line\":");
  if (!e) e = cp_demux_json_string(b, ev->line, ev->len);
  if (!e && ev->partial) e = PUT_LIT(b, ",\"partial\":true");
  if (!e && service) {
    e = PUT_LIT(b, ",\"service\":");
    if (!e) e = cp_demux_json_string(b, service, service_len);
  }
  if (!e) e = PUT_LIT(b, ",\"stream\":\"");
  if (!e) {
    const char *name = cp_demux_stream_name(ev->stream);
    e = cp_demux_out_put(b, name, strlen(name));
  }
  if (!e && ev->ts_len) {
    e = PUT_LIT(b, "\",\"ts\":");
    if (!e) e = cp_demux_json_string(b, ev->ts, ev->ts_len);
    if (!e) e = PUT_LIT(b, "}\n");
  } else if (!e) {
    e = PUT_LIT(b, "\"}\n");
  }
  return e;
}
