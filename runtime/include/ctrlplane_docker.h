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
 *
 * Many calls at once (one thread, one event loop): cpd_submit starts a call
 * and returns its id at once; cpd_poll runs the runtime's loop and hands
 * back finished calls one by one, in the order they finish. Calls on
 * different instances interleave; calls on one instance run in the order
 * they were submitted. At most max_inflight instance calls run at once
 * (configuration "max_inflight", default 32; CP_DOCKER_MAX_INFLIGHT); more
 * wait, and beyond "max_queued" waiting (default 256) cpd_submit fails with
 * data.code "busy". cpd_cancel stops a call at its next wait (it then
 * finishes with data.code "cancelled"); a deadline does the same on its own
 * ("deadline").
 *
 *   cpd_id a = cpd_submit(rt, "provision", req_a, 0, &err);
 *   cpd_id b = cpd_submit(rt, "status", "{\"instance_id\": \"inst_2\"}", 5000, &err);
 *   cpd_id done; char *out;
 *   while (cpd_poll(rt, -1, &done, &out) != CPD_NONE) { ...; cpd_free(out); }
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

/* Calls a provider method with JSON params (NULL for none) and waits for
 * it. Sets *result_json to a malloc'd JSON text the caller frees with
 * cpd_free. Submitted calls keep running while it waits (their results
 * stay for cpd_poll). */
int cpd_call(cpd_runtime *rt, const char *method, const char *params_json, char **result_json);

/* Returned by cpd_poll when no call finished within the timeout (or none
 * is in flight). */
#define CPD_NONE 2

/* A submitted call; 0 is never an id. */
typedef long long cpd_id;

/* Starts method(params_json) and returns its id without waiting.
 * deadline_ms > 0 cancels it that long after submission. On failure (bad
 * params JSON, the queue is full: "busy") returns 0 and sets *error_json
 * to a JSON-RPC error object (free it with cpd_free). */
cpd_id cpd_submit(cpd_runtime *rt, const char *method, const char *params_json,
                  long deadline_ms, char **error_json);

/* Runs the runtime's event loop for up to timeout_ms (-1: until a call
 * finishes) and returns one finished call: CPD_OK or CPD_FAILED with *id
 * and *result_json (as cpd_call's), or CPD_NONE when none finished in
 * time or nothing is in flight. */
int cpd_poll(cpd_runtime *rt, int timeout_ms, cpd_id *id, char **result_json);

/* Cancels a submitted call: returns 1 when it was in flight (its result
 * still comes from cpd_poll), 0 otherwise. */
int cpd_cancel(cpd_runtime *rt, cpd_id id);

/* The number of submitted calls not yet finished. */
int cpd_pending(cpd_runtime *rt);

/* Frees text returned by cpd_open, cpd_call, cpd_submit or cpd_poll. */
void cpd_free(void *p);

/* Closes the runtime and everything it holds (connections, streams). */
void cpd_close(cpd_runtime *rt);

/* The runtime's version, e.g. "0.1.0". */
const char *cpd_version(void);

#ifdef __cplusplus
}
#endif

#endif
