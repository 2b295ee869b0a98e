-- status: every container through scripts/status.lua service(), the
-- project through aggregate().
local gate = require("ctrlplane.docker.gate")
local json = require("ctrlplane.docker.json")
local members = require("ctrlplane.docker.members")
local policy = require("ctrlplane.docker.policy")
local project = require("ctrlplane.docker.project")
local release_history = require("ctrlplane.docker.release_history")
local specbuild = require("ctrlplane.docker.specbuild")
local steps = require("ctrlplane.docker.steps")
local util = require("ctrlplane.docker.util")

local LABEL = project.LABEL
local endpoints_of = specbuild.endpoints_of
local history_of = release_history.history_of
local inspect_all = steps.inspect_all
local members_by_service = members.members_by_service
local policies = gate.policies
local spec_of = members.spec_of

local P = {}

local SEVERITY = {failed = 1, destroying = 2, stopping = 3, stopped = 4, provisioning = 5,
  starting = 6, running = 7, destroyed = 8}

function P:status(instance_id)
  local ok, verr = project.validate_id(instance_id)
  if not ok then return nil, verr, "invalid" end
  local pol, perr, pcode = policies(self, {"status"})
  if not pol then return nil, perr, pcode end
  local by, reps, list = members_by_service(self.engine, instance_id)
  if not by then return nil, reps, list end
  local result = {state = "destroyed", ready = false, restarts = 0, message = "",
    endpoints = json.array({}), services = json.object({}),
    metadata = {project = project.name(instance_id)}}
  if not next(by) then
    result.message = "no containers"
    return result
  end
  local ids, counts = {}, {}
  for name, l in pairs(reps) do
    counts[name] = #l
    for _, c in ipairs(l) do
      ids[c.replica == 1 and name or (name .. "_" .. c.replica)] = c.Id
    end
  end
  local ctx = {eng = self.engine}
  local info, err, code = inspect_all(ctx, ids)
  if not info then return nil, err, code end
  local agg_in, specs = {}, {}
  for _, name in ipairs(util.sorted_keys(reps)) do
    local spec = spec_of(by[name])
    spec.name = name
    specs[#specs + 1] = spec
    local entry
    for _, rc in ipairs(reps[name]) do
      local c = info[rc.replica == 1 and name or (name .. "_" .. rc.replica)]
      local st = c.State or {}
      local input = {name = name, role = spec.role, docker_state = st.Status,
        exit_code = st.ExitCode, oom_killed = st.OOMKilled or false, error = st.Error or "",
        health = st.Health and st.Health.Status, has_health_check = spec.health_check ~= nil,
        restart_policy = c.HostConfig and c.HostConfig.RestartPolicy
          and c.HostConfig.RestartPolicy.Name or "no",
        replica = rc.replica,
        restarts = c.RestartCount or 0, started_at = st.StartedAt, finished_at = st.FinishedAt}
      local s, serr, scode = policy.call(pol.status, "service", input)
      if not s then return nil, serr, scode end
      if type(s) ~= "table" then
        return nil, "policy " .. pol.status.path .. ": service must return a table", "policy"
      end
      if not entry then
        entry = {state = s.state, ready = s.ready and true or false, message = s.message or "",
          restarts = c.RestartCount or 0, provider_ref = c.Id, replicas = counts[name]}
      else -- the worst replica speaks for the service
        if (SEVERITY[s.state] or 0) < (SEVERITY[entry.state] or 0) then
          entry.state = s.state
          entry.message = string.format("replica %d: %s", rc.replica, s.message or "")
        end
        entry.ready = entry.ready and (s.ready and true or false)
        entry.restarts = entry.restarts + (c.RestartCount or 0)
      end
      local labels = c.Config and c.Config.Labels or {}
      if spec.role == "main" and rc.replica == 1 then
        if st.Running then result.started_at = st.StartedAt end
        if labels[LABEL.release] and labels[LABEL.release] ~= "" then
          result.metadata.release = labels[LABEL.release]
        end
      end
    end
    result.services[name] = entry
    agg_in[#agg_in + 1] = {name = name, role = spec.role, state = entry.state, ready = entry.ready,
      message = entry.message, restarts = entry.restarts, replicas = entry.replicas}
    result.restarts = result.restarts + entry.restarts
  end
  local agg, aerr, acode = policy.call(pol.status, "aggregate", agg_in)
  if not agg then return nil, aerr, acode end
  if type(agg) ~= "table" then
    return nil, "policy " .. pol.status.path .. ": aggregate must return a table", "policy"
  end
  result.state = agg.state
  result.ready = agg.ready and true or false
  result.message = agg.message or ""
  result.endpoints = endpoints_of(instance_id, specs, info, counts)
  result.metadata.network = project.network_name(instance_id)
  local releases = json.array({})
  for _, e in ipairs(history_of(list)) do releases[#releases + 1] = e.id end
  result.metadata.releases = table.concat(releases, ",")
  return result
end

return P
