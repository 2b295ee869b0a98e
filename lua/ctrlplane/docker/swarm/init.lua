-- The swarm backend (DESIGN §10): the same provider contract on a Docker
-- Swarm cluster. `host` is a manager; an instance is a set of Swarm services
-- cp-<id>-<service> on an attachable overlay network cp-<id>-net; node
-- daemons (cfg.nodes: hostname -> URL, CP_DOCKER_NODES) are reached for what
-- only a node can do (stats, exec, volumes).
--
--   ops.lua      provision, deprovision, start/stop/restart, deploy, rollback, scale
--   observe.lua  status, logs, resources, exec
--   spec.lua     the service spec a ServiceSpec becomes (pure)
--
-- The decisions come from the same policy scripts as on one host:
-- scripts/rollout.lua plan() orders the init jobs and services, strategy()
-- picks start-first or stop-first updates; scripts/status.lua maps each task.
local core = require("ctrlplane.docker.core")
local engine = require("ctrlplane.docker.engine")
local json = require("ctrlplane.docker.json")
local util = require("ctrlplane.docker.util")
local cluster = require("ctrlplane.docker.swarm.cluster")

local M = {}

local Provider = {}
Provider.__index = Provider
M.Provider = Provider

M.CAPABILITIES = {"provision", "deploy", "rollback", "scale", "volumes", "strategy:recreate",
  "strategy:rolling", "logs", "resources", "exec"}

function M.new(cfg)
  local eng, err, code = engine.new(cfg)
  if not eng then return nil, err, code end
  return setmetatable({cfg = cfg, engine = eng, node_engines = {}}, Provider)
end

function Provider:info()
  return {
    name = "docker",
    version = core.version,
    region = self.cfg.region,
    location = {country = self.cfg.country, city = self.cfg.city},
    backend = "swarm",
  }
end

function Provider.capabilities(_)
  local out = json.array({})
  for i, n in ipairs(M.CAPABILITIES) do out[i] = n end
  return out
end

-- Never raises: an unreachable manager or a node that is no manager is
-- healthy = false with the reason.
function Provider:health_check()
  local t0 = core.clock()
  local res, err = self.engine:ping()
  local latency = core.clock() - t0
  local status = {latency = util.nanos(latency), checked_at = util.rfc3339()}
  if not res then
    status.healthy, status.message = false, err
    return status
  end
  local info, ierr = self.engine:get("/info")
  if not info then
    status.healthy, status.message = false, ierr
    return status
  end
  local sw = info.Swarm or {}
  if sw.LocalNodeState ~= "active" or not sw.ControlAvailable then
    status.healthy = false
    status.message = string.format("Docker daemon at %s is not a swarm manager (swarm state %s%s)",
      self.cfg.host, tostring(sw.LocalNodeState), sw.LocalNodeState == "active" and ", a worker" or "")
    return status
  end
  local nodes, nerr = self.engine:get("/nodes")
  if not nodes then
    status.healthy, status.message = false, nerr
    return status
  end
  local ready = 0
  for _, n in ipairs(nodes) do
    if n.Status and n.Status.State == "ready" then ready = ready + 1 end
  end
  status.healthy = ready > 0
  status.nodes_ready, status.nodes_total = ready, #nodes
  status.message = string.format("swarm manager at %s answered in %s; nodes ready %d/%d",
    self.cfg.host, util.human_duration(latency), ready, #nodes)
  local warn = cluster.mode_warning(self.cfg)
  if warn then status.message = status.message .. "; " .. warn end
  return status
end

function Provider:daemon_version()
  return self.engine:get("/version")
end

function Provider:close()
  for _, e in pairs(self.node_engines) do e:close() end
  self.node_engines = {}
  self.engine:close()
end

for _, name in ipairs({"ops", "observe"}) do
  for k, fn in pairs(require("ctrlplane.docker.swarm." .. name)) do Provider[k] = fn end
end
-- per-instance locks, as on one host
require("ctrlplane.docker.locking").install({Provider = Provider})

return M
