/*
 * llock.c - Lua bindings of the cross-process locks (lock.h).
 *
 *   core.lock(dir, name[, {shared = bool, timeout = seconds}])
 *        -> lock | nil, message, code
 *      codes: busy (still held by another holder when the timeout ran out;
 *      timeout 0 tries once), interrupted, lock (bad name or directory)
 *   lock:release()   (also __close and __gc; safe to call twice; removes the
 *                    lock file, see lock.h)
 *   lock:held()      -> boolean
 *   lock:path()      -> "DIR/NAME.lock"
 */
#include "lcore.h"
#include "lock.h"

#include <lauxlib.h>
#include <lua.h>
#include <stdio.h>
#include <string.h>

#define LOCK_MT "ctrlplane.docker.lock"

typedef struct llock {
  int fd; /* -1 once released */
  int exclusive;
} llock;

static int l_lock(lua_State *L) {
  const char *dir = luaL_checkstring(L, 1);
  const char *name = luaL_checkstring(L, 2);
  int exclusive = 1;
  long timeout_ms = -1;
  if (!lua_isnoneornil(L, 3)) {
    luaL_checktype(L, 3, LUA_TTABLE);
    if (lua_getfield(L, 3, "shared") != LUA_TNIL) exclusive = !lua_toboolean(L, -1);
    lua_pop(L, 1);
    int ty = lua_getfield(L, 3, "timeout");
    if (ty == LUA_TNUMBER) {
      lua_Number t = lua_tonumber(L, -1);
      if (t < 0) return luaL_error(L, "option 'timeout' must not be negative");
      timeout_ms = (long)(t * 1000.0);
    } else if (ty != LUA_TNIL) {
      return luaL_error(L, "option 'timeout' must be a number of seconds");
    }
    lua_pop(L, 1);
  }
  llock *lk = lua_newuserdatauv(L, sizeof *lk, 1);
  lk->fd = -1; /* released until the lock is held */
  lk->exclusive = exclusive;
  luaL_setmetatable(L, LOCK_MT);
  lua_pushfstring(L, "%s/%s.lock", dir, name);
  lua_setiuservalue(L, -2, 1);
  char err[512];
  pid_t holder = 0;
  int r = cp_lock_acquire(dir, name, exclusive, timeout_ms, &lk->fd, &holder, err, sizeof err);
  if (r == CP_LOCK_OK) return 1;
  lua_pushnil(L);
  if (r == CP_LOCK_BUSY) {
    char msg[320], by[48] = "";
    if (holder > 0) snprintf(by, sizeof by, " (held by pid %ld)", (long)holder);
    snprintf(msg, sizeof msg, "%.128s is busy: another operation holds its lock%s; waited %.1fs",
             name, by, (double)(timeout_ms > 0 ? timeout_ms : 0) / 1000.0);
    lua_pushstring(L, msg);
    lua_pushstring(L, "busy");
  } else if (r == CP_LOCK_INTERRUPTED) {
    lua_pushstring(L, "interrupted");
    lua_pushstring(L, "interrupted");
  } else {
    lua_pushstring(L, err);
    lua_pushstring(L, "lock");
  }
  return 3;
}

static int l_lock_release(lua_State *L) {
  llock *lk = luaL_checkudata(L, 1, LOCK_MT);
  if (lk->fd < 0) return 0;
  lua_getiuservalue(L, 1, 1); /* DIR/NAME.lock: removed on release */
  cp_lock_release(lk->fd, lk->exclusive, lua_tostring(L, -1));
  lk->fd = -1;
  return 0;
}

static int l_lock_held(lua_State *L) {
  llock *lk = luaL_checkudata(L, 1, LOCK_MT);
  lua_pushboolean(L, lk->fd >= 0);
  return 1;
}

static int l_lock_path(lua_State *L) {
  luaL_checkudata(L, 1, LOCK_MT);
  lua_getiuservalue(L, 1, 1);
  return 1;
}

static const luaL_Reg lock_methods[] = {
    {"release", l_lock_release}, {"held", l_lock_held}, {"path", l_lock_path}, {NULL, NULL}};

void cp_open_lock(lua_State *L) {
  luaL_newmetatable(L, LOCK_MT);
  lua_newtable(L);
  luaL_setfuncs(L, lock_methods, 0);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, l_lock_release);
  lua_setfield(L, -2, "__gc");
  lua_pushcfunction(L, l_lock_release);
  lua_setfield(L, -2, "__close");
  lua_pushstring(L, LOCK_MT);
  lua_setfield(L, -2, "__name");
  lua_pop(L, 1);
  lua_pushcfunction(L, l_lock);
  lua_setfield(L, -2, "lock");
}
