-- Status policy: what a container's Docker state means for its service, and
-- how the services add up to the instance's state.
--
-- service(c) -> {state, ready, message}
--   c: {name, role, docker_state ("created"|"running"|"paused"|"restarting"|
--       "removing"|"exited"|"dead"), exit_code, oom_killed, error,
--       health (nil|"starting"|"healthy"|"unhealthy"), has_health_check,
--       health_output (the last health probe's output, if any),
--       restart_policy ("no"|"unless-stopped"|"always"|"on-failure"),
--       replica, replicas (how many the service should have), restarts,
--       started_at, finished_at, gating, running_for, grace,
--       connected, aliased (status only: on the project network, and
--       reachable there under the service name)}
--   docker_state is "missing" when the project's manifest asks for a
--   container that is not there (removed behind the runtime's back).
--   gating is true while the runtime waits for a new container to become
--   ready (provision, deploy, rollback, scale, start, restart): then
--   running_for is how long it has been running since it last started
--   (seconds) and grace the strategy's grace period. ready = true lets the
--   operation go on; a state of failed or stopped fails it at once; anything
--   else means "not yet" (until the ready timeout).
--   state is one of: provisioning starting running stopping stopped failed
--   destroying destroyed.
--
-- aggregate(services) -> {state, ready, message}
--   services: list of {name, role, state, ready, message, restarts, replicas,
--   replica_states = {{replica, state, ready, message, restarts}}}: each
--   service's worst replica (by severity below) plus every replica's own.
--
-- severity: the table of states, worst first (1), that both the runtime
-- (worst replica of a service) and aggregate() use.
--
-- The default: the worst state of main and sidecars wins; an init service
-- that exited 0 has done its job and does not count; one that failed makes
-- the instance failed.

-- worst first
local SEVERITY = {failed = 1, destroying = 2, stopping = 3, stopped = 4, degraded = 5,
  provisioning = 6, starting = 7, running = 8, destroyed = 9}

-- While the runtime waits for a new container: a restart or an exit is a
-- failure, and without a health check it must stay up for the grace period.
local function gating(c)
  if c.docker_state == "exited" or c.docker_state == "dead" then
    return {state = "failed", ready = false, message = string.format("stopped (exit code %d)%s",
      c.exit_code or -1, c.oom_killed and ", killed: out of memory" or "")}
  end
  if c.restarts > 0 or c.docker_state == "restarting" then
    return {state = "failed", ready = false, message = string.format(
      "restarted while starting (exit code %d)", c.exit_code or -1)}
  end
  if c.docker_state ~= "running" then return nil end
  if c.health == "unhealthy" then
    return {state = "failed", ready = false, message = "is unhealthy"
      .. ((c.health_output or "") ~= "" and (": " .. c.health_output) or "")}
  end
  if c.has_health_check then
    if c.health == "healthy" then return {state = "running", ready = true, message = ""} end
    return {state = "starting", ready = false, message = "waiting for the health check"}
  end
  if (c.running_for or 0) < (c.grace or 0) then
    return {state = "starting", ready = false, message = "running for less than the grace period"}
  end
  return {state = "running", ready = true, message = ""}
end

-- A hole: a container that should be there and is not, or one its
-- siblings cannot reach by name. One replica of several down is degraded;
-- the only one, failed.
local function hole(c)
  local some = (c.replicas or 1) > 1
  if c.docker_state == "missing" then
    return {state = some and "degraded" or "failed", ready = false,
      message = "no container (removed outside the runtime?)"}
  end
  if (c.docker_state == "running" or c.docker_state == "paused")
      and (c.connected == false or c.aliased == false) then
    return {state = some and "degraded" or "failed", ready = false,
      message = c.connected and "on the project network without its service alias"
        or "not on the project network"}
  end
  return nil
end

local function service(c)
  if c.gating then
    local g = gating(c)
    if g then return g end
  end
  local h = hole(c)
  if h then return h end
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
      if not worst or (SEVERITY[s.state] or 0) < (SEVERITY[worst] or 0) then
        worst = s.state
        why = s.message ~= "" and (s.name .. ": " .. s.message) or nil
      end
    end
    if not s.ready then ready = false end
  end
  if not worst then return {state = "destroyed", ready = false, message = "no containers"} end
  return {state = worst, ready = ready and worst == "running", message = why or ""}
end

return {service = service, aggregate = aggregate, severity = SEVERITY}
