/*
 * embed.c - the C embedding API (include/ctrlplane_docker.h): a Lua state
 * per runtime, calling lua/ctrlplane/docker/rpc.lua with JSON in and out.
 */
#include "ctrlplane_docker.h"
#include "host.h"
#include "lcore.h"

#include <lauxlib.h>
#include <limits.h>
#include <lua.h>
#include <stdlib.h>
#include <string.h>

struct cpd_runtime {
  lua_State *L;
  int provider; /* registry reference */
  int call;     /* registry reference to rpc.call_json */
};

static char *embed_strdup(const char *s, size_t n) {
  char *d = malloc(n + 1);
  if (d) {
    memcpy(d, s, n);
    d[n] = '\0';
  }
  return d;
}

static void embed_set_error(char **error, const char *msg) {
  if (error) *error = embed_strdup(msg, strlen(msg));
}

/* Runs under lua_pcall: prepares the state and opens the provider.
 * Stack in: lua_dir, scripts_dir, config_json. Out: provider, call_json. */
static int embed_open(lua_State *L) {
  cp_host_prepare(L, lua_tostring(L, 1), lua_tostring(L, 2), "embedded", 1);
  lua_getglobal(L, "require");
  lua_pushstring(L, "ctrlplane.docker.rpc");
  lua_call(L, 1, 1);
  lua_getfield(L, -1, "open_json");
  lua_pushvalue(L, 3);
  lua_call(L, 1, 2);
  if (lua_isnil(L, -2)) return lua_error(L); /* the message */
  lua_pop(L, 1);
  lua_getfield(L, -2, "call_json");
  return 2;
}

cpd_runtime *cpd_open(const char *home, const char *config_json, char **error) {
  char lua_dir[PATH_MAX], scripts_dir[PATH_MAX];
  if (error) *error = NULL;
  if (cp_host_find_dirs(home, 0, lua_dir, scripts_dir, sizeof lua_dir) != 0) {
    embed_set_error(error, "cannot find the runtime's Lua modules (give home, or set "
                           "CP_DOCKER_HOME to the directory holding lua/ and scripts/)");
    return NULL;
  }
  cpd_runtime *rt = calloc(1, sizeof *rt);
  if (!rt) {
    embed_set_error(error, "out of memory");
    return NULL;
  }
  rt->L = luaL_newstate();
  if (!rt->L) {
    free(rt);
    embed_set_error(error, "cannot create a Lua state (out of memory)");
    return NULL;
  }
  lua_State *L = rt->L;
  lua_pushcfunction(L, embed_open);
  lua_pushstring(L, lua_dir);
  lua_pushstring(L, scripts_dir);
  lua_pushstring(L, config_json ? config_json : "{}");
  if (lua_pcall(L, 3, 2, 0) != LUA_OK) {
    const char *msg = lua_tostring(L, -1);
    embed_set_error(error, msg ? msg : "cannot open the runtime");
    lua_close(L);
    free(rt);
    return NULL;
  }
  rt->call = luaL_ref(L, LUA_REGISTRYINDEX);
  rt->provider = luaL_ref(L, LUA_REGISTRYINDEX);
  return rt;
}

int cpd_call(cpd_runtime *rt, const char *method, const char *params_json, char **result_json) {
  static const char misuse[] =
      "{\"code\":-32600,\"message\":\"cpd_call: runtime and method are required\","
      "\"data\":{\"code\":\"invalid\"}}";
  if (!result_json) return CPD_MISUSE;
  *result_json = NULL;
  if (!rt || !method) {
    *result_json = embed_strdup(misuse, sizeof misuse - 1);
    return CPD_MISUSE;
  }
  lua_State *L = rt->L;
  int top = lua_gettop(L);
  lua_rawgeti(L, LUA_REGISTRYINDEX, rt->call);
  lua_rawgeti(L, LUA_REGISTRYINDEX, rt->provider);
  lua_pushstring(L, method);
  if (params_json) lua_pushstring(L, params_json);
  else lua_pushnil(L);
  int rc;
  if (lua_pcall(L, 3, 2, 0) != LUA_OK) {
    /* rpc.call_json does not raise; this is out of memory or worse */
    const char *msg = lua_tostring(L, -1);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    luaL_addstring(&b, "{\"code\":-32603,\"message\":\"internal error: ");
    for (const char *p = msg ? msg : "unknown"; *p; p++) { /* JSON-escape the text */
      unsigned char ch = (unsigned char)*p;
      if (ch == '"' || ch == '\\') {
        luaL_addchar(&b, '\\');
        luaL_addchar(&b, (char)ch);
      } else if (ch < 0x20) {
        luaL_addchar(&b, ' ');
      } else {
        luaL_addchar(&b, (char)ch);
      }
    }
    luaL_addstring(&b, "\",\"data\":{\"code\":\"internal\"}}");
    luaL_pushresult(&b);
    rc = CPD_MISUSE;
  } else {
    rc = lua_toboolean(L, -2) ? CPD_OK : CPD_FAILED;
  }
  size_t n = 0;
  const char *text = lua_tolstring(L, -1, &n);
  *result_json = embed_strdup(text ? text : "null", text ? n : 4);
  lua_settop(L, top);
  return rc;
}

void cpd_free(void *p) { free(p); }

void cpd_close(cpd_runtime *rt) {
  if (!rt) return;
  lua_close(rt->L); /* finalizers close clients and streams */
  free(rt);
}

const char *cpd_version(void) { return CP_VERSION; }
