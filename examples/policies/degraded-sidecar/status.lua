-- Status policy (worked example): a failed or stopped sidecar makes the
-- instance "degraded" in its message but leaves it running and ready, as
-- long as the main service runs. Use with: cpdocker --policy examples/policies/degraded-sidecar ...
--
-- service(c) -> {state, ready, message}   (as in the bundled scripts/status.lua)
-- aggregate(services) -> {state, ready, message}

local function service(c)
  if c.docker_state == "running" then
    if c.health == "unhealthy" then return {state = "failed", ready = false, message = "unhealthy"} end
    if c.health == "starting" then return {state = "starting", ready = false, message = "starting"} end
    return {state = "running", ready = true, message = ""}
  end
  if c.role == "init" and c.docker_state == "exited" and c.exit_code == 0 then
    return {state = "stopped", ready = true, message = "completed"}
  end
  if c.docker_state == "exited" and c.exit_code ~= 0 then
    return {state = "failed", ready = false, message = string.format("exited with code %d", c.exit_code)}
  end
  return {state = "stopped", ready = false, message = c.docker_state}
end

local function aggregate(services)
  local main
  local degraded = {}
  for _, s in ipairs(services) do
    if s.role == "main" then main = s end
    if s.role == "sidecar" and s.state ~= "running" then
      degraded[#degraded + 1] = s.name .. " " .. s.state
    end
    if s.role == "init" and s.state == "failed" then
      return {state = "failed", ready = false, message = s.name .. ": " .. s.message}
    end
  end
  if not main then return {state = "destroyed", ready = false, message = "no main service"} end
  if main.state ~= "running" then
    return {state = main.state, ready = false, message = main.name .. ": " .. main.message}
  end
  if #degraded > 0 then
    return {state = "running", ready = main.ready,
      message = "degraded: " .. table.concat(degraded, ", ")}
  end
  return {state = "running", ready = main.ready, message = ""}
end

return {service = service, aggregate = aggregate}
