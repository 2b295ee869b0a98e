/*
 * embed_example.c - a C program that links the runtime in.
 *
 *   build/embed-example [--submit] [METHOD [PARAMS_JSON]]...
 *
 * Opens a runtime (configuration from $CPD_CONFIG, default "{}"), calls each
 * METHOD with its PARAMS_JSON ("" for none) and prints one line per call:
 * "METHOD ok|failed JSON". Exits 1 when a call failed. With --submit the
 * calls are submitted all at once (cpd_submit) and printed as they finish
 * (cpd_poll), each line prefixed with its position on the command line
 * and the seconds since the start: "#N T METHOD ok|failed JSON".
 */
#include <ctrlplane_docker.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Submits every call, then prints each as it finishes. */
static int run_concurrent(cpd_runtime *rt, int argc, char **argv) {
  enum { MAX_CALLS = 256 };
  cpd_id ids[MAX_CALLS] = {0};
  const char *names[MAX_CALLS] = {NULL};
  int n = 0, status = 0;
  double t0 = now();
  for (int i = 2; i < argc && n < MAX_CALLS; i += 2) {
    const char *params = (i + 1 < argc && argv[i + 1][0]) ? argv[i + 1] : NULL;
    char *err = NULL;
    names[n] = argv[i];
    ids[n] = cpd_submit(rt, argv[i], params, 0, &err);
    if (!ids[n]) {
      printf("#%d %.3f %s failed %s\n", n + 1, now() - t0, argv[i], err ? err : "null");
      status = 1;
    }
    cpd_free(err);
    n++;
  }
  cpd_id done;
  char *out = NULL;
  int rc;
  while ((rc = cpd_poll(rt, -1, &done, &out)) != CPD_NONE) {
    int k = 0;
    while (k < n && ids[k] != done) k++;
    printf("#%d %.3f %s %s %s\n", k + 1, now() - t0, k < n ? names[k] : "?",
           rc == CPD_OK ? "ok" : "failed", out ? out : "null");
    fflush(stdout);
    if (rc != CPD_OK) status = 1;
    cpd_free(out);
    out = NULL;
  }
  return status;
}

int main(int argc, char **argv) {
  const char *config = getenv("CPD_CONFIG");
  char *err = NULL;
  cpd_runtime *rt = cpd_open(NULL, config ? config : "{}", &err);
  if (!rt) {
    fprintf(stderr, "embed-example: %s\n", err ? err : "cannot open the runtime");
    cpd_free(err);
    return 2;
  }
  printf("runtime %s\n", cpd_version());
  if (argc > 1 && strcmp(argv[1], "--submit") == 0) {
    int st = run_concurrent(rt, argc, argv);
    cpd_close(rt);
    return st;
  }
  int status = 0;
  for (int i = 1; i < argc; i += 2) {
    const char *params = (i + 1 < argc && argv[i + 1][0]) ? argv[i + 1] : NULL;
    char *out = NULL;
    int rc = cpd_call(rt, argv[i], params, &out);
    printf("%s %s %s\n", argv[i], rc == CPD_OK ? "ok" : "failed", out ? out : "null");
    if (rc != CPD_OK) status = 1;
    cpd_free(out);
  }
  cpd_close(rt);
  return status;
}
