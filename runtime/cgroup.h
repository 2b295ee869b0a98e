/*
 * cgroup.h - container usage read straight from the kernel (no Lua).
 *
 * When the daemon runs on this host, a container's figures are files:
 * its cgroup (v1: one directory per controller; v2: one directory) and
 * /proc/<pid>/net/dev of a process inside it. Reading them takes
 * microseconds, where the stats API waits for the daemon's 1 s collector.
 *
 *   cp_cgroup_probe(root, proc, &info)       which hierarchy, host memory
 *   cp_cgroup_resolve(root, proc, ver, t)    finds a container's directories
 *   cp_cgroup_read(proc, t, &reading)        one reading of its files
 *   cp_cgroup_compute(&a, &b, &usage)          figures from two readings
 *
 * root is normally "/sys/fs/cgroup" and proc "/proc"; specs point them at a
 * fake tree.
 */
#ifndef CP_CGROUP_H
#define CP_CGROUP_H

#include <stdint.h>

#define CP_CG_ID_MAX 64
#define CP_CG_PATH_MAX 512
#define CP_CG_NOLIMIT UINT64_MAX

typedef struct cp_cgroup_info {
  int version;        /* 1 or 2; 0: no readable hierarchy */
  uint64_t mem_total; /* bytes, from <proc>/meminfo; 0 when unknown */
} cp_cgroup_info;

typedef struct cp_cgroup_reading {
  double t;             /* CLOCK_MONOTONIC seconds, taken after the CPU file */
  uint64_t cpu_ns;      /* CPU time used, all threads, nanoseconds */
  uint64_t mem_usage;   /* bytes, page cache included */
  uint64_t mem_inactive_file; /* bytes of inactive file cache (reclaimable) */
  uint64_t mem_limit;   /* bytes; CP_CG_NOLIMIT when unlimited */
  uint64_t pids;
  uint64_t rx, tx;      /* network bytes, every interface but lo */
  uint64_t blk_read, blk_write;
  int has_net;
} cp_cgroup_reading;

typedef struct cp_cgroup_target {
  char id[CP_CG_ID_MAX + 1]; /* the full container id */
  long pid;                  /* in: init pid (0 = unknown); out: a pid in the container */
  int version;
  /* directories per controller (v2: all four the same) */
  char cpu[CP_CG_PATH_MAX], mem[CP_CG_PATH_MAX], pids[CP_CG_PATH_MAX], blkio[CP_CG_PATH_MAX];
  int ok;                    /* resolved and read at least once */
  char code[24];             /* on failure: not_found, no_process, unreadable */
  char err[200];
} cp_cgroup_target;

typedef struct cp_cgroup_usage {
  double cpu_percent;   /* 100 = one CPU busy over the interval */
  double interval;      /* seconds between the two readings */
  uint64_t mem_used;    /* usage minus inactive file (as the docker CLI) */
  uint64_t mem_limit;
  uint64_t pids, rx, tx, blk_read, blk_write;
} cp_cgroup_usage;

/* Returns 0 and fills info, or -1 when root holds no cgroup hierarchy. */
int cp_cgroup_probe(const char *root, const char *proc, cp_cgroup_info *info);

/* Finds t's cgroup directories. With t->pid set, from <proc>/<pid>/cgroup
 * (the path must name t->id: a reused pid is refused); without, from the
 * directories the cgroupfs and systemd drivers use by default
 * (docker/<id>, system.slice/docker-<id>.scope), taking a pid from its
 * cgroup.procs. Returns 0, or -1 with t->code and t->err set. */
int cp_cgroup_resolve(const char *root, const char *proc, int version, cp_cgroup_target *t);

/* Reads t's files into r. Returns 0, or -1 with t->code and t->err set. */
int cp_cgroup_read(const char *proc, cp_cgroup_target *t, cp_cgroup_reading *r);

/* Usage from an earlier reading a and a later reading b. */
void cp_cgroup_compute(const cp_cgroup_reading *a, const cp_cgroup_reading *b, cp_cgroup_usage *u);

#endif
