/*
 * host.c - shared set-up of a Lua state for cpdocker and the embedding API.
 */
#define _GNU_SOURCE /* dladdr */
#include "host.h"
#include "lcore.h"

#include <dlfcn.h>
#include <lauxlib.h>
#include <limits.h>
#include <lualib.h>
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

/* Looks beside DIR (the directory of the executable or of the library):
 * DIR itself (./cpdocker in the source tree), DIR/.. (build/embed-example
 * or build/libctrlplane-docker.so in the source tree) and
 * DIR/../share/ctrlplane-docker (PREFIX/bin or PREFIX/lib, installed). */
static int host_try_beside(const char *dir, char *lua_dir, char *scripts_dir, size_t n) {
  static const char *const rel[] = {"", "/..", "/../share/ctrlplane-docker"};
  char root[PATH_MAX];
  for (size_t i = 0; i < sizeof rel / sizeof rel[0]; i++) {
    int k = snprintf(root, sizeof root, "%s%s", dir, rel[i]);
    if (k > 0 && (size_t)k < sizeof root && host_try_root(root, lua_dir, scripts_dir, n) == 0)
      return 0;
  }
  return -1;
}

int cp_host_find_dirs(const char *home, int from_exe, char *lua_dir, char *scripts_dir, size_t n) {
  char path[PATH_MAX];
  if (home && *home) return host_try_root(home, lua_dir, scripts_dir, n);
  const char *env = getenv("CP_DOCKER_HOME");
  if (env && *env) return host_try_root(env, lua_dir, scripts_dir, n);
  path[0] = '\0';
  if (!from_exe) {
    /* the embedding API: where this code was loaded from -- the shared
     * library, or the program it was linked into statically -- so an
     * install under any PREFIX finds its own modules */
    Dl_info info;
    if (!dladdr((void *)&host_try_beside, &info) || !info.dli_fname || !*info.dli_fname ||
        realpath(info.dli_fname, path) == NULL)
      path[0] = '\0';
  }
  if (!path[0]) {
    ssize_t len = readlink("/proc/self/exe", path, sizeof path - 1);
    path[len > 0 ? len : 0] = '\0';
  }
  char *slash = strrchr(path, '/');
  if (slash) {
    *slash = '\0';
    if (host_try_beside(path, lua_dir, scripts_dir, n) == 0) return 0;
  }
  return host_try_root(CP_PREFIX "/share/ctrlplane-docker", lua_dir, scripts_dir, n);
}

void cp_host_prepare(lua_State *L, const char *lua_dir, const char *scripts_dir,
                     const char *program, int embedded) {
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
  lua_pushstring(L, program ? program : "");
  lua_setfield(L, -2, "program");
  lua_pushboolean(L, embedded);
  lua_setfield(L, -2, "embedded");
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  lua_pushvalue(L, -2);
  lua_setfield(L, -2, "ctrlplane.docker.host");
  lua_pop(L, 2);
}
