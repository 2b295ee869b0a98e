rockspec_format = "3.0"
package = "ctrlplane-docker"
version = "scm-1"
source = {url = "git+file:///dev/null"}
description = {
  summary = "Lua-scriptable ctrlplane provider runtime for Docker",
  detailed = [[
A C core (Docker Engine API over libcurl, log demultiplexing, stats sampling)
with the provider library and its lifecycle policy in Lua.
]],
  license = "MIT",
}
dependencies = {"lua >= 5.4", "lua-cjson"}
external_dependencies = {CURL = {header = "curl/curl.h"}}
build = {
  type = "builtin",
  modules = {
    ["ctrlplane.docker.core"] = {
      sources = {"runtime/http.c", "runtime/lcore.c",
        "runtime/stats.c", "runtime/sampler.c", "runtime/lstats.c"},
      libraries = {"curl"},
      incdirs = {"$(CURL_INCDIR)", "runtime"},
      libdirs = {"$(CURL_LIBDIR)"},
    },
    ["ctrlplane.docker"] = "lua/ctrlplane/docker/init.lua",
    ["ctrlplane.docker.cli"] = "lua/ctrlplane/docker/cli.lua",
    ["ctrlplane.docker.config"] = "lua/ctrlplane/docker/config.lua",
    ["ctrlplane.docker.engine"] = "lua/ctrlplane/docker/engine.lua",
    ["ctrlplane.docker.json"] = "lua/ctrlplane/docker/json.lua",
    ["ctrlplane.docker.util"] = "lua/ctrlplane/docker/util.lua",
    ["ctrlplane.docker.resources"] = "lua/ctrlplane/docker/resources.lua",
    ["ctrlplane.docker.cli_resources"] = "lua/ctrlplane/docker/cli_resources.lua",
  },
}
