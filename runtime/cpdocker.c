/*
 * cpdocker.c - the host: embeds Lua 5.4 with the C core built in and runs
 * the command line (lua/ctrlplane/docker/cli.lua) under lua_pcall.
 *
 * It finds the Lua modules and policy scripts next to the executable in a
 * source tree (./lua, ./scripts), or under PREFIX/share/ctrlplane-docker
 * when installed; CP_DOCKER_HOME overrides both.
 */
#include "lcore.h"

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef CP_PREFIX
#define CP_PREFIX "/usr/local"
#endif

static int host_exists(const char *path) {
  struct stat st;
  return stat(path, &st) == 0;
}

/* Sets lua_dir and scripts_dir to ROOT/lua and ROOT/scripts when
 * ROOT/lua/ctrlplane/docker/init.lua exists. */
static int host_try_root(const char *root, char *lua_dir, char *scripts_dir, size_t n) {
  char probe[PATH_MAX];
  int k = snprintf(probe, sizeof probe, "%s/lua/ctrlplane/docker/init.lua", root);
  if (k < 0 || (size_t)k >= sizeof probe || !host_exists(probe)) return -1;
  k = snprintf(lua_dir, n, "%s/lua", root);
  if (k < 0 || (size_t)k >= n) return -1;
  k = snprintf(scripts_dir, n, "%s/scripts", root);
  if (k < 0 || (size_t)k >= n) return -1;
  return 0;
}

/* Fills lua_dir and scripts_dir; returns 0 when the modules were found. */
static int host_find_dirs(char *lua_dir, char *scripts_dir, size_t n) {
  char exe[PATH_MAX], root[PATH_MAX];
  const char *home = getenv("CP_DOCKER_HOME");
  if (home && *home) return host_try_root(home, lua_dir, scripts_dir, n);
  ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (len > 0) {
    exe[len] = '\0';
    char *slash = strrchr(exe, '/');
    if (slash) *slash = '\0';
    /* source tree: ./cpdocker beside ./lua */
    if (host_try_root(exe, lua_dir, scripts_dir, n) == 0) return 0;
    /* installed: PREFIX/bin/cpdocker beside PREFIX/share/ctrlplane-docker */
    int k = snprintf(root, sizeof root, "%s/../share/ctrlplane-docker", exe);
    if (k > 0 && (size_t)k < sizeof root && host_try_root(root, lua_dir, scripts_dir, n) == 0)
      return 0;
  }
  return host_try_root(CP_PREFIX "/share/ctrlplane-docker", lua_dir, scripts_dir, n);
}

static int host_traceback(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  if (!msg) {
    if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING) return 1;
    msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
  }
  luaL_traceback(L, L, msg, 1);
  return 1;
}

/* The body run under lua_pcall: argv in upvalues via light userdata. */
static int host_main(lua_State *L) {
  int argc = (int)lua_tointeger(L, 1);
  char **argv = lua_touserdata(L, 2);
  const char *lua_dir = lua_tostring(L, 3);
  const char *scripts_dir = lua_tostring(L, 4);
  luaL_openlibs(L);

  /* the C core is built in */
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  lua_pushcfunction(L, luaopen_ctrlplane_docker_core);
  lua_setfield(L, -2, "ctrlplane.docker.core");
  lua_pop(L, 1);

  /* our modules first, then the system's (cjson and friends) */
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "path");
  lua_pushfstring(L, "%s/?.lua;%s/?/init.lua;%s", lua_dir, lua_dir, lua_tostring(L, -1));
  lua_setfield(L, -3, "path");
  lua_pop(L, 2);

  /* where the host found things, for the library */
  lua_createtable(L, 0, 4);
  lua_pushstring(L, lua_dir);
  lua_setfield(L, -2, "lua_dir");
  lua_pushstring(L, scripts_dir);
  lua_setfield(L, -2, "scripts_dir");
  lua_pushstring(L, argv[0]);
  lua_setfield(L, -2, "program");
  lua_pushboolean(L, 1);
  lua_setfield(L, -2, "embedded");
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  lua_pushvalue(L, -2);
  lua_setfield(L, -2, "ctrlplane.docker.host");
  lua_pop(L, 2);

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
  if (host_find_dirs(lua_dir, scripts_dir, sizeof lua_dir) != 0) {
    fprintf(stderr, "cpdocker: cannot find the Lua modules (looked beside %s and in %s); "
                    "set CP_DOCKER_HOME\n", argv[0], CP_PREFIX);
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
