-- Rollout policy: in which order a project's services start and stop, and
-- how a deploy replaces a service's container.
--
-- plan(services) -> waves
--   services: list of {name, role = "init"|"main"|"sidecar", depends_on = {names}}
--             in the order of the request.
--   returns:  a list of waves, each a list of service names. The runtime
--             handles the waves in order: every init service in a wave runs
--             to completion (exit 0) before the next wave; the other services
--             of a wave are created and started together. Stopping goes
--             through the waves in reverse. Every service must appear once,
--             after all of its dependencies.
--
-- strategy(service, request) -> "start-first" | "recreate" | "blue-green" | "canary"
--   service: {name, role, ports = {...}, health_check, replica};
--   request: {strategy, release_id} (strategy as the DeployRequest sent it,
--   nil when it sent none or Go's ""). Called for every container a deploy or
--   rollback replaces. What each answer means:
--   "start-first" (the request's "rolling", and the default): one container
--     at a time, the new one starts beside the old one (same network alias
--     once ready), health-gated (its health check, or still running after a
--     grace period); then the old one leaves the alias, drains and stops, so
--     the service name always resolves to a running container.
--   "recreate": stop the old container, then start the new one (a gap).
--   "blue-green": the new containers of ALL services of the deploy answered
--     "blue-green" start and must become ready beside the old ones (no alias
--     yet) before any old one leaves its alias; then all switch, one after
--     another in rollout order. Any failure, before or during the switch,
--     removes every new container and puts every old one back.
--   "canary": the new container joins the alias BESIDE the old one, so it
--     takes a share of real traffic, for the observation window canary()
--     gives; judge_canary() then decides: promoted (the old one leaves as in
--     start-first) or removed (the old one keeps serving, the deploy fails
--     and is rolled back). Only the first replica of a service is a canary;
--     its further replicas follow start-first once it is promoted.
--   Whatever the answer, a new container that does not become ready is
--   removed and every old one put back. A service with a fixed host port is
--   always recreated (two containers cannot hold the port).
--
-- canary(service, request) -> {window = seconds, interval = seconds}   (optional)
--   How long a canary is observed, and how often it is sampled.
--
-- judge_canary(obs) -> true | false, reason                             (optional)
--   obs: {service, replica, release_id, window, samples = number of samples,
--         ready = true when the canary was ready at every sample,
--         not_ready = samples at which it was not, restarts = times the
--         canary's container restarted during the window, state = last
--         docker state, health = last health status or nil,
--         status = function() -> InstanceStatus}
--   true promotes the canary; false (and a reason) removes it and fails the
--   deploy with that reason. Default: still ready and no restarts.
--
-- after_service(step) -> true | false, reason        (optional)
--   Called during a deploy after each service's new container is ready.
--   step: {service, index, total, release_id, status = function() -> InstanceStatus,
--          sleep = function(seconds)}
--   Return false (and a reason) to stop the deploy: every service it replaced
--   is put back as it was. Leave it out to deploy straight through.
--
-- release_id(r) -> string
--   r: {instance_id, kind = "provision"|"deploy", first = true for an
--   instance's first provision, now (seconds since the epoch, with
--   fractions), nonce (8 random hex digits)}. The id recorded for a provision
--   or deploy whose request names none; the runtime refuses one that the
--   instance's history already holds.
--
-- history: how many releases an instance keeps (the rollback targets).
--
-- Helpers available here: graph.order(services, rank), graph.levels(services).

local ROLE_RANK = {init = 0, main = 1, sidecar = 2}

local function plan(services)
  local waves = {}
  -- init services one at a time, in dependency order
  local inits, others = {}, {}
  for _, s in ipairs(services) do
    if s.role == "init" then inits[#inits + 1] = s else others[#others + 1] = s end
  end
  for _, s in ipairs(graph.order(inits)) do
    waves[#waves + 1] = {s.name}
  end
  -- then main and sidecars: services at the same dependency depth start
  -- together, main first within its wave
  local level = graph.levels(others)
  local by_level = {}
  for _, s in ipairs(graph.order(others, function(x) return ROLE_RANK[x.role] end)) do
    local l = level[s.name]
    by_level[l] = by_level[l] or {}
    table.insert(by_level[l], s.name)
  end
  for l = 1, #by_level do
    if by_level[l] then waves[#waves + 1] = by_level[l] end
  end
  return waves
end

-- the DeployRequest's strategy names -> what the runtime does
local STRATEGIES = {
  rolling = "start-first", ["start-first"] = "start-first", recreate = "recreate",
  ["blue-green"] = "blue-green", canary = "canary",
}

local function strategy(service, request)
  for _, p in ipairs(service.ports or {}) do
    if p.host then return "recreate" end -- two containers cannot hold the port
  end
  if service.role == "init" then return "recreate" end
  local s = request.strategy
  if s == nil or s == "" then return "start-first" end
  return STRATEGIES[s] or s
end

-- how long a canary takes real traffic before it is judged
local CANARY_WINDOW = 30
local CANARY_INTERVAL = 1

local function canary(_service, _request)
  return {window = CANARY_WINDOW, interval = CANARY_INTERVAL}
end

local function judge_canary(obs)
  if not obs.ready then
    return false, string.format("canary of %s was not ready at %d of %d samples (last state %s%s)",
      obs.service, obs.not_ready, obs.samples, tostring(obs.state),
      obs.health and (", " .. obs.health) or "")
  end
  if obs.restarts > 0 then
    return false, string.format("canary of %s restarted %d time(s) during its %gs window",
      obs.service, obs.restarts, obs.window)
  end
  return true
end

local function release_id(r)
  if r.kind == "provision" and r.first then return "initial" end
  return string.format("%s-%s-%s", r.kind, os.date("!%Y%m%dT%H%M%S", math.floor(r.now)), r.nonce)
end

return {plan = plan, strategy = strategy, canary = canary, judge_canary = judge_canary,
  release_id = release_id, history = 10}
