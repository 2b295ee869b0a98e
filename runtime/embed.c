/*
 * embed.c - the C embedding API (include/ctrlplane_docker.h): a Lua state
 * per runtime, calling lua/ctrlplane/docker/rpc.lua with JSON in and out.
 * Calls run as scheduler tasks of rpc.embed (submit / poll / cancel);
 * cpd_call is submit plus running the loop until that call finishes.
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
  int runner;   /* registry reference to the rpc.embed runner */
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
 * Stack in: lua_dir, scripts_dir, config_json. Out: provider, runner. */
static int embed_open(lua_State *L) {
  cp_host_prepare(L, lua_tostring(L, 1), lua_tostring(L, 2), "embedded", 1);
  lua_getglobal(L, "require");
  lua_pushstring(L, "ctrlplane.docker.rpc");
  lua_call(L, 1, 1);
  lua_getfield(L, -1, "open_json");
  lua_pushvalue(L, 3);
  lua_call(L, 1, 2);
  if (lua_isnil(L, -2)) return lua_error(L); /* the message */
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
  rt->runner = luaL_ref(L, LUA_REGISTRYINDEX);
  rt->provider = luaL_ref(L, LUA_REGISTRYINDEX);
  return rt;
}

/* Pushes runner, runner[name] for a method call; returns the stack top
 * before them. */
static int embed_method(lua_State *L, cpd_runtime *rt, const char *name) {
  int top = lua_gettop(L);
  lua_rawgeti(L, LUA_REGISTRYINDEX, rt->runner);
  lua_getfield(L, -1, name);
  lua_insert(L, -2); /* method, runner */
  return top;
}

/* A JSON-RPC internal error object for a Lua error message at the top. */
static void embed_internal_error(lua_State *L) {
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
}

static char *embed_top_text(lua_State *L) {
  size_t n = 0;
  const char *text = lua_tolstring(L, -1, &n);
  return embed_strdup(text ? text : "null", text ? n : 4);
}

cpd_id cpd_submit(cpd_runtime *rt, const char *method, const char *params_json,
                  long deadline_ms, char **error_json) {
  static const char misuse[] =
      "{\"code\":-32600,\"message\":\"cpd_submit: runtime and method are required\","
      "\"data\":{\"code\":\"invalid\"}}";
  if (error_json) *error_json = NULL;
  if (!rt || !method) {
    if (error_json) *error_json = embed_strdup(misuse, sizeof misuse - 1);
    return 0;
  }
  lua_State *L = rt->L;
  int top = embed_method(L, rt, "submit");
  lua_pushstring(L, method);
  if (params_json) lua_pushstring(L, params_json);
  else lua_pushnil(L);
  if (deadline_ms > 0) lua_pushinteger(L, deadline_ms);
  else lua_pushnil(L);
  cpd_id id = 0;
  if (lua_pcall(L, 4, 2, 0) != LUA_OK) {
    embed_internal_error(L);
    if (error_json) *error_json = embed_top_text(L);
  } else if (lua_isinteger(L, -2)) {
    id = (cpd_id)lua_tointeger(L, -2);
  } else if (error_json) {
    *error_json = embed_top_text(L);
  }
  lua_settop(L, top);
  return id;
}

int cpd_poll(cpd_runtime *rt, int timeout_ms, cpd_id *id, char **result_json) {
  if (id) *id = 0;
  if (result_json) *result_json = NULL;
  if (!rt || !id || !result_json) return CPD_MISUSE;
  lua_State *L = rt->L;
  int top = embed_method(L, rt, "poll");
  if (timeout_ms >= 0) lua_pushnumber(L, (lua_Number)timeout_ms / 1000.0);
  else lua_pushnumber(L, -1);
  int rc;
  if (lua_pcall(L, 2, 3, 0) != LUA_OK) {
    embed_internal_error(L);
    *result_json = embed_top_text(L);
    rc = CPD_MISUSE;
  } else if (!lua_isinteger(L, -3)) {
    rc = CPD_NONE;
  } else {
    *id = (cpd_id)lua_tointeger(L, -3);
    rc = lua_toboolean(L, -2) ? CPD_OK : CPD_FAILED;
    *result_json = embed_top_text(L);
  }
  lua_settop(L, top);
  return rc;
}

int cpd_cancel(cpd_runtime *rt, cpd_id id) {
  if (!rt || id <= 0) return 0;
  lua_State *L = rt->L;
  int top = embed_method(L, rt, "cancel");
  lua_pushinteger(L, (lua_Integer)id);
  int r = lua_pcall(L, 2, 1, 0) == LUA_OK && lua_toboolean(L, -1);
  lua_settop(L, top);
  return r;
}

int cpd_pending(cpd_runtime *rt) {
  if (!rt) return 0;
  lua_State *L = rt->L;
  int top = embed_method(L, rt, "pending");
  int n = 0;
  if (lua_pcall(L, 1, 1, 0) == LUA_OK) n = (int)lua_tointeger(L, -1);
  lua_settop(L, top);
  return n;
}

/* cpd_call's work, run under lua_pcall (so no Lua allocation happens
 * outside a protected call): looks up runner.call, pushes the method and
 * params, calls it and copies the result text to C memory. */
typedef struct {
  cpd_runtime *rt;
  const char *method, *params;
  int ok;       /* the runner's first result */
  char *result; /* malloc'd JSON text, set last */
} embed_call_args;

static int embed_call_p(lua_State *L) {
  embed_call_args *a = lua_touserdata(L, 1);
  embed_method(L, a->rt, "call");
  lua_pushstring(L, a->method);
  if (a->params) lua_pushstring(L, a->params);
  else lua_pushnil(L);
  lua_call(L, 3, 2);
  a->ok = lua_toboolean(L, -2);
  a->result = embed_top_text(L);
  return 0;
}

/* Under lua_pcall: the error message (argument 1) as a JSON-RPC internal
 * error object, copied to C memory in *(char **)argument 2. */
static int embed_error_text_p(lua_State *L) {
  char **out = lua_touserdata(L, 2);
  lua_settop(L, 1);
  embed_internal_error(L);
  *out = embed_top_text(L);
  return 0;
}

int cpd_call(cpd_runtime *rt, const char *method, const char *params_json, char **result_json) {
  static const char misuse[] =
      "{\"code\":-32600,\"message\":\"cpd_call: runtime and method are required\","
      "\"data\":{\"code\":\"invalid\"}}";
  static const char oom[] =
      "{\"code\":-32603,\"message\":\"internal error: out of memory\","
      "\"data\":{\"code\":\"internal\"}}";
  if (!result_json) return CPD_MISUSE;
  *result_json = NULL;
  if (!rt || !method) {
    *result_json = embed_strdup(misuse, sizeof misuse - 1);
    return CPD_MISUSE;
  }
  lua_State *L = rt->L;
  int top = lua_gettop(L);
  embed_call_args a = {rt, method, params_json, 0, NULL};
  /* a light C function and a light userdata: pushing them allocates nothing */
  lua_pushcfunction(L, embed_call_p);
  lua_pushlightuserdata(L, &a);
  int rc;
  if (lua_pcall(L, 1, 0, 0) == LUA_OK) {
    rc = a.ok ? CPD_OK : CPD_FAILED;
    *result_json = a.result;
  } else {
    /* the runner does not raise; this is out of memory or worse */
    free(a.result);
    lua_pushcfunction(L, embed_error_text_p);
    lua_insert(L, -2); /* function, message */
    lua_pushlightuserdata(L, result_json);
    if (lua_pcall(L, 2, 0, 0) != LUA_OK) *result_json = NULL;
    if (!*result_json) *result_json = embed_strdup(oom, sizeof oom - 1);
    rc = CPD_MISUSE;
  }
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
