-- ctrlplane.docker: the provider object. Its methods are the provider
-- contract's operations (DESIGN §2); each takes and returns plain tables in
-- the contract's shape. Operational failures return nil, message, code.
--
--   local docker = require("ctrlplane.docker")
--   local p = assert(docker.new({host = "unix:///var/run/docker.sock"}))
--   p:health_check()  --> {healthy = true, message = "...", latency = ns, checked_at = "..."}
local core = require("ctrlplane.docker.core")
local config = require("ctrlplane.docker.config")
local engine = require("ctrlplane.docker.engine")
local json = require("ctrlplane.docker.json")
local util = require("ctrlplane.docker.util")

local M = {VERSION = core.version}

local Provider = {}
Provider.__index = Provider
M.Provider = Provider

-- The operations that work, in the order capabilities are reported. Modules
-- that implement an operation add their capability names here.
M.capability_list = {}

function M.register_capabilities(names)
  for _, n in ipairs(names) do
    local seen = false
    for _, have in ipairs(M.capability_list) do
      if have == n then seen = true end
    end
    if not seen then M.capability_list[#M.capability_list + 1] = n end
  end
end

function M.new(opts)
  local cfg, err = config.resolve(opts)
  if not cfg then return nil, err, "bad_request" end
  local host = package.loaded["ctrlplane.docker.host"]
  if not cfg.scripts_dir then
    cfg.scripts_dir = host and host.scripts_dir or M.find_scripts_dir()
  end
  if cfg.backend == "swarm" then return require("ctrlplane.docker.swarm").new(cfg) end
  local eng, e2, code = engine.new(cfg)
  if not eng then return nil, e2, code end
  return setmetatable({cfg = cfg, engine = eng}, Provider)
end

-- Looks for the bundled policy scripts next to this module (source tree or
-- installed share directory).
function M.find_scripts_dir()
  local src = debug.getinfo(1, "S").source
  -- source tree: <root>/lua/ctrlplane/docker/init.lua beside <root>/scripts
  local root = src:match("^@(.-)lua/ctrlplane/docker/init%.lua$")
  if root then
    local f = io.open(root .. "scripts/rollout.lua", "r")
    if f then
      f:close()
      return root .. "scripts"
    end
  end
  local dir = src:match("^@(.*)/init%.lua$")
  if dir then
    -- `make install`: PREFIX/share/lua/5.4/ctrlplane links to
    -- PREFIX/share/ctrlplane-docker/lua/ctrlplane, beside ../scripts
    for _, rel in ipairs({"/../../../scripts", "/scripts"}) do
      local f = io.open(dir .. rel .. "/rollout.lua", "r")
      if f then
        f:close()
        return dir .. rel
      end
    end
    -- installed as a rock: the scripts sit beside the modules
    return dir .. "/scripts"
  end
  return "scripts"
end

function Provider:info()
  return {
    name = "docker",
    version = M.VERSION,
    region = self.cfg.region,
    location = {country = self.cfg.country, city = self.cfg.city},
  }
end

function Provider.capabilities(_)
  local out = json.array({})
  for i, n in ipairs(M.capability_list) do out[i] = n end
  return out
end

-- Never raises and never fails: an unreachable daemon is healthy = false.
function Provider:health_check()
  local t0 = core.clock()
  local res, err = self.engine:ping()
  local latency = core.clock() - t0
  local status = {latency = util.nanos(latency), checked_at = util.rfc3339()}
  if res then
    local version = self.engine:api_version()
    status.healthy = true
    status.message = string.format("Docker daemon at %s answered in %s (API %s)",
      self.cfg.host, util.human_duration(latency), version or "?")
  else
    status.healthy = false
    status.message = err
  end
  return status
end

-- Daemon facts for `cpdocker version` and `info`: nil, msg, code when down.
function Provider:daemon_version()
  return self.engine:get("/version")
end

function Provider:close()
  self.engine:close()
end

-- Operation modules: each exports install(M) and adds its methods to
-- M.Provider (and its names to the capabilities it really supports).
M.operation_modules = {"lifecycle", "logs", "resources", "exec", "ps"}
-- per-instance locks wrap the methods above, so they come last
M.operation_modules[#M.operation_modules + 1] = "locking"

for _, name in ipairs(M.operation_modules) do
  require("ctrlplane.docker." .. name).install(M)
end

return M
