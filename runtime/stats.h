/*
 * stats.h - Docker container stats documents: parsing and the usage
 * formulas (no Lua and no I/O here, so it can be unit-tested and fuzzed
 * alone).
 *
 * A stats document is what GET /containers/{id}/stats sends, one JSON
 * object per sample. cp_stats_parse() scans one document with a small
 * purpose-built JSON scanner and keeps only the numbers the formulas need;
 * cp_stats_compute() turns a sample (and optionally the previous sample of
 * the same container) into usage figures, as the docker CLI computes them:
 *
 *   CPU %     (cpu.total - pre.total) / (cpu.system - pre.system)
 *               * online CPUs * 100, where "pre" is the daemon's precpu_stats
 *               when it supplies them, else the caller's previous sample
 *               (one-shot documents carry no precpu_stats)
 *   memory    cgroup v1: usage - stats.total_inactive_file
 *             cgroup v2: usage - stats.inactive_file
 *             (each only when smaller than usage), limit = memory_stats.limit
 *   network   rx_bytes / tx_bytes summed over every interface
 *   block I/O io_service_bytes_recursive summed by op (Read/read, Write/write)
 *   pids      pids_stats.current
 */
#ifndef CP_STATS_H
#define CP_STATS_H

#include <stddef.h>
#include <stdint.h>

typedef struct cp_stats_cpu {
  uint64_t total;     /* cpu_usage.total_usage, ns */
  uint64_t system;    /* system_cpu_usage, ns (0: absent) */
  unsigned online;    /* online_cpus (0: absent) */
  unsigned percpu_n;  /* length of cpu_usage.percpu_usage (cgroup v1 only) */
} cp_stats_cpu;

typedef struct cp_stats_sample {
  double read;        /* "read" as Unix seconds; 0 when zero time (not running) */
  double preread;     /* "preread"; 0 when absent or zero time */
  cp_stats_cpu cpu, precpu;
  uint64_t mem_usage, mem_limit, mem_max_usage;
  uint64_t inactive_file, total_inactive_file;
  int has_inactive_file, has_total_inactive_file;
  int has_memory;     /* memory_stats.usage present */
  uint64_t rx_bytes, tx_bytes, rx_packets, tx_packets;
  unsigned networks;  /* interfaces seen */
  uint64_t blk_read, blk_write;
  uint64_t pids, pids_limit;
  char id[72];
  char name[136];
} cp_stats_sample;

enum { CP_CPU_NONE = 0, CP_CPU_DAEMON = 1, CP_CPU_PREVIOUS = 2 };

typedef struct cp_stats_usage {
  int running;         /* the document describes a running container */
  int cpu_source;      /* CP_CPU_*: where the previous CPU figures came from */
  double cpu_percent;  /* 100 = one CPU busy */
  double cpu_interval; /* seconds between the two CPU readings (0: unknown) */
  uint64_t mem_used, mem_limit;
  double mem_percent;
  uint64_t rx_bytes, tx_bytes, blk_read, blk_write, pids;
  int has_rates;       /* a previous sample gave the rates below */
  double rx_rate, tx_rate, blk_read_rate, blk_write_rate; /* bytes/s */
  double read;
} cp_stats_usage;

/* Parses one stats document (len bytes; need not be NUL-terminated).
 * Returns 0, or -1 with a message in err for a malformed document. */
int cp_stats_parse(const char *doc, size_t len, cp_stats_sample *out, char *err,
                   size_t errlen);

/* Usage figures for cur; prev (may be NULL) is this sampler's previous
 * sample of the same container, used for CPU when the document has no
 * precpu_stats and for the network and block I/O rates. */
void cp_stats_compute(const cp_stats_sample *cur, const cp_stats_sample *prev,
                      cp_stats_usage *out);

/* Memory in use as the docker CLI reports it (cache not counted). */
uint64_t cp_stats_memory_used(const cp_stats_sample *s);

/* RFC 3339 timestamp -> Unix seconds; 0 for Go's zero time or bad input. */
double cp_stats_time(const char *s, size_t len);

#endif
