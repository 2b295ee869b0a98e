/*
 * ctrlplane_docker.h - embed the ctrlplane Docker provider runtime in a C
 * program. Link with -lctrlplane-docker -llua5.4 -lcurl -lm -ldl.
 *
 *   char *err = NULL, *out = NULL;
 *   cpd_runtime *rt = cpd_open(NULL, "{\"host\": \"unix:///var/run/docker.sock\"}", &err);
 *   if (!rt) { fprintf(stderr, "%s\n", err); cpd_free(err); return 1; }
 *   int rc = cpd_call(rt, "status", "{\"instance_id\": \"inst_1\"}", &out);
 *   puts(out);          // rc 0: the result; otherwise a JSON-RPC error object
 *   cpd_free(out);
 *   cpd_close(rt);
 *
 * Methods and JSON shapes are those of `cpdocker serve` (the provider
 * contract): provision, deploy, deprovision, start, stop, restart, status,
 * resources, info, capabilities, health_check, ... A runtime is not thread
 * safe: use one per thread, or serialize calls.
 */
#ifndef CTRLPLANE_DOCKER_H
#define CTRLPLANE_DOCKER_H

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cpd_runtime cpd_runtime;

/* Results of cpd_call. */
#define CPD_OK 0        /* *result_json is the method's result */
#define CPD_FAILED 1    /* the operation failed: *result_json is an error object
                           {"code": JSON-RPC code, "message", "data": {"code": stable code}} */
#define CPD_MISUSE (-1) /* bad arguments or an internal error; *result_json as above */

/* Opens a runtime. home: the directory holding lua/ and scripts/ (NULL:
 * $CP_DOCKER_HOME, then PREFIX/share/ctrlplane-docker). config_json: the
 * runtime configuration as a JSON object (host, network, registry,
 * policy_dir, stop_timeout, ...; NULL or "{}" for the defaults and the
 * environment). On failure returns NULL and sets *error (free it with
 * cpd_free) when error is not NULL. */
cpd_runtime *cpd_open(const char *home, const char *config_json, char **error);

/* Calls a provider method with JSON params (NULL for none). Sets
 * *result_json to a malloc'd JSON text the caller frees with cpd_free. */
int cpd_call(cpd_runtime *rt, const char *method, const char *params_json, char **result_json);

/* Frees text returned by cpd_open or cpd_call. */
void cpd_free(void *p);

/* Closes the runtime and everything it holds (connections, streams). */
void cpd_close(cpd_runtime *rt);

/* The runtime's version, e.g. "0.1.0". */
const char *cpd_version(void);

#ifdef __cplusplus
}
#endif

#endif
