/*
 * http.h - Docker Engine API transport over libcurl (no Lua here).
 *
 * A client owns one curl multi handle. Every transfer (a plain request, a
 * long-lived stream, a member of a batch) is an easy handle added to that
 * multi, so they all share its connection cache: keep-alive connections are
 * reused across calls, and many transfers can run at once.
 */
#ifndef CP_HTTP_H
#define CP_HTTP_H

#include <stddef.h>
#include <signal.h>
#include <curl/curl.h>

/* Highest and lowest Engine API versions this runtime speaks. */
#define CP_API_MAX "1.45"
#define CP_API_MIN "1.41"

/* A stream stops reading from the socket once this much is buffered. */
#define CP_STREAM_HIGH_WATER (256u * 1024u)

typedef struct cp_buf {
  char *data;
  size_t len, cap;
} cp_buf;

int cp_buf_append(cp_buf *b, const char *p, size_t n);
void cp_buf_free(cp_buf *b);

typedef struct cp_client_opts {
  const char *host;          /* unix:///path, tcp://h:p, http(s)://h:p */
  int tls;                   /* use TLS for tcp:// */
  int tls_verify;            /* verify the daemon certificate */
  const char *ca, *cert, *key;
  long connect_timeout_ms;
  long timeout_ms;           /* default total time of a plain request */
  const char *api_version;   /* force a version instead of negotiating */
  size_t max_body;           /* cap on a plain (non-stream) response body; 0: default */
} cp_client_opts;

/* Default cap on a plain response body: a daemon (or something posing as
 * one) sending an endless body fails the request instead of filling memory. */
#define CP_MAX_BODY_DEFAULT (256u * 1024u * 1024u)

typedef struct cp_xfer cp_xfer;

typedef struct cp_client {
  CURLM *multi;
  char *host;        /* as given, for messages */
  char *base_url;    /* scheme://authority */
  char *unix_path;   /* NULL for TCP */
  int tls_verify;
  char *ca, *cert, *key;
  long connect_timeout_ms, timeout_ms;
  size_t max_body;
  char api_version[16]; /* "" until negotiated */
  long connections;     /* new connections opened so far */
  long transfers;       /* transfers finished so far */
  unsigned long events; /* bumped whenever a transfer makes progress (data, head, end):
                           a scheduler resumes the tasks waiting on this client */
  cp_xfer *xfers;       /* live transfers (intrusive list) */
} cp_client;

struct cp_xfer {
  CURL *easy;
  cp_client *client;
  cp_xfer *prev, *next;
  struct curl_slist *req_headers;
  char *req_body;
  cp_buf body;          /* response bytes not yet consumed */
  cp_buf headers;       /* raw header lines of the final response */
  long status;
  int streaming;        /* pause when body exceeds the high-water mark */
  int paused;
  int active;           /* added to the multi and not finished */
  int headers_done;
  int done;
  int too_large;        /* aborted: the body passed the client's max_body */
  CURLcode result;
  char errbuf[CURL_ERROR_SIZE];
};

/* Set by a signal handler; transfers in progress then stop as "interrupted". */
extern volatile sig_atomic_t cp_interrupted;

cp_client *cp_client_new(const cp_client_opts *o, char *err, size_t errlen);
void cp_client_free(cp_client *c);

/* Applies c's connection settings to an easy handle: unix socket, TLS (CA,
 * client cert/key, verify peer and host), connect timeout, NOSIGNAL. Every
 * handle that talks to the daemon (transfers, hijacked connections) uses it. */
void cp_client_setup_easy(const cp_client *c, CURL *e);

/* Creates a transfer for `url_path` (path + query, already encoded) and adds
 * it to the client's multi. body may be NULL. Returns NULL on allocation or
 * curl failure. */
cp_xfer *cp_xfer_new(cp_client *c, const char *method, const char *url_path,
                     const char *body, size_t body_len, const char *content_type,
                     int streaming, long timeout_ms, long idle_timeout_s);
void cp_xfer_free(cp_xfer *x);

/* Take the buffered body (ownership moves to the caller through *out). */
void cp_xfer_take(cp_xfer *x, cp_buf *out);

/* Drives every transfer of the client for up to wait_ms (0: no waiting).
 * Returns 0, or -1 on a multi error or interruption. */
int cp_client_step(cp_client *c, long wait_ms);

/* Like cp_client_step, but waits (curl_multi_poll, even with no transfer
 * running) for up to wait_ms on the client's sockets and on extra fds,
 * whose revents it fills. Returns 0, or -1 on a multi error. */
int cp_client_poll(cp_client *c, long wait_ms, struct curl_waitfd *extra, unsigned n);

/* Drives until done(x) for every x in xs (n of them), or any `ready`
 * condition, bounded by timeout_ms (<0: no bound). */
typedef int (*cp_ready_fn)(cp_xfer *x);
int cp_client_drive(cp_client *c, cp_xfer **xs, size_t n, cp_ready_fn ready,
                    int any, long timeout_ms);

int cp_ready_done(cp_xfer *x);    /* finished */
int cp_ready_headers(cp_xfer *x); /* status known or finished */
int cp_ready_data(cp_xfer *x);    /* body bytes buffered or finished */

/* Stable error code and message for a failed transfer. */
const char *cp_xfer_error_code(const cp_xfer *x);
/* The stable error code of a libcurl result (NULL for CURLE_OK): unreachable,
 * timeout, interrupted, tls, out_of_memory or protocol. */
const char *cp_curl_error_code(CURLcode rc);
void cp_xfer_error_message(const cp_xfer *x, char *out, size_t outlen);

/* Stable code for an HTTP status >= 400. */
const char *cp_status_code(long status);

/* The failure of a finished transfer: 0 when it succeeded (no transport
 * error, HTTP status < 400); else msg (the daemon's message for an HTTP
 * error), *code (a stable code) and *status (the HTTP status or 0), -1. */
int cp_xfer_failure(const cp_xfer *x, char *msg, size_t msglen, const char **code, long *status);

/* API-version negotiation: makes sure c has an API version, asking the
 * daemon (GET /_ping's Api-Version header; /version for very old daemons)
 * and capping it at CP_API_MAX. Blocks until answered. Returns 0, or -1
 * with msg, *code and *status as cp_xfer_failure. Does nothing once known. */
int cp_client_negotiate(cp_client *c, char *msg, size_t msglen, const char **code,
                        long *status);

/* Extracts Docker's {"message": "..."} from an error body into out; falls
 * back to the trimmed body text. */
void cp_error_text(const char *body, size_t len, char *out, size_t outlen);

/* Looks up a response header (case-insensitive); copies its value. */
int cp_header_get(const cp_buf *headers, const char *name, char *out, size_t outlen);

/* Compares dotted API versions: <0, 0, >0. */
int cp_version_cmp(const char *a, const char *b);

#endif
