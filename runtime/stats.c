/*
 * stats.c - stats documents and usage formulas (see stats.h).
 *
 * The scanner walks the whole document once, keeping the path of keys that
 * leads to each value (bounded depth), and hands every scalar to
 * stats_field(), which picks out the figures it knows by path. Unknown keys
 * cost nothing but the walk; nothing is allocated.
 */
#include "stats.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STATS_MAXDEPTH 24

typedef struct stats_key {
  const char *k; /* raw key bytes (NULL for an array element) */
  size_t n;
  long idx;      /* array index */
} stats_key;

typedef struct stats_scan {
  const char *p, *end;
  const char *err;
  stats_key path[STATS_MAXDEPTH];
  cp_stats_sample *out;
  /* the io_service_bytes_recursive entry being read */
  int blk_op;      /* 'r', 'w' or 0 */
  uint64_t blk_val;
  int blk_has_val;
} stats_scan;

enum { V_STRING, V_NUMBER, V_OTHER };

/* ---- matching paths --------------------------------------------------- */

static int key_is(const stats_key *k, const char *s) {
  size_t n = strlen(s);
  return k->k && k->n == n && memcmp(k->k, s, n) == 0;
}

/* path[0..depth-1] equals the NULL-terminated list of keys; "[]" matches
 * an array element and "*" any object key. */
static int path_is(const stats_scan *s, int depth, const char *const *keys) {
  int i = 0;
  for (; keys[i]; i++) {
    if (i >= depth) return 0;
    const stats_key *k = &s->path[i];
    if (strcmp(keys[i], "[]") == 0) {
      if (k->k) return 0;
    } else if (strcmp(keys[i], "*") == 0) {
      if (!k->k) return 0;
    } else if (!key_is(k, keys[i])) {
      return 0;
    }
  }
  return i == depth;
}

#define PATH(...) path_is(s, depth, (const char *const[]){__VA_ARGS__, NULL})

/* ---- values ------------------------------------------------------------- */

/* A JSON number as an unsigned integer: negatives are 0, fractions are
 * truncated, huge values saturate. */
static uint64_t num_u64(const char *p, size_t n) {
  if (n == 0 || p[0] == '-') return 0;
  uint64_t v = 0;
  size_t i = 0;
  for (; i < n && p[i] >= '0' && p[i] <= '9'; i++) {
    unsigned d = (unsigned)(p[i] - '0');
    if (v > (UINT64_MAX - d) / 10) return UINT64_MAX;
    v = v * 10 + d;
  }
  if (i < n && (p[i] == 'e' || p[i] == 'E' || p[i] == '.')) {
    char tmp[64];
    if (n >= sizeof tmp) return v;
    memcpy(tmp, p, n);
    tmp[n] = '\0';
    double d = strtod(tmp, NULL);
    if (d <= 0) return 0;
    if (d >= 18446744073709551615.0) return UINT64_MAX;
    return (uint64_t)d;
  }
  return v;
}

static void copy_str(char *dst, size_t cap, const char *p, size_t n) {
  if (n >= cap) n = cap - 1;
  memcpy(dst, p, n);
  dst[n] = '\0';
}

/* days since 1970-01-01 of a proleptic Gregorian date */
static long days_from_civil(long y, long m, long d) {
  y -= m <= 2;
  long era = (y >= 0 ? y : y - 399) / 400;
  long yoe = y - era * 400;
  long doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  long doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + doe - 719468;
}

static int digits(const char *p, const char *end, int n, long *out) {
  long v = 0;
  for (int i = 0; i < n; i++) {
    if (p + i >= end || p[i] < '0' || p[i] > '9') return -1;
    v = v * 10 + (p[i] - '0');
  }
  *out = v;
  return 0;
}

double cp_stats_time(const char *s, size_t len) {
  const char *end = s + len;
  long y, mo, d, h, mi, se;
  if (len < 20 || digits(s, end, 4, &y) || s[4] != '-' || digits(s + 5, end, 2, &mo) ||
      s[7] != '-' || digits(s + 8, end, 2, &d) || (s[10] != 'T' && s[10] != 't') ||
      digits(s + 11, end, 2, &h) || s[13] != ':' || digits(s + 14, end, 2, &mi) ||
      s[16] != ':' || digits(s + 17, end, 2, &se))
    return 0;
  if (y <= 1) return 0; /* Go's zero time: no sample */
  if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || se > 60) return 0;
  const char *p = s + 19;
  double frac = 0, scale = 0.1;
  if (p < end && *p == '.') {
    for (p++; p < end && *p >= '0' && *p <= '9'; p++, scale /= 10) frac += (*p - '0') * scale;
  }
  long off = 0;
  if (p < end && (*p == '+' || *p == '-')) {
    long oh, om;
    if (digits(p + 1, end, 2, &oh) || p + 3 >= end || p[3] != ':' || digits(p + 4, end, 2, &om))
      return 0;
    off = (oh * 60 + om) * 60 * (*p == '-' ? -1 : 1);
  } else if (p >= end || (*p != 'Z' && *p != 'z')) {
    return 0;
  }
  double t = (double)(days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + se - off);
  return t + frac;
}

/* ---- picking out fields ---------------------------------------------------- */

static void cpu_field(stats_scan *s, int depth, cp_stats_cpu *c, const char *p, size_t n) {
  (void)depth;
  /* path[0] is cpu_stats or precpu_stats */
  const stats_key *k = &s->path[1];
  if (depth == 2 && key_is(k, "system_cpu_usage")) c->system = num_u64(p, n);
  else if (depth == 2 && key_is(k, "online_cpus")) c->online = (unsigned)num_u64(p, n);
  else if (depth == 3 && key_is(k, "cpu_usage") && key_is(&s->path[2], "total_usage"))
    c->total = num_u64(p, n);
  else if (depth == 4 && key_is(k, "cpu_usage") && key_is(&s->path[2], "percpu_usage") &&
           !s->path[3].k && (unsigned)s->path[3].idx + 1 > c->percpu_n)
    c->percpu_n = (unsigned)s->path[3].idx + 1;
}

static void stats_field(stats_scan *s, int depth, int type, const char *p, size_t n) {
  cp_stats_sample *o = s->out;
  if (depth < 1) return;
  const stats_key *top = &s->path[0];
  if (type == V_STRING) {
    if (depth == 1 && key_is(top, "read")) o->read = cp_stats_time(p, n);
    else if (depth == 1 && key_is(top, "preread")) o->preread = cp_stats_time(p, n);
    else if (depth == 1 && key_is(top, "id")) copy_str(o->id, sizeof o->id, p, n);
    else if (depth == 1 && key_is(top, "name")) copy_str(o->name, sizeof o->name, p, n);
    else if (PATH("blkio_stats", "io_service_bytes_recursive", "[]", "op"))
      s->blk_op = (n > 0 && (p[0] == 'r' || p[0] == 'R')) ? 'r'
                  : (n > 0 && (p[0] == 'w' || p[0] == 'W')) ? 'w' : 0;
    return;
  }
  if (type != V_NUMBER) return;
  if (key_is(top, "cpu_stats")) {
    cpu_field(s, depth, &o->cpu, p, n);
  } else if (key_is(top, "precpu_stats")) {
    cpu_field(s, depth, &o->precpu, p, n);
  } else if (key_is(top, "memory_stats")) {
    if (PATH("memory_stats", "usage")) {
      o->mem_usage = num_u64(p, n);
      o->has_memory = 1;
    } else if (PATH("memory_stats", "limit")) {
      o->mem_limit = num_u64(p, n);
    } else if (PATH("memory_stats", "max_usage")) {
      o->mem_max_usage = num_u64(p, n);
    } else if (PATH("memory_stats", "stats", "total_inactive_file")) {
      o->total_inactive_file = num_u64(p, n);
      o->has_total_inactive_file = 1;
    } else if (PATH("memory_stats", "stats", "inactive_file")) {
      o->inactive_file = num_u64(p, n);
      o->has_inactive_file = 1;
    }
  } else if (key_is(top, "networks")) {
    if (PATH("networks", "*", "rx_bytes")) o->rx_bytes += num_u64(p, n);
    else if (PATH("networks", "*", "tx_bytes")) o->tx_bytes += num_u64(p, n);
    else if (PATH("networks", "*", "rx_packets")) o->rx_packets += num_u64(p, n);
    else if (PATH("networks", "*", "tx_packets")) o->tx_packets += num_u64(p, n);
  } else if (key_is(top, "pids_stats")) {
    if (PATH("pids_stats", "current")) o->pids = num_u64(p, n);
    else if (PATH("pids_stats", "limit")) o->pids_limit = num_u64(p, n);
  } else if (PATH("blkio_stats", "io_service_bytes_recursive", "[]", "value")) {
    s->blk_val = num_u64(p, n);
    s->blk_has_val = 1;
  }
}

/* called when an object opens (open=1) or closes at depth */
static void stats_object(stats_scan *s, int depth, int open) {
  if (!PATH("blkio_stats", "io_service_bytes_recursive", "[]")) {
    if (open && PATH("networks", "*")) s->out->networks++;
    return;
  }
  if (open) {
    s->blk_op = 0;
    s->blk_has_val = 0;
    s->blk_val = 0;
  } else if (s->blk_has_val) {
    if (s->blk_op == 'r') s->out->blk_read += s->blk_val;
    else if (s->blk_op == 'w') s->out->blk_write += s->blk_val;
  }
}

/* ---- the scanner ----------------------------------------------------------- */

static void ws(stats_scan *s) {
  while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r'))
    s->p++;
}

/* At an opening quote: sets the raw contents and moves past the closing one. */
static int scan_string(stats_scan *s, const char **str, size_t *len) {
  const char *q = ++s->p;
  while (q < s->end && *q != '"') {
    if ((unsigned char)*q < 0x20) {
      s->err = "control character in a string";
      return -1;
    }
    if (*q == '\\') {
      if (s->end - q < 2) break; /* a lone backslash at the end */
      q += 2;
      continue;
    }
    q++;
  }
  if (q >= s->end) {
    s->err = "unterminated string";
    return -1;
  }
  *str = s->p;
  *len = (size_t)(q - s->p);
  s->p = q + 1;
  return 0;
}

static int scan_value(stats_scan *s, int depth);

static int scan_object(stats_scan *s, int depth) {
  s->p++; /* { */
  stats_object(s, depth, 1);
  ws(s);
  if (s->p < s->end && *s->p == '}') {
    s->p++;
    stats_object(s, depth, 0);
    return 0;
  }
  for (;;) {
    ws(s);
    if (s->p >= s->end || *s->p != '"') {
      s->err = "expected an object key";
      return -1;
    }
    const char *k;
    size_t kn;
    if (scan_string(s, &k, &kn) != 0) return -1;
    ws(s);
    if (s->p >= s->end || *s->p != ':') {
      s->err = "expected ':' after an object key";
      return -1;
    }
    s->p++;
    s->path[depth].k = k;
    s->path[depth].n = kn;
    s->path[depth].idx = 0;
    if (scan_value(s, depth + 1) != 0) return -1;
    ws(s);
    if (s->p < s->end && *s->p == ',') {
      s->p++;
      continue;
    }
    if (s->p < s->end && *s->p == '}') {
      s->p++;
      stats_object(s, depth, 0);
      return 0;
    }
    s->err = "expected ',' or '}' in an object";
    return -1;
  }
}

static int scan_array(stats_scan *s, int depth) {
  s->p++; /* [ */
  ws(s);
  if (s->p < s->end && *s->p == ']') {
    s->p++;
    return 0;
  }
  for (long i = 0;; i++) {
    s->path[depth].k = NULL;
    s->path[depth].n = 0;
    s->path[depth].idx = i;
    if (scan_value(s, depth + 1) != 0) return -1;
    ws(s);
    if (s->p < s->end && *s->p == ',') {
      s->p++;
      continue;
    }
    if (s->p < s->end && *s->p == ']') {
      s->p++;
      return 0;
    }
    s->err = "expected ',' or ']' in an array";
    return -1;
  }
}

static int scan_literal(stats_scan *s, const char *word) {
  size_t n = strlen(word);
  if ((size_t)(s->end - s->p) < n || memcmp(s->p, word, n) != 0) {
    s->err = "invalid literal";
    return -1;
  }
  s->p += n;
  return 0;
}

/* depth: how many path entries lead to this value */
static int scan_value(stats_scan *s, int depth) {
  ws(s);
  if (s->p >= s->end) {
    s->err = "unexpected end of document";
    return -1;
  }
  if (depth >= STATS_MAXDEPTH) {
    s->err = "document nested too deeply";
    return -1;
  }
  const char *str;
  size_t n;
  switch (*s->p) {
  case '{': return scan_object(s, depth);
  case '[': return scan_array(s, depth);
  case '"':
    if (scan_string(s, &str, &n) != 0) return -1;
    stats_field(s, depth, V_STRING, str, n);
    return 0;
  case 't': return scan_literal(s, "true");
  case 'f': return scan_literal(s, "false");
  case 'n': return scan_literal(s, "null");
  default: break;
  }
  const char *start = s->p;
  if (s->p < s->end && *s->p == '-') s->p++;
  const char *digits_at = s->p;
  while (s->p < s->end && ((*s->p >= '0' && *s->p <= '9') || *s->p == '.' || *s->p == 'e' ||
                           *s->p == 'E' || *s->p == '+' || *s->p == '-'))
    s->p++;
  if (s->p == digits_at || *digits_at < '0' || *digits_at > '9') {
    s->err = "unexpected character";
    return -1;
  }
  stats_field(s, depth, V_NUMBER, start, (size_t)(s->p - start));
  return 0;
}

int cp_stats_parse(const char *doc, size_t len, cp_stats_sample *out, char *err,
                   size_t errlen) {
  stats_scan s;
  memset(&s, 0, sizeof s);
  memset(out, 0, sizeof *out);
  s.p = doc;
  s.end = doc + len;
  s.out = out;
  ws(&s);
  if (s.p >= s.end || *s.p != '{') {
    s.err = "a stats document must be a JSON object";
  } else if (scan_value(&s, 0) == 0) {
    ws(&s);
    if (s.p == s.end) return 0;
    s.err = "trailing bytes after the document";
  }
  if (s.p >= s.end && len > 0) s.err = "unexpected end of document";
  if (err && errlen)
    snprintf(err, errlen, "invalid stats document at byte %ld: %s", (long)(s.p - doc), s.err);
  return -1;
}

/* ---- formulas ---------------------------------------------------------------- */

uint64_t cp_stats_memory_used(const cp_stats_sample *s) {
  /* as the docker CLI: cgroup v1 first, then v2 */
  if (s->has_total_inactive_file && s->total_inactive_file < s->mem_usage)
    return s->mem_usage - s->total_inactive_file;
  if (s->has_inactive_file && s->inactive_file < s->mem_usage)
    return s->mem_usage - s->inactive_file;
  return s->mem_usage;
}

/* the earlier CPU reading is usable against cur */
static int cpu_before(const cp_stats_cpu *pre, const cp_stats_cpu *cur) {
  return pre->system > 0 && pre->system < cur->system && pre->total <= cur->total;
}

static double rate(uint64_t now, uint64_t before, double dt) {
  return now >= before ? (double)(now - before) / dt : 0.0; /* counters reset: 0 */
}

void cp_stats_compute(const cp_stats_sample *cur, const cp_stats_sample *prev,
                      cp_stats_usage *u) {
  memset(u, 0, sizeof *u);
  u->read = cur->read;
  u->running = cur->read > 0 && cur->has_memory;
  if (!u->running) return; /* a stopped container: a gap of zeros */
  if (prev && !(prev->read > 0 && prev->read < cur->read)) prev = NULL;

  const cp_stats_cpu *pre = NULL;
  double pre_at = 0;
  if (cpu_before(&cur->precpu, &cur->cpu)) {
    pre = &cur->precpu;
    pre_at = cur->preread;
    u->cpu_source = CP_CPU_DAEMON;
  } else if (prev && cpu_before(&prev->cpu, &cur->cpu)) {
    pre = &prev->cpu;
    pre_at = prev->read;
    u->cpu_source = CP_CPU_PREVIOUS;
  }
  if (pre) {
    double online = cur->cpu.online ? cur->cpu.online : cur->cpu.percpu_n;
    double cpu_delta = (double)(cur->cpu.total - pre->total);
    double sys_delta = (double)(cur->cpu.system - pre->system);
    if (sys_delta > 0 && cpu_delta > 0) u->cpu_percent = cpu_delta / sys_delta * online * 100.0;
    if (pre_at > 0 && pre_at < cur->read) u->cpu_interval = cur->read - pre_at;
  }

  u->mem_used = cp_stats_memory_used(cur);
  u->mem_limit = cur->mem_limit;
  if (u->mem_limit > 0) u->mem_percent = (double)u->mem_used / (double)u->mem_limit * 100.0;
  u->rx_bytes = cur->rx_bytes;
  u->tx_bytes = cur->tx_bytes;
  u->blk_read = cur->blk_read;
  u->blk_write = cur->blk_write;
  u->pids = cur->pids;

  if (prev) {
    double dt = cur->read - prev->read;
    u->has_rates = 1;
    u->rx_rate = rate(cur->rx_bytes, prev->rx_bytes, dt);
    u->tx_rate = rate(cur->tx_bytes, prev->tx_bytes, dt);
    u->blk_read_rate = rate(cur->blk_read, prev->blk_read, dt);
    u->blk_write_rate = rate(cur->blk_write, prev->blk_write, dt);
  }
}
