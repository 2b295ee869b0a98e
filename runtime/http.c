/*
 * http.c - Docker Engine API transport over libcurl (see http.h).
 */
#include "http.h"
#include "clock.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <errno.h>
#include <limits.h>
#include <time.h>

volatile sig_atomic_t cp_interrupted = 0;

/* ---- buffers ---------------------------------------------------------- */

int cp_buf_append(cp_buf *b, const char *p, size_t n) {
  if (n == 0) return 0;
  if (b->len + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + n + 1) cap *= 2;
    char *d = realloc(b->data, cap);
    if (!d) return -1;
    b->data = d;
    b->cap = cap;
  }
  memcpy(b->data + b->len, p, n);
  b->len += n;
  b->data[b->len] = '\0';
  return 0;
}

void cp_buf_free(cp_buf *b) {
  free(b->data);
  b->data = NULL;
  b->len = b->cap = 0;
}

static char *http_strdup(const char *s) {
  if (!s) return NULL;
  size_t n = strlen(s) + 1;
  char *d = malloc(n);
  if (d) memcpy(d, s, n);
  return d;
}

/* ---- client ----------------------------------------------------------- */

cp_client *cp_client_new(const cp_client_opts *o, char *err, size_t errlen) {
  const char *host = o->host ? o->host : "unix:///var/run/docker.sock";
  cp_client *c = calloc(1, sizeof *c);
  if (!c) {
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  c->host = http_strdup(host);
  if (strncmp(host, "unix://", 7) == 0) {
    if (host[7] == '\0') {
      snprintf(err, errlen, "invalid Docker host '%s': empty socket path", host);
      goto fail;
    }
    c->unix_path = http_strdup(host + 7);
    c->base_url = http_strdup("http://localhost");
  } else {
    const char *rest = NULL;
    int tls = o->tls;
    if (strncmp(host, "tcp://", 6) == 0) rest = host + 6;
    else if (strncmp(host, "http://", 7) == 0) rest = host + 7, tls = 0;
    else if (strncmp(host, "https://", 8) == 0) rest = host + 8, tls = 1;
    if (!rest || !*rest || strpbrk(rest, "/?# \t\r\n") ) {
      snprintf(err, errlen,
               "invalid Docker host '%s': expected unix:///path or tcp://host:port", host);
      goto fail;
    }
    size_t n = strlen(rest) + 16;
    c->base_url = malloc(n);
    if (c->base_url) {
      /* tcp://host without a port gets Docker's default port */
      const char *colon = strrchr(rest, ':');
      const char *bracket = strrchr(rest, ']');
      int has_port = colon && (!bracket || colon > bracket);
      snprintf(c->base_url, n, "%s://%s%s", tls ? "https" : "http", rest,
               has_port ? "" : (tls ? ":2376" : ":2375"));
    }
  }
  c->tls_verify = o->tls_verify;
  c->ca = http_strdup(o->ca);
  c->cert = http_strdup(o->cert);
  c->key = http_strdup(o->key);
  c->connect_timeout_ms = o->connect_timeout_ms > 0 ? o->connect_timeout_ms : 2000;
  c->timeout_ms = o->timeout_ms >= 0 ? o->timeout_ms : 60000;
  c->max_body = o->max_body ? o->max_body : CP_MAX_BODY_DEFAULT;
  if (o->api_version && *o->api_version)
    snprintf(c->api_version, sizeof c->api_version, "%s", o->api_version);
  c->multi = curl_multi_init();
  if (!c->host || !c->base_url || !c->multi) {
    snprintf(err, errlen, "out of memory");
    goto fail;
  }
  return c;
fail:
  cp_client_free(c);
  return NULL;
}

void cp_client_free(cp_client *c) {
  if (!c) return;
  /* Transfers still owned by Lua are detached: their easy handles leave the
   * multi now and are cleaned up when the transfer itself is freed. */
  while (c->xfers) {
    cp_xfer *x = c->xfers;
    c->xfers = x->next;
    if (x->active) curl_multi_remove_handle(c->multi, x->easy);
    x->active = 0;
    if (!x->done) {
      x->done = 1;
      x->result = CURLE_ABORTED_BY_CALLBACK;
    }
    x->client = NULL;
    x->prev = x->next = NULL;
  }
  if (c->multi) curl_multi_cleanup(c->multi);
  free(c->host);
  free(c->base_url);
  free(c->unix_path);
  free(c->ca);
  free(c->cert);
  free(c->key);
  free(c);
}

/* ---- transfers -------------------------------------------------------- */

static size_t http_on_body(char *p, size_t size, size_t nmemb, void *ud) {
  cp_xfer *x = ud;
  size_t n = size * nmemb;
  if (x->streaming && x->body.len >= CP_STREAM_HIGH_WATER) {
    x->paused = 1;
    return CURL_WRITEFUNC_PAUSE; /* curl keeps these bytes for later */
  }
  if (!x->streaming && x->client && x->body.len + n > x->client->max_body) {
    x->too_large = 1;
    return 0; /* aborts: write error */
  }
  if (cp_buf_append(&x->body, p, n) != 0) return 0; /* aborts: write error */
  if (x->client) x->client->events++;
  return n;
}

static size_t http_on_header(char *p, size_t size, size_t nmemb, void *ud) {
  cp_xfer *x = ud;
  size_t n = size * nmemb;
  if (n >= 5 && memcmp(p, "HTTP/", 5) == 0) {
    /* a new response (after 100 Continue or a redirect) starts afresh */
    x->headers.len = 0;
    x->headers_done = 0;
  }
  if (cp_buf_append(&x->headers, p, n) != 0) return 0;
  if ((n == 2 && p[0] == '\r' && p[1] == '\n') || (n == 1 && p[0] == '\n')) {
    long code = 0;
    curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &code);
    if (code >= 200) {
      x->status = code;
      x->headers_done = 1;
      if (x->client) x->client->events++;
    }
  }
  return n;
}

static int http_on_progress(void *ud, curl_off_t dt, curl_off_t dn, curl_off_t ut,
                            curl_off_t un) {
  (void)ud, (void)dt, (void)dn, (void)ut, (void)un;
  return cp_interrupted ? 1 : 0;
}

/* How every handle of c reaches the daemon: the unix socket, TLS (CA,
 * client certificate and key, verification), the connect timeout, no
 * signals. Used by transfers here and by hijacked connections (lraw.c). */
void cp_client_setup_easy(const cp_client *c, CURL *e) {
  if (c->unix_path) curl_easy_setopt(e, CURLOPT_UNIX_SOCKET_PATH, c->unix_path);
  if (strncmp(c->base_url, "https", 5) == 0) {
    if (c->ca) curl_easy_setopt(e, CURLOPT_CAINFO, c->ca);
    if (c->cert) curl_easy_setopt(e, CURLOPT_SSLCERT, c->cert);
    if (c->key) curl_easy_setopt(e, CURLOPT_SSLKEY, c->key);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, c->tls_verify ? 1L : 0L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, c->tls_verify ? 2L : 0L);
  }
  curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, c->connect_timeout_ms);
}

cp_xfer *cp_xfer_new(cp_client *c, const char *method, const char *url_path,
                     const char *body, size_t body_len, const char *content_type,
                     int streaming, long timeout_ms, long idle_timeout_s) {
  cp_xfer *x = calloc(1, sizeof *x);
  if (!x) return NULL;
  cp_buf url = {0};
  x->easy = curl_easy_init();
  if (!x->easy) goto fail;
  if (cp_buf_append(&url, c->base_url, strlen(c->base_url)) != 0 ||
      cp_buf_append(&url, url_path, strlen(url_path)) != 0)
    goto fail;
  CURL *e = x->easy;
  curl_easy_setopt(e, CURLOPT_URL, url.data);
  cp_client_setup_easy(c, e);
  curl_easy_setopt(e, CURLOPT_PRIVATE, x);
  curl_easy_setopt(e, CURLOPT_ERRORBUFFER, x->errbuf);
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, http_on_body);
  curl_easy_setopt(e, CURLOPT_WRITEDATA, x);
  curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, http_on_header);
  curl_easy_setopt(e, CURLOPT_HEADERDATA, x);
  curl_easy_setopt(e, CURLOPT_XFERINFOFUNCTION, http_on_progress);
  curl_easy_setopt(e, CURLOPT_NOPROGRESS, 0L);
  curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
  if (timeout_ms > 0) curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, timeout_ms);
  if (idle_timeout_s > 0) {
    /* fewer than 1 byte/s for idle_timeout_s seconds ends the transfer */
    curl_easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(e, CURLOPT_LOW_SPEED_TIME, idle_timeout_s);
  }
  /* Docker answers 100-continue fine, but the extra round trip is waste */
  x->req_headers = curl_slist_append(NULL, "Expect:");
  if (content_type) {
    char line[128];
    snprintf(line, sizeof line, "Content-Type: %s", content_type);
    struct curl_slist *l = curl_slist_append(x->req_headers, line);
    if (l) x->req_headers = l;
  }
  curl_easy_setopt(e, CURLOPT_HTTPHEADER, x->req_headers);
  if (strcmp(method, "GET") == 0) {
    curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
  } else if (strcmp(method, "HEAD") == 0) {
    curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
  } else {
    if (body || strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0) {
      x->req_body = malloc(body_len + 1);
      if (!x->req_body) goto fail;
      if (body_len) memcpy(x->req_body, body, body_len);
      x->req_body[body_len] = '\0';
      curl_easy_setopt(e, CURLOPT_POSTFIELDS, x->req_body);
      curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
    }
    if (strcmp(method, "POST") != 0) curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
  }
  cp_buf_free(&url);
  x->streaming = streaming;
  x->client = c;
  if (curl_multi_add_handle(c->multi, e) != CURLM_OK) goto fail_unlinked;
  x->active = 1;
  x->next = c->xfers;
  if (c->xfers) c->xfers->prev = x;
  c->xfers = x;
  return x;
fail:
  cp_buf_free(&url);
fail_unlinked:
  x->client = NULL;
  cp_xfer_free(x);
  return NULL;
}

static void http_unlink(cp_xfer *x) {
  cp_client *c = x->client;
  if (!c) return;
  if (x->active) curl_multi_remove_handle(c->multi, x->easy);
  x->active = 0;
  if (x->prev) x->prev->next = x->next;
  else if (c->xfers == x) c->xfers = x->next;
  if (x->next) x->next->prev = x->prev;
  x->prev = x->next = NULL;
  x->client = NULL;
}

void cp_xfer_free(cp_xfer *x) {
  if (!x) return;
  http_unlink(x);
  if (x->easy) curl_easy_cleanup(x->easy);
  curl_slist_free_all(x->req_headers);
  free(x->req_body);
  cp_buf_free(&x->body);
  cp_buf_free(&x->headers);
  free(x);
}

void cp_xfer_take(cp_xfer *x, cp_buf *out) {
  *out = x->body;
  memset(&x->body, 0, sizeof x->body);
  if (x->paused && x->client && !x->done) {
    x->paused = 0;
    curl_easy_pause(x->easy, CURLPAUSE_CONT); /* may deliver data at once */
  }
}

static void http_collect(cp_client *c) {
  CURLMsg *m;
  int left;
  while ((m = curl_multi_info_read(c->multi, &left)) != NULL) {
    if (m->msg != CURLMSG_DONE) continue;
    cp_xfer *x = NULL;
    curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&x);
    if (!x) continue;
    x->done = 1;
    x->result = m->data.result;
    c->events++;
    long conns = 0;
    curl_easy_getinfo(x->easy, CURLINFO_NUM_CONNECTS, &conns);
    c->connections += conns;
    c->transfers++;
    if (x->status == 0) curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &x->status);
    curl_multi_remove_handle(c->multi, x->easy);
    x->active = 0;
  }
}

int cp_client_step(cp_client *c, long wait_ms) {
  int running = 0;
  if (curl_multi_perform(c->multi, &running) != CURLM_OK) return -1;
  http_collect(c);
  if (running && wait_ms > 0) {
    if (curl_multi_poll(c->multi, NULL, 0, (int)wait_ms, NULL) != CURLM_OK) return -1;
    if (curl_multi_perform(c->multi, &running) != CURLM_OK) return -1;
    http_collect(c);
  }
  return cp_interrupted ? -1 : 0;
}

int cp_client_poll(cp_client *c, long wait_ms, struct curl_waitfd *extra, unsigned n) {
  int running = 0;
  unsigned long before = c->events;
  if (curl_multi_perform(c->multi, &running) != CURLM_OK) return -1;
  http_collect(c);
  if (c->events != before) wait_ms = 0; /* progress already: its waiters run first */
  if (wait_ms > 0 || n > 0) {
    if (wait_ms > INT_MAX) wait_ms = INT_MAX;
    if (curl_multi_poll(c->multi, extra, n, (int)(wait_ms > 0 ? wait_ms : 0), NULL) != CURLM_OK)
      return -1;
    if (curl_multi_perform(c->multi, &running) != CURLM_OK) return -1;
    http_collect(c);
  }
  return 0;
}

int cp_ready_done(cp_xfer *x) { return x->done; }
int cp_ready_headers(cp_xfer *x) { return x->done || x->headers_done; }
int cp_ready_data(cp_xfer *x) { return x->done || x->body.len > 0; }

int cp_client_drive(cp_client *c, cp_xfer **xs, size_t n, cp_ready_fn ready,
                    int any, long timeout_ms) {
  long deadline = timeout_ms >= 0 ? cp_monotonic_ms() + timeout_ms : -1;
  long slice = 0; /* first round only performs, without waiting */
  for (;;) {
    if (cp_client_step(c, slice) != 0) return -1;
    size_t hit = 0;
    for (size_t i = 0; i < n; i++)
      if (ready(xs[i])) hit++;
    if ((any && hit > 0) || hit == n) return 0;
    slice = 100; /* wake up now and then to notice an interruption */
    if (deadline >= 0) {
      long left = deadline - cp_monotonic_ms();
      if (left <= 0) return 1;
      if (left < slice) slice = left;
    }
  }
}

/* ---- errors ----------------------------------------------------------- */

/* A receive error without a system error is curl rejecting what it read
 * (bad chunked framing): the peer answered, but not in HTTP. */
static int http_framing_error(const cp_xfer *x) {
  long os_errno = 0;
  if (x->result != CURLE_RECV_ERROR || !x->easy) return 0;
  if (curl_easy_getinfo(x->easy, CURLINFO_OS_ERRNO, &os_errno) != CURLE_OK) return 0;
  return os_errno == 0 && x->headers.len > 0;
}

const char *cp_curl_error_code(CURLcode rc) {
  switch (rc) {
  case CURLE_OK: return NULL;
  case CURLE_COULDNT_CONNECT:
  case CURLE_COULDNT_RESOLVE_HOST:
  case CURLE_COULDNT_RESOLVE_PROXY:
  case CURLE_GOT_NOTHING:
  case CURLE_SEND_ERROR:
  case CURLE_RECV_ERROR:
  case CURLE_PARTIAL_FILE: /* the connection closed mid-response: the daemon went away */
    return "unreachable";
  case CURLE_OPERATION_TIMEDOUT: return "timeout";
  case CURLE_ABORTED_BY_CALLBACK: return "interrupted";
  case CURLE_SSL_CONNECT_ERROR:
  case CURLE_PEER_FAILED_VERIFICATION:
  case CURLE_SSL_CERTPROBLEM:
  case CURLE_SSL_CIPHER:
  case CURLE_SSL_CACERT_BADFILE:
    return "tls";
  case CURLE_OUT_OF_MEMORY:
  case CURLE_WRITE_ERROR:
    return "out_of_memory";
  default: return "protocol";
  }
}

const char *cp_xfer_error_code(const cp_xfer *x) {
  if (x->too_large) return "too_large";
  if (http_framing_error(x)) return "protocol";
  /* curl 7.88 reports a response head line over its limit as out of memory */
  if (x->result == CURLE_OUT_OF_MEMORY && !x->headers_done) return "protocol";
  return cp_curl_error_code(x->result);
}

void cp_xfer_error_message(const cp_xfer *x, char *out, size_t outlen) {
  const char *code = cp_xfer_error_code(x);
  const char *detail = x->errbuf[0] ? x->errbuf : curl_easy_strerror(x->result);
  const char *host = x->client ? x->client->host : "the Docker daemon";
  char sys[256];
  long os_errno = 0;
  if (x->client && x->client->unix_path &&
      curl_easy_getinfo(x->easy, CURLINFO_OS_ERRNO, &os_errno) == CURLE_OK && os_errno) {
    /* curl speaks of "localhost port 80" for a socket file: say what failed */
    snprintf(sys, sizeof sys, "connecting to %s: %s", x->client->unix_path,
             strerror((int)os_errno));
    detail = sys;
  }
  if (x->result == CURLE_PARTIAL_FILE)
    snprintf(out, outlen, "cannot reach the Docker daemon at %s: the connection closed in the "
             "middle of a response (%s)", host, detail);
  else if (x->too_large)
    snprintf(out, outlen, "response from the Docker daemon at %s is larger than %zu bytes; "
             "request aborted", host, x->client ? x->client->max_body : (size_t)0);
  else if (x->result == CURLE_OUT_OF_MEMORY && !x->headers_done)
    snprintf(out, outlen, "Docker API transfer failed (%s): response head too large or "
             "malformed (curl: %s)", host, detail);
  else if (code && strcmp(code, "unreachable") == 0)
    snprintf(out, outlen, "cannot reach the Docker daemon at %s: %s", host, detail);
  else if (code && strcmp(code, "timeout") == 0)
    snprintf(out, outlen, "request to the Docker daemon at %s timed out: %s", host, detail);
  else if (code && strcmp(code, "interrupted") == 0)
    snprintf(out, outlen, "interrupted");
  else
    snprintf(out, outlen, "Docker API transfer failed (%s): %s", host, detail);
}

const char *cp_status_code(long status) {
  switch (status) {
  case 400: return "bad_request";
  case 401: return "unauthorized";
  case 403: return "forbidden";
  case 404: return "not_found";
  case 409: return "conflict";
  case 501: return "not_implemented";
  case 503: return "unavailable";
  default: return status >= 500 ? "server_error" : "bad_request";
  }
}

int cp_xfer_failure(const cp_xfer *x, char *msg, size_t msglen, const char **code, long *status) {
  *status = 0;
  if (x->result != CURLE_OK) {
    cp_xfer_error_message(x, msg, msglen);
    *code = cp_xfer_error_code(x);
    return -1;
  }
  if (x->status >= 400) {
    char text[900];
    cp_error_text(x->body.data, x->body.len, text, sizeof text);
    if (!text[0]) snprintf(text, sizeof text, "HTTP status %ld", x->status);
    snprintf(msg, msglen, "Docker daemon: %s", text);
    *code = cp_status_code(x->status);
    *status = x->status;
    return -1;
  }
  return 0;
}

/* Runs GET path to completion on c. Returns the finished transfer (the
 * caller frees it), or NULL with msg/code/status set. */
static cp_xfer *http_get(cp_client *c, const char *path, char *msg, size_t msglen,
                         const char **code, long *status) {
  *status = 0;
  cp_xfer *x = cp_xfer_new(c, "GET", path, NULL, 0, NULL, 0, c->timeout_ms, 0);
  if (!x) {
    snprintf(msg, msglen, "cannot create a transfer (out of memory)");
    *code = "out_of_memory";
    return NULL;
  }
  if (cp_client_drive(c, &x, 1, cp_ready_done, 0, -1) != 0 && !x->done) {
    snprintf(msg, msglen, "%s", cp_interrupted ? "interrupted" : "curl multi failure");
    *code = cp_interrupted ? "interrupted" : "protocol";
    cp_xfer_free(x);
    return NULL;
  }
  if (cp_xfer_failure(x, msg, msglen, code, status) != 0) {
    cp_xfer_free(x);
    return NULL;
  }
  return x;
}

int cp_client_negotiate(cp_client *c, char *msg, size_t msglen, const char **code,
                        long *status) {
  *status = 0;
  if (c->api_version[0]) return 0;
  cp_xfer *x = http_get(c, "/_ping", msg, msglen, code, status);
  if (!x) return -1;
  char ver[16] = "";
  cp_header_get(&x->headers, "Api-Version", ver, sizeof ver);
  cp_xfer_free(x);
  if (!ver[0] || cp_version_cmp(ver, "1.0") < 0) {
    /* very old daemons: ask /version */
    x = http_get(c, "/version", msg, msglen, code, status);
    if (!x) return -1;
    ver[0] = '\0';
    const char *k = x->body.data ? strstr(x->body.data, "\"ApiVersion\":\"") : NULL;
    if (k) {
      k += 14;
      size_t i = 0;
      while (k[i] && k[i] != '"' && i + 1 < sizeof ver) ver[i] = k[i], i++;
      ver[i] = '\0';
    }
    cp_xfer_free(x);
  }
  if (!ver[0]) {
    snprintf(msg, msglen, "Docker daemon did not report its API version");
    *code = "protocol";
    return -1;
  }
  if (cp_version_cmp(ver, CP_API_MAX) > 0) snprintf(ver, sizeof ver, "%s", CP_API_MAX);
  snprintf(c->api_version, sizeof c->api_version, "%s", ver);
  return 0;
}

/* Appends the UTF-8 encoding of code point u. */
static size_t http_utf8(char *o, unsigned long u) {
  if (u < 0x80) { o[0] = (char)u; return 1; }
  if (u < 0x800) {
    o[0] = (char)(0xC0 | (u >> 6));
    o[1] = (char)(0x80 | (u & 0x3F));
    return 2;
  }
  if (u < 0x10000) {
    o[0] = (char)(0xE0 | (u >> 12));
    o[1] = (char)(0x80 | ((u >> 6) & 0x3F));
    o[2] = (char)(0x80 | (u & 0x3F));
    return 3;
  }
  o[0] = (char)(0xF0 | (u >> 18));
  o[1] = (char)(0x80 | ((u >> 12) & 0x3F));
  o[2] = (char)(0x80 | ((u >> 6) & 0x3F));
  o[3] = (char)(0x80 | (u & 0x3F));
  return 4;
}

/* Decodes the JSON string starting after its opening quote. */
static int http_json_string(const char *p, const char *end, char *out, size_t outlen) {
  size_t o = 0;
  while (p < end && *p != '"') {
    char tmp[4];
    size_t n = 1;
    if (*p == '\\' && p + 1 < end) {
      p++;
      switch (*p) {
      case 'n': tmp[0] = '\n'; break;
      case 't': tmp[0] = '\t'; break;
      case 'r': tmp[0] = '\r'; break;
      case 'b': tmp[0] = '\b'; break;
      case 'f': tmp[0] = '\f'; break;
      case 'u': {
        if (end - p < 5) return -1;
        char hex[5] = {p[1], p[2], p[3], p[4], 0};
        unsigned long u = strtoul(hex, NULL, 16);
        p += 4;
        if (u >= 0xD800 && u < 0xDC00 && end - p > 6 && p[1] == '\\' && p[2] == 'u') {
          char lo[5] = {p[3], p[4], p[5], p[6], 0};
          unsigned long l = strtoul(lo, NULL, 16);
          if (l >= 0xDC00 && l < 0xE000) {
            u = 0x10000 + ((u - 0xD800) << 10) + (l - 0xDC00);
            p += 6;
          }
        }
        n = http_utf8(tmp, u);
        break;
      }
      default: tmp[0] = *p; break;
      }
    } else {
      tmp[0] = *p;
    }
    p++;
    if (o + n >= outlen) break;
    memcpy(out + o, tmp, n);
    o += n;
  }
  out[o] = '\0';
  return 0;
}

void cp_error_text(const char *body, size_t len, char *out, size_t outlen) {
  out[0] = '\0';
  if (!body || len == 0) return;
  const char *end = body + len;
  const char *k = NULL;
  for (const char *p = body; p + 9 <= end; p++) {
    if (memcmp(p, "\"message\"", 9) == 0) {
      k = p + 9;
      break;
    }
  }
  if (k) {
    while (k < end && (isspace((unsigned char)*k) || *k == ':')) k++;
    if (k < end && *k == '"' && http_json_string(k + 1, end, out, outlen) == 0) return;
  }
  while (len && isspace((unsigned char)*body)) body++, len--;
  while (len && isspace((unsigned char)body[len - 1])) len--;
  if (len >= outlen) len = outlen - 1;
  memcpy(out, body, len);
  out[len] = '\0';
}

int cp_header_get(const cp_buf *h, const char *name, char *out, size_t outlen) {
  size_t nl = strlen(name);
  const char *p = h->data, *end = h->data + h->len;
  while (p && p < end) {
    const char *eol = memchr(p, '\n', (size_t)(end - p));
    if (!eol) eol = end;
    if ((size_t)(eol - p) > nl && p[nl] == ':' && strncasecmp(p, name, nl) == 0) {
      const char *v = p + nl + 1, *ve = eol;
      while (v < ve && (*v == ' ' || *v == '\t')) v++;
      while (ve > v && (ve[-1] == '\r' || ve[-1] == ' ')) ve--;
      size_t n = (size_t)(ve - v);
      if (n >= outlen) n = outlen - 1;
      memcpy(out, v, n);
      out[n] = '\0';
      return 1;
    }
    p = eol + 1;
  }
  return 0;
}

int cp_version_cmp(const char *a, const char *b) {
  long amaj = strtol(a, (char **)&a, 10), bmaj = strtol(b, (char **)&b, 10);
  if (amaj != bmaj) return amaj < bmaj ? -1 : 1;
  long amin = *a == '.' ? strtol(a + 1, NULL, 10) : 0;
  long bmin = *b == '.' ? strtol(b + 1, NULL, 10) : 0;
  return amin < bmin ? -1 : amin > bmin ? 1 : 0;
}
