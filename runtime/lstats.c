/*
 * lstats.c - Lua bindings of the stats parser and the sampler.
 *
 *   core.stats_parse(doc)              -> sample table | nil, msg, "protocol"
 *   core.stats_compute(doc[, prev])    -> usage table | nil, msg, "protocol"
 *   core.sampler(client[, {ring = n}]) -> sampler (keeps its client alive)
 *   sampler:fetch(ids[, {one_shot =, timeout =}])
 *        -> {[id] = usage | {error =, code =, status =}} | nil, msg, code
 *   sampler:watch(ids)                 -> streams opened (persistent mode)
 *   sampler:pump([wait])               -> new samples | nil, msg, code
 *   sampler:usage(id)                  -> usage | nil, msg, code
 *   sampler:ids(), sampler:live(), sampler:forget(id), sampler:close()
 *
 * A usage table (bytes and bytes/s; the provider converts to MB):
 *   {id, name, running, cpu_percent, cpu_source = "daemon"|"previous"|"none",
 *    cpu_interval, memory_used, memory_limit, memory_percent, network_rx,
 *    network_tx, block_read, block_write, pids, read, samples, age,
 *    streaming, [rx_rate, tx_rate, block_read_rate, block_write_rate]}
 */
#include "http.h"
#include "clock.h"
#include "lcore.h"
#include "sampler.h"
#include "stats.h"

#include <lauxlib.h>
#include <lua.h>
#include <string.h>
#include <time.h>

#define SAMPLER_MT "ctrlplane.docker.sampler"

typedef struct lsampler {
  cp_sampler *s; /* NULL once closed */
} lsampler;

static void set_num(lua_State *L, const char *k, lua_Number v) {
  lua_pushnumber(L, v);
  lua_setfield(L, -2, k);
}

static void set_int(lua_State *L, const char *k, uint64_t v) {
  /* byte counters fit an integer; saturate the "no limit" sentinels */
  lua_pushinteger(L, v > (uint64_t)LUA_MAXINTEGER ? LUA_MAXINTEGER : (lua_Integer)v);
  lua_setfield(L, -2, k);
}

static void push_cpu(lua_State *L, const cp_stats_cpu *c) {
  lua_createtable(L, 0, 4);
  set_int(L, "total", c->total);
  set_int(L, "system", c->system);
  set_int(L, "online", c->online);
  set_int(L, "percpu", c->percpu_n);
}

static void push_sample(lua_State *L, const cp_stats_sample *s) {
  lua_createtable(L, 0, 20);
  lua_pushstring(L, s->id);
  lua_setfield(L, -2, "id");
  lua_pushstring(L, s->name);
  lua_setfield(L, -2, "name");
  set_num(L, "read", s->read);
  set_num(L, "preread", s->preread);
  push_cpu(L, &s->cpu);
  lua_setfield(L, -2, "cpu");
  push_cpu(L, &s->precpu);
  lua_setfield(L, -2, "precpu");
  set_int(L, "memory_usage", s->mem_usage);
  set_int(L, "memory_limit", s->mem_limit);
  set_int(L, "memory_max_usage", s->mem_max_usage);
  if (s->has_inactive_file) set_int(L, "inactive_file", s->inactive_file);
  if (s->has_total_inactive_file) set_int(L, "total_inactive_file", s->total_inactive_file);
  set_int(L, "rx_bytes", s->rx_bytes);
  set_int(L, "tx_bytes", s->tx_bytes);
  set_int(L, "rx_packets", s->rx_packets);
  set_int(L, "tx_packets", s->tx_packets);
  set_int(L, "networks", s->networks);
  set_int(L, "block_read", s->blk_read);
  set_int(L, "block_write", s->blk_write);
  set_int(L, "pids", s->pids);
  set_int(L, "pids_limit", s->pids_limit);
}

static const char *cpu_source_name(int src) {
  return src == CP_CPU_DAEMON ? "daemon" : src == CP_CPU_PREVIOUS ? "previous" : "none";
}

static void push_usage(lua_State *L, const cp_stats_usage *u, const cp_stats_sample *cur) {
  lua_createtable(L, 0, 24);
  lua_pushstring(L, cur->id);
  lua_setfield(L, -2, "id");
  lua_pushstring(L, cur->name[0] == '/' ? cur->name + 1 : cur->name);
  lua_setfield(L, -2, "name");
  lua_pushboolean(L, u->running);
  lua_setfield(L, -2, "running");
  set_num(L, "cpu_percent", u->cpu_percent);
  lua_pushstring(L, cpu_source_name(u->cpu_source));
  lua_setfield(L, -2, "cpu_source");
  set_num(L, "cpu_interval", u->cpu_interval);
  set_int(L, "memory_used", u->mem_used);
  set_int(L, "memory_limit", u->mem_limit);
  set_num(L, "memory_percent", u->mem_percent);
  set_int(L, "network_rx", u->rx_bytes);
  set_int(L, "network_tx", u->tx_bytes);
  set_int(L, "block_read", u->blk_read);
  set_int(L, "block_write", u->blk_write);
  set_int(L, "pids", u->pids);
  set_num(L, "read", u->read);
  if (u->has_rates) {
    set_num(L, "rx_rate", u->rx_rate);
    set_num(L, "tx_rate", u->tx_rate);
    set_num(L, "block_read_rate", u->blk_read_rate);
    set_num(L, "block_write_rate", u->blk_write_rate);
  }
}

/* ---- documents --------------------------------------------------------- */

static int parse_arg(lua_State *L, int idx, cp_stats_sample *out) {
  size_t len;
  luaL_checktype(L, idx, LUA_TSTRING);
  const char *doc = lua_tolstring(L, idx, &len);
  char err[200];
  if (cp_stats_parse(doc, len, out, err, sizeof err) != 0) return cp_lua_fail(L, err, "protocol", 0);
  return 0;
}

static int l_stats_parse(lua_State *L) {
  lua_settop(L, 1);
  cp_stats_sample *s = lua_newuserdatauv(L, sizeof *s, 0); /* scratch, freed by GC */
  int n = parse_arg(L, 1, s);
  if (n) return n;
  push_sample(L, s);
  return 1;
}

static int l_stats_compute(lua_State *L) {
  lua_settop(L, 2);
  cp_stats_sample *two = lua_newuserdatauv(L, 2 * sizeof *two, 0);
  int n = parse_arg(L, 1, &two[0]);
  if (n) return n;
  const cp_stats_sample *prev = NULL;
  if (!lua_isnoneornil(L, 2)) {
    if ((n = parse_arg(L, 2, &two[1])) != 0) return n;
    prev = &two[1];
  }
  cp_stats_usage u;
  cp_stats_compute(&two[0], prev, &u);
  push_usage(L, &u, &two[0]);
  return 1;
}

/* ---- sampler ------------------------------------------------------------- */

static lsampler *sm_check(lua_State *L, int idx) {
  lsampler *ls = luaL_checkudata(L, idx, SAMPLER_MT);
  if (!ls->s) luaL_error(L, "attempt to use a closed sampler");
  return ls;
}

/* Pushes the sampler's client (uservalue 1) and returns its transport,
 * negotiating the API version first (cp_client_negotiate, in C). On failure
 * pushes nil, msg, code[, status] and returns NULL with *nret set. */
static cp_client *sm_client(lua_State *L, int idx, int *nret) {
  lua_getiuservalue(L, idx, 1);
  int ci = lua_gettop(L);
  cp_client *c = cp_lua_client(L, ci);
  *nret = 0;
  char msg[1024];
  const char *code = NULL;
  long status = 0;
  if (cp_client_negotiate(c, msg, sizeof msg, &code, &status) != 0) {
    *nret = cp_lua_fail(L, msg, code, status);
    return NULL;
  }
  return c;
}

static int l_sampler(lua_State *L) {
  cp_lua_client(L, 1); /* a live client */
  lua_Integer ring = CP_SAMPLER_RING_DEFAULT;
  if (!lua_isnoneornil(L, 2)) {
    luaL_checktype(L, 2, LUA_TTABLE);
    int t = lua_getfield(L, 2, "ring");
    if (t == LUA_TNUMBER) ring = luaL_checkinteger(L, -1);
    else if (t != LUA_TNIL) luaL_error(L, "option 'ring' must be an integer");
    lua_pop(L, 1);
    if (ring < 2 || ring > CP_SAMPLER_RING_MAX)
      luaL_error(L, "option 'ring' must be between 2 and %d", CP_SAMPLER_RING_MAX);
  }
  lsampler *ls = lua_newuserdatauv(L, sizeof *ls, 1);
  ls->s = NULL;
  luaL_setmetatable(L, SAMPLER_MT);
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, -2, 1);
  ls->s = cp_sampler_new((unsigned)ring);
  if (!ls->s) return luaL_error(L, "out of memory");
  return 1;
}

static int l_sampler_close(lua_State *L) {
  lsampler *ls = luaL_checkudata(L, 1, SAMPLER_MT);
  cp_sampler_free(ls->s);
  ls->s = NULL;
  return 0;
}

/* ids at idx (a list of strings) -> array of C strings kept alive by the list */
static const char **id_list(lua_State *L, int idx, size_t *n) {
  luaL_checktype(L, idx, LUA_TTABLE);
  lua_Integer len = (lua_Integer)lua_rawlen(L, idx);
  const char **ids = lua_newuserdatauv(L, (size_t)(len ? len : 1) * sizeof *ids, 0);
  for (lua_Integer i = 1; i <= len; i++) {
    if (lua_rawgeti(L, idx, i) != LUA_TSTRING)
      luaL_error(L, "container id #%d must be a string", (int)i);
    ids[i - 1] = lua_tostring(L, -1);
    if (!ids[i - 1][0]) luaL_error(L, "container id #%d is empty", (int)i);
    lua_pop(L, 1);
  }
  *n = (size_t)len;
  return ids;
}

/* Pushes the usage of e, or its failure as a table {error, code, status}
 * (as_table) or as nil, msg, code (returning the count). */
static int push_entry(lua_State *L, const cp_sampler_entry *e, int as_table) {
  cp_stats_usage u;
  if (cp_sampler_usage(e, &u) == 0) {
    push_usage(L, &u, cp_sampler_get(e, 0));
    set_int(L, "samples", e->count);
    set_num(L, "age", cp_monotonic() - e->updated);
    lua_pushboolean(L, e->x != NULL && e->mode == CP_FETCH_STREAM);
    lua_setfield(L, -2, "streaming");
    if (e->failed) {
      lua_pushstring(L, e->err);
      lua_setfield(L, -2, "last_error");
    }
    return 1;
  }
  const char *msg = e->failed ? e->err : "no stats sample yet";
  const char *code = e->failed ? e->code : "no_sample";
  if (!as_table) return cp_lua_fail(L, msg, code, e->status);
  lua_createtable(L, 0, 3);
  lua_pushstring(L, msg);
  lua_setfield(L, -2, "error");
  lua_pushstring(L, code);
  lua_setfield(L, -2, "code");
  if (e->status > 0) {
    lua_pushinteger(L, e->status);
    lua_setfield(L, -2, "status");
  }
  return 1;
}

static int push_fetched(lua_State *L, lsampler *ls, const char **ids, size_t n);

/* A task's fetch, resumed by the scheduler: stack 1 sampler, 2 ids, 3
 * opts, 4 id list, 5 client, 6 deadline (-1: none); its transfers were
 * started by l_sampler_fetch. A cancelled fetch leaves its transfers to
 * finish (another fetch of the same container may share them; the next
 * fetch takes or replaces them). */
static int k_sampler_fetch(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  lsampler *ls = sm_check(L, 1);
  if (cp_task_cancelled(L, 6)) return cp_task_fail_cancel(L, 6);
  lua_settop(L, 6);
  const char **ids = lua_touserdata(L, 4);
  size_t n = (size_t)lua_rawlen(L, 2);
  double deadline = lua_tonumber(L, 6);
  if (!cp_sampler_fetch_settle(ls->s, ids, n)) {
    if (deadline < 0 || cp_monotonic() < deadline)
      return cp_task_wait(L, 5, deadline, -1, 0, ctx, k_sampler_fetch);
    cp_sampler_fetch_abandon(ls->s, ids, n, 1);
  }
  return push_fetched(L, ls, ids, n);
}

static int l_sampler_fetch(lua_State *L) {
  lsampler *ls = sm_check(L, 1);
  if (!lua_isnoneornil(L, 3)) luaL_checktype(L, 3, LUA_TTABLE);
  lua_settop(L, 3);
  int one_shot = 0;
  long timeout = -1;
  if (lua_istable(L, 3)) {
    lua_getfield(L, 3, "one_shot");
    one_shot = lua_toboolean(L, -1);
    lua_pop(L, 1);
    if (lua_getfield(L, 3, "timeout") != LUA_TNIL) {
      lua_Number t = luaL_checknumber(L, -1);
      if (t < 0) luaL_error(L, "option 'timeout' must not be negative");
      timeout = (long)(t * 1000.0);
    }
    lua_pop(L, 1);
  }
  size_t n;
  const char **ids = id_list(L, 2, &n); /* 4 */
  int nret;
  cp_client *c = sm_client(L, 1, &nret); /* 5 */
  if (!c) return nret;
  int mode = one_shot ? CP_FETCH_ONESHOT : CP_FETCH_SAMPLE;
  if (cp_task_active(L)) { /* a scheduler's task: wait by yielding, the loop drives */
    cp_sampler_fetch_start(ls->s, c, ids, n, mode);
    lua_pushnumber(L, timeout < 0 ? -1 : cp_monotonic() + (double)timeout / 1000.0); /* 6 */
    return k_sampler_fetch(L, 0, 0);
  }
  int r = cp_sampler_fetch(ls->s, c, ids, n, mode, timeout);
  if (r < 0 && cp_interrupted) return cp_lua_fail(L, "interrupted", "interrupted", 0);
  return push_fetched(L, ls, ids, n);
}

/* The results of a fetch: id -> usage or {error, code[, status]}. */
static int push_fetched(lua_State *L, lsampler *ls, const char **ids, size_t n) {
  lua_createtable(L, 0, (int)n);
  for (size_t i = 0; i < n; i++) {
    cp_sampler_entry *e = cp_sampler_find(ls->s, ids[i]);
    if (!e) {
      lua_createtable(L, 0, 2);
      lua_pushstring(L, "out of memory");
      lua_setfield(L, -2, "error");
      lua_pushstring(L, "out_of_memory");
      lua_setfield(L, -2, "code");
    } else {
      push_entry(L, e, 1);
    }
    lua_setfield(L, -2, ids[i]);
  }
  return 1;
}

static int l_sampler_watch(lua_State *L) {
  lsampler *ls = sm_check(L, 1);
  size_t n;
  const char **ids = id_list(L, 2, &n);
  int nret;
  cp_client *c = sm_client(L, 1, &nret);
  if (!c) return nret;
  int opened = cp_sampler_watch(ls->s, c, ids, n);
  if (opened < 0) return luaL_error(L, "cannot open a stats stream (out of memory)");
  lua_pushinteger(L, opened);
  return 1;
}

static int l_sampler_pump(lua_State *L) {
  lsampler *ls = sm_check(L, 1);
  long wait = 0;
  if (!lua_isnoneornil(L, 2)) {
    lua_Number w = luaL_checknumber(L, 2);
    wait = w > 0 ? (long)(w * 1000.0) : 0;
  }
  lua_getiuservalue(L, 1, 1);
  cp_client *c = cp_lua_client(L, -1);
  int added = cp_sampler_pump(ls->s, c, wait);
  if (added < 0) return cp_lua_fail(L, "interrupted", "interrupted", 0);
  lua_pushinteger(L, added);
  return 1;
}

static int l_sampler_usage(lua_State *L) {
  lsampler *ls = sm_check(L, 1);
  const char *id = luaL_checkstring(L, 2);
  cp_sampler_entry *e = cp_sampler_find(ls->s, id);
  if (!e) return cp_lua_fail(L, "container not sampled", "not_found", 0);
  return push_entry(L, e, 0);
}

static int l_sampler_ids(lua_State *L) {
  lsampler *ls = sm_check(L, 1);
  lua_createtable(L, (int)ls->s->n, 0);
  for (size_t i = 0; i < ls->s->n; i++) {
    lua_pushstring(L, ls->s->e[i]->id);
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  return 1;
}

static int l_sampler_live(lua_State *L) {
  lsampler *ls = sm_check(L, 1);
  lua_pushinteger(L, (lua_Integer)cp_sampler_live(ls->s));
  return 1;
}

static int l_sampler_forget(lua_State *L) {
  lsampler *ls = sm_check(L, 1);
  cp_sampler_remove(ls->s, luaL_checkstring(L, 2));
  return 0;
}

static const luaL_Reg sampler_methods[] = {
    {"fetch", l_sampler_fetch}, {"watch", l_sampler_watch}, {"pump", l_sampler_pump},
    {"usage", l_sampler_usage}, {"ids", l_sampler_ids},     {"live", l_sampler_live},
    {"forget", l_sampler_forget}, {"close", l_sampler_close}, {NULL, NULL}};

static const luaL_Reg stats_funcs[] = {{"stats_parse", l_stats_parse},
                                       {"stats_compute", l_stats_compute},
                                       {"sampler", l_sampler},
                                       {NULL, NULL}};

void cp_open_stats(lua_State *L) {
  luaL_newmetatable(L, SAMPLER_MT);
  lua_newtable(L);
  luaL_setfuncs(L, sampler_methods, 0);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, l_sampler_close);
  lua_setfield(L, -2, "__gc");
  lua_pushcfunction(L, l_sampler_close);
  lua_setfield(L, -2, "__close");
  lua_pop(L, 1);
  luaL_setfuncs(L, stats_funcs, 0);
}
