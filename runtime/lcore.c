/*
 * lcore.c - Lua bindings of the C core: require("ctrlplane.docker.core").
 *
 *   core.client(opts)                 -> client
 *   client:request(method, path, opts)-> {status, headers, body} | nil, msg, code, status
 *   client:stream(method, path, opts) -> stream | nil, msg, code, status
 *   client:batch(reqs, opts)          -> {result...} (each a response or {error, code, status})
 *   client:wait(streams, timeout)     -> {index...} of streams with data or finished
 *   client:api_version()              -> "1.41" | nil, msg, code
 *   client:stats()                    -> {connections, transfers, api_version}
 *   client:host()                     -> the daemon URL the client was made for
 *   client:close()                    -> closes the client and its streams
 *   stream:read([timeout])            -> chunk | nil (end) | false (timeout) | nil, msg, code
 *   stream:status(), stream:headers(), stream:close()
 *   stream:closed()                   -> whether the stream was closed
 *   client:events()                   -> progress counter of its transfers (for the scheduler)
 *   core.task_mark(co, on)            -> marks coroutine co as a scheduler task (or not)
 *   core.in_task()                    -> whether the caller runs in a scheduler task
 *   core.WAIT                         -> the first value a task yields at a wait
 *   core.loop_step(clients, timeout, fds) -> {[fd] = true}: one turn of the event loop
 *   core.wait_ready(obj, mode)        -> whether a task's transfer wait (obj and mode, the
 *                                        last two values it yielded) is over
 *   core.wait_fd(fd, "r"|"w"|"rw", timeout) -> true | false (timeout) | nil, msg, code
 *
 * Signals, clocks, sleep and fd helpers are in lsys.c, and the other
 * bindings (demux, stats, cgroup, raw, lock) in their l*.c files; this
 * file's luaopen assembles the one module from all of them.
 *
 * Inside a scheduler task (a coroutine marked with core.task_mark) request,
 * batch, stream, read, wait, sleep and wait_fd yield to the scheduler at
 * their wait instead of blocking (see lcore.h); elsewhere they block.
 *
 * Failures of the daemon or the transport return nil, message, code with a
 * stable code; wrong argument types raise. Transport codes: unreachable
 * (cannot connect, or the connection dropped, even mid-response), timeout,
 * protocol (the peer answered, but not in well-formed HTTP: broken
 * chunking, bad status line, garbage), too_large (a plain response over opts.max_body bytes, default
 * 256 MiB), tls, interrupted; HTTP statuses map to not_found, conflict, ...
 */
#include "http.h"
#include "clock.h"
#include "lcore.h"

#include <lauxlib.h>
#include <lua.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <errno.h>
#include <poll.h>

#define CLIENT_MT "ctrlplane.docker.client"
#define STREAM_MT "ctrlplane.docker.stream"
#define ERRLEN 1024

typedef struct lclient {
  cp_client *c; /* NULL once closed */
} lclient;

typedef struct lstream {
  cp_xfer *x; /* NULL once closed */
} lstream;

static lclient *lc_check(lua_State *L, int idx) {
  lclient *lc = luaL_checkudata(L, idx, CLIENT_MT);
  if (!lc->c) luaL_error(L, "attempt to use a closed Docker client");
  return lc;
}

cp_client *cp_lua_client(lua_State *L, int idx) {
  return lc_check(L, idx)->c;
}

static lstream *ls_check(lua_State *L, int idx) {
  return luaL_checkudata(L, idx, STREAM_MT);
}

/* ---- option helpers ---------------------------------------------------- */

static const char *opt_string(lua_State *L, int t, const char *k) {
  if (lua_type(L, t) != LUA_TTABLE) return NULL;
  int ty = lua_getfield(L, t, k);
  const char *s = NULL;
  if (ty == LUA_TSTRING) s = lua_tostring(L, -1);
  else if (ty != LUA_TNIL) luaL_error(L, "option '%s' must be a string", k);
  lua_pop(L, 1); /* the string stays alive in the options table */
  return s;
}

static int opt_bool(lua_State *L, int t, const char *k) {
  if (lua_type(L, t) != LUA_TTABLE) return 0;
  int ty = lua_getfield(L, t, k);
  if (ty != LUA_TNIL && ty != LUA_TBOOLEAN) luaL_error(L, "option '%s' must be a boolean", k);
  int v = lua_toboolean(L, -1);
  lua_pop(L, 1);
  return v;
}

/* seconds (a number) -> milliseconds; dflt when absent */
static long opt_ms(lua_State *L, int t, const char *k, long dflt) {
  if (lua_type(L, t) != LUA_TTABLE) return dflt;
  int ty = lua_getfield(L, t, k);
  long v = dflt;
  if (ty == LUA_TNUMBER) {
    lua_Number n = lua_tonumber(L, -1);
    if (n < 0) luaL_error(L, "option '%s' must not be negative", k);
    v = (long)(n * 1000.0);
  } else if (ty != LUA_TNIL) {
    luaL_error(L, "option '%s' must be a number of seconds", k);
  }
  lua_pop(L, 1);
  return v;
}

/* ---- results ----------------------------------------------------------- */

int cp_lua_fail(lua_State *L, const char *msg, const char *code, long status) {
  lua_pushnil(L);
  lua_pushstring(L, msg);
  lua_pushstring(L, code);
  if (status > 0) {
    lua_pushinteger(L, status);
    return 4;
  }
  return 3;
}

/* Pushes nil, msg, code[, status] for a failed or >= 400 transfer, or
 * returns 0 when it succeeded. */
static int push_xfer_fail(lua_State *L, cp_xfer *x) {
  char msg[ERRLEN];
  const char *code = NULL;
  long status = 0;
  if (cp_xfer_failure(x, msg, sizeof msg, &code, &status) == 0) return 0;
  return cp_lua_fail(L, msg, code, status);
}

static void push_headers(lua_State *L, const cp_buf *h) {
  lua_newtable(L);
  const char *p = h->data, *end = h->data + h->len;
  while (p && p < end) {
    const char *eol = memchr(p, '\n', (size_t)(end - p));
    if (!eol) eol = end;
    const char *colon = memchr(p, ':', (size_t)(eol - p));
    if (colon && colon > p) {
      luaL_Buffer b;
      luaL_buffinit(L, &b);
      for (const char *k = p; k < colon; k++)
        luaL_addchar(&b, (char)((*k >= 'A' && *k <= 'Z') ? *k + 32 : *k));
      luaL_pushresult(&b);
      const char *v = colon + 1, *ve = eol;
      while (v < ve && (*v == ' ' || *v == '\t')) v++;
      while (ve > v && (ve[-1] == '\r' || ve[-1] == ' ')) ve--;
      lua_pushlstring(L, v, (size_t)(ve - v));
      lua_rawset(L, -3);
    }
    p = eol + 1;
  }
}

static void push_response(lua_State *L, cp_xfer *x) {
  lua_createtable(L, 0, 3);
  lua_pushinteger(L, x->status);
  lua_setfield(L, -2, "status");
  push_headers(L, &x->headers);
  lua_setfield(L, -2, "headers");
  lua_pushlstring(L, x->body.data ? x->body.data : "", x->body.len);
  lua_setfield(L, -2, "body");
}


/* ---- cooperative waits ---------------------------------------------------- */

static const char TASKS_KEY = 't'; /* registry: weak-keyed {thread = true} */
static const char WAIT_KEY = 'w';  /* core.WAIT: first value of every wait yield */

int cp_task_active(lua_State *L) {
  if (!lua_isyieldable(L)) return 0; /* e.g. inside a C callback: block as before */
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &TASKS_KEY) != LUA_TTABLE) {
    lua_pop(L, 1);
    return 0;
  }
  lua_pushthread(L);
  int on = lua_rawget(L, -2) != LUA_TNIL;
  lua_pop(L, 2);
  return on;
}

/* Yields WAIT, client, deadline, fd, events, obj, mode: obj and mode (see
 * l_wait_ready) let the scheduler check the transfers the task waits for
 * without resuming it. */
static int task_yield(lua_State *L, int client_idx, double deadline, int fd, int events,
                      int obj_idx, const char *mode, lua_KContext ctx, lua_KFunction k) {
  lua_pushlightuserdata(L, (void *)&WAIT_KEY);
  if (client_idx) lua_pushvalue(L, client_idx);
  else lua_pushnil(L);
  if (deadline >= 0) lua_pushnumber(L, deadline);
  else lua_pushnil(L);
  if (fd >= 0) lua_pushinteger(L, fd);
  else lua_pushnil(L);
  lua_pushinteger(L, events);
  if (obj_idx) lua_pushvalue(L, obj_idx);
  else lua_pushnil(L);
  if (mode) lua_pushstring(L, mode);
  else lua_pushnil(L);
  return lua_yieldk(L, 7, ctx, k);
}

int cp_task_wait(lua_State *L, int client_idx, double deadline, int fd, int events,
                 lua_KContext ctx, lua_KFunction k) {
  return task_yield(L, client_idx, deadline, fd, events, 0, NULL, ctx, k);
}

/* A wait on the client at client_idx for the stream(s) at obj_idx. */
static int task_wait_on(lua_State *L, int client_idx, double deadline, int obj_idx,
                        const char *mode, lua_KContext ctx, lua_KFunction k) {
  return task_yield(L, client_idx, deadline, -1, 0, obj_idx, mode, ctx, k);
}

int cp_task_cancelled(lua_State *L, int base) {
  return lua_gettop(L) > base && lua_type(L, base + 1) == LUA_TSTRING &&
         strcmp(lua_tostring(L, base + 1), "cancel") == 0;
}

int cp_task_fail_cancel(lua_State *L, int base) {
  const char *code = lua_gettop(L) >= base + 2 ? lua_tostring(L, base + 2) : NULL;
  const char *msg = lua_gettop(L) >= base + 3 ? lua_tostring(L, base + 3) : NULL;
  lua_pushnil(L);
  lua_pushstring(L, msg ? msg : "cancelled");
  lua_pushstring(L, code ? code : "cancelled");
  return 3;
}

/* core.task_mark(co, on): co's blocking calls yield to the scheduler */
static int l_task_mark(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTHREAD);
  lua_rawgetp(L, LUA_REGISTRYINDEX, &TASKS_KEY);
  lua_pushvalue(L, 1);
  if (lua_toboolean(L, 2)) lua_pushboolean(L, 1);
  else lua_pushnil(L);
  lua_rawset(L, -3);
  return 0;
}

static int l_in_task(lua_State *L) {
  lua_pushboolean(L, cp_task_active(L));
  return 1;
}

static int fd_events(lua_State *L, int idx) {
  const char *e = luaL_optstring(L, idx, "r");
  int ev = 0;
  if (strchr(e, 'r')) ev |= POLLIN;
  if (strchr(e, 'w')) ev |= POLLOUT;
  if (!ev) luaL_argerror(L, idx, "expected \"r\", \"w\" or \"rw\"");
  return ev;
}

static int fd_ready(int fd, int events) {
  struct pollfd pfd = {fd, (short)events, 0};
  return poll(&pfd, 1, 0) > 0;
}

/* stack: 1 fd, 2 events, 3 timeout, 4 deadline */
static int k_wait_fd(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  if (cp_task_cancelled(L, 4)) return cp_task_fail_cancel(L, 4);
  lua_settop(L, 4);
  int fd = (int)lua_tointeger(L, 1), ev = (int)ctx;
  double deadline = lua_tonumber(L, 4);
  if (fd_ready(fd, ev)) {
    lua_pushboolean(L, 1);
    return 1;
  }
  if (deadline >= 0 && cp_monotonic() >= deadline) {
    lua_pushboolean(L, 0);
    return 1;
  }
  return cp_task_wait(L, 0, deadline, fd, ev, ctx, k_wait_fd);
}

/* core.wait_fd(fd, events, timeout_seconds) -> true when fd is ready (a
 * read or write will not block), false at the timeout (nil/negative: none).
 * The generic wait for descriptors outside curl (exec's hijacked socket,
 * stdin of the server). */
static int l_wait_fd(lua_State *L) {
  int fd = (int)luaL_checkinteger(L, 1);
  int ev = fd_events(L, 2);
  lua_Number t = luaL_optnumber(L, 3, -1);
  lua_settop(L, 3);
  if (cp_task_active(L) && t != 0) {
    lua_pushnumber(L, t < 0 ? -1 : cp_monotonic() + t);
    return k_wait_fd(L, 0, ev);
  }
  struct pollfd pfd = {fd, (short)ev, 0};
  int r;
  do {
    r = poll(&pfd, 1, t < 0 ? -1 : (int)(t * 1000.0));
  } while (r < 0 && errno == EINTR && !cp_interrupted);
  if (r < 0 && cp_interrupted) return cp_lua_fail(L, "interrupted", "interrupted", 0);
  lua_pushboolean(L, r > 0);
  return 1;
}

/* core.loop_step(clients, timeout, fds) -> {[fd] = true} of the ready fds.
 * One turn of the scheduler's event loop: drives every client's transfers
 * and waits up to timeout seconds for any of their sockets or of fds
 * ({[fd] = "r" | "w" | "rw"}) to be ready. */
static int l_loop_step(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_Number t = luaL_checknumber(L, 2);
  long wait_ms = t <= 0 ? 0 : t > 3600 ? 3600000L : (long)(t * 1000.0 + 0.5);
  unsigned nfd = 0;
  if (!lua_isnoneornil(L, 3)) {
    luaL_checktype(L, 3, LUA_TTABLE);
    lua_pushnil(L);
    while (lua_next(L, 3)) {
      nfd++;
      lua_pop(L, 1);
    }
  }
  struct curl_waitfd *wfd = lua_newuserdatauv(L, (nfd ? nfd : 1) * sizeof *wfd, 0);
  unsigned i = 0;
  if (nfd) {
    lua_pushnil(L);
    while (lua_next(L, 3)) {
      wfd[i].fd = (curl_socket_t)luaL_checkinteger(L, -2);
      int ev = fd_events(L, lua_gettop(L));
      wfd[i].events = (short)((ev & POLLIN ? CURL_WAIT_POLLIN : 0) |
                              (ev & POLLOUT ? CURL_WAIT_POLLOUT : 0));
      wfd[i].revents = 0;
      i++;
      lua_pop(L, 1);
    }
  }
  lua_Integer nc = (lua_Integer)lua_rawlen(L, 1);
  if (nc == 0) {
    struct pollfd *pfd = lua_newuserdatauv(L, (nfd ? nfd : 1) * sizeof *pfd, 0);
    for (unsigned j = 0; j < nfd; j++) {
      pfd[j].fd = (int)wfd[j].fd;
      pfd[j].events = (short)((wfd[j].events & CURL_WAIT_POLLIN ? POLLIN : 0) |
                              (wfd[j].events & CURL_WAIT_POLLOUT ? POLLOUT : 0));
      pfd[j].revents = 0;
    }
    if (poll(pfd, nfd, (int)wait_ms) > 0)
      for (unsigned j = 0; j < nfd; j++) wfd[j].revents = pfd[j].revents ? 1 : 0;
    lua_pop(L, 1);
  } else {
    if (nc > 1 && wait_ms > 10) wait_ms = 10; /* one multi waits; the others are polled */
    for (lua_Integer j = 1; j <= nc; j++) {
      lua_rawgeti(L, 1, j);
      lclient *lc = luaL_checkudata(L, -1, CLIENT_MT);
      lua_pop(L, 1);
      if (!lc->c) continue;
      if (cp_client_poll(lc->c, j == 1 ? wait_ms : 0, j == 1 ? wfd : NULL, j == 1 ? nfd : 0) != 0)
        return cp_lua_fail(L, "curl multi failure", "protocol", 0);
    }
  }
  lua_newtable(L);
  for (unsigned j = 0; j < nfd; j++) {
    if (wfd[j].revents) {
      lua_pushboolean(L, 1);
      lua_rawseti(L, -2, (lua_Integer)wfd[j].fd);
    }
  }
  return 1;
}

/* ---- paths and negotiation ---------------------------------------------- */

/* The value at idx as query text; numbers are formatted into num. */
static const char *query_text(lua_State *L, int idx, const char *key, char *num,
                              size_t numlen, size_t *len) {
  const char *v;
  switch (lua_type(L, idx)) {
  case LUA_TSTRING: return lua_tolstring(L, idx, len); /* kept alive by the table */
  case LUA_TBOOLEAN: v = lua_toboolean(L, idx) ? "true" : "false"; break;
  case LUA_TNUMBER:
    if (lua_isinteger(L, idx))
      snprintf(num, numlen, LUA_INTEGER_FMT, lua_tointeger(L, idx));
    else
      snprintf(num, numlen, "%.17g", lua_tonumber(L, idx));
    v = num;
    break;
  default:
    luaL_error(L, "query value for '%s' must be a string, number, boolean or list", key);
    return NULL;
  }
  *len = strlen(v);
  return v;
}

/* Adds s percent-encoded (RFC 3986: only unreserved characters kept). */
static void add_encoded(luaL_Buffer *b, const char *s, size_t n) {
  static const char hex[] = "0123456789ABCDEF";
  for (size_t i = 0; i < n; i++) {
    unsigned char ch = (unsigned char)s[i];
    if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
        ch == '-' || ch == '_' || ch == '.' || ch == '~') {
      luaL_addchar(b, (char)ch);
    } else {
      luaL_addchar(b, '%');
      luaL_addchar(b, hex[ch >> 4]);
      luaL_addchar(b, hex[ch & 15]);
    }
  }
}

static void add_pair(luaL_Buffer *b, const char *key, const char *v, size_t vlen, int *first) {
  luaL_addchar(b, *first ? '?' : '&');
  *first = 0;
  add_encoded(b, key, strlen(key));
  luaL_addchar(b, '=');
  add_encoded(b, v, vlen);
}

static int key_less(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Pushes "[/vX.Y]path[?query]" for the options table at opts. Query keys
 * are sorted so URLs are deterministic; a list value repeats its key. */
static void push_url_path(lua_State *L, lclient *lc, const char *path, int opts, int raw) {
  if (path[0] != '/') luaL_error(L, "path must start with '/' (got '%s')", path);
  int base = lua_gettop(L);
  int q = 0;
  size_t nkeys = 0;
  const char **keys = NULL;
  if (lua_type(L, opts) == LUA_TTABLE) {
    int qt = lua_getfield(L, opts, "query");
    if (qt == LUA_TTABLE) {
      q = lua_gettop(L);
      lua_pushnil(L);
      while (lua_next(L, q)) {
        if (lua_type(L, -2) != LUA_TSTRING) luaL_error(L, "query keys must be strings");
        nkeys++;
        lua_pop(L, 1);
      }
      keys = lua_newuserdatauv(L, (nkeys ? nkeys : 1) * sizeof *keys, 0);
      size_t i = 0;
      lua_pushnil(L);
      while (lua_next(L, q)) {
        keys[i++] = lua_tostring(L, -2);
        lua_pop(L, 1);
      }
      qsort(keys, nkeys, sizeof *keys, key_less);
    } else if (qt != LUA_TNIL) {
      luaL_error(L, "option 'query' must be a table");
    }
  }
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  if (!raw) {
    luaL_addstring(&b, "/v");
    luaL_addstring(&b, lc->c->api_version);
  }
  luaL_addstring(&b, path);
  int first = 1;
  char num[64];
  for (size_t i = 0; i < nkeys; i++) {
    size_t len;
    const char *v;
    /* stack use stays balanced between buffer operations */
    if (lua_getfield(L, q, keys[i]) == LUA_TTABLE) {
      lua_Integer n = (lua_Integer)lua_rawlen(L, -1);
      lua_pop(L, 1);
      for (lua_Integer j = 1; j <= n; j++) {
        lua_getfield(L, q, keys[i]);
        lua_rawgeti(L, -1, j);
        v = query_text(L, -1, keys[i], num, sizeof num, &len);
        lua_pop(L, 2);
        add_pair(&b, keys[i], v, len, &first);
      }
    } else {
      v = query_text(L, -1, keys[i], num, sizeof num, &len);
      lua_pop(L, 1);
      add_pair(&b, keys[i], v, len, &first);
    }
  }
  luaL_pushresult(&b);
  if (lua_gettop(L) > base + 1) { /* drop the query table and key list */
    lua_replace(L, base + 1);
    lua_settop(L, base + 1);
  }
}

static lstream *new_stream_ud(lua_State *L) {
  lstream *ls = lua_newuserdatauv(L, sizeof *ls, 1);
  ls->x = NULL;
  luaL_setmetatable(L, STREAM_MT);
  return ls;
}

/* Runs one plain request to completion; leaves the stream userdata holding
 * the transfer on the stack. Returns 0, or the number of failure values
 * pushed (a transfer failure; HTTP status is left to the caller). */
static int run_plain(lua_State *L, lclient *lc, const char *method, const char *url,
                     const char *body, size_t blen, const char *ctype, long timeout_ms) {
  lstream *ls = new_stream_ud(L);
  ls->x = cp_xfer_new(lc->c, method, url, body, blen, ctype, 0, timeout_ms, 0);
  if (!ls->x) return luaL_error(L, "cannot create a transfer (out of memory)");
  if (cp_client_drive(lc->c, &ls->x, 1, cp_ready_done, 0, -1) != 0 && !ls->x->done)
    return cp_lua_fail(L, cp_interrupted ? "interrupted" : "curl multi failure",
                     cp_interrupted ? "interrupted" : "protocol", 0);
  return 0;
}

static void close_stream(lstream *ls) {
  cp_xfer_free(ls->x);
  ls->x = NULL;
}

/* Makes sure the client has an API version (cp_client_negotiate). Returns
 * 0, or pushes nil, msg, code[, status] and returns their count. */
static int negotiate(lua_State *L, lclient *lc) {
  char msg[ERRLEN];
  const char *code = NULL;
  long status = 0;
  if (cp_client_negotiate(lc->c, msg, sizeof msg, &code, &status) == 0) return 0;
  return cp_lua_fail(L, msg, code, status);
}

/* core.wait_ready(obj, mode) -> whether a task's transfer wait is over:
 * obj a stream ("done": finished; "headers": the response head is in;
 * "data": bytes buffered or finished) or a list of streams ("any": one has
 * data or finished; "all": all finished). A closed stream counts as ready. */
static int stream_ready(lua_State *L, int idx, int what) {
  lstream *ls = luaL_testudata(L, idx, STREAM_MT);
  if (!ls || !ls->x) return 1;
  switch (what) {
  case 'd': return ls->x->done;
  case 'h': return cp_ready_headers(ls->x);
  default: return cp_ready_data(ls->x);
  }
}

static int l_wait_ready(lua_State *L) {
  const char *mode = luaL_checkstring(L, 2);
  int r;
  if (strcmp(mode, "any") == 0 || strcmp(mode, "all") == 0) {
    luaL_checktype(L, 1, LUA_TTABLE);
    int all = mode[1] == 'l';
    lua_Integer n = (lua_Integer)lua_rawlen(L, 1);
    r = all ? 1 : 0;
    for (lua_Integer i = 1; i <= n; i++) {
      lua_rawgeti(L, 1, i);
      int one = stream_ready(L, -1, all ? 'd' : 'a');
      lua_pop(L, 1);
      if (all && !one) {
        r = 0;
        break;
      }
      if (!all && one) {
        r = 1;
        break;
      }
    }
    if (n == 0) r = 1;
  } else if (strcmp(mode, "done") == 0 || strcmp(mode, "headers") == 0 ||
             strcmp(mode, "data") == 0) {
    r = stream_ready(L, 1, mode[1] == 'o' ? 'd' : mode[0] == 'h' ? 'h' : 'a'); /* done, headers, data */
  } else {
    return luaL_argerror(L, 2, "expected done, headers, data, any or all");
  }
  lua_pushboolean(L, r);
  return 1;
}

/* ---- client methods ----------------------------------------------------- */

static int l_client(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  cp_client_opts o = {0};
  o.host = opt_string(L, 1, "host");
  o.tls = opt_bool(L, 1, "tls");
  o.tls_verify = opt_bool(L, 1, "tls_verify");
  o.ca = opt_string(L, 1, "ca");
  o.cert = opt_string(L, 1, "cert");
  o.key = opt_string(L, 1, "key");
  o.connect_timeout_ms = opt_ms(L, 1, "connect_timeout", 2000);
  o.timeout_ms = opt_ms(L, 1, "timeout", 60000);
  o.api_version = opt_string(L, 1, "api_version");
  if (lua_type(L, 1) == LUA_TTABLE) {
    int ty = lua_getfield(L, 1, "max_body");
    if (ty == LUA_TNUMBER) {
      lua_Integer mb = lua_tointeger(L, -1);
      if (mb <= 0) return luaL_error(L, "option 'max_body' must be a positive integer");
      o.max_body = (size_t)mb;
    } else if (ty != LUA_TNIL) {
      return luaL_error(L, "option 'max_body' must be a number of bytes");
    }
    lua_pop(L, 1);
  }
  lclient *lc = lua_newuserdatauv(L, sizeof *lc, 0);
  lc->c = NULL; /* closed until the resource exists */
  luaL_setmetatable(L, CLIENT_MT);
  char err[512];
  lc->c = cp_client_new(&o, err, sizeof err);
  if (!lc->c) return cp_lua_fail(L, err, "bad_request", 0);
  return 1;
}

static int l_client_close(lua_State *L) {
  lclient *lc = luaL_checkudata(L, 1, CLIENT_MT);
  cp_client_free(lc->c);
  lc->c = NULL;
  return 0;
}

static const char *body_opt(lua_State *L, int opts, size_t *len, const char **ctype) {
  *len = 0;
  *ctype = NULL;
  if (lua_type(L, opts) != LUA_TTABLE) return NULL;
  int t = lua_getfield(L, opts, "body");
  const char *body = NULL;
  if (t == LUA_TSTRING) {
    body = lua_tolstring(L, -1, len);
    *ctype = "application/json";
  } else if (t != LUA_TNIL) {
    luaL_error(L, "option 'body' must be a string (encode JSON first)");
  }
  lua_pop(L, 1);
  const char *ct = opt_string(L, opts, "content_type");
  if (ct) *ctype = ct;
  return body;
}

static const char *check_method(lua_State *L, int idx) {
  const char *m = luaL_checkstring(L, idx);
  static const char *const ok[] = {"GET", "POST", "PUT", "DELETE", "HEAD", NULL};
  for (int i = 0; ok[i]; i++)
    if (strcmp(m, ok[i]) == 0) return m;
  luaL_error(L, "unsupported HTTP method '%s'", m);
  return NULL;
}

static int finish_request(lua_State *L, lstream *ls) {
  int n = push_xfer_fail(L, ls->x);
  if (!n) {
    push_response(L, ls->x);
    n = 1;
  }
  close_stream(ls);
  return n;
}

/* In a task: stack 1..5 as l_request, 6 the transfer; waits for its end. */
static int k_request(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  lstream *ls = lua_touserdata(L, 6);
  if (cp_task_cancelled(L, 6)) {
    close_stream(ls); /* aborts the transfer */
    return cp_task_fail_cancel(L, 6);
  }
  lua_settop(L, 6);
  if (!ls->x->done) return task_wait_on(L, 1, -1, 6, "done", ctx, k_request);
  return finish_request(L, ls);
}

static int l_request(lua_State *L) {
  lclient *lc = lc_check(L, 1);
  const char *method = check_method(L, 2);
  const char *path = luaL_checkstring(L, 3);
  if (!lua_isnoneornil(L, 4)) luaL_checktype(L, 4, LUA_TTABLE);
  lua_settop(L, 4);
  int raw = opt_bool(L, 4, "raw");
  long timeout = opt_ms(L, 4, "timeout", lc->c->timeout_ms);
  size_t blen;
  const char *ctype;
  const char *body = body_opt(L, 4, &blen, &ctype);
  if (!raw) {
    int n = negotiate(L, lc);
    if (n) return n;
  }
  push_url_path(L, lc, path, 4, raw); /* 5 */
  if (cp_task_active(L)) {
    lstream *ls = new_stream_ud(L); /* 6 */
    ls->x = cp_xfer_new(lc->c, method, lua_tostring(L, 5), body, blen, ctype, 0, timeout, 0);
    if (!ls->x) return luaL_error(L, "cannot create a transfer (out of memory)");
    return k_request(L, 0, 0);
  }
  int n = run_plain(L, lc, method, lua_tostring(L, 5), body, blen, ctype, timeout);
  if (n) return n;
  return finish_request(L, lua_touserdata(L, 6));
}

static int finish_stream(lua_State *L, lstream *ls) {
  if (ls->x->status >= 400 || (ls->x->done && ls->x->result != CURLE_OK)) {
    int n = push_xfer_fail(L, ls->x);
    close_stream(ls);
    if (n) return n;
    return cp_lua_fail(L, "stream failed", "protocol", 0);
  }
  lua_settop(L, 6);
  return 1;
}

/* In a task: 6 the stream, 7 the deadline; stage 0 waits for the response
 * head, stage 1 for the rest of an error body. */
static int k_stream(lua_State *L, int status, lua_KContext stage) {
  (void)status;
  lstream *ls = lua_touserdata(L, 6);
  if (cp_task_cancelled(L, 7)) {
    close_stream(ls);
    return cp_task_fail_cancel(L, 7);
  }
  lua_settop(L, 7);
  double deadline = lua_tonumber(L, 7);
  int late = deadline >= 0 && cp_monotonic() >= deadline;
  if (stage == 0) {
    if (!cp_ready_headers(ls->x)) {
      if (late) {
        close_stream(ls);
        return cp_lua_fail(L, "timed out waiting for the Docker daemon to answer", "timeout", 0);
      }
      return task_wait_on(L, 1, deadline, 6, "headers", 0, k_stream);
    }
    if (ls->x->status >= 400 && !ls->x->done) {
      cp_client *c = cp_lua_client(L, 1);
      deadline = c->timeout_ms > 0 ? cp_monotonic() + (double)c->timeout_ms / 1000.0 : -1;
      lua_pushnumber(L, deadline);
      lua_replace(L, 7);
      stage = 1;
      late = 0;
    }
  }
  if (stage == 1 && !ls->x->done && !late)
    return task_wait_on(L, 1, deadline, 6, "done", 1, k_stream);
  return finish_stream(L, ls);
}

static int l_stream(lua_State *L) {
  lclient *lc = lc_check(L, 1);
  const char *method = check_method(L, 2);
  const char *path = luaL_checkstring(L, 3);
  if (!lua_isnoneornil(L, 4)) luaL_checktype(L, 4, LUA_TTABLE);
  lua_settop(L, 4);
  int raw = opt_bool(L, 4, "raw");
  long timeout = opt_ms(L, 4, "timeout", 0);
  long idle = opt_ms(L, 4, "idle_timeout", 0);
  size_t blen;
  const char *ctype;
  const char *body = body_opt(L, 4, &blen, &ctype);
  if (!raw) {
    int n = negotiate(L, lc);
    if (n) return n;
  }
  push_url_path(L, lc, path, 4, raw); /* 5 */
  lstream *ls = new_stream_ud(L);     /* 6 */
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, 6, 1); /* the stream keeps its client alive */
  ls->x = cp_xfer_new(lc->c, method, lua_tostring(L, 5), body, blen, ctype, 1, timeout,
                      idle > 0 ? (idle + 999) / 1000 : 0);
  if (!ls->x) return luaL_error(L, "cannot create a transfer (out of memory)");
  /* wait for the response head, bounded like a plain request */
  long head_wait = lc->c->timeout_ms > 0 ? lc->c->timeout_ms : -1;
  if (cp_task_active(L)) {
    lua_pushnumber(L, head_wait < 0 ? -1 : cp_monotonic() + (double)head_wait / 1000.0); /* 7 */
    return k_stream(L, 0, 0);
  }
  int r = cp_client_drive(lc->c, &ls->x, 1, cp_ready_headers, 0, head_wait);
  if (r != 0) {
    close_stream(ls);
    return r < 0 ? cp_lua_fail(L, "interrupted", "interrupted", 0)
                 : cp_lua_fail(L, "timed out waiting for the Docker daemon to answer", "timeout", 0);
  }
  if (ls->x->status >= 400 && !ls->x->done) /* error bodies are short: read it all */
    cp_client_drive(lc->c, &ls->x, 1, cp_ready_done, 0, lc->c->timeout_ms);
  return finish_stream(L, ls);
}

static int batch_results(lua_State *L, lua_Integer n, cp_xfer **xs, const char *msg,
                         const char *code);

/* In a task: 1 client, 4 streams, 5 xs; ctx the count. */
static int k_batch(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  lua_Integer n = (lua_Integer)ctx;
  cp_xfer **xs = lua_touserdata(L, 5);
  if (cp_task_cancelled(L, 5)) {
    char code[32], msg[256];
    snprintf(code, sizeof code, "%s", lua_gettop(L) >= 6 && lua_tostring(L, 6) ? lua_tostring(L, 6) : "cancelled");
    snprintf(msg, sizeof msg, "%s", lua_gettop(L) >= 7 && lua_tostring(L, 7) ? lua_tostring(L, 7) : "cancelled");
    lua_settop(L, 5);
    return batch_results(L, n, xs, msg, code);
  }
  lua_settop(L, 5);
  for (lua_Integer i = 0; i < n; i++)
    if (!xs[i]->done) return task_wait_on(L, 1, -1, 4, "all", ctx, k_batch);
  return batch_results(L, n, xs, "timeout", "timeout");
}

static int l_batch(lua_State *L) {
  lclient *lc = lc_check(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  if (!lua_isnoneornil(L, 3)) luaL_checktype(L, 3, LUA_TTABLE);
  lua_settop(L, 3);
  long timeout = opt_ms(L, 3, "timeout", lc->c->timeout_ms);
  lua_Integer n = (lua_Integer)lua_rawlen(L, 2);
  int n0 = negotiate(L, lc);
  if (n0) return n0;
  /* 4: table of stream userdata holding the transfers (freed by GC on error) */
  lua_createtable(L, (int)n, 0);
  cp_xfer **xs = lua_newuserdatauv(L, (size_t)(n ? n : 1) * sizeof *xs, 0); /* 5 */
  for (lua_Integer i = 1; i <= n; i++) {
    if (lua_rawgeti(L, 2, i) != LUA_TTABLE)
      return luaL_error(L, "batch request #%d must be a table", (int)i);
    int r = lua_gettop(L);
    lua_getfield(L, r, "method");
    const char *method = lua_isnil(L, -1) ? "GET" : check_method(L, -1);
    lua_getfield(L, r, "path");
    const char *path = lua_tostring(L, -1);
    if (!path) return luaL_error(L, "batch request #%d needs a 'path' string", (int)i);
    int raw = opt_bool(L, r, "raw");
    size_t blen;
    const char *ctype;
    const char *body = body_opt(L, r, &blen, &ctype);
    push_url_path(L, lc, path, r, raw);
    lstream *ls = new_stream_ud(L);
    ls->x = cp_xfer_new(lc->c, method, lua_tostring(L, -2), body, blen, ctype, 0, timeout, 0);
    if (!ls->x) return luaL_error(L, "cannot create a transfer (out of memory)");
    xs[i - 1] = ls->x;
    lua_rawseti(L, 4, i);
    lua_settop(L, 5);
  }
  if (cp_task_active(L)) return k_batch(L, 0, (lua_KContext)n);
  int r = cp_client_drive(lc->c, xs, (size_t)n, cp_ready_done, 0, -1);
  return batch_results(L, n, xs, r < 0 ? "interrupted" : "timeout", r < 0 ? "interrupted" : "timeout");
}

/* Stack: 4 the transfers' streams, 5 xs. Pushes the result list; a transfer
 * not done has failed with msg, code. */
static int batch_results(lua_State *L, lua_Integer n, cp_xfer **xs, const char *msg,
                         const char *code) {
  lua_createtable(L, (int)n, 0); /* 6: results */
  for (lua_Integer i = 1; i <= n; i++) {
    cp_xfer *x = xs[i - 1];
    if (!x->done) {
      lua_createtable(L, 0, 2);
      lua_pushstring(L, msg);
      lua_setfield(L, -2, "error");
      lua_pushstring(L, code);
      lua_setfield(L, -2, "code");
    } else {
      int top = lua_gettop(L);
      int k = push_xfer_fail(L, x);
      if (k) {
        lua_createtable(L, 0, 3);
        lua_pushvalue(L, top + 2);
        lua_setfield(L, -2, "error");
        lua_pushvalue(L, top + 3);
        lua_setfield(L, -2, "code");
        if (k == 4) {
          lua_pushvalue(L, top + 4);
          lua_setfield(L, -2, "status");
        }
        lua_replace(L, top + 1);
        lua_settop(L, top + 1);
      } else {
        push_response(L, x);
      }
    }
    lua_rawseti(L, 6, i);
    lua_rawgeti(L, 4, i);
    close_stream(lua_touserdata(L, -1));
    lua_pop(L, 1);
  }
  return 1;
}

/* The indexes of the streams in the table at 2 with data or finished. */
static int wait_ready_list(lua_State *L, lua_Integer n) {
  lua_newtable(L);
  lua_Integer k = 0;
  for (lua_Integer i = 1; i <= n; i++) {
    lua_rawgeti(L, 2, i);
    lstream *ls = lua_touserdata(L, -1);
    lua_pop(L, 1);
    if (!ls->x || cp_ready_data(ls->x)) {
      lua_pushinteger(L, i);
      lua_rawseti(L, -2, ++k);
    }
  }
  return 1;
}

/* In a task: 1 client, 2 streams, 3 timeout, 4 deadline. */
static int k_wait(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  if (cp_task_cancelled(L, 4)) return cp_task_fail_cancel(L, 4);
  lua_settop(L, 4);
  lua_Integer n = (lua_Integer)lua_rawlen(L, 2);
  int any = 0;
  for (lua_Integer i = 1; i <= n && !any; i++) {
    lua_rawgeti(L, 2, i);
    lstream *ls = lua_touserdata(L, -1);
    lua_pop(L, 1);
    if (!ls || !ls->x || cp_ready_data(ls->x)) any = 1; /* closed meanwhile counts as ready */
  }
  double deadline = lua_tonumber(L, 4);
  if (!any && (deadline < 0 || cp_monotonic() < deadline))
    return task_wait_on(L, 1, deadline, 2, "any", ctx, k_wait);
  return wait_ready_list(L, n);
}

static int l_wait(lua_State *L) {
  lclient *lc = lc_check(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  long timeout = lua_isnoneornil(L, 3) ? -1 : (long)(luaL_checknumber(L, 3) * 1000.0);
  lua_Integer n = (lua_Integer)lua_rawlen(L, 2);
  cp_xfer **xs = lua_newuserdatauv(L, (size_t)(n ? n : 1) * sizeof *xs, 0);
  size_t live = 0;
  for (lua_Integer i = 1; i <= n; i++) {
    lua_rawgeti(L, 2, i);
    lstream *ls = ls_check(L, -1);
    if (ls->x && ls->x->client != lc->c)
      return luaL_error(L, "stream #%d belongs to another client", (int)i);
    if (ls->x) xs[live++] = ls->x;
    lua_pop(L, 1);
  }
  if (live == 0) {
    lua_newtable(L);
    return 1;
  }
  if (timeout != 0 && cp_task_active(L)) {
    lua_settop(L, 3);
    lua_pushnumber(L, timeout < 0 ? -1 : cp_monotonic() + (double)timeout / 1000.0); /* 4 */
    return k_wait(L, 0, 0);
  }
  int r = cp_client_drive(lc->c, xs, live, cp_ready_data, 1, timeout);
  if (r < 0) return cp_lua_fail(L, "interrupted", "interrupted", 0);
  return wait_ready_list(L, n);
}

static int l_api_version(lua_State *L) {
  lclient *lc = lc_check(L, 1);
  int n = negotiate(L, lc);
  if (n) return n;
  lua_pushstring(L, lc->c->api_version);
  return 1;
}

static int l_stats(lua_State *L) {
  lclient *lc = lc_check(L, 1);
  lua_createtable(L, 0, 3);
  lua_pushinteger(L, lc->c->connections);
  lua_setfield(L, -2, "connections");
  lua_pushinteger(L, lc->c->transfers);
  lua_setfield(L, -2, "transfers");
  lua_pushstring(L, lc->c->api_version);
  lua_setfield(L, -2, "api_version");
  return 1;
}

static int l_events(lua_State *L) {
  lclient *lc = lc_check(L, 1);
  lua_pushinteger(L, (lua_Integer)lc->c->events);
  return 1;
}

static int l_host(lua_State *L) {
  lclient *lc = lc_check(L, 1);
  lua_pushstring(L, lc->c->host);
  return 1;
}

/* ---- stream methods ----------------------------------------------------- */

/* What read returns once x has data or has ended. */
static int read_result(lua_State *L, cp_xfer *x) {
  if (x->body.len > 0) {
    cp_buf chunk;
    cp_xfer_take(x, &chunk);
    lua_pushlstring(L, chunk.data, chunk.len);
    cp_buf_free(&chunk);
    return 1;
  }
  int n = push_xfer_fail(L, x);
  if (n) return n;
  lua_pushnil(L);
  return 1;
}

/* In a task: 1 stream, 2 timeout, 3 client, 4 deadline. */
static int k_read(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  if (cp_task_cancelled(L, 4)) return cp_task_fail_cancel(L, 4);
  lua_settop(L, 4);
  lstream *ls = lua_touserdata(L, 1);
  cp_xfer *x = ls->x;
  if (!x) return cp_lua_fail(L, "stream closed while reading", "closed", 0);
  if (!x->client && !x->done) return cp_lua_fail(L, "Docker client closed", "closed", 0);
  if (x->body.len == 0 && !x->done) {
    double deadline = lua_tonumber(L, 4);
    if (deadline >= 0 && cp_monotonic() >= deadline) {
      lua_pushboolean(L, 0);
      return 1;
    }
    return task_wait_on(L, 3, deadline, 1, "data", ctx, k_read);
  }
  return read_result(L, x);
}

static int l_stream_read(lua_State *L) {
  lstream *ls = ls_check(L, 1);
  if (!ls->x) return luaL_error(L, "attempt to read a closed stream");
  long timeout = lua_isnoneornil(L, 2) ? -1 : (long)(luaL_checknumber(L, 2) * 1000.0);
  cp_xfer *x = ls->x;
  if (!x->client && !x->done) return cp_lua_fail(L, "Docker client closed", "closed", 0);
  if (x->body.len == 0 && !x->done && timeout != 0 && cp_task_active(L)) {
    lua_settop(L, 2);
    lua_getiuservalue(L, 1, 1); /* 3: the client */
    lua_pushnumber(L, timeout < 0 ? -1 : cp_monotonic() + (double)timeout / 1000.0); /* 4 */
    return k_read(L, 0, 0);
  }
  if (x->body.len == 0 && !x->done) {
    int r = cp_client_drive(x->client, &x, 1, cp_ready_data, 1, timeout);
    if (r < 0) return cp_lua_fail(L, "interrupted", "interrupted", 0);
    if (r > 0) {
      lua_pushboolean(L, 0);
      return 1;
    }
  }
  return read_result(L, x);
}

static int l_stream_close(lua_State *L) {
  lstream *ls = ls_check(L, 1);
  close_stream(ls);
  return 0;
}

static int l_stream_status(lua_State *L) {
  lstream *ls = ls_check(L, 1);
  if (!ls->x) return 0;
  lua_pushinteger(L, ls->x->status);
  return 1;
}

static int l_stream_headers(lua_State *L) {
  lstream *ls = ls_check(L, 1);
  if (!ls->x) return 0;
  push_headers(L, &ls->x->headers);
  return 1;
}

static int l_stream_closed(lua_State *L) {
  lstream *ls = ls_check(L, 1);
  lua_pushboolean(L, ls->x == NULL);
  return 1;
}

/* ---- module --------------------------------------------------------------- */

static const luaL_Reg client_methods[] = {
    {"request", l_request}, {"stream", l_stream},           {"batch", l_batch},
    {"wait", l_wait},       {"api_version", l_api_version}, {"stats", l_stats},
    {"host", l_host},       {"close", l_client_close},      {"events", l_events},
    {NULL, NULL}};

static const luaL_Reg stream_methods[] = {
    {"read", l_stream_read},       {"close", l_stream_close},   {"status", l_stream_status},
    {"headers", l_stream_headers}, {"closed", l_stream_closed}, {NULL, NULL}};

static const luaL_Reg core_funcs[] = {{"client", l_client},
                                      {"task_mark", l_task_mark},
                                      {"in_task", l_in_task},
                                      {"wait_fd", l_wait_fd},
                                      {"loop_step", l_loop_step},
                                      {"wait_ready", l_wait_ready},
                                      {NULL, NULL}};

static void new_class(lua_State *L, const char *name, const luaL_Reg *methods,
                      lua_CFunction close) {
  luaL_newmetatable(L, name);
  lua_newtable(L);
  luaL_setfuncs(L, methods, 0);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, close);
  lua_setfield(L, -2, "__gc");
  lua_pushcfunction(L, close);
  lua_setfield(L, -2, "__close");
  lua_pushstring(L, name);
  lua_setfield(L, -2, "__name");
  lua_pop(L, 1);
}

static int curl_ready = 0;

int luaopen_ctrlplane_docker_core(lua_State *L) {
  if (!curl_ready) {
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
      return luaL_error(L, "curl_global_init failed");
    curl_ready = 1;
  }
  new_class(L, CLIENT_MT, client_methods, l_client_close);
  new_class(L, STREAM_MT, stream_methods, l_stream_close);
  luaL_newlib(L, core_funcs);
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &TASKS_KEY) != LUA_TTABLE) {
    lua_newtable(L); /* weak keys: a finished task's thread is collected */
    lua_newtable(L);
    lua_pushstring(L, "k");
    lua_setfield(L, -2, "__mode");
    lua_setmetatable(L, -2);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &TASKS_KEY);
  }
  lua_pop(L, 1);
  lua_pushlightuserdata(L, (void *)&WAIT_KEY);
  lua_setfield(L, -2, "WAIT");
  lua_pushstring(L, CP_VERSION);
  lua_setfield(L, -2, "version");
  lua_pushstring(L, CP_API_MAX);
  lua_setfield(L, -2, "api_max");
  lua_pushstring(L, CP_API_MIN);
  lua_setfield(L, -2, "api_min");
  lua_pushstring(L, curl_version_info(CURLVERSION_NOW)->version);
  lua_setfield(L, -2, "curl_version");
  cp_open_sys(L);
  cp_open_demux(L);
  cp_open_stats(L);
  cp_open_cgroup(L);
  cp_open_raw(L);
  cp_open_lock(L);
  return 1;
}
