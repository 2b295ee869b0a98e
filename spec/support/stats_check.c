/*
 * stats_check.c - runs runtime/stats.c alone, without Lua (built with
 * ASan/UBSan by spec/unit/stats_c_spec.lua):
 *
 *   stats_check FILE...          prints the figures of each document
 *   stats_check --fuzz N FILE... parses every prefix of each file and N
 *                                deterministic mutations of it; prints
 *                                "fuzz ok <count>" unless a sanitizer fires
 */
#include "../../runtime/stats.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *slurp(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  size_t cap = 4096, n = 0;
  char *buf = malloc(cap);
  size_t got;
  while (buf && (got = fread(buf + n, 1, cap - n, f)) > 0) {
    n += got;
    if (n == cap) {
      char *nb = realloc(buf, cap *= 2);
      if (!nb) {
        free(buf);
        buf = NULL;
      }
      buf = nb;
    }
  }
  fclose(f);
  *len = n;
  return buf;
}

static unsigned long rng = 12345;
static unsigned long next_rand(void) {
  rng = rng * 6364136223846793005UL + 1442695040888963407UL;
  return rng >> 33;
}

/* parses an exact-size heap copy, so ASan sees any read past the end */
static int parse_copy(const char *p, size_t n, cp_stats_sample *s) {
  char *copy = malloc(n ? n : 1);
  if (!copy) return -1;
  memcpy(copy, p, n);
  char err[160];
  int r = cp_stats_parse(copy, n, s, err, sizeof err);
  free(copy);
  return r;
}

int main(int argc, char **argv) {
  int fuzz = 0, i = 1;
  if (argc > 2 && strcmp(argv[1], "--fuzz") == 0) {
    fuzz = atoi(argv[2]);
    i = 3;
  }
  long count = 0;
  cp_stats_sample prev;
  int have_prev = 0;
  for (; i < argc; i++) {
    size_t len;
    char *doc = slurp(argv[i], &len);
    if (!doc) {
      fprintf(stderr, "cannot read %s\n", argv[i]);
      return 2;
    }
    cp_stats_sample s;
    cp_stats_usage u;
    if (!fuzz) {
      char err[160];
      if (cp_stats_parse(doc, len, &s, err, sizeof err) != 0) {
        printf("%s: %s\n", argv[i], err);
      } else {
        cp_stats_compute(&s, have_prev ? &prev : NULL, &u);
        printf("%s: running=%d cpu=%.4f src=%d mem=%llu/%llu rx=%llu tx=%llu pids=%llu\n",
               argv[i], u.running, u.cpu_percent, u.cpu_source,
               (unsigned long long)u.mem_used, (unsigned long long)u.mem_limit,
               (unsigned long long)u.rx_bytes, (unsigned long long)u.tx_bytes,
               (unsigned long long)u.pids);
        prev = s;
        have_prev = 1;
      }
      free(doc);
      continue;
    }
    for (size_t k = 0; k <= len; k++, count++) {
      if (parse_copy(doc, k, &s) == 0) {
        cp_stats_compute(&s, NULL, &u);
      }
    }
    char *m = malloc(len ? len : 1);
    for (int r = 0; m && r < fuzz; r++, count++) {
      memcpy(m, doc, len);
      int edits = 1 + (int)(next_rand() % 4);
      for (int e = 0; e < edits && len; e++) {
        size_t at = next_rand() % len;
        static const char bytes[] = "{}[]\":,0-9e.\\ \x01\xff";
        m[at] = bytes[next_rand() % (sizeof bytes - 1)];
      }
      size_t n = len ? next_rand() % (len + 1) : 0;
      if (parse_copy(m, n, &s) == 0) {
        cp_stats_compute(&s, &s, &u);
      }
    }
    free(m);
    free(doc);
  }
  if (fuzz) printf("fuzz ok %ld\n", count);
  return 0;
}
