/*
 * lraw.c - hijacked connections (Docker's "Upgrade: tcp"), for exec with
 * stdin: after the HTTP exchange the socket carries raw bytes both ways.
 * libcurl connects (CONNECT_ONLY, so the unix socket, TCP and TLS settings
 * of the client apply) and moves the bytes with curl_easy_send/recv.
 *
 *   client:hijack(method, path, body[, opts]) -> raw | nil, msg, code, status
 *       path is the full path (with /vX.Y); opts.timeout bounds the exchange
 *   raw:write(bytes)       -> true | nil, msg, code
 *   raw:send(bytes[, i])   -> count sent from position i without waiting
 *                             (0 when the socket is full) | nil, msg, code
 *   raw:close_write()      -> half-closes: the far side reads end of file
 *   raw:read([timeout])    -> bytes | nil (end) | false (timeout) | nil, msg, code
 *   raw:poll(timeout[, want_write[, fd]])
 *                          -> readable, writable, fd_readable | nil, msg, code
 *       waits (timeout seconds, negative: forever) until raw:read has bytes
 *       (or the end), raw:send can take bytes (want_write), or fd has input;
 *       returns early, all false, on a terminal resize (core.tty_resized);
 *       nil, "interrupted", "interrupted" once core.interrupted() is set
 *   raw:close()
 *
 * The local terminal, for interactive exec (functions of the core module):
 *   core.tty_raw(fd)       -> true | nil, msg: raw mode (no echo, no line
 *       editing, no signals from keys), the previous mode saved and restored
 *       at exit whatever happens
 *   core.tty_restore()     -> the saved mode and SIGWINCH handler back
 *                             (true when there was something to restore)
 *   core.tty_size(fd)      -> rows, columns | nil, msg
 *   core.tty_resized()     -> true once after each SIGWINCH (while raw)
 *   core.hold_signals(on)  -> while on, SIGTERM and SIGHUP set
 *       core.interrupted() instead of ending the process (so an exec can
 *       clean up: kill its command, restore the terminal) and SIGPIPE is
 *       ignored (a write to a closed pipe fails with EPIPE instead)
 */
#define _DEFAULT_SOURCE /* SIGWINCH, TIOCGWINSZ */
#include "http.h"
#include "clock.h"
#include "lcore.h"

#include <errno.h>
#include <lauxlib.h>
#include <lua.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#define RAW_MT "ctrlplane.docker.raw"

typedef struct lraw {
  CURL *easy;          /* NULL once closed */
  curl_socket_t fd;
  cp_buf pending;      /* bytes read past the response head */
  int eof;
} lraw;

/* Waits for fd to be ready for events; <0 timeout waits forever. Returns
 * 1 ready, 0 timed out, -1 interrupted. */
static int raw_wait(curl_socket_t fd, short events, long timeout_ms) {
  struct pollfd p = {.fd = fd, .events = events, .revents = 0};
  long deadline = timeout_ms >= 0 ? cp_monotonic_ms() + timeout_ms : -1;
  for (;;) {
    long slice = 100;
    if (deadline >= 0) {
      long left = deadline - cp_monotonic_ms();
      if (left <= 0) return 0;
      if (left < slice) slice = left;
    }
    int r = poll(&p, 1, (int)slice);
    if (r > 0) return 1;
    if (cp_interrupted) return -1;
  }
}

static int raw_send_all(lraw *r, const char *p, size_t n, long timeout_ms, char *err, size_t errlen) {
  long deadline = timeout_ms >= 0 ? cp_monotonic_ms() + timeout_ms : -1;
  while (n > 0) {
    size_t sent = 0;
    CURLcode rc = curl_easy_send(r->easy, p, n, &sent);
    if (rc == CURLE_AGAIN) {
      long left = deadline >= 0 ? deadline - cp_monotonic_ms() : -1;
      if (deadline >= 0 && left <= 0) {
        snprintf(err, errlen, "timed out writing to the Docker daemon");
        return -1;
      }
      if (raw_wait(r->fd, POLLOUT, left) < 0) {
        snprintf(err, errlen, "interrupted");
        return -1;
      }
      continue;
    }
    if (rc != CURLE_OK) {
      snprintf(err, errlen, "writing to the Docker daemon: %s", curl_easy_strerror(rc));
      return -1;
    }
    p += sent;
    n -= sent;
  }
  return 0;
}

/* Reads what is there (waiting up to timeout_ms). Returns bytes read, 0 at
 * end of stream, -2 timeout, -1 error. */
static long raw_recv(lraw *r, char *buf, size_t cap, long timeout_ms, char *err, size_t errlen) {
  long deadline = timeout_ms >= 0 ? cp_monotonic_ms() + timeout_ms : -1;
  for (;;) {
    size_t got = 0;
    CURLcode rc = curl_easy_recv(r->easy, buf, cap, &got);
    if (rc == CURLE_OK) return (long)got;
    if (rc != CURLE_AGAIN) {
      snprintf(err, errlen, "reading from the Docker daemon: %s", curl_easy_strerror(rc));
      return -1;
    }
    long left = deadline >= 0 ? deadline - cp_monotonic_ms() : -1;
    if (deadline >= 0 && left <= 0) return -2;
    int w = raw_wait(r->fd, POLLIN, left);
    if (w < 0) {
      snprintf(err, errlen, "interrupted");
      return -1;
    }
    if (w == 0) return -2;
  }
}

static void raw_close(lraw *r) {
  if (r->easy) curl_easy_cleanup(r->easy);
  r->easy = NULL;
  cp_buf_free(&r->pending);
}

static int l_raw_gc(lua_State *L) {
  raw_close(luaL_checkudata(L, 1, RAW_MT));
  return 0;
}

static lraw *raw_check(lua_State *L) {
  lraw *r = luaL_checkudata(L, 1, RAW_MT);
  if (!r->easy) luaL_error(L, "attempt to use a closed connection");
  return r;
}

static int l_hijack(lua_State *L) {
  cp_client *c = cp_lua_client(L, 1);
  const char *method = luaL_checkstring(L, 2);
  const char *path = luaL_checkstring(L, 3);
  size_t blen = 0;
  const char *body = luaL_optlstring(L, 4, "", &blen);
  long timeout = c->timeout_ms > 0 ? c->timeout_ms : 60000;
  if (!lua_isnoneornil(L, 5)) {
    luaL_checktype(L, 5, LUA_TTABLE);
    if (lua_getfield(L, 5, "timeout") == LUA_TNUMBER) timeout = (long)(lua_tonumber(L, -1) * 1000);
    lua_pop(L, 1);
  }
  if (path[0] != '/') return luaL_error(L, "path must start with '/'");
  if (strpbrk(path, " \r\n") || strpbrk(method, " \r\n"))
    return luaL_error(L, "method and path must not contain spaces or line breaks");

  lraw *r = lua_newuserdatauv(L, sizeof *r, 1);
  memset(r, 0, sizeof *r);
  luaL_setmetatable(L, RAW_MT);
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, -2, 1); /* keep the client alive */
  int ud = lua_gettop(L);

  r->easy = curl_easy_init();
  if (!r->easy) return luaL_error(L, "out of memory");
  char url[1024];
  snprintf(url, sizeof url, "%s/", c->base_url);
  curl_easy_setopt(r->easy, CURLOPT_URL, url);
  cp_client_setup_easy(c, r->easy);
  curl_easy_setopt(r->easy, CURLOPT_CONNECT_ONLY, 1L);
  CURLcode rc = curl_easy_perform(r->easy);
  if (rc != CURLE_OK) {
    char msg[512];
    snprintf(msg, sizeof msg, "cannot reach the Docker daemon at %s: %s", c->host,
             curl_easy_strerror(rc));
    raw_close(r);
    return cp_lua_fail(L, msg, cp_curl_error_code(rc), 0);
  }
  curl_easy_getinfo(r->easy, CURLINFO_ACTIVESOCKET, &r->fd);

  /* the request head and body */
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  lua_pushfstring(L, "%s %s HTTP/1.1\r\nHost: docker\r\nUser-Agent: cpdocker/" CP_VERSION
                     "\r\nContent-Type: application/json\r\nConnection: Upgrade\r\n"
                     "Upgrade: tcp\r\nContent-Length: %d\r\n\r\n",
                  method, path, (int)blen);
  luaL_addvalue(&b);
  luaL_addlstring(&b, body, blen);
  luaL_pushresult(&b);
  size_t rlen;
  const char *req = lua_tolstring(L, -1, &rlen);
  char err[512];
  if (raw_send_all(r, req, rlen, timeout, err, sizeof err) != 0) {
    raw_close(r);
    return cp_lua_fail(L, err, "unreachable", 0);
  }
  lua_pop(L, 1);

  /* the response head */
  char buf[8192];
  cp_buf head = {0};
  const char *end = NULL;
  while (!end) {
    long n = raw_recv(r, buf, sizeof buf, timeout, err, sizeof err);
    if (n == -2) snprintf(err, sizeof err, "timed out waiting for the Docker daemon to answer");
    if (n <= 0) {
      cp_buf_free(&head);
      raw_close(r);
      return cp_lua_fail(L, n == 0 ? "the Docker daemon closed the connection" : err,
                      n == -2 ? "timeout" : "unreachable", 0);
    }
    if (cp_buf_append(&head, buf, (size_t)n) != 0 || head.len > 65536) {
      cp_buf_free(&head);
      raw_close(r);
      return cp_lua_fail(L, "response head too large", "protocol", 0);
    }
    end = strstr(head.data, "\r\n\r\n");
  }
  long status = 0;
  sscanf(head.data, "HTTP/%*s %ld", &status);
  size_t hlen = (size_t)(end + 4 - head.data);
  if (head.len > hlen) cp_buf_append(&r->pending, head.data + hlen, head.len - hlen);
  if (status != 101 && status != 200) {
    /* an error: the rest of the body (short) has the daemon's message */
    long n;
    while (r->pending.len < 65536 &&
           (n = raw_recv(r, buf, sizeof buf, 2000, err, sizeof err)) > 0)
      cp_buf_append(&r->pending, buf, (size_t)n);
    char text[512], msg[600];
    cp_error_text(r->pending.data, r->pending.len, text, sizeof text);
    snprintf(msg, sizeof msg, "Docker daemon: %s", text[0] ? text : "unexpected answer");
    cp_buf_free(&head);
    raw_close(r);
    lua_pushnil(L);
    lua_pushstring(L, msg);
    lua_pushstring(L, status ? cp_status_code(status) : "protocol");
    lua_pushinteger(L, status);
    return 4;
  }
  cp_buf_free(&head);
  lua_settop(L, ud);
  return 1;
}

static int l_raw_write(lua_State *L) {
  lraw *r = raw_check(L);
  size_t n;
  const char *p = luaL_checklstring(L, 2, &n);
  char err[256];
  if (raw_send_all(r, p, n, -1, err, sizeof err) != 0) return cp_lua_fail(L, err, "unreachable", 0);
  lua_pushboolean(L, 1);
  return 1;
}

static int l_raw_close_write(lua_State *L) {
  lraw *r = raw_check(L);
  shutdown(r->fd, SHUT_WR);
  return 0;
}

static int l_raw_read(lua_State *L) {
  lraw *r = raw_check(L);
  long timeout = lua_isnoneornil(L, 2) ? -1 : (long)(luaL_checknumber(L, 2) * 1000.0);
  if (r->pending.len > 0) {
    lua_pushlstring(L, r->pending.data, r->pending.len);
    r->pending.len = 0;
    return 1;
  }
  if (r->eof) {
    lua_pushnil(L);
    return 1;
  }
  char buf[65536], err[256];
  long n = raw_recv(r, buf, sizeof buf, timeout, err, sizeof err);
  if (n == -2) {
    lua_pushboolean(L, 0);
    return 1;
  }
  if (n < 0) return cp_lua_fail(L, err, cp_interrupted ? "interrupted" : "unreachable", 0);
  if (n == 0) {
    r->eof = 1;
    lua_pushnil(L);
    return 1;
  }
  lua_pushlstring(L, buf, (size_t)n);
  return 1;
}

/* Sends what the socket takes now, without waiting. */
static int l_raw_send(lua_State *L) {
  lraw *r = raw_check(L);
  size_t n;
  const char *p = luaL_checklstring(L, 2, &n);
  lua_Integer i = luaL_optinteger(L, 3, 1);
  if (i < 1) i = 1;
  if ((size_t)i > n) {
    lua_pushinteger(L, 0);
    return 1;
  }
  size_t sent = 0;
  CURLcode rc = curl_easy_send(r->easy, p + i - 1, n - (size_t)(i - 1), &sent);
  if (rc == CURLE_AGAIN) sent = 0;
  else if (rc != CURLE_OK) {
    char err[256];
    snprintf(err, sizeof err, "writing to the Docker daemon: %s", curl_easy_strerror(rc));
    return cp_lua_fail(L, err, "unreachable", 0);
  }
  lua_pushinteger(L, (lua_Integer)sent);
  return 1;
}

static volatile sig_atomic_t raw_winch = 0;

/* Moves what can be read now into pending. Returns 1 when raw:read has
 * something to give (bytes or the end), 0 when nothing is there yet, -1 on
 * an error (message in err). With TLS, bytes may be waiting inside the TLS
 * layer although the socket is not readable: this finds them too. */
static int raw_fill(lraw *r, char *err, size_t errlen) {
  if (r->pending.len > 0 || r->eof) return 1;
  char buf[65536];
  size_t got = 0;
  CURLcode rc = curl_easy_recv(r->easy, buf, sizeof buf, &got);
  if (rc == CURLE_AGAIN) return 0;
  if (rc != CURLE_OK) {
    snprintf(err, errlen, "reading from the Docker daemon: %s", curl_easy_strerror(rc));
    return -1;
  }
  if (got == 0) {
    r->eof = 1;
    return 1;
  }
  if (cp_buf_append(&r->pending, buf, got) != 0) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  return 1;
}

/* One look at the connection (and fd, when >= 0), waiting up to slice_ms
 * for something to happen: sets *readable (raw:read has bytes or the end),
 * *writable and *fd_ready. Returns 0, or -1 with a message in err. */
static int raw_look(lraw *r, int want_write, int fd, long slice_ms, int *readable, int *writable,
                    int *fd_ready, char *err, size_t errlen) {
  *writable = *fd_ready = 0;
  int f = raw_fill(r, err, errlen);
  if (f < 0) return -1;
  *readable = f;
  struct pollfd p[2];
  nfds_t np = 1;
  p[0].fd = r->fd;
  p[0].events = (short)((*readable ? 0 : POLLIN) | (want_write ? POLLOUT : 0));
  p[0].revents = 0;
  if (fd >= 0) {
    p[1].fd = fd;
    p[1].events = POLLIN;
    p[1].revents = 0;
    np = 2;
  }
  int n = poll(p, np, (int)(*readable ? 0 : slice_ms));
  if (n < 0 && errno != EINTR) {
    snprintf(err, errlen, "poll: %s", strerror(errno));
    return -1;
  }
  if (n > 0) {
    if (p[0].revents & POLLOUT) *writable = 1;
    if (p[0].revents & (POLLHUP | POLLERR)) *writable = want_write; /* send reports it */
    if (np == 2 && (p[1].revents & (POLLIN | POLLHUP | POLLERR))) *fd_ready = 1;
    if (!*readable && (p[0].revents & (POLLIN | POLLHUP | POLLERR))) {
      f = raw_fill(r, err, errlen);
      if (f < 0) return -1;
      *readable = f;
    }
  }
  return 0;
}

static int push_looked(lua_State *L, int readable, int writable, int fd_ready) {
  lua_pushboolean(L, readable);
  lua_pushboolean(L, writable);
  lua_pushboolean(L, fd_ready);
  return 3;
}

/* raw:poll inside a scheduler's task: looks without waiting, else yields
 * until the socket is ready or the deadline. Stack: 1 raw, 2 timeout, 3
 * want_write, 4 fd, 5 deadline (seconds, -1: none). A local fd to watch
 * as well (the CLI's stdin, never a server's) is looked at every 10 ms. */
static int k_raw_poll(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  if (cp_task_cancelled(L, 5)) return cp_task_fail_cancel(L, 5);
  lua_settop(L, 5);
  lraw *r = raw_check(L);
  int want_write = lua_toboolean(L, 3);
  int fd = (int)luaL_optinteger(L, 4, -1);
  double deadline = lua_tonumber(L, 5);
  int readable, writable, fd_ready;
  char err[256];
  if (raw_look(r, want_write, fd, 0, &readable, &writable, &fd_ready, err, sizeof err) != 0)
    return cp_lua_fail(L, err, "unreachable", 0);
  if (readable || writable || fd_ready || raw_winch || cp_interrupted ||
      (deadline >= 0 && cp_monotonic() >= deadline))
    return push_looked(L, readable, writable, fd_ready);
  double until = deadline;
  if (fd >= 0) {
    double soon = cp_monotonic() + 0.01;
    if (until < 0 || soon < until) until = soon;
  }
  return cp_task_wait(L, 0, until, r->fd, POLLIN | (want_write ? POLLOUT : 0), ctx, k_raw_poll);
}

static int l_raw_poll(lua_State *L) {
  lraw *r = raw_check(L);
  lua_Number t = luaL_optnumber(L, 2, -1);
  int want_write = lua_toboolean(L, 3);
  int fd = (int)luaL_optinteger(L, 4, -1);
  if (cp_task_active(L)) {
    lua_settop(L, 4);
    lua_pushnumber(L, t >= 0 ? cp_monotonic() + t : -1);
    return k_raw_poll(L, 0, 0);
  }
  long deadline = t >= 0 ? cp_monotonic_ms() + (long)(t * 1000.0) : -1;
  int readable = 0, writable = 0, fd_ready = 0;
  char err[256];
  for (;;) {
    long slice = 100;
    if (deadline >= 0) {
      long left = deadline - cp_monotonic_ms();
      if (left < 0) left = 0;
      if (left < slice) slice = left;
    }
    if (raw_look(r, want_write, fd, slice, &readable, &writable, &fd_ready, err, sizeof err) != 0)
      return cp_lua_fail(L, err, "unreachable", 0);
    if (readable || writable || fd_ready) break;
    if (cp_interrupted) return cp_lua_fail(L, "interrupted", "interrupted", 0);
    if (raw_winch) break;
    if (deadline >= 0 && cp_monotonic_ms() >= deadline) break;
  }
  return push_looked(L, readable, writable, fd_ready);
}

/* ---- the local terminal ----------------------------------------------------- */

static struct termios tty_saved;
static int tty_saved_fd = -1;
static struct sigaction tty_old_winch;
static struct sigaction hold_old_term, hold_old_hup, hold_old_pipe;
static int holding = 0;

static void tty_on_winch(int sig) {
  (void)sig;
  raw_winch = 1;
}

static void on_stop_signal(int sig) {
  (void)sig;
  cp_interrupted = 1;
}

static void tty_restore(void) {
  if (tty_saved_fd < 0) return;
  tcsetattr(tty_saved_fd, TCSADRAIN, &tty_saved);
  sigaction(SIGWINCH, &tty_old_winch, NULL);
  tty_saved_fd = -1;
}

static int l_tty_raw(lua_State *L) {
  static int registered = 0;
  int fd = (int)luaL_checkinteger(L, 1);
  if (tty_saved_fd >= 0) return luaL_error(L, "the terminal is already in raw mode");
  struct termios t;
  if (tcgetattr(fd, &t) != 0) return cp_lua_fail(L, strerror(errno), "not_a_terminal", 0);
  if (!registered) {
    atexit(tty_restore); /* also after an error that ends the program */
    registered = 1;
  }
  tty_saved = t;
  t.c_iflag &= (tcflag_t) ~(IGNBRK | BRKINT | PARMRK | ISTRIP | INLCR | IGNCR | ICRNL | IXON);
  t.c_oflag &= (tcflag_t)~OPOST;
  t.c_lflag &= (tcflag_t) ~(ECHO | ECHONL | ICANON | ISIG | IEXTEN);
  t.c_cflag &= (tcflag_t) ~(CSIZE | PARENB);
  t.c_cflag |= CS8;
  t.c_cc[VMIN] = 1;
  t.c_cc[VTIME] = 0;
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sigemptyset(&sa.sa_mask);
  sa.sa_handler = tty_on_winch;
  sigaction(SIGWINCH, &sa, &tty_old_winch);
  tty_saved_fd = fd;
  raw_winch = 0;
  if (tcsetattr(fd, TCSADRAIN, &t) != 0) {
    int e = errno;
    tty_restore();
    return cp_lua_fail(L, strerror(e), "not_a_terminal", 0);
  }
  lua_pushboolean(L, 1);
  return 1;
}

static int l_tty_restore(lua_State *L) {
  lua_pushboolean(L, tty_saved_fd >= 0);
  tty_restore();
  return 1;
}

/* core.hold_signals(true|false) */
static int l_hold_signals(lua_State *L) {
  int on = lua_toboolean(L, 1);
  if (on && !holding) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sigemptyset(&sa.sa_mask);
    sa.sa_handler = on_stop_signal;
    sigaction(SIGTERM, &sa, &hold_old_term);
    sigaction(SIGHUP, &sa, &hold_old_hup);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, &hold_old_pipe);
    holding = 1;
  } else if (!on && holding) {
    sigaction(SIGTERM, &hold_old_term, NULL);
    sigaction(SIGHUP, &hold_old_hup, NULL);
    sigaction(SIGPIPE, &hold_old_pipe, NULL);
    holding = 0;
  }
  return 0;
}

static int l_tty_size(lua_State *L) {
  int fd = (int)luaL_checkinteger(L, 1);
  struct winsize ws;
  memset(&ws, 0, sizeof ws);
  if (ioctl(fd, TIOCGWINSZ, &ws) != 0) return cp_lua_fail(L, strerror(errno), "not_a_terminal", 0);
  lua_pushinteger(L, ws.ws_row);
  lua_pushinteger(L, ws.ws_col);
  return 2;
}

static int l_tty_resized(lua_State *L) {
  lua_pushboolean(L, raw_winch != 0);
  raw_winch = 0;
  return 1;
}

void cp_open_raw(lua_State *L) {
  static const luaL_Reg methods[] = {{"write", l_raw_write}, {"send", l_raw_send},
                                     {"close_write", l_raw_close_write},
                                     {"read", l_raw_read},   {"poll", l_raw_poll},
                                     {"close", l_raw_gc},    {NULL, NULL}};
  static const luaL_Reg tty_funcs[] = {{"tty_raw", l_tty_raw},   {"tty_restore", l_tty_restore},
                                       {"tty_size", l_tty_size}, {"tty_resized", l_tty_resized},
                                       {"hold_signals", l_hold_signals}, {NULL, NULL}};
  luaL_setfuncs(L, tty_funcs, 0); /* on the core module table */
  luaL_newmetatable(L, RAW_MT);
  lua_newtable(L);
  luaL_setfuncs(L, methods, 0);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, l_raw_gc);
  lua_setfield(L, -2, "__gc");
  lua_pushcfunction(L, l_raw_gc);
  lua_setfield(L, -2, "__close");
  lua_pop(L, 1);
  /* the client's method */
  luaL_getmetatable(L, "ctrlplane.docker.client");
  lua_getfield(L, -1, "__index");
  lua_pushcfunction(L, l_hijack);
  lua_setfield(L, -2, "hijack");
  lua_pop(L, 2);
}
