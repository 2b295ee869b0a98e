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
-- strategy(service, request) -> "start-first" | "recreate"
--   service: {name, role, ports = {...}, health_check}; request: {strategy, release_id}.
--   "start-first": start the new container beside the old one (same network
--   alias), wait until it is healthy (its health check, or still running
--   after a grace period), then take the old one off the network, let it
--   drain and stop it: the service name always resolves to a running
--   container. "recreate": stop the old container, then start the new one.
--   Either way, a new container that does not become ready is removed and
--   the old one put back. A service with a fixed host port is always
--   recreated (two containers cannot hold the port).
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

local function strategy(service, request)
  if request.strategy then return request.strategy end
  if service.role == "init" then return "recreate" end
  for _, p in ipairs(service.ports or {}) do
    if p.host then return "recreate" end
  end
  return "start-first"
end

local function release_id(r)
  if r.kind == "provision" and r.first then return "initial" end
  return string.format("%s-%s-%s", r.kind, os.date("!%Y%m%dT%H%M%S", math.floor(r.now)), r.nonce)
end

return {plan = plan, strategy = strategy, release_id = release_id, history = 10}
