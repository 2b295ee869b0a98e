/*
 * asan_lua.c - a minimal Lua 5.4 interpreter (`asan_lua SCRIPT [ARGS...]`,
 * or `asan_lua -e CODE`), built with ASan + UBSan by `make asan-all` so
 * busted runs in an instrumented process that loads the instrumented C core
 * without LD_PRELOAD (which would leak into every child process the specs
 * start: sh, docker, curl).
 */
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdio.h>
#include <string.h>

static int asan_lua_traceback(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  luaL_traceback(L, L, msg ? msg : "(error object is not a string)", 1);
  return 1;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s SCRIPT [ARGS...] | -e CODE\n", argv[0]);
    return 2;
  }
  lua_State *L = luaL_newstate();
  if (!L) return 1;
  luaL_openlibs(L);
  int first = strcmp(argv[1], "-e") == 0 ? 2 : 1;
  lua_createtable(L, argc, 1); /* arg, as lua.c builds it */
  for (int i = 0; i < argc; i++) {
    lua_pushstring(L, argv[i]);
    lua_rawseti(L, -2, i - first);
  }
  lua_setglobal(L, "arg");
  lua_pushcfunction(L, asan_lua_traceback);
  int st = first == 2 ? luaL_loadstring(L, argc > 2 ? argv[2] : "")
                      : luaL_loadfile(L, argv[1]);
  int nargs = 0;
  if (st == LUA_OK && first == 1) {
    for (int i = 2; i < argc; i++, nargs++) lua_pushstring(L, argv[i]);
  }
  if (st == LUA_OK) st = lua_pcall(L, nargs, 0, 1);
  if (st != LUA_OK) fprintf(stderr, "%s: %s\n", argv[0], lua_tostring(L, -1));
  lua_close(L);
  return st == LUA_OK ? 0 : 1;
}
