/*
 * cgroup.c - container usage read straight from the kernel (see cgroup.h).
 *
 * cgroup v1 files: cpuacct.usage (ns), memory.usage_in_bytes,
 *   memory.limit_in_bytes, memory.stat (total_inactive_file), pids.current,
 *   blkio.throttle.io_service_bytes_recursive.
 * cgroup v2 files: cpu.stat (usage_usec), memory.current, memory.max,
 *   memory.stat (inactive_file), pids.current, io.stat (rbytes=, wbytes=).
 * Network: <proc>/<pid>/net/dev of a process in the container (its network
 *   namespace), every interface but lo, as the daemon counts.
 */
#include "cgroup.h"
#include "clock.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

__attribute__((format(printf, 3, 4))) static int failf(cp_cgroup_target *t, const char *code,
                                                      const char *fmt, ...) {
  snprintf(t->code, sizeof t->code, "%s", code);
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(t->err, sizeof t->err, fmt, ap);
  va_end(ap);
  return -1;
}

static int is_dir(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* out = a b c (c may be NULL); -1 when it does not fit. */
static int join(char *out, size_t size, const char *a, const char *b, const char *c) {
  const char *parts[3] = {a, b, c ? c : ""};
  size_t n = 0;
  for (int i = 0; i < 3; i++) {
    size_t l = strlen(parts[i]);
    if (n + l >= size) return -1;
    memcpy(out + n, parts[i], l);
    n += l;
  }
  out[n] = '\0';
  return 0;
}

/* Reads a small file into buf (NUL-terminated). Returns bytes read or -1. */
static long read_small(const char *path, char *buf, size_t size) {
  FILE *f = fopen(path, "r");
  if (!f) return -1;
  size_t n = fread(buf, 1, size - 1, f);
  int bad = ferror(f);
  fclose(f);
  if (bad) return -1;
  buf[n] = '\0';
  return (long)n;
}

static int read_u64(const char *dir, const char *file, uint64_t *out) {
  char path[CP_CG_PATH_MAX + 64], buf[64];
  if (join(path, sizeof path, dir, "/", file) != 0) return -1;
  if (read_small(path, buf, sizeof buf) < 0) return -1;
  if (strncmp(buf, "max", 3) == 0) {
    *out = CP_CG_NOLIMIT;
    return 0;
  }
  char *end;
  errno = 0;
  unsigned long long v = strtoull(buf, &end, 10);
  if (errno || end == buf) return -1;
  *out = (uint64_t)v;
  return 0;
}

/* The value of "key N" lines in a flat keyed file (memory.stat, cpu.stat). */
static int keyed_u64(const char *dir, const char *file, const char *key, uint64_t *out) {
  char path[CP_CG_PATH_MAX + 64], line[256];
  if (join(path, sizeof path, dir, "/", file) != 0) return -1;
  FILE *f = fopen(path, "r");
  if (!f) return -1;
  size_t klen = strlen(key);
  int found = -1;
  while (fgets(line, sizeof line, f)) {
    if (strncmp(line, key, klen) == 0 && line[klen] == ' ') {
      *out = (uint64_t)strtoull(line + klen + 1, NULL, 10);
      found = 0;
      break;
    }
  }
  fclose(f);
  return found;
}

int cp_cgroup_probe(const char *root, const char *proc, cp_cgroup_info *info) {
  char path[CP_CG_PATH_MAX];
  struct stat st;
  memset(info, 0, sizeof *info);
  if (join(path, sizeof path, root, "/cgroup.controllers", NULL) == 0 && stat(path, &st) == 0)
    info->version = 2;
  else if (join(path, sizeof path, root, "/memory", NULL) == 0 && is_dir(path))
    info->version = 1;
  char buf[4096];
  if (join(path, sizeof path, proc, "/meminfo", NULL) == 0 &&
      read_small(path, buf, sizeof buf) > 0) {
    const char *m = strstr(buf, "MemTotal:");
    if (m) info->mem_total = (uint64_t)strtoull(m + 9, NULL, 10) * 1024u;
  }
  return info->version ? 0 : -1;
}

/* Sets t's directories from one cgroup path relative to the hierarchy. */
static int set_dirs(const char *root, int version, const char *rel, cp_cgroup_target *t) {
  if (version == 2) {
    if (join(t->cpu, sizeof t->cpu, root, rel, NULL) != 0) return -1;
    memcpy(t->mem, t->cpu, sizeof t->mem);
    memcpy(t->pids, t->cpu, sizeof t->pids);
    memcpy(t->blkio, t->cpu, sizeof t->blkio);
    return 0;
  }
  char base[CP_CG_PATH_MAX];
  if (join(base, sizeof base, root, "/", NULL) != 0) return -1;
  if (join(t->cpu, sizeof t->cpu, base, "cpuacct", rel) != 0) return -1;
  if (join(t->mem, sizeof t->mem, base, "memory", rel) != 0) return -1;
  if (join(t->pids, sizeof t->pids, base, "pids", rel) != 0) return -1;
  if (join(t->blkio, sizeof t->blkio, base, "blkio", rel) != 0) return -1;
  return 0;
}

/* 1 when the comma-separated controller list has name. */
static int has_controller(const char *list, size_t len, const char *name) {
  size_t nlen = strlen(name);
  const char *p = list, *end = list + len;
  while (p < end) {
    const char *comma = memchr(p, ',', (size_t)(end - p));
    size_t l = comma ? (size_t)(comma - p) : (size_t)(end - p);
    if (l == nlen && memcmp(p, name, nlen) == 0) return 1;
    p += l + 1;
  }
  return 0;
}

static int resolve_pid(const char *root, const char *proc, int version, cp_cgroup_target *t) {
  char path[CP_CG_PATH_MAX], line[CP_CG_PATH_MAX];
  snprintf(path, sizeof path, "%s/%ld/cgroup", proc, t->pid);
  FILE *f = fopen(path, "r");
  if (!f) return failf(t, "no_process", "cannot read %s (the container's process is gone)", path);
  int found = 0;
  t->cpu[0] = t->mem[0] = t->pids[0] = t->blkio[0] = '\0';
  while (fgets(line, sizeof line, f)) {
    line[strcspn(line, "\n")] = '\0';
    char *c1 = strchr(line, ':');
    char *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
    if (!c2) continue;
    const char *ctl = c1 + 1, *rel = c2 + 1;
    size_t clen = (size_t)(c2 - ctl);
    if (!strstr(rel, t->id)) continue; /* not the container's own cgroup */
    if (version == 2) {
      if (clen == 0 && strncmp(line, "0:", 2) == 0) {
        found = set_dirs(root, 2, rel, t) == 0;
        break;
      }
      continue;
    }
    char base[CP_CG_PATH_MAX];
    if (join(base, sizeof base, root, "/", NULL) != 0) continue;
    if (has_controller(ctl, clen, "cpuacct")) found |= join(t->cpu, sizeof t->cpu, base, "cpuacct", rel) == 0;
    if (has_controller(ctl, clen, "memory")) found |= join(t->mem, sizeof t->mem, base, "memory", rel) == 0;
    if (has_controller(ctl, clen, "pids")) join(t->pids, sizeof t->pids, base, "pids", rel);
    if (has_controller(ctl, clen, "blkio")) join(t->blkio, sizeof t->blkio, base, "blkio", rel);
  }
  fclose(f);
  if (!found || (version == 1 && (!t->cpu[0] || !t->mem[0])))
    return failf(t, "not_found", "no cgroup of container %.64s in its process's cgroup file", t->id);
  return 0;
}

/* The first pid listed in dir/cgroup.procs, or 0. */
static long first_pid(const char *dir) {
  char path[CP_CG_PATH_MAX + 32], buf[64];
  if (join(path, sizeof path, dir, "/cgroup.procs", NULL) != 0) return 0;
  if (read_small(path, buf, sizeof buf) <= 0) return 0;
  return strtol(buf, NULL, 10);
}

int cp_cgroup_resolve(const char *root, const char *proc, int version, cp_cgroup_target *t) {
  t->ok = 0;
  t->code[0] = t->err[0] = '\0';
  t->version = version;
  size_t idlen = strlen(t->id);
  if (idlen < 12 || strspn(t->id, "0123456789abcdef") != idlen)
    return failf(t, "bad_request", "not a full container id: %.64s", t->id);
  if (version != 1 && version != 2)
    return failf(t, "unreadable", "no readable cgroup hierarchy under %s", root);
  if (t->pid > 0) return resolve_pid(root, proc, version, t);
  /* the drivers' default places */
  for (int i = 0; i < 2; i++) {
    char rel[CP_CG_PATH_MAX];
    if (i == 0) snprintf(rel, sizeof rel, "/docker/%s", t->id);
    else snprintf(rel, sizeof rel, "/system.slice/docker-%s.scope", t->id);
    if (set_dirs(root, version, rel, t) != 0) continue;
    if (!is_dir(t->mem)) continue;
    t->pid = first_pid(version == 2 ? t->mem : t->pids[0] && is_dir(t->pids) ? t->pids : t->mem);
    if (t->pid <= 0)
      return failf(t, "no_process", "container %.64s has no process in its cgroup", t->id);
    return 0;
  }
  return failf(t, "not_found", "no cgroup directory for container %.64s in the default places",
               t->id);
}

/* Sums the "Read" and "Write" lines of a v1 blkio file. */
static void blkio_v1(const char *dir, uint64_t *rd, uint64_t *wr) {
  char path[CP_CG_PATH_MAX + 64], line[256];
  *rd = *wr = 0;
  if (join(path, sizeof path, dir, "/blkio.throttle.io_service_bytes_recursive", NULL) != 0) return;
  FILE *f = fopen(path, "r");
  if (!f) return;
  while (fgets(line, sizeof line, f)) {
    char dev[64], op[16];
    unsigned long long v;
    if (sscanf(line, "%63s %15s %llu", dev, op, &v) != 3) continue;
    if (strcmp(op, "Read") == 0) *rd += (uint64_t)v;
    else if (strcmp(op, "Write") == 0) *wr += (uint64_t)v;
  }
  fclose(f);
}

/* Sums rbytes= and wbytes= of every device in a v2 io.stat. */
static void io_v2(const char *dir, uint64_t *rd, uint64_t *wr) {
  char path[CP_CG_PATH_MAX + 64], line[512];
  *rd = *wr = 0;
  if (join(path, sizeof path, dir, "/io.stat", NULL) != 0) return;
  FILE *f = fopen(path, "r");
  if (!f) return;
  while (fgets(line, sizeof line, f)) {
    const char *p;
    if ((p = strstr(line, "rbytes="))) *rd += (uint64_t)strtoull(p + 7, NULL, 10);
    if ((p = strstr(line, "wbytes="))) *wr += (uint64_t)strtoull(p + 7, NULL, 10);
  }
  fclose(f);
}

/* Network bytes of every interface but lo in the namespace of pid. */
static int net_dev(const char *proc, long pid, uint64_t *rx, uint64_t *tx) {
  char path[CP_CG_PATH_MAX], line[512];
  snprintf(path, sizeof path, "%s/%ld/net/dev", proc, pid);
  FILE *f = fopen(path, "r");
  if (!f) return -1;
  *rx = *tx = 0;
  while (fgets(line, sizeof line, f)) {
    char *colon = strchr(line, ':');
    if (!colon) continue; /* the two header lines */
    *colon = '\0';
    const char *name = line + strspn(line, " ");
    if (strcmp(name, "lo") == 0) continue;
    unsigned long long v[9];
    if (sscanf(colon + 1, "%llu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2],
               &v[3], &v[4], &v[5], &v[6], &v[7], &v[8]) != 9)
      continue;
    *rx += (uint64_t)v[0];
    *tx += (uint64_t)v[8];
  }
  fclose(f);
  return 0;
}

int cp_cgroup_read(const char *proc, cp_cgroup_target *t, cp_cgroup_reading *r) {
  memset(r, 0, sizeof *r);
  int bad;
  if (t->version == 2) {
    uint64_t usec = 0;
    bad = keyed_u64(t->cpu, "cpu.stat", "usage_usec", &usec);
    r->cpu_ns = usec * 1000u;
  } else {
    bad = read_u64(t->cpu, "cpuacct.usage", &r->cpu_ns);
  }
  r->t = cp_monotonic();
  if (bad) {
    t->ok = 0;
    return failf(t, "no_process", "cannot read the CPU usage of container %.64s (stopped?)", t->id);
  }
  const char *usage = t->version == 2 ? "memory.current" : "memory.usage_in_bytes";
  const char *limit = t->version == 2 ? "memory.max" : "memory.limit_in_bytes";
  if (read_u64(t->mem, usage, &r->mem_usage) != 0 || read_u64(t->mem, limit, &r->mem_limit) != 0) {
    t->ok = 0;
    return failf(t, "unreadable", "cannot read the memory usage of container %.64s", t->id);
  }
  /* v1 reports the hierarchy's total as total_inactive_file (what the docker CLI subtracts) */
  if (t->version != 1 ||
      keyed_u64(t->mem, "memory.stat", "total_inactive_file", &r->mem_inactive_file) != 0)
    keyed_u64(t->mem, "memory.stat", "inactive_file", &r->mem_inactive_file);
  if (t->pids[0]) read_u64(t->pids, "pids.current", &r->pids);
  if (t->blkio[0]) {
    if (t->version == 2) io_v2(t->blkio, &r->blk_read, &r->blk_write);
    else blkio_v1(t->blkio, &r->blk_read, &r->blk_write);
  }
  r->has_net = t->pid > 0 && net_dev(proc, t->pid, &r->rx, &r->tx) == 0;
  t->ok = 1;
  return 0;
}

void cp_cgroup_compute(const cp_cgroup_reading *a, const cp_cgroup_reading *b, cp_cgroup_usage *u) {
  memset(u, 0, sizeof *u);
  u->interval = b->t - a->t;
  if (u->interval > 0 && b->cpu_ns >= a->cpu_ns)
    u->cpu_percent = (double)(b->cpu_ns - a->cpu_ns) / (u->interval * 1e9) * 100.0;
  u->mem_used = b->mem_inactive_file < b->mem_usage ? b->mem_usage - b->mem_inactive_file
                                                    : b->mem_usage;
  u->mem_limit = b->mem_limit;
  u->pids = b->pids;
  u->rx = b->rx;
  u->tx = b->tx;
  u->blk_read = b->blk_read;
  u->blk_write = b->blk_write;
}
