/*
 * cpdocker.c - the host: embeds Lua 5.4 with the C core built in and runs
 * the command line (lua/ctrlplane/docker/cli.lua) under lua_pcall with a
 * traceback.
 *
 * It finds the Lua modules and policy scripts next to the executable in a
 * source tree (./lua, ./scripts), or under PREFIX/share/ctrlplane-docker
 * when installed; CP_DOCKER_HOME overrides both.
 */
#include "host.h"

#include <lauxlib.h>
#include <limits.h>
#include <lua.h>
#include <stdio.h>

static int host_traceback(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  if (!msg) {
    if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING) return 1;
    msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
  }
  luaL_traceback(L, L, msg, 1);
  return 1;
}

/* The body run under lua_pcall. */
static int host_main(lua_State *L) {
  int argc = (int)lua_tointeger(L, 1);
  char **argv = lua_touserdata(L, 2);
  cp_host_prepare(L, lua_tostring(L, 3), lua_tostring(L, 4), argv[0], 1);
  lua_getglobal(L, "require");
  lua_pushstring(L, "ctrlplane.docker.cli");
  lua_call(L, 1, 1);
  lua_getfield(L, -1, "main");
  lua_createtable(L, argc, 0);
  for (int i = 1; i < argc; i++) {
    lua_pushstring(L, argv[i]);
    lua_rawseti(L, -2, i);
  }
  lua_call(L, 1, 1);
  return 1;
}

int main(int argc, char **argv) {
  char lua_dir[PATH_MAX], scripts_dir[PATH_MAX];
  if (cp_host_find_dirs(NULL, 1, lua_dir, scripts_dir, sizeof lua_dir) != 0) {
    fprintf(stderr, "cpdocker: cannot find the Lua modules (looked beside %s and in "
                    "PREFIX/share/ctrlplane-docker); set CP_DOCKER_HOME\n", argv[0]);
    return 1;
  }
  lua_State *L = luaL_newstate();
  if (!L) {
    fprintf(stderr, "cpdocker: cannot create the Lua state (out of memory)\n");
    return 1;
  }
  lua_pushcfunction(L, host_traceback);
  lua_pushcfunction(L, host_main);
  lua_pushinteger(L, argc);
  lua_pushlightuserdata(L, argv);
  lua_pushstring(L, lua_dir);
  lua_pushstring(L, scripts_dir);
  int status = lua_pcall(L, 4, 1, 1);
  int code;
  if (status != LUA_OK) {
    fprintf(stderr, "cpdocker: internal error: %s\n", lua_tostring(L, -1));
    code = 1;
  } else {
    code = lua_isinteger(L, -1) ? (int)lua_tointeger(L, -1) : 0;
  }
  lua_close(L);
  return code;
}
