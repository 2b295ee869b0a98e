-- The project as it is on the engine: members grouped by service and
-- replica, the spec each container was made from, and the current state a
-- deploy, rollback or scale works from.
local engine = require("ctrlplane.docker.engine")
local json = require("ctrlplane.docker.json")
local logs = require("ctrlplane.docker.logs")
local project = require("ctrlplane.docker.project")

local LABEL = project.LABEL

local function replica_of(c)
  local labels = c.Labels or (c.Config and c.Config.Labels) or {}
  return math.tointeger(tonumber(labels[LABEL.replica] or "1")) or 1
end

-- Members of the project grouped by service. Only containers with their
-- canonical name count (a deploy that was interrupted may leave a retired
-- one behind under another name). Returns by (service -> replica 1),
-- reps (service -> list of replicas in order), and the full list.
local function members_by_service(eng, inst_id)
  local list, err, code = project.members(eng, inst_id)
  if not list then return nil, err, code end
  local by, reps = {}, {}
  for _, c in ipairs(list) do
    local svc = project.service_of(c)
    if svc then
      local r = replica_of(c)
      local canonical = "/" .. project.container_name(inst_id, svc, r)
      if (c.Names or {})[1] == canonical then
        c.replica = r
        reps[svc] = reps[svc] or {}
        table.insert(reps[svc], c)
        if r == 1 then by[svc] = c end
      end
    end
  end
  for svc, l in pairs(reps) do
    table.sort(l, function(a, b) return a.replica < b.replica end)
    if not by[svc] then by[svc] = l[1] end
  end
  return by, reps, list
end

-- The members the manifest names, found by their canonical names (one
-- inspect each, all at once) instead of a label-filtered listing, whose
-- cost grows with every container on the daemon (issue 15.3). A container
-- that has the name but not this instance's labels is not a member (as if
-- missing). wanted: manifest.read's table. Returns by, reps and list as
-- members_by_service does (list entries shaped as /containers/json's, for
-- the release history), and info: replica key -> inspect document.
local function members_by_name(eng, inst_id, wanted)
  local calls, slots = {}, {}
  for name, w in pairs(wanted.services or {}) do
    for r = 1, math.max(1, math.tointeger(w.replicas) or 1) do
      local cname = project.container_name(inst_id, name, r)
      calls[#calls + 1] = {path = "/containers/" .. engine.segment(cname) .. "/json"}
      slots[#calls] = {service = name, replica = r}
    end
  end
  local by, reps, list, info = {}, {}, {}, {}
  for i, res in ipairs(eng:batch(calls)) do
    local slot = slots[i]
    if res.error and res.code ~= "not_found" then
      return nil, "inspecting service " .. project.replica_key(slot.service, slot.replica) .. ": "
        .. res.error, res.code
    end
    local c = res.value
    local labels = c and c.Config and c.Config.Labels or {}
    if c and labels[LABEL.instance] == inst_id and labels[LABEL.project] == project.name(inst_id)
        and labels[LABEL.service] == slot.service then
      c.replica = slot.replica
      reps[slot.service] = reps[slot.service] or {}
      table.insert(reps[slot.service], c)
      info[project.replica_key(slot.service, slot.replica)] = c
      list[#list + 1] = {Id = c.Id, Names = {c.Name}, Labels = labels,
        Created = type(c.Created) == "string" and logs.parse_rfc3339(c.Created) or 0}
    end
  end
  for svc, l in pairs(reps) do
    table.sort(l, function(a, b) return a.replica < b.replica end)
    by[svc] = l[1]
  end
  return by, reps, list, info
end

local function spec_of(c)
  local labels = c.Labels or (c.Config and c.Config.Labels) or {}
  local s = labels[LABEL.spec] and json.decode(labels[LABEL.spec])
  if type(s) ~= "table" then
    s = {name = labels[LABEL.service], role = labels[LABEL.role] or "main", depends_on = {}}
  end
  s.depends_on = s.depends_on or {}
  return s
end

-- What a deploy or rollback needs to know about an instance.
local function current_state(p, instance_id)
  local by, reps, list = members_by_service(p.engine, instance_id)
  if not by then return nil, reps, list end
  if not next(by) then
    return nil, "instance " .. instance_id .. " does not exist", "not_found"
  end
  local all, specs, inst = {}, {}, nil
  for name, c in pairs(by) do
    local s = spec_of(c)
    s.name = name
    all[#all + 1] = s
    specs[name] = s
    local labels = c.Labels or {}
    inst = inst or (labels[LABEL.instance_spec] and json.decode(labels[LABEL.instance_spec]))
  end
  table.sort(all, function(a, b) return a.name < b.name end)
  inst = type(inst) == "table" and inst or {instance_id = instance_id, tenant_id = "",
    labels = json.object({})}
  return {by = by, reps = reps, list = list, all = all, specs = specs, inst = inst}
end

-- What scripts/status.lua service() is given for one container (an
-- inspect result) of a service.
local function service_input(name, spec, c)
  local st = c.State or {}
  return {name = name, role = spec.role, docker_state = st.Status,
    exit_code = st.ExitCode, oom_killed = st.OOMKilled or false, error = st.Error or "",
    health = st.Health and st.Health.Status, has_health_check = spec.health_check ~= nil,
    health_output = st.Health and st.Health.Log and #st.Health.Log > 0
      and (st.Health.Log[#st.Health.Log].Output or ""):gsub("%s+$", "") or nil,
    restart_policy = c.HostConfig and c.HostConfig.RestartPolicy
      and c.HostConfig.RestartPolicy.Name or "no",
    replica = replica_of(c),
    restarts = c.RestartCount or 0, started_at = st.StartedAt, finished_at = st.FinishedAt}
end

return {
  service_input = service_input,
  replica_of = replica_of,
  members_by_service = members_by_service,
  members_by_name = members_by_name,
  spec_of = spec_of,
  current_state = current_state,
}
