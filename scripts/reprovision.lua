-- Re-provision policy: what provisioning an instance that already exists
-- does to each of its services.
--
-- decide(desired, existing) -> actions
--   desired:  list of {name, role, hash} from the new request, in order.
--   existing: map name -> {role, hash, docker_state, exit_code, running}
--             for every service container found on the engine.
--   returns:  map name -> action, where action is
--     "keep"     leave the container as it is (same container id)
--     "start"    same spec but not running: start it again (same id)
--     "replace"  remove the container and create it from the new spec
--     "create"   no container yet: create it
--     "remove"   the service is no longer requested: remove its container
--
-- The default keeps running containers whose applied spec is unchanged,
-- restarts stopped unchanged ones, replaces changed ones, re-runs an init
-- that did not complete, and removes services no longer listed.

local function decide(desired, existing)
  local actions = {}
  for _, s in ipairs(desired) do
    local e = existing[s.name]
    if not e then
      actions[s.name] = "create"
    elseif e.hash ~= s.hash or e.role ~= s.role then
      actions[s.name] = "replace"
    elseif s.role == "init" then
      local done = e.docker_state == "exited" and e.exit_code == 0
      actions[s.name] = done and "keep" or "replace"
    elseif e.running then
      actions[s.name] = "keep"
    else
      actions[s.name] = "start"
    end
  end
  for name in pairs(existing) do
    if not actions[name] then actions[name] = "remove" end
  end
  return actions
end

return {decide = decide}
