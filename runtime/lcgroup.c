/*
 * lcgroup.c - Lua binding of the kernel reader (cgroup.c).
 *
 *   core.cgroup_probe([{root =, proc =}])  -> {version = 1|2, mem_total}
 *                                            | nil, msg, "unreadable"
 *   core.cgroup_open(targets[, {root =, proc =}]) -> reader
 *       targets: list of container ids, or of {id =, pid =} (pid from
 *       inspect; without it the drivers' default directories are tried).
 *       Resolves every target and takes its first reading now.
 *   reader:failures()  -> {[id] = {error =, code =}} of targets not readable
 *   reader:sample()    -> {[id] = usage | {error =, code =}}: a second
 *       reading, and the figures from the two (call it the sampling
 *       interval after cgroup_open; the caller waits, so a host with an
 *       event loop can serve other work meanwhile).
 *
 * usage has the shape of the stats sampler's (lstats.c), in bytes:
 *   {id, running = true, cpu_percent, cpu_source = "cgroup", cpu_interval,
 *    memory_used, memory_limit, network_rx, network_tx, block_read,
 *    block_write, pids}
 * Everything lives in the reader userdata: nothing to free by hand.
 */
#include "cgroup.h"
#include "lcore.h"

#include <lauxlib.h>
#include <lua.h>
#include <string.h>

#define READER_MT "ctrlplane.docker.cgroup_reader"
#define ROOT_MAX 256

typedef struct creader {
  size_t n;
  char root[ROOT_MAX], proc[ROOT_MAX];
  cp_cgroup_target *t;  /* n targets */
  cp_cgroup_reading *a; /* n first readings */
} creader;

static void paths_opt(lua_State *L, int idx, char *root, char *proc) {
  strcpy(root, "/sys/fs/cgroup");
  strcpy(proc, "/proc");
  if (lua_isnoneornil(L, idx)) return;
  luaL_checktype(L, idx, LUA_TTABLE);
  const char *keys[] = {"root", "proc"};
  char *outs[] = {root, proc};
  for (int i = 0; i < 2; i++) {
    int ty = lua_getfield(L, idx, keys[i]);
    if (ty == LUA_TSTRING) {
      size_t len;
      const char *s = lua_tolstring(L, -1, &len);
      if (len == 0 || len >= ROOT_MAX) luaL_error(L, "option '%s' must be a path", keys[i]);
      memcpy(outs[i], s, len + 1);
    } else if (ty != LUA_TNIL) {
      luaL_error(L, "option '%s' must be a string", keys[i]);
    }
    lua_pop(L, 1);
  }
}

static void set_int(lua_State *L, const char *k, uint64_t v) {
  lua_pushinteger(L, v > (uint64_t)LUA_MAXINTEGER ? LUA_MAXINTEGER : (lua_Integer)v);
  lua_setfield(L, -2, k);
}

static void set_str(lua_State *L, const char *k, const char *v) {
  lua_pushstring(L, v);
  lua_setfield(L, -2, k);
}

static int l_probe(lua_State *L) {
  char root[ROOT_MAX], proc[ROOT_MAX];
  paths_opt(L, 1, root, proc);
  cp_cgroup_info info;
  if (cp_cgroup_probe(root, proc, &info) != 0) {
    lua_pushfstring(L, "no readable cgroup hierarchy under %s", root);
    return cp_lua_fail(L, lua_tostring(L, -1), "unreadable", 0);
  }
  lua_createtable(L, 0, 2);
  lua_pushinteger(L, info.version);
  lua_setfield(L, -2, "version");
  set_int(L, "mem_total", info.mem_total);
  return 1;
}

static int l_open(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 2);
  lua_Integer len = (lua_Integer)lua_rawlen(L, 1);
  creader *r = lua_newuserdatauv(L, sizeof *r, 1);
  memset(r, 0, sizeof *r);
  luaL_setmetatable(L, READER_MT);
  int ri = lua_gettop(L);
  paths_opt(L, 2, r->root, r->proc);
  /* targets and readings in one block held by the reader's uservalue */
  size_t n = (size_t)len;
  char *block = lua_newuserdatauv(L, (n ? n : 1) * (sizeof *r->t + sizeof *r->a), 0);
  memset(block, 0, (n ? n : 1) * (sizeof *r->t + sizeof *r->a));
  lua_setiuservalue(L, ri, 1);
  r->t = (cp_cgroup_target *)(void *)block;
  r->a = (cp_cgroup_reading *)(void *)(block + n * sizeof *r->t);
  cp_cgroup_info info;
  int version = cp_cgroup_probe(r->root, r->proc, &info) == 0 ? info.version : 0;
  for (size_t i = 0; i < n; i++) {
    cp_cgroup_target *t = &r->t[i];
    int ty = lua_rawgeti(L, 1, (lua_Integer)i + 1);
    const char *id = NULL;
    if (ty == LUA_TSTRING) {
      id = lua_tostring(L, -1);
    } else if (ty == LUA_TTABLE) {
      int pty = lua_getfield(L, -1, "pid");
      if (pty == LUA_TNUMBER && lua_isinteger(L, -1)) t->pid = (long)lua_tointeger(L, -1);
      else if (pty != LUA_TNIL) luaL_error(L, "target #%d: 'pid' must be an integer", (int)i + 1);
      lua_pop(L, 1);
      if (lua_getfield(L, -1, "id") == LUA_TSTRING) id = lua_tostring(L, -1); /* stays on the stack */
    }
    if (!id || !id[0] || strlen(id) > CP_CG_ID_MAX)
      luaL_error(L, "target #%d: expected a container id (a string of at most %d characters)",
                 (int)i + 1, CP_CG_ID_MAX);
    strcpy(t->id, id);
    lua_pop(L, ty == LUA_TTABLE ? 2 : 1);
    if (cp_cgroup_resolve(r->root, r->proc, version, t) == 0) cp_cgroup_read(r->proc, t, &r->a[i]);
  }
  r->n = n;
  lua_settop(L, ri);
  return 1;
}

static creader *rd_check(lua_State *L) {
  return luaL_checkudata(L, 1, READER_MT);
}

static void push_failure(lua_State *L, const cp_cgroup_target *t) {
  lua_createtable(L, 0, 2);
  set_str(L, "error", t->err[0] ? t->err : "not read");
  set_str(L, "code", t->code[0] ? t->code : "not_found");
}

static int l_failures(lua_State *L) {
  creader *r = rd_check(L);
  lua_newtable(L);
  for (size_t i = 0; i < r->n; i++) {
    if (r->t[i].ok) continue;
    push_failure(L, &r->t[i]);
    lua_setfield(L, -2, r->t[i].id);
  }
  return 1;
}

static int l_sample(lua_State *L) {
  creader *r = rd_check(L);
  lua_createtable(L, 0, (int)r->n);
  for (size_t i = 0; i < r->n; i++) {
    cp_cgroup_target *t = &r->t[i];
    cp_cgroup_reading b;
    if (!t->ok || cp_cgroup_read(r->proc, t, &b) != 0) {
      push_failure(L, t);
      lua_setfield(L, -2, t->id);
      continue;
    }
    cp_cgroup_usage u;
    cp_cgroup_compute(&r->a[i], &b, &u);
    lua_createtable(L, 0, 14);
    set_str(L, "id", t->id);
    lua_pushboolean(L, 1);
    lua_setfield(L, -2, "running");
    lua_pushnumber(L, u.cpu_percent);
    lua_setfield(L, -2, "cpu_percent");
    set_str(L, "cpu_source", "cgroup");
    lua_pushnumber(L, u.interval);
    lua_setfield(L, -2, "cpu_interval");
    set_int(L, "memory_used", u.mem_used);
    set_int(L, "memory_limit", u.mem_limit);
    set_int(L, "network_rx", u.rx);
    set_int(L, "network_tx", u.tx);
    set_int(L, "block_read", u.blk_read);
    set_int(L, "block_write", u.blk_write);
    set_int(L, "pids", u.pids);
    lua_pushinteger(L, t->version);
    lua_setfield(L, -2, "cgroup_version");
    lua_setfield(L, -2, t->id);
  }
  return 1;
}

static const luaL_Reg reader_methods[] = {
    {"failures", l_failures}, {"sample", l_sample}, {NULL, NULL}};

static const luaL_Reg cgroup_funcs[] = {
    {"cgroup_probe", l_probe}, {"cgroup_open", l_open}, {NULL, NULL}};

void cp_open_cgroup(lua_State *L) {
  luaL_newmetatable(L, READER_MT);
  lua_newtable(L);
  luaL_setfuncs(L, reader_methods, 0);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
  luaL_setfuncs(L, cgroup_funcs, 0);
}
