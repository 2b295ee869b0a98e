/*
 * lcore.h - the Lua module of the C core, ctrlplane.docker.core.
 */
#ifndef CP_LCORE_H
#define CP_LCORE_H

#include <lua.h>

#ifndef CP_VERSION
#define CP_VERSION "0.1.0"
#endif

int luaopen_ctrlplane_docker_core(lua_State *L);

/* Sets core.demux on the module table at the top of the stack (ldemux.c). */
void cp_open_demux(lua_State *L);

/* The transport of the client userdata at idx; raises when idx is not a
 * client or the client is closed. (For the other binding files.) */
struct cp_client;
struct cp_client *cp_lua_client(lua_State *L, int idx);

/* Pushes nil, msg, code (and status when > 0) and returns their count: the
 * failure convention of every binding. */
int cp_lua_fail(lua_State *L, const char *msg, const char *code, long status);

/* Cooperative waits (lcore.c). A scheduler (lua/ctrlplane/docker/sched.lua)
 * runs each operation as a coroutine marked with core.task_mark; a binding
 * that would block checks cp_task_active(L) and, when true, yields with
 * cp_task_wait instead of waiting itself. The scheduler resumes the task
 * when the client at client_idx made progress, at the deadline (monotonic
 * seconds, <0: none) or when fd (>=0) is ready for events (POLLIN/POLLOUT),
 * with no arguments, or with "cancel", code, message when the wait is
 * cancelled (cp_task_cancelled / cp_task_fail_cancel, base being the stack
 * top before the yield). Outside a task everything blocks as before. */
int cp_task_active(lua_State *L);
int cp_task_wait(lua_State *L, int client_idx, double deadline, int fd, int events,
                 lua_KContext ctx, lua_KFunction k);
int cp_task_cancelled(lua_State *L, int base);
int cp_task_fail_cancel(lua_State *L, int base);

/* Signals, clocks, sleep and fd helpers (lsys.c): sets them on the module
 * table at the top of the stack. */
void cp_open_sys(lua_State *L);

/* client:hijack and raw connections (lraw.c). */
void cp_open_raw(lua_State *L);

/* Stats parsing and the sampler (lstats.c): sets fields on the module
 * table at the top of the stack. */
void cp_open_stats(lua_State *L);

/* core.cgroup_probe and core.cgroup_open, usage from the kernel (lcgroup.c). */
void cp_open_cgroup(lua_State *L);

/* core.lock, cross-process per-name locks (llock.c). */
void cp_open_lock(lua_State *L);

#endif
