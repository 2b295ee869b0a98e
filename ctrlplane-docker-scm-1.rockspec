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
-- libcurl comes from the system (Debian: libcurl4-openssl-dev, headers in the
-- compiler's default multiarch include path)
build = {
  type = "builtin",
  modules = {
    ["ctrlplane.docker.core"] = {
      sources = {"runtime/clock.c", "runtime/http.c", "runtime/lcore.c", "runtime/lsys.c",
        "runtime/demux.c", "runtime/ldemux.c", "runtime/stats.c", "runtime/sampler.c", "runtime/lstats.c", "runtime/lraw.c",
        "runtime/lock.c", "runtime/llock.c", "runtime/cgroup.c", "runtime/lcgroup.c"},
      libraries = {"curl"},
      incdirs = {"runtime"},
    },
    ["ctrlplane.docker"] = "lua/ctrlplane/docker/init.lua",
    ["ctrlplane.docker.cli"] = "lua/ctrlplane/docker/cli.lua",
    ["ctrlplane.docker.cli_exec"] = "lua/ctrlplane/docker/cli_exec.lua",
    ["ctrlplane.docker.cli_lifecycle"] = "lua/ctrlplane/docker/cli_lifecycle.lua",
    ["ctrlplane.docker.cli_logs"] = "lua/ctrlplane/docker/cli_logs.lua",
    ["ctrlplane.docker.cli_ps"] = "lua/ctrlplane/docker/cli_ps.lua",
    ["ctrlplane.docker.cli_resources"] = "lua/ctrlplane/docker/cli_resources.lua",
    ["ctrlplane.docker.cli_serve"] = "lua/ctrlplane/docker/cli_serve.lua",
    ["ctrlplane.docker.config"] = "lua/ctrlplane/docker/config.lua",
    ["ctrlplane.docker.engine"] = "lua/ctrlplane/docker/engine.lua",
    ["ctrlplane.docker.exec"] = "lua/ctrlplane/docker/exec.lua",
    ["ctrlplane.docker.graph"] = "lua/ctrlplane/docker/graph.lua",
    ["ctrlplane.docker.json"] = "lua/ctrlplane/docker/json.lua",
    ["ctrlplane.docker.lifecycle"] = "lua/ctrlplane/docker/lifecycle.lua",
    ["ctrlplane.docker.locking"] = "lua/ctrlplane/docker/locking.lua",
    ["ctrlplane.docker.logs"] = "lua/ctrlplane/docker/logs.lua",
    ["ctrlplane.docker.gate"] = "lua/ctrlplane/docker/gate.lua",
    ["ctrlplane.docker.image"] = "lua/ctrlplane/docker/image.lua",
    ["ctrlplane.docker.members"] = "lua/ctrlplane/docker/members.lua",
    ["ctrlplane.docker.network"] = "lua/ctrlplane/docker/network.lua",
    ["ctrlplane.docker.release_history"] = "lua/ctrlplane/docker/release_history.lua",
    ["ctrlplane.docker.specbuild"] = "lua/ctrlplane/docker/specbuild.lua",
    ["ctrlplane.docker.steps"] = "lua/ctrlplane/docker/steps.lua",
    ["ctrlplane.docker.manifest"] = "lua/ctrlplane/docker/manifest.lua",
    ["ctrlplane.docker.recover"] = "lua/ctrlplane/docker/recover.lua",
    ["ctrlplane.docker.replace"] = "lua/ctrlplane/docker/replace.lua",
    ["ctrlplane.docker.ops.deploy"] = "lua/ctrlplane/docker/ops/deploy.lua",
    ["ctrlplane.docker.ops.power"] = "lua/ctrlplane/docker/ops/power.lua",
    ["ctrlplane.docker.ops.provision"] = "lua/ctrlplane/docker/ops/provision.lua",
    ["ctrlplane.docker.ops.scale"] = "lua/ctrlplane/docker/ops/scale.lua",
    ["ctrlplane.docker.ops.status"] = "lua/ctrlplane/docker/ops/status.lua",
    ["ctrlplane.docker.policy"] = "lua/ctrlplane/docker/policy.lua",
    ["ctrlplane.docker.project"] = "lua/ctrlplane/docker/project.lua",
    ["ctrlplane.docker.resources"] = "lua/ctrlplane/docker/resources.lua",
    ["ctrlplane.docker.ps"] = "lua/ctrlplane/docker/ps.lua",
    ["ctrlplane.docker.rpc"] = "lua/ctrlplane/docker/rpc.lua",
    ["ctrlplane.docker.sched"] = "lua/ctrlplane/docker/sched.lua",
    ["ctrlplane.docker.swarm"] = "lua/ctrlplane/docker/swarm/init.lua",
    ["ctrlplane.docker.swarm.cluster"] = "lua/ctrlplane/docker/swarm/cluster.lua",
    ["ctrlplane.docker.swarm.observe"] = "lua/ctrlplane/docker/swarm/observe.lua",
    ["ctrlplane.docker.swarm.ops"] = "lua/ctrlplane/docker/swarm/ops.lua",
    ["ctrlplane.docker.swarm.spec"] = "lua/ctrlplane/docker/swarm/spec.lua",
    ["ctrlplane.docker.trace"] = "lua/ctrlplane/docker/trace.lua",
    ["ctrlplane.docker.tar"] = "lua/ctrlplane/docker/tar.lua",
    ["ctrlplane.docker.sha256"] = "lua/ctrlplane/docker/sha256.lua",
    ["ctrlplane.docker.material"] = "lua/ctrlplane/docker/material.lua",
    ["ctrlplane.docker.util"] = "lua/ctrlplane/docker/util.lua",
    ["ctrlplane.docker.validate"] = "lua/ctrlplane/docker/validate.lua",
    -- the bundled policy scripts, found beside the modules
    ["ctrlplane.docker.scripts.reprovision"] = "scripts/reprovision.lua",
    ["ctrlplane.docker.scripts.rollout"] = "scripts/rollout.lua",
    ["ctrlplane.docker.scripts.scale"] = "scripts/scale.lua",
    ["ctrlplane.docker.scripts.secrets"] = "scripts/secrets.lua",
    ["ctrlplane.docker.scripts.status"] = "scripts/status.lua",
  },
}
