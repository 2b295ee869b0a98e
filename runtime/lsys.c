/*
 * lsys.c - the process-level helpers of ctrlplane.docker.core: signals,
 * clocks, sleeping and file descriptors (set on the module by cp_open_sys).
 *
 *   core.catch_interrupts(on)  -> SIGINT stops transfers ("interrupted") instead of
 *                                 killing the process
 *   core.interrupted([reset])  -> whether SIGINT came (and resets the flag)
 *   core.clock()               -> monotonic seconds (cp_monotonic)
 *   core.walltime()            -> Unix seconds (float)
 *   core.sleep(seconds)        -> true, or false when interrupted (or, in a
 *                                 scheduler task, cancelled) early; yields in a task
 *   core.isatty(fd)            -> whether fd is a terminal
 *   core.poll_fd(fd, timeout)  -> true when a read of fd will not block
 *   core.read_fd(fd, max)      -> bytes | "" at end of file | nil, message
 */
#include "http.h" /* cp_interrupted */
#include "clock.h"
#include "lcore.h"

#include <lauxlib.h>
#include <lua.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void on_sigint(int sig) {
  (void)sig;
  cp_interrupted = 1;
}

/* core.catch_interrupts(true|false): SIGINT stops transfers in progress
 * (they fail with code "interrupted") instead of killing the process. */
static int l_catch_interrupts(lua_State *L) {
  int on = lua_toboolean(L, 1);
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on ? on_sigint : SIG_DFL;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, NULL);
  return 0;
}

static int l_interrupted(lua_State *L) {
  int reset = lua_toboolean(L, 1); /* read before the push: with no argument the
                                      pushed result would land at index 1 */
  lua_pushboolean(L, cp_interrupted != 0);
  if (reset) cp_interrupted = 0; /* core.interrupted(true) also resets */
  return 1;
}

/* core.clock() -> monotonic seconds; core.walltime() -> Unix seconds (float) */
static int l_clock(lua_State *L) {
  lua_pushnumber(L, (lua_Number)cp_monotonic());
  return 1;
}

static int l_walltime(lua_State *L) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  lua_pushnumber(L, (lua_Number)ts.tv_sec + (lua_Number)ts.tv_nsec / 1e9);
  return 1;
}

/* core.sleep(seconds): returns early (false) when interrupted */
/* In a task: 1 seconds, 2 deadline. A cancelled sleep returns false, as
 * an interrupted one does. */
static int k_sleep(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  if (cp_task_cancelled(L, 2)) {
    lua_pushboolean(L, 0);
    return 1;
  }
  lua_settop(L, 2);
  double deadline = lua_tonumber(L, 2);
  if (cp_monotonic() < deadline) return cp_task_wait(L, 0, deadline, -1, 0, ctx, k_sleep);
  lua_pushboolean(L, !cp_interrupted);
  return 1;
}

static int l_sleep(lua_State *L) {
  lua_Number s = luaL_checknumber(L, 1);
  if (s > 0 && cp_task_active(L)) {
    lua_settop(L, 1);
    lua_pushnumber(L, cp_monotonic() + s);
    return k_sleep(L, 0, 0);
  }
  if (s > 0) {
    struct timespec ts;
    ts.tv_sec = (time_t)s;
    ts.tv_nsec = (long)((s - (lua_Number)ts.tv_sec) * 1e9);
    while (nanosleep(&ts, &ts) != 0 && !cp_interrupted) {
    }
  }
  lua_pushboolean(L, !cp_interrupted);
  return 1;
}

/* core.isatty(fd) -> whether fd is a terminal (colour, progress bars) */
static int l_isatty(lua_State *L) {
  lua_pushboolean(L, isatty((int)luaL_checkinteger(L, 1)) == 1);
  return 1;
}

/* core.poll_fd(fd, timeout_seconds) -> true when fd is readable (or at
 * end of file / in error: a read will not block) */
static int l_poll_fd(lua_State *L) {
  struct pollfd pfd;
  pfd.fd = (int)luaL_checkinteger(L, 1);
  pfd.events = POLLIN;
  pfd.revents = 0;
  lua_Number t = luaL_optnumber(L, 2, 0);
  int r = poll(&pfd, 1, t < 0 ? -1 : (int)(t * 1000.0));
  lua_pushboolean(L, r > 0);
  return 1;
}

/* core.read_fd(fd, max) -> bytes | "" at end of file | nil, message */
static int l_read_fd(lua_State *L) {
  int fd = (int)luaL_checkinteger(L, 1);
  lua_Integer max = luaL_optinteger(L, 2, 65536);
  if (max <= 0) return luaL_argerror(L, 2, "must be positive");
  luaL_Buffer b;
  char *p = luaL_buffinitsize(L, &b, (size_t)max);
  ssize_t n;
  do {
    n = read(fd, p, (size_t)max);
  } while (n < 0 && errno == EINTR && !cp_interrupted);
  if (n < 0) {
    lua_pushnil(L);
    lua_pushstring(L, strerror(errno));
    return 2;
  }
  luaL_pushresultsize(&b, (size_t)n);
  return 1;
}

static const luaL_Reg sys_funcs[] = {{"catch_interrupts", l_catch_interrupts},
                                     {"interrupted", l_interrupted},
                                     {"clock", l_clock},
                                     {"walltime", l_walltime},
                                     {"sleep", l_sleep},
                                     {"isatty", l_isatty},
                                     {"poll_fd", l_poll_fd},
                                     {"read_fd", l_read_fd},
                                     {NULL, NULL}};

void cp_open_sys(lua_State *L) { luaL_setfuncs(L, sys_funcs, 0); }
