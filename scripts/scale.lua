-- Scale policy: which service a scale request applies to, and which
-- replicas go first when it scales down.
--
-- target(services, request) -> service name
--   services: list of {name, role, replicas} of the instance's long-lived
--             services (main and sidecars), sorted by name.
--   request:  the ResourceSpec {cpu_millis, memory_mb, replicas} asked for.
--   The contract scales "the main service"; an instance with several mains
--   gets the first by name.
--
-- retire(replicas, want) -> list of replica numbers to remove
--   replicas: list of {replica, state, ready, created} (created: Unix time)
--             of the service, in replica order; want: how many stay.
--   Must name exactly #replicas - want replicas. The default removes the
--   newest first (the highest replica numbers), so replica 1 stays.

local function target(services)
  for _, s in ipairs(services) do
    if s.role == "main" then return s.name end
  end
  return nil
end

local function retire(replicas, want)
  local out = {}
  for i = #replicas, want + 1, -1 do out[#out + 1] = replicas[i].replica end
  return out
end

return {target = target, retire = retire}
