-- status: every container through scripts/status.lua service(), the
-- project through aggregate().
local gate = require("ctrlplane.docker.gate")
local json = require("ctrlplane.docker.json")
local manifest = require("ctrlplane.docker.manifest")
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
local members_by_name = members.members_by_name
local members_by_service = members.members_by_service
local spec_of = members.spec_of

local P = {}

-- What should be there per service: {role, replicas} from the manifest
-- (or, for an instance made before manifests, from what is there).
local function desired_of(reps, wanted)
  local desired = {}
  for name, l in pairs(reps) do desired[name] = {replicas = #l} end
  for name, w in pairs(wanted and wanted.services or {}) do
    local d = desired[name] or {replicas = 0}
    d.role = w.role
    d.replicas = math.max(d.replicas, math.tointeger(w.replicas) or 1)
    desired[name] = d
  end
  return desired
end

-- The replicas there, then the missing ones (at the lowest free numbers).
local function rows_of(name, reps, info, want)
  local rows, used = {}, {}
  for _, rc in ipairs(reps[name] or {}) do
    rows[#rows + 1] = {replica = rc.replica, c = info[project.replica_key(name, rc.replica)]}
    used[rc.replica] = true
  end
  local free = 0
  for _ = #rows + 1, want do
    repeat free = free + 1 until not used[free]
    rows[#rows + 1] = {replica = free}
  end
  return rows
end

-- What scripts/status.lua service() is given for one replica (a missing
-- one has docker_state "missing").
local function replica_input(name, spec, row, net, want)
  local c = row.c
  local input
  if c then
    input = members.service_input(name, spec, c)
    local ep = c.NetworkSettings and c.NetworkSettings.Networks and c.NetworkSettings.Networks[net]
    input.connected, input.aliased = ep ~= nil, false
    for _, a in ipairs(ep and ep.Aliases or {}) do
      if a == name then input.aliased = true end
    end
  else
    input = {name = name, role = spec.role, docker_state = "missing", exit_code = 0,
      oom_killed = false, error = "", has_health_check = spec.health_check ~= nil,
      restart_policy = "no", replica = row.replica, restarts = 0,
      connected = false, aliased = false}
  end
  input.replicas = want
  return input
end

-- One service's entry: every replica through service(), the worst (by the
-- status script's severity) speaking for the service. Also fills the
-- result's started_at and release from the main service's replica 1.
local function service_entry(pol, severity, result, svc, rows, want, count)
  local name, spec, net = svc.name, svc.spec, svc.net
  local entry, reps_in = nil, {}
  for _, row in ipairs(rows) do
    local c = row.c
    local s, serr, scode = gate.service(pol.status, replica_input(name, spec, row, net, want))
    if not s then return nil, serr, scode end
    local restarts = c and c.RestartCount or 0
    reps_in[#reps_in + 1] = {replica = row.replica, state = s.state, ready = s.ready,
      message = s.message, restarts = restarts}
    local message = s.message or ""
    if want > 1 and message ~= "" then
      message = string.format("replica %d: %s", row.replica, message)
    end
    if not entry then
      entry = {state = s.state, ready = s.ready and true or false, message = message,
        restarts = restarts, provider_ref = c and c.Id or nil, replicas = count}
    else -- the worst replica speaks for the service
      if (severity[s.state] or 0) < (severity[entry.state] or 0) then
        entry.state = s.state
        entry.message = message
      end
      entry.ready = entry.ready and (s.ready and true or false)
      entry.restarts = entry.restarts + restarts
    end
    local labels = c and c.Config and c.Config.Labels or {}
    if c and spec.role == "main" and row.replica == 1 then
      if c.State and c.State.Running then result.started_at = c.State.StartedAt end
      if labels[LABEL.release] and labels[LABEL.release] ~= "" then
        result.metadata.release = labels[LABEL.release]
      end
    end
  end
  return entry, reps_in
end

-- The members and their inspect documents: by name when there is a
-- manifest (flat as the daemon fills), else (an instance made before
-- manifests, or one whose provision has not finished) by the project's
-- label-filtered listing.
local function members_of(eng, instance_id, wanted)
  if wanted then return members_by_name(eng, instance_id, wanted) end
  local by, reps, list = members_by_service(eng, instance_id)
  if not by then return nil, reps, list end
  local ids = {}
  for name, l in pairs(reps) do
    for _, c in ipairs(l) do ids[project.replica_key(name, c.replica)] = c.Id end
  end
  local info, err, code = inspect_all({eng = eng}, ids)
  if not info then return nil, err, code end
  return by, reps, list, info
end

function P:status(instance_id)
  local ok, verr = project.validate_id(instance_id)
  if not ok then return nil, verr, "invalid" end
  local pol, perr, pcode = gate.load(self, {"status"})
  if not pol then return nil, perr, pcode end
  local result = {state = "destroyed", ready = false, restarts = 0, message = "",
    endpoints = json.array({}), services = json.object({}),
    metadata = {project = project.name(instance_id)}}
  local wanted, merr, mcode = manifest.read(self.engine, instance_id)
  if wanted == nil then return nil, merr, mcode end
  local by, reps, list, info = members_of(self.engine, instance_id, wanted)
  if not by then return nil, reps, list end
  if not next(by) and not wanted then
    result.message = "no containers"
    return result
  end
  local desired = desired_of(reps, wanted)
  local counts, spans = {}, {}
  for name, l in pairs(reps) do
    counts[name] = #l
    for _, c in ipairs(l) do spans[name] = math.max(spans[name] or 0, c.replica) end
  end
  local agg_in, specs = {}, {}
  local severity = gate.severity(pol.status)
  for _, name in ipairs(util.sorted_keys(desired)) do
    local spec
    if by[name] then
      spec = spec_of(by[name])
      spec.name = name
      specs[#specs + 1] = spec
    else
      spec = {name = name, role = desired[name].role or "main"}
    end
    local want = desired[name].replicas
    local entry, reps_in, ecode = service_entry(pol, severity, result,
      {name = name, spec = spec, net = project.network_name(instance_id)},
      rows_of(name, reps, info, want), want, counts[name] or 0)
    if not entry then return nil, reps_in, ecode end
    result.services[name] = entry
    agg_in[#agg_in + 1] = {name = name, role = spec.role, state = entry.state, ready = entry.ready,
      message = entry.message, restarts = entry.restarts, replicas = entry.replicas,
      desired_replicas = want, replica_states = reps_in}
    result.restarts = result.restarts + entry.restarts
  end
  local agg, aerr, acode = gate.aggregate(pol.status, agg_in)
  if not agg then return nil, aerr, acode end
  result.state = agg.state
  result.ready = agg.ready and true or false
  result.message = agg.message or ""
  result.endpoints = endpoints_of(instance_id, specs, info, spans, self.cfg)
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
