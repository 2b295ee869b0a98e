-- Per-instance serialization (DESIGN §8): two operations on the same
-- instance never run at once, whichever process, host program or Lua state
-- they come from, as long as they share the lock directory.
--
-- The mutating operations (provision, deprovision, start, stop, restart,
-- deploy, rollback, scale) hold the instance's lock exclusively for their
-- whole run; status holds it shared, so it waits for a mutation in progress
-- and never sees a half-done deploy, while several status calls run
-- together. Different instances have different locks and run in parallel.
--
-- The lock is core.lock (flock(2) on LOCK_DIR/<instance_id>.lock): the
-- kernel drops it when its holder exits or is killed, so a crashed process
-- never leaves an instance locked. A caller that waits longer than
-- cfg.lock_timeout (CP_DOCKER_LOCK_TIMEOUT, default 300 s) gets
-- nil, "instance X is busy: ...", "busy" and nothing is changed.
-- cfg.lock_dir (CP_DOCKER_LOCK_DIR, default /run/lock/ctrlplane-docker);
-- "off" turns locking off (one caller per instance guaranteed elsewhere).
--
-- Within one operation (one coroutine) the lock is re-entrant: an operation that calls
-- another on the same instance (a deploy hook asking for status) does not
-- wait for itself.
--
-- This module wraps whatever methods exist on the provider when it is
-- installed, so it must be installed after every operation module.
local core = require("ctrlplane.docker.core")
local project = require("ctrlplane.docker.project")

local M = {}

-- operation -> "exclusive" | "shared"
M.MODES = {
  provision = "exclusive", deprovision = "exclusive", start = "exclusive", stop = "exclusive",
  restart = "exclusive", deploy = "exclusive", rollback = "exclusive", scale = "exclusive",
  status = "shared",
}

-- operations whose first argument is a request table with instance_id
local REQUEST_ARG = {provision = true, deploy = true}

-- locks held in this Lua state, per coroutine (each scheduler task is an
-- operation of its own): thread -> {path -> {lock, depth}}
local held_by = setmetatable({}, {__mode = "k"})

local function held_here()
  local co = coroutine.running()
  local h = held_by[co]
  if not h then
    h = {}
    held_by[co] = h
  end
  return h
end

-- core.lock waits blocking; in a scheduler task it tries without waiting
-- and sleeps (yielding) between tries, so other tasks run meanwhile.
local function take(dir, instance_id, shared, timeout)
  if not core.in_task() then
    return core.lock(dir, instance_id, {shared = shared, timeout = timeout})
  end
  local start = core.clock()
  local pause = 0.005
  while true do
    local lock, err, code = core.lock(dir, instance_id, {shared = shared, timeout = 0})
    if lock or code ~= "busy" then return lock, err, code end
    local waited = core.clock() - start
    if waited >= timeout then
      return nil, (err:gsub("waited [%d%.]+s", string.format("waited %.1fs", waited))), code
    end
    if not core.sleep(math.min(pause, timeout - waited)) then
      return nil, "cancelled while waiting for the lock of " .. instance_id, "cancelled"
    end
    pause = math.min(pause * 2, 0.1)
  end
end

local function disabled(dir)
  return dir == nil or dir == "" or dir == "off" or dir == "none"
end

local Guard = {}
Guard.__index = Guard
Guard.__close = function(g)
  local held = g.held
  if not held then return end
  local h = held[g.key]
  if not h then return end
  h.depth = h.depth - 1
  if h.depth == 0 then
    held[g.key] = nil
    h.lock:release()
  end
end

-- Takes the instance's lock for the current scope: returns a guard for a
-- <close> variable, or nil, message, code. timeout in seconds.
function M.acquire(cfg, instance_id, shared, timeout)
  local dir = cfg.lock_dir
  if disabled(dir) or not project.validate_id(instance_id) then
    return setmetatable({}, Guard) -- nothing to lock: the operation rejects a bad id itself
  end
  local key = dir .. "/" .. instance_id
  local held = held_here()
  local h = held[key]
  if h then
    h.depth = h.depth + 1
    return setmetatable({key = key, held = held}, Guard)
  end
  local lock, err, code = take(dir, instance_id, shared, timeout or cfg.lock_timeout)
  if not lock then
    if code == "busy" then
      err = "instance " .. err .. " (another cpdocker call is working on it; retry later)"
    else
      err = "instance " .. instance_id .. ": " .. err
    end
    return nil, err, code
  end
  held[key] = {lock = lock, depth = 1}
  return setmetatable({key = key, held = held}, Guard)
end

-- Whether this Lua state holds the instance's lock (for specs).
function M.holds(cfg, instance_id)
  return held_here()[(cfg.lock_dir or "") .. "/" .. tostring(instance_id)] ~= nil
end

local function wrap(name, fn, shared)
  return function(self, a1, ...)
    local id = a1
    if REQUEST_ARG[name] then id = type(a1) == "table" and a1.instance_id or nil end
    local guard <close>, err, code = M.acquire(self.cfg, id, shared)
    if not guard then return nil, err, code end
    return fn(self, a1, ...)
  end
end

function M.install(docker)
  local P = docker.Provider
  for name, mode in pairs(M.MODES) do
    local fn = P[name]
    if fn then P[name] = wrap(name, fn, mode == "shared") end
  end
end

return M
