/*
 * embed_example.c - a C program that links the runtime in.
 *
 *   build/embed-example [METHOD [PARAMS_JSON]]...
 *
 * Opens a runtime (configuration from $CPD_CONFIG, default "{}"), calls each
 * METHOD with its PARAMS_JSON ("" for none) and prints one line per call:
 * "METHOD ok|failed JSON". Exits 1 when a call failed.
 */
#include <ctrlplane_docker.h>
#include <stdio.h>
#include <stdlib.h>

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
