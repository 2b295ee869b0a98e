-- Status policy: what a container's Docker state means for its service, and
-- how the services add up to the instance's state.
--
-- service(c) -> {state, ready, message}
--   c: {name, role, docker_state ("created"|"running"|"paused"|"restarting"|
--       "removing"|"exited"|"dead"), exit_code, oom_killed, error,
--       health (nil|"starting"|"healthy"|"unhealthy"), has_health_check,
--       restart_policy ("no"|"unless-stopped"|"always"|"on-failure"),
--       restarts, started_at, finished_at}
--   state is one of: provisioning starting running stopping stopped failed
--   destroying destroyed.
--
-- aggregate(services) -> {state, ready, message}
--   services: list of {name, role, state, ready, message, restarts}
--   (each the result of service() plus name, role and restarts).
--
-- The default: the worst state of main and sidecars wins; an init service
-- that exited 0 has done its job and does not count; one that failed makes
-- the instance failed.

-- worst first
local SEVERITY = {failed = 1, destroying = 2, stopping = 3, stopped = 4, provisioning = 5,
  starting = 6, running = 7, destroyed = 8}

local function service(c)
  local st = c.docker_state
  if st == "running" then
    if c.health == "unhealthy" then
      return {state = "failed", ready = false, message = "health check failing"}
    elseif c.health == "starting" then
      return {state = "starting", ready = false, message = "waiting for the health check"}
    end
    return {state = "running", ready = true, message = ""}
  elseif st == "created" then
    return {state = "provisioning", ready = false, message = "created, not started"}
  elseif st == "restarting" then
    return {state = "starting", ready = false,
      message = string.format("restarting (exit code %d)", c.exit_code or 0)}
  elseif st == "paused" then
    return {state = "stopped", ready = false, message = "paused"}
  elseif st == "removing" then
    return {state = "destroying", ready = false, message = "being removed"}
  elseif st == "dead" then
    return {state = "failed", ready = false, message = c.error ~= "" and c.error or "dead"}
  end
  -- exited
  if c.oom_killed then
    return {state = "failed", ready = false, message = "killed: out of memory"}
  end
  if c.role == "init" then
    if c.exit_code == 0 then return {state = "stopped", ready = true, message = "completed"} end
    return {state = "failed", ready = false,
      message = string.format("init failed: exit code %d", c.exit_code or -1)}
  end
  -- Docker restarts an unless-stopped (or always) container whatever its
  -- exit code, unless someone stopped it: then it is stopped, not failed
  -- (even when the stop timeout ran out and it was killed).
  local restarts_itself = c.restart_policy == "unless-stopped" or c.restart_policy == "always"
  if c.exit_code ~= 0 and not restarts_itself then
    return {state = "failed", ready = false,
      message = string.format("exited with code %d", c.exit_code or -1)}
  end
  if c.exit_code ~= 0 then
    return {state = "stopped", ready = false,
      message = string.format("stopped (exit code %d)", c.exit_code)}
  end
  return {state = "stopped", ready = false, message = "stopped"}
end

local function aggregate(services)
  local worst, why, ready = nil, nil, true
  for _, s in ipairs(services) do
    local counts = true
    if s.role == "init" and s.state ~= "failed" then counts = false end
    if counts then
      if not worst or SEVERITY[s.state] < SEVERITY[worst] then
        worst = s.state
        why = s.message ~= "" and (s.name .. ": " .. s.message) or nil
      end
    end
    if not s.ready then ready = false end
  end
  if not worst then return {state = "destroyed", ready = false, message = "no containers"} end
  return {state = worst, ready = ready and worst == "running", message = why or ""}
end

return {service = service, aggregate = aggregate}
