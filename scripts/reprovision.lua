-- Re-provision policy: what provisioning an instance that already exists
-- does to each of its services, and why.
--
-- decide(desired, existing) -> actions
--   desired:  list of {name, role, hash, spec} from the new request, in order
--             (spec: the service as requested: image, env, ports, volumes,
--             resources, health_check, command, args, ...).
--   desired also carries replicas (how many containers the request asks for).
--   existing: map name -> {role, hash, spec, docker_state, exit_code (of
--             replica 1), running, paused, connected, replicas,
--             desired_replicas} for every service found on the engine (spec:
--             the one its container was made from; running: as many replicas
--             as requested, each running, not paused, on the project network
--             under the service name; paused: some replica is; connected:
--             every replica is on the network under its name).
--   returns:  map name -> action or {action, reason}, where action is
--     "keep"     leave the container as it is (same container id)
--     "start"    same spec but something is wrong: repair it in place (same
--                ids): create missing replicas, remove extra ones, unpause,
--                start stopped ones, put disconnected ones back on the network
--     "replace"  replace it with one made from the new spec, the way a
--                deploy does (scripts/rollout.lua strategy(): the new one
--                ready before the old one goes, the old one put back on
--                failure)
--     "create"   no container yet: create it
--     "remove"   the service is no longer requested: remove its containers
--   and reason is the "why" shown to the operator ("image changed",
--   "env FOO changed", "was stopped", ...).
--
-- The default keeps running containers whose applied spec is unchanged,
-- restarts stopped unchanged ones, replaces changed ones, re-runs an init
-- that did not complete, and removes services no longer listed.

-- The first field that differs between two specs, as a reason.
local FIELDS = {"image", "role", "command", "args", "ports", "volumes", "resources",
  "health_check", "config_files", "secrets", "depends_on", "annotations"}

local function same(a, b)
  if type(a) ~= type(b) then
    -- an absent list or map is the same as an empty one
    local ea = a == nil or (type(a) == "table" and next(a) == nil)
    local eb = b == nil or (type(b) == "table" and next(b) == nil)
    return ea and eb
  end
  if type(a) ~= "table" then return a == b end
  for k, v in pairs(a) do
    if not same(v, b[k]) then return false end
  end
  for k, v in pairs(b) do
    if a[k] == nil and not same(nil, v) then return false end
  end
  return true
end

local function why_changed(new, old)
  if not new or not old then return "spec changed" end
  for _, f in ipairs(FIELDS) do
    if not same(new[f], old[f]) then
      return (f:gsub("_", " ")) .. " changed"
    end
  end
  local keys, seen = {}, {}
  for k in pairs(new.env or {}) do keys[#keys + 1] = k; seen[k] = true end
  for k in pairs(old.env or {}) do if not seen[k] then keys[#keys + 1] = k end end
  table.sort(keys)
  for _, k in ipairs(keys) do
    local a, b = (new.env or {})[k], (old.env or {})[k]
    if a ~= b then
      if a == nil then return "env " .. k .. " removed" end
      if b == nil then return "env " .. k .. " added" end
      return "env " .. k .. " changed"
    end
  end
  return "instance settings changed"
end

local function decide(desired, existing)
  local actions = {}
  for _, s in ipairs(desired) do
    local e = existing[s.name]
    if not e then
      actions[s.name] = {action = "create", reason = "new service"}
    elseif e.role ~= s.role then
      actions[s.name] = {action = "replace", reason = "role changed"}
    elseif e.hash ~= s.hash then
      actions[s.name] = {action = "replace", reason = why_changed(s.spec, e.spec)}
    elseif s.role == "init" then
      local done = e.docker_state == "exited" and e.exit_code == 0
      actions[s.name] = done and {action = "keep", reason = "completed"}
        or {action = "replace", reason = "did not complete"}
    elseif e.running then
      actions[s.name] = {action = "keep", reason = "unchanged"}
    else
      local why = "was " .. (e.docker_state or "stopped")
      if e.paused then
        why = "was paused"
      elseif e.replicas and e.desired_replicas and e.replicas ~= e.desired_replicas then
        why = string.format("had %d of %d replicas", e.replicas or 0, e.desired_replicas or 1)
      elseif e.connected == false then
        why = "was off the project network"
      elseif e.docker_state == "running" then
        why = "a replica was not running"
      end
      actions[s.name] = {action = "start", reason = why}
    end
  end
  for name in pairs(existing) do
    if not actions[name] then actions[name] = {action = "remove", reason = "no longer requested"} end
  end
  return actions
end

return {decide = decide}
