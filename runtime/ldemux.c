/*
 * ldemux.c - Lua bindings of the log demultiplexer (demux.c).
 *
 *   core.demux([opts])            -> demuxer
 *     opts.mode        "auto" (default) | "mux" | "raw" ("tty" is the same as "raw")
 *     opts.timestamps  messages start with Docker's timestamp (default false)
 *     opts.max_line    cap on one event's line in bytes (default 1 MiB)
 *     opts.partial_size, opts.keep_cr   see demux.h
 *   demuxer:feed(chunk[, into])   -> events | nil, msg, "protocol", events
 *   demuxer:finish([into])        -> events | nil, msg, "protocol", events
 *       events: a list of {ts = "2024-..Z", stream = "stdout"|"stderr"|..,
 *               line = "...", partial = true (only on a cut piece)};
 *       `into` is a list to append to (it is returned).
 *   demuxer:render(chunk[, opts]) -> out, err | nil, msg, "protocol", out, err
 *   demuxer:render_finish([opts]) -> out, err | nil, msg, "protocol", out, err
 *       the same events as text for stdout and stderr: opts.json (one JSON
 *       object per line, all of it in `out`), opts.service (added as
 *       "service" in JSON), opts.prefix (text before every line),
 *       opts.timestamps (text lines start with the time)
 *   demuxer:stats()               -> {bytes, events, mode}
 *   core.split_frames(bytes)      -> pieces, consumed | nil, msg, "protocol"
 *       the whole frames at the start of bytes, byte-exact (exec output):
 *       pieces = {"stdout"|"stderr", payload, ...}; consumed = bytes used
 *       (a frame cut at the end waits for more)
 *   demuxer:close()
 *
 * Bad data returns nil, message, "protocol"; wrong arguments raise.
 */
#include "demux.h"
#include "lcore.h"

#include <lauxlib.h>
#include <lua.h>
#include <string.h>

#define DEMUX_MT "ctrlplane.docker.demux"

typedef struct ldemux {
  cp_demux d;
  int open;       /* buffers may be held */
  int busy;       /* inside feed: set if a Lua error escaped a callback */
  int cont[CP_DEMUX_STREAMS]; /* text rendering: a cut line goes on */
  cp_demux_out out, err;      /* rendering buffers, reused */
} ldemux;

static ldemux *ld_check(lua_State *L) {
  ldemux *ld = luaL_checkudata(L, 1, DEMUX_MT);
  if (!ld->open) luaL_error(L, "attempt to use a closed demuxer");
  if (ld->busy) luaL_error(L, "demuxer is unusable: an earlier call raised an error");
  return ld;
}

static int ld_close(lua_State *L) {
  ldemux *ld = luaL_checkudata(L, 1, DEMUX_MT);
  if (ld->open) {
    cp_demux_free(&ld->d);
    cp_demux_out_free(&ld->out);
    cp_demux_out_free(&ld->err);
    ld->open = 0;
  }
  return 0;
}

static size_t opt_size(lua_State *L, int t, const char *k, size_t dflt, size_t min) {
  int ty = lua_getfield(L, t, k);
  size_t v = dflt;
  if (ty != LUA_TNIL) {
    int ok;
    lua_Integer n = lua_tointegerx(L, -1, &ok);
    if (!ok || n < (lua_Integer)min) luaL_error(L, "option '%s' must be an integer >= %d", k, (int)min);
    v = (size_t)n;
  }
  lua_pop(L, 1);
  return v;
}

static int opt_flag(lua_State *L, int t, const char *k) {
  int ty = lua_getfield(L, t, k);
  if (ty != LUA_TNIL && ty != LUA_TBOOLEAN) luaL_error(L, "option '%s' must be a boolean", k);
  int v = lua_toboolean(L, -1);
  lua_pop(L, 1);
  return v;
}

static int l_demux(lua_State *L) {
  cp_demux_opts o;
  memset(&o, 0, sizeof o);
  if (!lua_isnoneornil(L, 1)) {
    luaL_checktype(L, 1, LUA_TTABLE);
    static const char *const modes[] = {"auto", "mux", "raw", "tty", NULL};
    lua_getfield(L, 1, "mode");
    int m = luaL_checkoption(L, -1, "auto", modes);
    lua_pop(L, 1);
    o.mode = m == 3 ? CP_DEMUX_RAW : m;
    o.timestamps = opt_flag(L, 1, "timestamps");
    o.keep_cr = opt_flag(L, 1, "keep_cr");
    o.max_line = opt_size(L, 1, "max_line", CP_DEMUX_MAX_LINE, 1);
    o.partial_size = opt_size(L, 1, "partial_size", CP_DEMUX_PARTIAL, 1);
  }
  ldemux *ld = lua_newuserdatauv(L, sizeof *ld, 0);
  memset(ld, 0, sizeof *ld);
  luaL_setmetatable(L, DEMUX_MT);
  cp_demux_init(&ld->d, &o); /* allocates nothing until lines arrive */
  ld->open = 1;
  return 1;
}

/* ---- events as tables ---------------------------------------------------- */

typedef struct tctx {
  lua_State *L;
  int t;
  lua_Integer n;
} tctx;

static int emit_table(void *ud, const cp_demux_event *ev) {
  tctx *c = ud;
  lua_State *L = c->L;
  lua_createtable(L, 0, 4);
  lua_pushlstring(L, ev->line, ev->len);
  lua_setfield(L, -2, "line");
  lua_pushstring(L, cp_demux_stream_name(ev->stream));
  lua_setfield(L, -2, "stream");
  if (ev->ts_len) {
    lua_pushlstring(L, ev->ts, ev->ts_len);
    lua_setfield(L, -2, "ts");
  }
  if (ev->partial) {
    lua_pushboolean(L, 1);
    lua_setfield(L, -2, "partial");
  }
  lua_rawseti(L, c->t, ++c->n);
  return 0;
}

static int push_result(lua_State *L, ldemux *ld, int rc, int nres) {
  if (rc == CP_DEMUX_OK) return nres;
  int base = lua_gettop(L) - nres;
  const char *code = rc == CP_DEMUX_ENOMEM ? "out_of_memory" : "protocol";
  lua_pushnil(L);
  lua_pushstring(L, rc == CP_DEMUX_ENOMEM ? "out of memory" : ld->d.err);
  lua_pushstring(L, code);
  for (int i = 1; i <= nres; i++) lua_pushvalue(L, base + i);
  return 3 + nres;
}

static int events_call(lua_State *L, int finish) {
  ldemux *ld = ld_check(L);
  size_t n = 0;
  const char *p = finish ? NULL : luaL_checklstring(L, 2, &n);
  int into = finish ? 2 : 3;
  if (lua_isnoneornil(L, into)) {
    lua_settop(L, into - 1);
    lua_newtable(L);
  } else {
    luaL_checktype(L, into, LUA_TTABLE);
    lua_settop(L, into);
  }
  tctx c = {L, into, (lua_Integer)lua_rawlen(L, into)};
  ld->busy = 1; /* a memory error inside emit_table leaves it set */
  int rc = finish ? cp_demux_finish(&ld->d, emit_table, &c)
                  : cp_demux_feed(&ld->d, p, n, emit_table, &c);
  ld->busy = 0;
  return push_result(L, ld, rc, 1);
}

static int l_feed(lua_State *L) { return events_call(L, 0); }
static int l_finish(lua_State *L) { return events_call(L, 1); }

/* ---- events as text -------------------------------------------------------- */

typedef struct rctx {
  ldemux *ld;
  int json, timestamps;
  const char *service, *prefix;
  size_t service_len, prefix_len;
} rctx;

static int emit_text(void *ud, const cp_demux_event *ev) {
  rctx *c = ud;
  ldemux *ld = c->ld;
  if (c->json) return cp_demux_json_line(&ld->out, ev, c->service, c->service_len);
  cp_demux_out *b = ev->stream == CP_STREAM_STDOUT || ev->stream == CP_STREAM_STDIN ? &ld->out
                                                                                    : &ld->err;
  int e = 0;
  int s = ev->stream & 3;
  if (!ld->cont[s]) {
    if (c->prefix_len) e = cp_demux_out_put(b, c->prefix, c->prefix_len);
    if (!e && c->timestamps && ev->ts_len) {
      e = cp_demux_out_put(b, ev->ts, ev->ts_len);
      if (!e) e = cp_demux_out_put(b, " ", 1);
    }
  }
  if (!e) e = cp_demux_out_put(b, ev->line, ev->len);
  if (!e && !ev->partial) e = cp_demux_out_put(b, "\n", 1);
  ld->cont[s] = ev->partial;
  return e;
}

static int render_call(lua_State *L, int finish) {
  ldemux *ld = ld_check(L);
  size_t n = 0;
  const char *p = finish ? NULL : luaL_checklstring(L, 2, &n);
  int o = finish ? 2 : 3;
  rctx c;
  memset(&c, 0, sizeof c);
  c.ld = ld;
  if (!lua_isnoneornil(L, o)) {
    luaL_checktype(L, o, LUA_TTABLE);
    c.json = opt_flag(L, o, "json");
    c.timestamps = opt_flag(L, o, "timestamps");
    if (lua_getfield(L, o, "service") != LUA_TNIL) {
      c.service = luaL_checklstring(L, -1, &c.service_len); /* kept by opts */
    }
    if (lua_getfield(L, o, "prefix") != LUA_TNIL) {
      c.prefix = luaL_checklstring(L, -1, &c.prefix_len);
    }
    lua_pop(L, 2);
  }
  ld->out.len = 0;
  ld->err.len = 0;
  int rc = finish ? cp_demux_finish(&ld->d, emit_text, &c)
                  : cp_demux_feed(&ld->d, p, n, emit_text, &c);
  lua_pushlstring(L, ld->out.data ? ld->out.data : "", ld->out.len);
  lua_pushlstring(L, ld->err.data ? ld->err.data : "", ld->err.len);
  /* do not let one huge chunk pin a huge buffer */
  if (ld->out.cap > (8u << 20)) cp_demux_out_free(&ld->out);
  if (ld->err.cap > (8u << 20)) cp_demux_out_free(&ld->err);
  return push_result(L, ld, rc, 2);
}

static int l_render(lua_State *L) { return render_call(L, 0); }
static int l_render_finish(lua_State *L) { return render_call(L, 1); }

static int l_dstats(lua_State *L) {
  ldemux *ld = luaL_checkudata(L, 1, DEMUX_MT);
  lua_createtable(L, 0, 3);
  lua_pushinteger(L, (lua_Integer)ld->d.offset);
  lua_setfield(L, -2, "bytes");
  lua_pushinteger(L, (lua_Integer)ld->d.events);
  lua_setfield(L, -2, "events");
  lua_pushstring(L, ld->d.mode == CP_DEMUX_MUX ? "mux" : ld->d.mode == CP_DEMUX_RAW ? "raw" : "auto");
  lua_setfield(L, -2, "mode");
  return 1;
}

static int l_split_frames(lua_State *L) {
  size_t n;
  const char *p = luaL_checklstring(L, 1, &n);
  size_t pos = 0;
  lua_Integer k = 0;
  lua_newtable(L);
  for (;;) {
    int stream;
    size_t size;
    int r = cp_frame_header(p + pos, n - pos, &stream, &size);
    if (r < 0) return cp_lua_fail(L, "malformed stream header from the Docker daemon", "protocol", 0);
    if (r == 0 || n - pos - 8 < size) break;
    lua_pushstring(L, stream == 2 ? "stderr" : "stdout");
    lua_rawseti(L, -2, ++k);
    lua_pushlstring(L, p + pos + 8, size);
    lua_rawseti(L, -2, ++k);
    pos += 8 + size;
  }
  lua_pushinteger(L, (lua_Integer)pos);
  return 2;
}

static const luaL_Reg demux_methods[] = {
    {"feed", l_feed},     {"finish", l_finish}, {"render", l_render},
    {"render_finish", l_render_finish}, {"stats", l_dstats}, {"close", ld_close},
    {NULL, NULL}};

void cp_open_demux(lua_State *L) {
  luaL_newmetatable(L, DEMUX_MT);
  lua_newtable(L);
  luaL_setfuncs(L, demux_methods, 0);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, ld_close);
  lua_setfield(L, -2, "__gc");
  lua_pushcfunction(L, ld_close);
  lua_setfield(L, -2, "__close");
  lua_pop(L, 1);
  lua_pushcfunction(L, l_demux);
  lua_setfield(L, -2, "demux");
  lua_pushcfunction(L, l_split_frames);
  lua_setfield(L, -2, "split_frames");
  lua_pushinteger(L, (lua_Integer)CP_DEMUX_MAX_LINE);
  lua_setfield(L, -2, "demux_max_line");
}
