-- The policy gate: every call the runtime makes into a policy script goes
-- through here. Each function loads nothing itself (see gate.load), calls
-- the script's function protected, and checks its output before the
-- runtime acts on it. An error inside the script, or an output of the
-- wrong shape, is nil, message, "policy" where the message names the
-- script's file and line ("policy scripts/status.lua:31 (service): ...");
-- nothing is ever swallowed or replaced by a default.
--
--   gate.load(p, names)                  -> {name -> policy} | nil, msg, code
--   gate.plan(rollout, services)         -> waves
--   gate.strategy(rollout, svc, request) -> {kind, grace, drain, ready_timeout, observe}
--   gate.after_service(rollout, step)    -> true | nil, msg, code
--   gate.canary(rollout, svc, request)   -> {window, interval}
--   gate.judge_canary(rollout, obs)      -> true | false, reason | nil, msg, code
--   gate.decide(reprovision, desired, existing) -> {name -> action}, {name -> reason}
--   gate.service(status, input)          -> {state, ready, message}
--   gate.aggregate(status, services)     -> {state, ready, message}
--   gate.severity(status)                -> {state -> rank} (worst = 1)
--   gate.scale_target(scale, cur, req)   -> the spec of the service to scale
--   gate.retire(scale, reps, want)       -> container ids to remove
--   gate.release_id(rollout, r, known)   -> a new, unique release id
--   gate.history_max(rollout)            -> how many releases are kept
local core = require("ctrlplane.docker.core")
local policy = require("ctrlplane.docker.policy")

local gate = {}

-- what each script must define
gate.REQUIRED = {rollout = {"plan"}, status = {"service", "aggregate"},
  reprovision = {"decide"}, scale = {"target", "retire"}}

-- the provider contract's states, plus "degraded" (some replicas down)
gate.STATES = {provisioning = true, starting = true, running = true, degraded = true,
  stopping = true, stopped = true, failed = true, destroying = true, destroyed = true}

-- what strategy() may answer; a backend maps each kind to its mechanism
gate.STRATEGY_KINDS = {["start-first"] = true, recreate = true, ["blue-green"] = true,
  canary = true}
-- names a request or a script may use for a kind
gate.STRATEGY_ALIASES = {rolling = "start-first"}

gate.ACTIONS = {keep = true, start = true, replace = true, create = true, remove = true}

function gate.load(p, names)
  local want = {}
  for _, n in ipairs(names) do want[n] = gate.REQUIRED[n] or {} end
  return policy.load_all(p.cfg, want)
end

-- "policy FILE:LINE (fn)": where the script defines the function.
local function where(pol, fn)
  local f = pol.fns[fn]
  local line = type(f) == "function" and debug.getinfo(f, "S").linedefined or nil
  return string.format("policy %s%s (%s)", pol.path, line and (":" .. line) or "", fn)
end

local function bad(pol, fn, fmt, ...)
  return nil, where(pol, fn) .. ": " .. string.format(fmt, ...), "policy"
end

gate.where = where

-- ---- rollout ------------------------------------------------------------------

-- The waves of the rollout plan: every service placed once, after its
-- dependencies.
function gate.plan(rollout, services)
  local shape = {}
  for i, s in ipairs(services) do
    shape[i] = {name = s.name, role = s.role, depends_on = s.depends_on or {}}
  end
  local waves, err, code = policy.call(rollout, "plan", shape)
  if not waves then return nil, err, code end
  local placed, by_name = {}, {}
  for _, s in ipairs(services) do by_name[s.name] = s end
  if type(waves) ~= "table" then
    return bad(rollout, "plan", "must return a list of waves, returned %s", type(waves))
  end
  for wi, wave in ipairs(waves) do
    if type(wave) ~= "table" then
      return bad(rollout, "plan", "wave %d must be a list of service names, got %s", wi, type(wave))
    end
    for _, name in ipairs(wave) do
      local s = by_name[name]
      if not s then
        return bad(rollout, "plan", "wave %d names unknown service %q", wi, tostring(name))
      end
      if placed[name] then
        return bad(rollout, "plan", "places %q twice", name)
      end
      for _, d in ipairs(s.depends_on or {}) do
        if by_name[d] and not placed[d] then
          return bad(rollout, "plan", "starts %q before its dependency %q", name, d)
        end
      end
    end
    for _, name in ipairs(wave) do placed[name] = wi end
  end
  for _, s in ipairs(services) do
    if not placed[s.name] then
      return bad(rollout, "plan", "leaves out service %q", s.name)
    end
  end
  return waves
end

local function duration(rollout, key, v)
  if v == nil then return true end
  if type(v) ~= "number" or v ~= v or v < 0 or v > 86400 then
    return bad(rollout, "strategy", "%s must be a number of seconds from 0 to 86400, got %s",
      key, tostring(v))
  end
  return true
end

-- How a deploy replaces one service. strategy() answers a kind (a string)
-- or a table {kind, grace, drain, ready_timeout, observe}; the gate fills
-- what it leaves out from defaults = {grace, drain, ready_timeout}.
function gate.strategy(rollout, svc, request, defaults)
  if type(rollout.fns.strategy) ~= "function" then
    return bad(rollout, "strategy", "the rollout policy defines no strategy function")
  end
  local out, err, code = policy.call(rollout, "strategy", svc, request)
  if out == nil then
    if err then return nil, err, code end
    return bad(rollout, "strategy", "returned nothing for service %s", tostring(svc.name))
  end
  if type(out) == "string" then out = {kind = out} end
  if type(out) ~= "table" then
    return bad(rollout, "strategy", "must return a kind or a table, returned %s", type(out))
  end
  local kind = gate.STRATEGY_ALIASES[out.kind] or out.kind
  if not gate.STRATEGY_KINDS[kind] then
    local known = {}
    for k in pairs(gate.STRATEGY_KINDS) do known[#known + 1] = k end
    table.sort(known)
    return bad(rollout, "strategy", "unknown strategy %q for service %s (known: %s)",
      tostring(out.kind), tostring(svc.name), table.concat(known, ", "))
  end
  defaults = defaults or {}
  local r = {kind = kind}
  for _, key in ipairs({"grace", "drain", "ready_timeout", "observe"}) do
    local ok, e, c = duration(rollout, key, out[key])
    if not ok then return nil, e, c end
    if out[key] ~= nil then r[key] = out[key] else r[key] = defaults[key] end
  end
  for k, v in pairs(out) do
    if r[k] == nil and k ~= "kind" then r[k] = v end -- extra fields a backend may read
  end
  return r
end

-- canary(service, request) is optional: {window, interval} in seconds;
-- without it, defaults (the bundled script's values).
gate.CANARY_DEFAULT = {window = 30, interval = 1}

function gate.canary(rollout, svc, request)
  if type(rollout.fns.canary) ~= "function" then return gate.CANARY_DEFAULT end
  local out, err, code = policy.call(rollout, "canary", svc, request)
  if out == nil and err then return nil, err, code end
  if type(out) ~= "table" then
    return bad(rollout, "canary", "must return {window, interval}, returned %s", type(out))
  end
  if type(out.window) ~= "number" or out.window ~= out.window or out.window < 0
      or out.window > 3600 then
    return bad(rollout, "canary", "window must be a number of seconds from 0 to 3600, got %s",
      tostring(out.window))
  end
  local interval = out.interval == nil and gate.CANARY_DEFAULT.interval or out.interval
  if type(interval) ~= "number" or interval ~= interval or interval <= 0 or interval > 3600 then
    return bad(rollout, "canary", "interval must be a number of seconds above 0, got %s",
      tostring(out.interval))
  end
  return {window = out.window, interval = math.min(interval, math.max(out.window, 0.05))}
end

-- judge_canary(obs) is optional: true promotes the canary, false and a
-- reason removes it. Without it: still ready and no restarts.
function gate.judge_canary(rollout, obs)
  if type(rollout.fns.judge_canary) ~= "function" then
    if obs.ready and obs.restarts == 0 then return true end
    return false, string.format("not ready at %d of %d samples, %d restart(s)", obs.not_ready,
      obs.samples, obs.restarts)
  end
  local go, why = policy.call(rollout, "judge_canary", obs)
  if go == nil and why then return nil, why, "policy" end
  if go ~= true and go ~= false then
    return bad(rollout, "judge_canary", "must return true, or false and a reason; returned %s",
      tostring(go))
  end
  return go, why
end

-- after_service(step) is optional: true (go on), or false and a reason.
function gate.after_service(rollout, step)
  local go, why = policy.call(rollout, "after_service", step)
  if go == nil and why then return nil, why, "policy" end
  if go == false then
    return nil, string.format("deploy stopped by the rollout policy after service %s: %s",
      tostring(step.service), tostring(why or "no reason given")), "rollout_aborted"
  end
  if go ~= true then
    return bad(rollout, "after_service", "must return true, or false and a reason; returned %s",
      tostring(go))
  end
  return true
end

-- The id of a release whose request names none: a string the history does
-- not hold yet. r: {instance_id, kind, first}; known: list of ids.
function gate.release_id(rollout, r, known)
  local now = core.walltime()
  r.now = now
  r.nonce = string.format("%08x", math.random(0, 0x7fffffff) ~ (math.floor(now * 1e6) & 0xffffffff))
  local id, err, code
  if type(rollout.fns.release_id) == "function" then
    id, err, code = policy.call(rollout, "release_id", r)
    if id == nil and err then return nil, err, code end
  else
    id = string.format("%s-%s", r.kind, r.nonce)
  end
  if type(id) ~= "string" or id == "" or #id > 128 or id:find("[%c]") then
    return bad(rollout, "release_id", "must return a non-empty string of at most 128 "
      .. "printable characters, returned %s", tostring(id))
  end
  for _, k in ipairs(known or {}) do
    if k == id then
      return bad(rollout, "release_id", "returned %q, which instance %s already has", id,
        tostring(r.instance_id))
    end
  end
  return id
end

-- How many releases an instance keeps: the rollout script's history, 1..100.
function gate.history_max(rollout)
  local n = rollout.fns.history
  if n == nil then return 10 end
  if math.type(n) ~= "integer" or n < 1 or n > 100 then
    return bad(rollout, "history", "must be a whole number from 1 to 100, got %s", tostring(n))
  end
  return n
end

-- ---- re-provision ---------------------------------------------------------------

-- decide(desired, existing): an action for every desired service (and
-- "remove" or "keep" for an existing one no longer desired), each a string
-- or {action, reason}. Returns {name -> action}, {name -> reason}.
function gate.decide(reprovision, desired, existing)
  local out, err, code = policy.call(reprovision, "decide", desired, existing)
  if out == nil then
    if err then return nil, err, code end
    return bad(reprovision, "decide", "returned nothing")
  end
  if type(out) ~= "table" then
    return bad(reprovision, "decide", "must return a map of service -> action, returned %s",
      type(out))
  end
  local actions, reasons = {}, {}
  for name, a in pairs(out) do
    if type(a) == "table" then
      if a.reason ~= nil and type(a.reason) ~= "string" then
        return bad(reprovision, "decide", "reason for service %s must be a string", tostring(name))
      end
      actions[name], reasons[name] = a.action, a.reason
    else
      actions[name] = a
    end
  end
  local listed = {}
  for _, s in ipairs(desired) do
    listed[s.name] = true
    local a = actions[s.name]
    if a == nil then
      return bad(reprovision, "decide", "gives no action for service %s", s.name)
    end
    if not gate.ACTIONS[a] or a == "remove" then
      return bad(reprovision, "decide", "unknown action %q for service %s "
        .. "(keep, start, replace, create)", tostring(a), s.name)
    end
    if a ~= "create" and not existing[s.name] then
      return bad(reprovision, "decide", "action %q for service %s, which has no container yet",
        a, s.name)
    end
  end
  for name, a in pairs(actions) do
    if not listed[name] then
      if not existing[name] then
        return bad(reprovision, "decide", "gives an action for unknown service %s", tostring(name))
      end
      if a ~= "remove" and a ~= "keep" then
        return bad(reprovision, "decide", "unknown action %q for unlisted service %s "
          .. "(remove, keep)", tostring(a), name)
      end
    end
  end
  for name in pairs(existing) do
    if not listed[name] and actions[name] == nil then
      return bad(reprovision, "decide", "gives no action for existing service %s (remove, keep)",
        name)
    end
  end
  return actions, reasons
end

-- ---- scale -----------------------------------------------------------------------

-- The service a scale request applies to: cur is members.current_state().
-- Returns that service's spec.
function gate.scale_target(scale, cur, request)
  local list = {}
  for _, sp in ipairs(cur.all) do
    if sp.role ~= "init" then
      list[#list + 1] = {name = sp.name, role = sp.role, replicas = #(cur.reps[sp.name] or {1})}
    end
  end
  local name, err, code = policy.call(scale, "target", list, request)
  if name == nil then
    if err then return nil, err, code end
    return nil, string.format("instance %s has no service to scale (%s)",
      tostring((cur.inst or {}).instance_id), where(scale, "target")), "not_found"
  end
  local sp = type(name) == "string" and cur.specs[name]
  if not sp or sp.role == "init" then
    return bad(scale, "target", "returned %s, which is not a main or sidecar service of the "
      .. "instance", tostring(name))
  end
  return sp
end

-- The containers to remove to go down to want replicas (reps: the
-- service's members, in replica order). Returns a list of container ids.
function gate.retire(scale, reps, want)
  local list, by = {}, {}
  for i, c in ipairs(reps) do
    local n = c.replica or 1
    list[i] = {replica = n, state = c.State, created = c.Created}
    by[n] = c.Id
  end
  local out, err, code = policy.call(scale, "retire", list, want)
  if out == nil and err then return nil, err, code end
  if type(out) ~= "table" then
    return bad(scale, "retire", "must return a list of replica numbers, returned %s", type(out))
  end
  local ids, seen = {}, {}
  for _, n in ipairs(out) do
    if not by[n] or seen[n] then
      return bad(scale, "retire", "names replica %s, which is not a distinct existing replica",
        tostring(n))
    end
    seen[n] = true
    ids[#ids + 1] = by[n]
  end
  if #ids ~= #reps - want then
    return bad(scale, "retire", "must name %d replicas to go from %d to %d, named %d",
      #reps - want, #reps, want, #ids)
  end
  return ids
end

-- ---- status ---------------------------------------------------------------------

local function state_result(pol, fn, out, err, code)
  if out == nil then
    if err then return nil, err, code end
    return bad(pol, fn, "returned nothing")
  end
  if type(out) ~= "table" then
    return bad(pol, fn, "must return a table {state, ready, message}, returned %s", type(out))
  end
  if not gate.STATES[out.state] then
    return bad(pol, fn, "unknown state %q (one of provisioning, starting, running, degraded, "
      .. "stopping, stopped, failed, destroying, destroyed)", tostring(out.state))
  end
  if out.message ~= nil and type(out.message) ~= "string" then
    return bad(pol, fn, "message must be a string, got %s", type(out.message))
  end
  return {state = out.state, ready = out.ready and true or false, message = out.message or "",
    reason = out.reason}
end

function gate.service(status, input)
  return state_result(status, "service", policy.call(status, "service", input))
end

function gate.aggregate(status, services)
  return state_result(status, "aggregate", policy.call(status, "aggregate", services))
end

-- The status script's severity table (worst = 1). A script that defines
-- none gets the bundled order.
local DEFAULT_SEVERITY = {failed = 1, destroying = 2, stopping = 3, stopped = 4, degraded = 5,
  provisioning = 6, starting = 7, running = 8, destroyed = 9}

function gate.severity(status)
  local s = status.fns.severity
  if type(s) == "table" then return s end
  return DEFAULT_SEVERITY
end

return gate
