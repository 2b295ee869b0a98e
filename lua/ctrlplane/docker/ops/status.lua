-- status: every container through scripts/status.lua service(), the
-- project through aggregate().
local gate = require("ctrlplane.docker.gate")
local json = require("ctrlplane.docker.json")
local members = require("ctrlplane.docker.members")
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
local spec_of = members.spec_of

local P = {}

function P:status(instance_id)
  local ok, verr = project.validate_id(instance_id)
  if not ok then return nil, verr, "invalid" end
  local pol, perr, pcode = gate.load(self, {"status"})
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
      ids[project.replica_key(name, c.replica)] = c.Id
    end
  end
  local ctx = {eng = self.engine}
  local info, err, code = inspect_all(ctx, ids)
  if not info then return nil, err, code end
  local agg_in, specs = {}, {}
  local severity = gate.severity(pol.status)
  for _, name in ipairs(util.sorted_keys(reps)) do
    local spec = spec_of(by[name])
    spec.name = name
    specs[#specs + 1] = spec
    local entry
    local reps_in = {}
    for _, rc in ipairs(reps[name]) do
      local c = info[project.replica_key(name, rc.replica)]
      local st = c.State or {}
      local s, serr, scode = gate.service(pol.status, members.service_input(name, spec, c))
      if not s then return nil, serr, scode end
      reps_in[#reps_in + 1] = {replica = rc.replica, state = s.state, ready = s.ready,
        message = s.message, restarts = c.RestartCount or 0}
      if not entry then
        entry = {state = s.state, ready = s.ready and true or false, message = s.message or "",
          restarts = c.RestartCount or 0, provider_ref = c.Id, replicas = counts[name]}
      else -- the worst replica speaks for the service
        if (severity[s.state] or 0) < (severity[entry.state] or 0) then
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
      message = entry.message, restarts = entry.restarts, replicas = entry.replicas,
      replica_states = reps_in}
    result.restarts = result.restarts + entry.restarts
  end
  local agg, aerr, acode = gate.aggregate(pol.status, agg_in)
  if not agg then return nil, aerr, acode end
  result.state = agg.state
  result.ready = agg.ready and true or false
  result.message = agg.message or ""
  result.endpoints = endpoints_of(instance_id, specs, info, counts, self.cfg)
  result.metadata.network = project.network_name(instance_id)
  -- the recorded releases, oldest first, as a JSON list (in metadata, and
  -- in the extra field `releases`)
  local releases = json.array({})
  for _, e in ipairs(history_of(list)) do releases[#releases + 1] = e.id end
  result.releases = releases
  result.metadata.releases = releases
  return result
end

return P
