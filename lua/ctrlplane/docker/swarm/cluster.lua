-- Cluster helpers of the swarm backend: the instance's services and tasks,
-- the nodes, and the daemons of the nodes (cfg.nodes).
local core = require("ctrlplane.docker.core")
local engine = require("ctrlplane.docker.engine")
local project = require("ctrlplane.docker.project")
local util = require("ctrlplane.docker.util")

local M = {}

M.NODES_HINT = "set CP_DOCKER_NODES=\"hostname=URL,...\" (or the nodes option) to map each "
  .. "swarm node's hostname, as `docker node ls` shows it, to its daemon's URL"

-- What the chosen endpoint and publish modes need, said plainly.
function M.mode_warning(cfg)
  local need = {}
  if cfg.endpoint_mode == "vip" then need[#need + 1] = "endpoint mode vip" end
  if cfg.publish_mode == "ingress" then need[#need + 1] = "publish mode ingress" end
  if #need == 0 then return nil end
  return table.concat(need, " and ") .. " need IPVS (the ip_vs kernel module) on every node; "
    .. "where the kernel lacks it, services get no virtual IP and published ports do not answer: "
    .. "use CP_DOCKER_ENDPOINT_MODE=dnsrr and CP_DOCKER_PUBLISH_MODE=host"
end

local LABEL = project.LABEL

function M.service_name(id, svc) return project.container_name(id, svc) end

-- The instance's services, as /services lists them (with their specs).
function M.services(p, id)
  return p.engine:get("/services", {
    filters = engine.filters({label = {LABEL.project .. "=" .. project.name(id)}}),
  })
end

-- {service name (plain) -> service object}, and the list
function M.services_by_name(p, id)
  local list, err, code = M.services(p, id)
  if not list then return nil, err, code end
  local by = {}
  for _, s in ipairs(list) do
    local labels = s.Spec and s.Spec.Labels or {}
    if labels[LABEL.service] then by[labels[LABEL.service]] = s end
  end
  return by, list
end

-- Tasks of one service (by service id).
function M.tasks(p, service_id)
  return p.engine:get("/tasks", {filters = engine.filters({service = {service_id}})})
end

-- {node id -> {hostname, state, addr}}
function M.nodes(p)
  local list, err, code = p.engine:get("/nodes")
  if not list then return nil, err, code end
  local out = {}
  for _, n in ipairs(list) do
    out[n.ID] = {hostname = n.Description and n.Description.Hostname or n.ID,
      state = n.Status and n.Status.State or "unknown", addr = n.Status and n.Status.Addr,
      availability = n.Spec and n.Spec.Availability}
  end
  return out
end

-- The engine of a node's daemon, by hostname: nil, message, code when the
-- node is not configured.
function M.node_engine(p, hostname, what)
  local e = p.node_engines[hostname]
  if e then return e end
  local url = p.cfg.nodes[hostname]
  if not url then
    if not next(p.cfg.nodes) then
      return nil, string.format("%s on the swarm backend needs each node's daemon: %s",
        what, M.NODES_HINT), "not_configured"
    end
    return nil, string.format("%s: swarm node %s has no daemon URL in CP_DOCKER_NODES (%s)",
      what, hostname, M.NODES_HINT), "not_configured"
  end
  local cfg = util.copy(p.cfg)
  cfg.host = url
  local err, code
  e, err, code = engine.new(cfg)
  if not e then return nil, string.format("node %s: %s", hostname, err), code end
  p.node_engines[hostname] = e
  return e
end

-- Polls fn() until it returns a non-false value (or nil, err, code), at most
-- `limit` seconds; returns its value, or false on time out.
function M.poll(limit, interval, fn)
  local deadline = core.clock() + limit
  while true do
    local v, err, code = fn()
    if v == nil then return nil, err, code end
    if v ~= false then return v end
    if core.clock() >= deadline then return false end
    if not core.sleep(interval) then return nil, "interrupted", "interrupted" end
  end
end

return M
