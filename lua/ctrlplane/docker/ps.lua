-- ps: every instance on the daemon with its state, from one container
-- listing aggregated by the status policy (scripts/status.lua), and the
-- full status of several instances at once (one scheduler task each).
--
--   provider:ps() -> list of {instance_id, tenant_id, state, ready, message,
--                    services, containers} sorted by instance id | nil, msg, code
--   provider:status_many(ids) -> list of {instance_id, status | error, code},
--                    in the order of ids; the statuses run concurrently
local engine = require("ctrlplane.docker.engine")
local gate = require("ctrlplane.docker.gate")
local json = require("ctrlplane.docker.json")
local members = require("ctrlplane.docker.members")
local project = require("ctrlplane.docker.project")
local sched = require("ctrlplane.docker.sched")

local LABEL = project.LABEL
local M = {}

-- What a container listing says of the state that `inspect` would give:
-- "Exited (3) 2 minutes ago", "Up 5 seconds (health: starting)".
function M.listed_state(c)
  local status = c.Status or ""
  local exit_code = tonumber(status:match("^Exited %((%-?%d+)%)")) or 0
  local health
  if status:find("(healthy)", 1, true) then health = "healthy"
  elseif status:find("(unhealthy)", 1, true) then health = "unhealthy"
  elseif status:find("(health: starting)", 1, true) then health = "starting" end
  return c.State, math.tointeger(exit_code) or 0, health
end

local function ps(self)
  local pol, perr, pcode = gate.load(self, {"status"})
  if not pol then return nil, perr, pcode end
  local list, err, code = self.engine:get("/containers/json", {all = true,
    filters = engine.filters({label = {LABEL.instance}})})
  if not list then return nil, err, code end
  -- group by instance; only a service's canonical containers count
  local inst = {}
  local severity = gate.severity(pol.status)
  for _, c in ipairs(list) do
    local labels = c.Labels or {}
    local id, svc = labels[LABEL.instance], labels[LABEL.service]
    local replica = math.tointeger(tonumber(labels[LABEL.replica] or "1")) or 1
    if id and svc and project.validate_id(id)
        and (c.Names or {})[1] == "/" .. project.container_name(id, svc, replica) then
      local e = inst[id]
      if not e then
        e = {tenant = labels[LABEL.tenant] or "", services = {}, order = {}, containers = 0}
        inst[id] = e
      end
      e.containers = e.containers + 1
      local spec = members.spec_of(c)
      local state, exit_code, health = M.listed_state(c)
      local s, serr, scode = gate.service(pol.status, {name = svc, role = spec.role,
        docker_state = state, exit_code = exit_code, oom_killed = false, error = "",
        health = health, has_health_check = spec.health_check ~= nil,
        restart_policy = "no", replica = replica, restarts = 0})
      if not s then return nil, serr, scode end
      local prev = e.services[svc]
      local rep = {replica = replica, state = s.state, ready = s.ready, message = s.message,
        restarts = 0}
      if not prev then
        e.order[#e.order + 1] = svc
        e.services[svc] = {name = svc, role = spec.role, state = s.state,
          ready = s.ready, message = s.message, restarts = 0, replicas = 1,
          replica_states = {rep}}
      else -- the worst replica speaks for the service
        prev.replicas = prev.replicas + 1
        prev.replica_states[#prev.replica_states + 1] = rep
        prev.ready = prev.ready and s.ready
        if (severity[s.state] or 0) < (severity[prev.state] or 0) then
          prev.state = s.state
          prev.message = string.format("replica %d: %s", replica, s.message)
        end
      end
    end
  end
  local out = json.array({})
  for id, e in pairs(inst) do
    table.sort(e.order)
    local agg_in = {}
    for _, name in ipairs(e.order) do agg_in[#agg_in + 1] = e.services[name] end
    local agg, aerr, acode = gate.aggregate(pol.status, agg_in)
    if not agg then return nil, aerr, acode end
    out[#out + 1] = {instance_id = id, tenant_id = e.tenant, state = agg.state,
      ready = agg.ready and true or false, message = agg.message or "",
      services = #e.order, containers = e.containers}
  end
  table.sort(out, function(a, b) return a.instance_id < b.instance_id end)
  return out
end

local function status_many(self, ids)
  local s = sched.new({max_inflight = 16})
  local results = {}
  for i, id in ipairs(ids) do
    local _, err, code = s:spawn(function() return self:status(id) end, {key = id,
      on_done = function(_, ok, st, e, c)
        if not ok then
          results[i] = {instance_id = id, error = tostring(st):match("[^\n]*"), code = "internal"}
        elseif st then
          results[i] = {instance_id = id, status = st}
        else
          results[i] = {instance_id = id, error = e, code = c}
        end
      end}, id)
    if err then results[i] = {instance_id = id, error = err, code = code} end
  end
  local ok, err = s:run()
  if not ok then return nil, err, "interrupted" end
  return results
end

function M.install(docker)
  docker.Provider.ps = ps
  docker.Provider.status_many = status_many
end

return M
