/*
 * host.h - what every host of the runtime does to a new Lua state: find the
 * Lua modules and policy scripts, preload the built-in C core, and put the
 * modules first on package.path.
 */
#ifndef CP_HOST_H
#define CP_HOST_H

#include <lua.h>
#include <stddef.h>

/* Fills lua_dir and scripts_dir (n bytes each). Looks in `home` when given,
 * then $CP_DOCKER_HOME, then (when from_exe) beside the running executable
 * and in its ../share/ctrlplane-docker, then in PREFIX/share/ctrlplane-docker.
 * Returns 0 when the modules were found. */
int cp_host_find_dirs(const char *home, int from_exe, char *lua_dir, char *scripts_dir, size_t n);

/* Opens the standard libraries, preloads ctrlplane.docker.core, sets
 * package.path and registers package.loaded["ctrlplane.docker.host"]. */
void cp_host_prepare(lua_State *L, const char *lua_dir, const char *scripts_dir,
                     const char *program, int embedded);

#endif
