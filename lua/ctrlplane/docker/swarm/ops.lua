-- Swarm backend: provision, deprovision, start/stop/restart, deploy,
-- rollback, scale. Swarm does the mechanism (tasks, placement, rolling
-- updates, failover); the policy scripts decide the order and the strategy.
local cluster = require("ctrlplane.docker.swarm.cluster")
local core = require("ctrlplane.docker.core")
local engine = require("ctrlplane.docker.engine")
local gate = require("ctrlplane.docker.gate")
local json = require("ctrlplane.docker.json")
local project = require("ctrlplane.docker.project")
local release_history = require("ctrlplane.docker.release_history")
local specbuild = require("ctrlplane.docker.specbuild")
local steps = require("ctrlplane.docker.steps")
local sspec = require("ctrlplane.docker.swarm.spec")
local util = require("ctrlplane.docker.util")
local validate = require("ctrlplane.docker.validate")

local LABEL = project.LABEL
local seg = engine.segment
local P = {}

-- seconds after an update with no rolling update begun: nothing to roll
P.NO_UPDATE_GRACE = 5

-- a contract field Swarm cannot apply is refused, never ignored
local NO_DISK_LIMIT = "Swarm services have no per-task disk limit (send 0 for none)"
local NO_FILES = "config_files are not supported by the swarm backend (the engine backend "
  .. "writes them into the containers)"
local NO_SECRETS = "secrets are not supported by the swarm backend (the engine backend "
  .. "resolves them with scripts/secrets.lua)"

-- the label that remembers a stopped service's replicas
local STOPPED_REPLICAS = "ctrlplane.stopped-replicas"

local function fail(msg, code) return nil, msg, code end

local function emit(opts, ev)
  if opts and opts.on_event then opts.on_event(ev) end
end

-- The last n lines a service logged (all its tasks), as text.
function P:_service_last_lines(service_id, n)
  local body = self.engine:get("/services/" .. seg(service_id) .. "/logs",
    {stdout = true, stderr = true, tail = tostring(n or 10)})
  if type(body) ~= "string" then return "" end
  return steps.frames_to_text(body)
end

-- The newest failed task's error (and exit code), or nil.
local function task_failure(tasks, since_index)
  local worst
  for _, t in ipairs(tasks) do
    local st = t.Status or {}
    if (st.State == "failed" or st.State == "rejected")
        and (not since_index or ((t.Version or {}).Index or 0) > since_index) then
      if not worst or (t.UpdatedAt or "") > (worst.UpdatedAt or "") then worst = t end
    end
  end
  if not worst then return nil end
  local st = worst.Status
  local cs = st.ContainerStatus or {}
  return {err = st.Err or st.Message or st.State, exit_code = cs.ExitCode, state = st.State,
    task = worst.ID}
end

-- Waits until `desired` tasks of the service run (a task with a health check
-- runs once healthy). A task that fails or is rejected fails the wait.
function P:_wait_running(svc_id, name, desired, timeout)
  local last = "no task yet"
  local ok, err, code = cluster.poll(timeout or self.cfg.ready_timeout, 0.25, function()
    local tasks, terr, tcode = cluster.tasks(self, svc_id)
    if not tasks then return nil, terr, tcode end
    local running = 0
    for _, t in ipairs(tasks) do
      if t.DesiredState == "running" and t.Status and t.Status.State == "running" then
        running = running + 1
      elseif t.DesiredState == "running" and t.Status then
        last = t.Status.State .. (t.Status.Err and (": " .. t.Status.Err) or "")
      end
    end
    local f = task_failure(tasks)
    if f then
      local logs = self:_service_last_lines(svc_id, 10)
      return fail(string.format("service %s: task %s%s (%s)%s", name, f.state,
        f.exit_code and f.exit_code ~= 0 and (" with exit code " .. f.exit_code) or "", f.err,
        logs ~= "" and ("; last log lines:\n" .. logs) or ""), "service_failed")
    end
    return running >= desired
  end)
  if ok == false then
    return fail(string.format("service %s did not become ready within %s (%s)", name,
      util.human_duration(timeout or self.cfg.ready_timeout), last), "timeout")
  end
  if not ok then return nil, err, code end
  return true
end

-- Runs an init job to completion; its failure names the exit code and the
-- job's last log lines.
function P:_wait_job(svc_id, name)
  local ok, err, code = cluster.poll(self.cfg.init_timeout, 0.25, function()
    local tasks, terr, tcode = cluster.tasks(self, svc_id)
    if not tasks then return nil, terr, tcode end
    for _, t in ipairs(tasks) do
      if t.Status and t.Status.State == "complete" then return true end
    end
    local f = task_failure(tasks)
    if f then
      local logs = self:_service_last_lines(svc_id, 10)
      return fail(string.format("init service %s exited with code %d%s", name, f.exit_code or -1,
        logs ~= "" and ("; last log lines:\n" .. logs) or ("; " .. f.err)), "init_failed")
    end
    return false
  end)
  if ok == false then
    return fail(string.format("init service %s did not finish within %s", name,
      util.human_duration(self.cfg.init_timeout)), "init_timeout")
  end
  if not ok then return nil, err, code end
  return true
end

function P:_ensure_network(id)
  local name = project.network_name(id)
  local found, err, code = self.engine:get("/networks", {filters = engine.filters({name = {name}})})
  if not found then return nil, err, code end
  for _, n in ipairs(found) do
    if n.Name == name then
      if not (n.Labels and n.Labels[LABEL.project] == project.name(id)) then
        return fail("network " .. name .. " exists and is not labelled for this instance", "conflict")
      end
      return true, false
    end
  end
  local made, cerr, ccode = self.engine:post("/networks/create", nil, {
    Name = name, Driver = "overlay", Attachable = true, CheckDuplicate = true,
    Labels = {[LABEL.instance] = id, [LABEL.project] = project.name(id)},
  })
  if not made then return fail("creating network " .. name .. ": " .. cerr, ccode) end
  return true, true
end

-- Removes services (ids), then, with `network`, the network (it is in use
-- until the tasks' containers are gone: retried for up to 30 s).
function P:_remove(service_ids, id, network)
  local calls = {}
  for i, sid in ipairs(service_ids) do calls[i] = {method = "DELETE", path = "/services/" .. seg(sid)} end
  for i, r in ipairs(self.engine:batch(calls)) do
    if r.error and r.code ~= "not_found" then
      return fail("removing service " .. service_ids[i] .. ": " .. r.error, r.code)
    end
  end
  if not network then return true end
  local name = project.network_name(id)
  local last
  local ok, err, code = cluster.poll(30, 0.25, function()
    local found, ferr, fcode = self.engine:get("/networks", {filters = engine.filters({
      label = {LABEL.project .. "=" .. project.name(id)}})})
    if not found then return nil, ferr, fcode end
    if #found == 0 then return true end
    for _, n in ipairs(found) do
      local gone, derr, dcode = self.engine:delete("/networks/" .. seg(n.Id))
      if not gone and dcode ~= "not_found" then last = derr end
    end
    return false
  end)
  if ok == false then return fail("removing network " .. name .. ": " .. tostring(last), "conflict") end
  if not ok then return nil, err, code end
  return true
end

-- Ended task containers and volumes of the instance on every configured node
-- (and the manager): volumes are in use until the task containers are gone,
-- so this is retried for up to 30 s.
-- Returns true, or true plus a list of nodes it could not reach.
function P:_remove_volumes(id)
  local engines = {{name = "manager", eng = self.engine}}
  for host in pairs(self.cfg.nodes) do
    local e = cluster.node_engine(self, host, "volumes")
    if e then engines[#engines + 1] = {name = host, eng = e} end
  end
  local filter = engine.filters({label = {LABEL.project .. "=" .. project.name(id)}})
  local unreachable, last = {}, nil
  local ok = cluster.poll(30, 0.25, function()
    local left = 0
    for _, e in ipairs(engines) do
      -- the containers of tasks that ended (a completed init job's stays
      -- behind its service) hold the volumes: they carry the project label
      local cs
      if not unreachable[e.name] then
        local cerr, ccode
        cs, cerr, ccode = e.eng:get("/containers/json", {all = true, filters = filter})
        if not cs and (ccode == "unreachable" or ccode == "timeout") then unreachable[e.name] = cerr end
      end
      for _, c in ipairs(cs or {}) do
        if c.State ~= "running" then
          e.eng:delete("/containers/" .. seg(c.Id), {force = true, v = true})
        end
      end
      if not unreachable[e.name] then
        local v, err, code = e.eng:get("/volumes", {filters = filter})
        if not v then
          if code == "unreachable" or code == "timeout" then unreachable[e.name] = err
          else last = err end
        else
          for _, vol in ipairs(v.Volumes or {}) do
            local gone, derr, dcode = e.eng:delete("/volumes/" .. seg(vol.Name))
            if not gone and dcode ~= "not_found" then
              left = left + 1
              last = e.name .. ": " .. derr
            end
          end
        end
      end
    end
    return left == 0
  end)
  if ok == false then return fail("removing volumes: " .. tostring(last), "conflict") end
  local missed = {}
  for n in pairs(unreachable) do missed[#missed + 1] = n end
  table.sort(missed)
  return true, missed
end

local function history_of(list)
  local shaped = {}
  for i, s in ipairs(list or {}) do
    shaped[i] = {Labels = s.Spec and s.Spec.Labels or {}, Created = (s.Version or {}).Index or 0}
  end
  return release_history.history_of(shaped)
end

-- ---- provision / deprovision ---------------------------------------------------------

-- What the provision did to each service, and why (as on one host):
-- "created", "kept", "replaced: image changed", "started: was exited", "removed: ...".
local DID = {create = "created", keep = "kept", replace = "replaced", start = "started",
  remove = "removed"}

local function changes_of(actions, reasons)
  local out = json.object({})
  for name, a in pairs(actions) do
    local why = reasons[name]
    out[name] = DID[a] .. ((why and why ~= "" and a ~= "create") and (": " .. why) or "")
  end
  return out
end

-- An existing service as scripts/reprovision.lua sees a container:
-- {role, hash, docker_state, exit_code, running}. A job is its newest task
-- (exited 0 once complete); a replicated service runs unless it was stopped.
function P:_current(svc)
  local labels = svc.Spec.Labels or {}
  local e = {role = labels[LABEL.role], hash = labels[LABEL.spec_hash], spec = sspec.spec_of(svc),
    replicas = svc.Spec.Mode.Replicated and svc.Spec.Mode.Replicated.Replicas or 1}
  if svc.Spec.Mode.ReplicatedJob then
    local tasks, err, code = cluster.tasks(self, svc.ID)
    if not tasks then return nil, err, code end
    table.sort(tasks, function(a, b) return (a.CreatedAt or "") > (b.CreatedAt or "") end)
    local st = tasks[1] and tasks[1].Status or {}
    if st.State == "complete" then
      e.docker_state, e.exit_code = "exited", 0
    elseif st.State == "failed" or st.State == "rejected" then
      e.docker_state, e.exit_code = "exited", (st.ContainerStatus or {}).ExitCode or -1
    else
      e.docker_state = "running"
    end
    e.running = e.docker_state == "running"
  else
    local stopped = labels[STOPPED_REPLICAS] ~= nil or svc.Spec.Mode.Replicated.Replicas == 0
    e.docker_state = stopped and "exited" or "running"
    e.exit_code = 0
    e.running = not stopped
  end
  return e
end

-- What this backend cannot apply yet is refused, never dropped silently
-- (the engine backend materializes config_files and secrets).
local function refuse_unsupported(r)
  local list_errs = {}
  for i, s in ipairs(r.services) do
    local f = s.field or string.format("services[%d]", i - 1)
    if s.resources and (s.resources.disk_mb or 0) > 0 then
      list_errs[#list_errs + 1] = {field = f .. ".resources.disk_mb", message = NO_DISK_LIMIT}
    end
    if s.config_files then
      list_errs[#list_errs + 1] = {field = f .. ".config_files", message = NO_FILES}
    end
    if s.secrets then
      list_errs[#list_errs + 1] = {field = f .. ".secrets", message = NO_SECRETS}
    end
  end
  if #list_errs > 0 then return nil, "invalid request: " .. list_errs[1].field .. ": "
    .. list_errs[1].message, "invalid", list_errs end
  return true
end

-- What exists already, and what scripts/reprovision.lua does with it.
-- Returns actions, reasons.
function P:_decide(pol, r, inst, existing)
  local actions, reasons = {}, {}
  if next(existing) then
    local desired, current = {}, {}
    for i, s in ipairs(r.services) do
      desired[i] = {name = s.name, role = s.role, hash = specbuild.spec_hash(self.cfg, inst, s),
        spec = specbuild.stored_service(s)}
    end
    for name, cur in pairs(existing) do
      local e, err, code = self:_current(cur)
      if not e then return nil, err, code end
      current[name] = e
    end
    local decided, why, dcode = gate.decide(pol.reprovision, desired, current)
    if not decided then return nil, why, dcode end
    actions, reasons = decided, why
  end
  for _, s in ipairs(r.services) do actions[s.name] = actions[s.name] or "create" end
  return actions, reasons
end

-- The release, recorded in the history when something is created or
-- replaced; its id from the request or the rollout policy. Returns
-- release, history (JSON) or nil, nil when nothing changes.
local function provision_release(pol, id, specs, list, release, first)
  local past = history_of(list)
  local keep, herr, hcode = gate.history_max(pol.rollout)
  if not keep then return nil, herr, hcode end
  if not release then
    release, herr, hcode = gate.release_id(pol.rollout, {instance_id = id, kind = "provision",
      first = first}, release_history.ids(past))
    if not release then return nil, herr, hcode end
  end
  return release, release_history.record_release(past, release, release_history.snapshot(specs), keep)
end

-- Carries out one service's action; returns the service to wait for
-- ({id, name, n}), false when there is none, or nil, message, code.
-- A stopped service's replicas back (stop keeps their number in a label).
-- Returns how many replicas it runs from now on.
function P:_restore_replicas(svc)
  local body = util.copy(svc.Spec)
  local saved = tonumber(body.Labels[STOPPED_REPLICAS] or "")
  if not saved then return body.Mode.Replicated.Replicas end
  body.Labels[STOPPED_REPLICAS] = nil
  body.Mode.Replicated.Replicas = saved
  local ok, err, code = self:_update(svc, body)
  if not ok then return nil, err, code end
  return saved
end

function P:_provision_service(pv, name)
  local s, a, existing, opts = pv.specs[name], pv.actions[name], pv.existing, pv.opts
  local body = sspec.service_spec(self.cfg, pv.inst, s, {release = pv.release, history = pv.history})
  if a == "replace" and s.role == "init" then
    -- a changed init job runs again: a job service cannot be updated in place
    local rok, rerr, rcode = self:_remove({existing[name].ID}, pv.id, false)
    if not rok then return nil, rerr, rcode end
    a = "create"
  end
  if a == "create" then
    local res, err, code = self.engine:post("/services/create", nil, body)
    if not res then return nil, string.format("creating service %s: %s", name, err), code end
    pv.created[#pv.created + 1] = res.ID
    pv.ids[name] = res.ID
    emit(opts, {type = "service", service = name, action = "created", container = res.ID})
    if s.role == "init" then
      local jok, jerr, jcode = self:_wait_job(res.ID, name)
      if not jok then return nil, jerr, jcode end
      emit(opts, {type = "service", service = name, action = "completed", container = res.ID})
      return false
    end
    return {id = res.ID, name = name, n = body.Mode.Replicated.Replicas}
  elseif a == "replace" then
    local cur = existing[name]
    local uok, uerr, ucode = self:_update(cur, body)
    if not uok then return nil, uerr, ucode end
    uok, uerr, ucode = self:_wait_update(cur, name,
      self.cfg.ready_timeout * math.max(1, body.Mode.Replicated.Replicas) + 30)
    if not uok then return nil, uerr, ucode end
    emit(opts, {type = "service", service = name, action = "replaced", container = cur.ID})
    return {id = cur.ID, name = name, n = body.Mode.Replicated.Replicas}
  elseif a == "start" and s.role ~= "init" then
    -- same spec, stopped: its replicas back
    local cur = existing[name]
    local n, uerr, ucode = self:_restore_replicas(cur)
    if not n then return nil, uerr, ucode end
    emit(opts, {type = "service", service = name, action = "started", container = cur.ID})
    return {id = cur.ID, name = name, n = n}
  end
  emit(opts, {type = "service", service = name, action = "kept", container = existing[name].ID})
  if s.role == "init" then return false end
  return {id = existing[name].ID, name = name,
    n = (((existing[name].Spec.Mode or {}).Replicated or {}).Replicas) or 1}
end

function P:provision(req, opts)
  opts = opts or {}
  local r, verr, vcode, verrors = validate.provision(req, self.cfg)
  if not r then return nil, verr, vcode, verrors end
  local rok, rerr, rcode, rerrors = refuse_unsupported(r)
  if not rok then return nil, rerr, rcode, rerrors end
  local pol, perr, pcode = gate.load(self, {"rollout", "status", "reprovision"})
  if not pol then return nil, perr, pcode end
  local waves, werr, wcode = gate.plan(pol.rollout, r.services)
  if not waves then return nil, werr, wcode end
  local inst = specbuild.instance_info(r)
  local id = r.instance_id
  local specs = {}
  for _, s in ipairs(r.services) do specs[s.name] = s end

  local existing, list = cluster.services_by_name(self, id)
  if not existing then return nil, list, "unreachable" end
  local actions, reasons, dcode = self:_decide(pol, r, inst, existing)
  if not actions then return nil, reasons, dcode end
  local changes = false
  for _, s in ipairs(r.services) do
    if actions[s.name] == "create" or actions[s.name] == "replace" then changes = true end
  end
  local doomed = {}
  for name, cur in pairs(existing) do
    if actions[name] == "remove" then doomed[#doomed + 1] = cur.ID end
  end
  local release, history = opts.release_id, nil
  if changes then
    local hcode
    release, history, hcode = provision_release(pol, id, specs, list, release, next(existing) == nil)
    if not release then return nil, history, hcode end
  end
  local warn = cluster.mode_warning(self.cfg)
  if warn then emit(opts, {type = "warning", message = warn}) end

  local pv = {id = id, inst = inst, specs = specs, actions = actions, existing = existing,
    opts = opts, release = release, history = history, created = {}, ids = {}}
  local made_network = false
  local function abort(e, c)
    self:_remove(pv.created, id, made_network)
    if made_network then self:_remove_volumes(id) end
    return nil, e, c
  end

  if #doomed > 0 then
    local ok, err, code = self:_remove(doomed, id, false)
    if not ok then return nil, err, code end
  end
  local ok, made, ncode = self:_ensure_network(id)
  if not ok then return nil, made, ncode end
  made_network = made

  for name, cur in pairs(existing) do pv.ids[name] = cur.ID end
  for _, wave in ipairs(waves) do
    local waiting = {}
    for _, name in ipairs(wave) do
      local w, err, code = self:_provision_service(pv, name)
      if w == nil then return abort(err, code) end
      if w then waiting[#waiting + 1] = w end
    end
    for _, w in ipairs(waiting) do
      local wok, werr2, wcode2 = self:_wait_running(w.id, w.name, w.n)
      if not wok then return abort(werr2, wcode2) end
    end
  end

  local st = self:status(id)
  return {
    provider_ref = project.provider_ref(id),
    service_refs = pv.ids,
    endpoints = st and st.endpoints or json.array({}),
    changes = changes_of(actions, reasons),
    metadata = {project = project.name(id), network = project.network_name(id), backend = "swarm",
      warning = warn},
  }
end

function P:deprovision(instance_id)
  local ok, verr = project.validate_id(instance_id)
  if not ok then return nil, verr, "invalid" end
  local list, err, code = cluster.services(self, instance_id)
  if not list then return nil, err, code end
  local ids = {}
  for i, s in ipairs(list) do ids[i] = s.ID end
  ok, err, code = self:_remove(ids, instance_id, true)
  if not ok then return nil, err, code end
  local vok, missed = self:_remove_volumes(instance_id)
  if not vok then return nil, missed, "conflict" end
  return true
end

-- ---- updates -----------------------------------------------------------------------

-- POST the new spec; returns the service as it was before (for waiting).
function P:_update(cur, body, query)
  local q = {version = tostring(cur.Version.Index)}
  for k, v in pairs(query or {}) do q[k] = v end
  local res, err, code = self.engine:post("/services/" .. seg(cur.ID) .. "/update", q, body)
  if not res then
    return fail(string.format("updating service %s: %s", cur.Spec.Name, err), code)
  end
  return true
end

-- Waits for the rolling update that follows an update of `cur` (the
-- service as it was before it): "completed", or a failure message when
-- Swarm rolled it back (the previous spec serving again).
function P:_wait_update(cur, name, timeout)
  local before = cur.UpdateStatus and cur.UpdateStatus.StartedAt
  local state, msg
  local t0 = core.clock()
  local ok, err, code = cluster.poll(timeout, 0.25, function()
    local s, serr, scode = self.engine:get("/services/" .. seg(cur.ID))
    if not s then return nil, serr, scode end
    local us = s.UpdateStatus
    if not us or us.StartedAt == before then
      -- a change that leaves the tasks as they are (labels only) starts no
      -- rolling update: Swarm begins one at once when the tasks change
      if core.clock() - t0 > P.NO_UPDATE_GRACE then
        state = "completed"
        return true
      end
      return false
    end
    state, msg = us.State, us.Message
    if state == "completed" or state == "rollback_completed" or state == "rollback_paused"
        or state == "paused" then
      return true
    end
    return false
  end)
  if ok == false then
    return fail(string.format("update of service %s did not finish within %s (state %s)", name,
      util.human_duration(timeout), tostring(state)), "timeout")
  end
  if not ok then return nil, err, code end
  if state == "completed" then return true end
  local tasks = cluster.tasks(self, cur.ID) or {}
  local f = task_failure(tasks)
  local why = f and (f.err .. (f.exit_code and f.exit_code ~= 0 and (", exit code " .. f.exit_code) or ""))
  if state == "rollback_completed" then
    return fail(string.format("deploy of service %s failed and Swarm rolled it back: the previous "
      .. "spec is serving (%s%s)", name, msg or "", why and ("; " .. why) or ""), "deploy_failed")
  end
  return fail(string.format("deploy of service %s failed: update %s (%s%s)", name, state, msg or "",
    why and ("; " .. why) or ""), "deploy_failed")
end

-- Update settings for a service, from the rollout policy's strategy():
-- start-first unless it says recreate or a fixed host port is published
-- (stop-first); its observe is Swarm's monitor window (default twice the
-- start grace, at least 2 s), and a strategy table may add parallelism and
-- delay (seconds).
local function update_settings(p, pol, s, request)
  local st, err, code = gate.strategy(pol.rollout, {name = s.name, role = s.role, ports = s.ports,
    health_check = s.health_check}, request,
    {grace = p.cfg.start_grace, drain = p.cfg.drain, ready_timeout = p.cfg.ready_timeout})
  if not st then return nil, err, code end
  local kind = st.kind
  if kind == "blue-green" or kind == "canary" then -- not mapped onto Swarm updates (yet)
    return nil, string.format("strategy %s is not supported by the swarm backend (rolling, "
      .. "recreate)", kind), "invalid"
  end
  for _, port in ipairs(s.ports or {}) do
    if port.host then kind = "recreate" end -- two tasks on one node cannot hold the port
  end
  local function num(v, dflt) return type(v) == "number" and v >= 0 and v or dflt end
  return {order = kind == "recreate" and "stop-first" or "start-first",
    parallelism = math.tointeger(num(st.parallelism, 1)) or 1, delay = num(st.delay, 0),
    monitor = st.observe or math.max(2, (st.grace or p.cfg.start_grace) * 2),
    ready_timeout = st.ready_timeout or p.cfg.ready_timeout}
end

-- Applies changes {name -> {image, env, health_check}} in rollout order as
-- native service updates; a failure puts back the services this call
-- already updated (Swarm's rollback to their previous spec).
function P:_apply_release(id, release_id, strategy_req, changes, opts)
  local pol, perr, pcode = gate.load(self, {"rollout", "status"})
  if not pol then return nil, perr, pcode end
  local by, list = cluster.services_by_name(self, id)
  if not by then return nil, list, "unreachable" end
  local all, specs = {}, {}
  for name, s in pairs(by) do
    specs[name] = sspec.spec_of(s)
    all[#all + 1] = specs[name]
  end
  table.sort(all, function(a, b) return a.name < b.name end)
  local waves, werr, wcode = gate.plan(pol.rollout, all)
  if not waves then return nil, werr, wcode end
  local new_specs = {}
  for name, s in pairs(specs) do new_specs[name] = s end
  for name, d in pairs(changes) do
    local s = util.copy(specs[name])
    if d.image then s.image = d.image end
    if d.env then s.env = d.env end
    if d.health_check then s.health_check = d.health_check end
    new_specs[name] = s
  end
  local past = history_of(list)
  local keep, herr, hcode = gate.history_max(pol.rollout)
  if not keep then return nil, herr, hcode end
  if not release_id then
    release_id, herr, hcode = gate.release_id(pol.rollout, {instance_id = id, kind = "deploy"},
      release_history.ids(past))
    if not release_id then return nil, herr, hcode end
  end
  local history = release_history.record_release(past, release_id,
    release_history.snapshot(new_specs), keep)
  local done = {}
  local function undo(e, c)
    for i = #done, 1, -1 do
      local cur = self.engine:get("/services/" .. seg(done[i].ID))
      if cur and cur.PreviousSpec then
        self:_update(cur, cur.PreviousSpec, {rollback = "previous"})
        self:_wait_update(cur, done[i].Spec.Name, 60)
      end
    end
    return nil, e, c
  end
  local request = {strategy = strategy_req, release_id = release_id}
  local step, total = 0, 0
  for _ in pairs(changes) do total = total + 1 end
  for _, wave in ipairs(waves) do
    for _, name in ipairs(wave) do
      if changes[name] then
        local cur, s = by[name], new_specs[name]
        local u, uerr, ucode = update_settings(self, pol, s, request)
        if not u then return undo(uerr, ucode) end
        local inst = sspec.inst_of(cur)
        local replicas = ((cur.Spec.Mode or {}).Replicated or {}).Replicas
        local body = sspec.service_spec(self.cfg, inst, s, {release = release_id, history = history,
          replicas = replicas, update = u})
        if s.role == "init" then
          return undo(string.format("service %s is an init job: it runs once at provision; "
            .. "provision again to re-run it", name), "invalid")
        end
        -- keep what the runtime set since (scale limits, a stop)
        body.TaskTemplate.Resources = cur.Spec.TaskTemplate.Resources
        body.Labels[STOPPED_REPLICAS] = cur.Spec.Labels[STOPPED_REPLICAS]
        local ok, err, code = self:_update(cur, body)
        if not ok then return undo(err, code) end
        emit(opts, {type = "service", service = name, action = "updating", container = cur.ID})
        if specs[name].image ~= s.image or json.encode(specs[name].env or {}) ~= json.encode(s.env or {})
            or json.encode(specs[name].health_check or {}) ~= json.encode(s.health_check or {}) then
          local timeout = u.ready_timeout * math.max(1, replicas or 1) + u.monitor + 30
          ok, err, code = self:_wait_update(cur, name, timeout)
          if not ok then return undo(err, code) end
        end
        done[#done + 1] = cur
        emit(opts, {type = "service", service = name, action = "replaced", container = cur.ID})
        if pol.rollout.fns.after_service then
          step = step + 1
          local go, aerr, acode = gate.after_service(pol.rollout, {service = name, index = step,
            total = total, release_id = release_id,
            status = function() return self:status(id) end,
            sleep = function(seconds) core.sleep(math.min(seconds, 600)) end})
          if not go then return undo(aerr, acode) end
        end
      end
    end
  end
  local st = self:status(id)
  return {provider_ref = project.provider_ref(id), status = st and st.state or "running",
    release_id = release_id}
end

function P:deploy(req, opts)
  opts = opts or {}
  if type(req) ~= "table" then return nil, "invalid request: request: expected an object", "invalid" end
  local okid, iderr = project.validate_id(req.instance_id)
  if not okid then return nil, "invalid request: " .. iderr, "invalid" end
  local by, err = cluster.services_by_name(self, req.instance_id)
  if not by then return nil, err, "unreachable" end
  if not next(by) then return nil, "instance " .. req.instance_id .. " does not exist", "not_found" end
  local r, verr, vcode, verrors = validate.deploy(req, by)
  if not r then return nil, verr, vcode, verrors end
  local changes = {}
  for _, d in ipairs(r.services) do changes[d.name] = d end
  return self:_apply_release(req.instance_id, r.release_id, r.strategy,
    changes, opts)
end

function P:rollback(instance_id, release_id, opts)
  opts = opts or {}
  local ok, verr = project.validate_id(instance_id)
  if not ok then return nil, verr, "invalid" end
  if type(release_id) ~= "string" or release_id == "" then
    return nil, "release_id: expected a release id", "invalid"
  end
  local by, list = cluster.services_by_name(self, instance_id)
  if not by then return nil, list, "unreachable" end
  if not next(by) then return nil, "instance " .. instance_id .. " does not exist", "not_found" end
  local target, known = nil, {}
  for _, e in ipairs(history_of(list)) do
    known[#known + 1] = e.id
    if e.id == release_id then target = e end
  end
  if not target then
    return nil, string.format("instance %s has no release %q (known releases: %s)", instance_id,
      release_id, #known > 0 and table.concat(known, ", ") or "none"), "not_found"
  end
  local changes = {}
  for name, snap in pairs(target.services or {}) do
    local s = by[name] and sspec.spec_of(by[name])
    if s and s.role ~= "init" and (s.image ~= snap.image
        or json.encode(s.env or {}) ~= json.encode(snap.env or {})) then
      changes[name] = {image = snap.image, env = snap.env or json.object({})}
    end
  end
  if not next(changes) then
    return {provider_ref = project.provider_ref(instance_id), status = "running",
      release_id = release_id}
  end
  return self:_apply_release(instance_id, release_id, opts.strategy, changes, opts)
end

-- ---- scale, start / stop / restart ------------------------------------------------

function P:scale(instance_id, spec)
  local ok, verr = project.validate_id(instance_id)
  if not ok then return nil, verr, "invalid" end
  local r, serr, scode, serrors = validate.resources(spec, self.cfg)
  if not r then return nil, serr, scode, serrors end
  if (r.disk_mb or 0) > 0 then
    return nil, "invalid request: spec.disk_mb: " .. NO_DISK_LIMIT, "invalid",
      {{field = "spec.disk_mb", message = NO_DISK_LIMIT}}
  end
  local by, err = cluster.services_by_name(self, instance_id)
  if not by then return nil, err, "unreachable" end
  if not next(by) then return nil, "instance " .. instance_id .. " does not exist", "not_found" end
  -- which service: scripts/scale.lua target() (Swarm itself picks the tasks that go)
  local pol, perr, pcode = gate.load(self, {"scale"})
  if not pol then return nil, perr, pcode end
  local shape = {all = {}, reps = {}, specs = {}, inst = {instance_id = instance_id}}
  for _, name in ipairs(util.sorted_keys(by)) do
    local sp = sspec.spec_of(by[name])
    shape.all[#shape.all + 1], shape.specs[name] = sp, sp
    local n = by[name].Spec.Mode.Replicated and by[name].Spec.Mode.Replicated.Replicas or 1
    shape.reps[name] = {}
    for k = 1, math.max(1, n) do shape.reps[name][k] = {replica = k} end
  end
  local target, terr, tcode = gate.scale_target(pol.scale, shape, r)
  if not target then return nil, terr, tcode end
  local main = {name = target.name, svc = by[target.name]}
  local cur = main.svc
  local body = util.copy(cur.Spec)
  local limits = body.TaskTemplate.Resources and body.TaskTemplate.Resources.Limits or {}
  if r.cpu_millis then limits.NanoCPUs = r.cpu_millis > 0 and r.cpu_millis * 1000000 or nil end
  if r.memory_mb then limits.MemoryBytes = r.memory_mb > 0 and r.memory_mb * 1048576 or nil end
  if next(limits) == nil then limits = json.object({}) end
  body.TaskTemplate.Resources = {Limits = limits}
  -- Swarm applies new limits by replacing tasks: start-first
  body.UpdateConfig = body.UpdateConfig or sspec.update_config({})
  body.UpdateConfig.Order = "start-first"
  local replicas = body.Mode.Replicated.Replicas
  if r.replicas then
    if body.Labels[STOPPED_REPLICAS] then
      body.Labels[STOPPED_REPLICAS] = tostring(r.replicas)
    else
      body.Mode.Replicated.Replicas = r.replicas
      replicas = r.replicas
    end
  end
  ok, err, scode = self:_update(cur, body)
  if not ok then return nil, err, scode end
  if r.cpu_millis or r.memory_mb then
    ok, err, scode = self:_wait_update(cur, main.name, self.cfg.ready_timeout * math.max(1, replicas) + 30)
    if not ok then return nil, err, scode end
  end
  if replicas > 0 then
    ok, err, scode = self:_wait_running(cur.ID, main.name, replicas)
    if not ok then return nil, err, scode end
  end
  return true
end

-- main and sidecars in rollout order (reverse for stop)
function P:_live_services(instance_id, reverse)
  local by, list = cluster.services_by_name(self, instance_id)
  if not by then return nil, list, "unreachable" end
  if not next(by) then return nil, "instance " .. instance_id .. " does not exist", "not_found" end
  local pol, perr, pcode = gate.load(self, {"rollout"})
  if not pol then return nil, perr, pcode end
  local all = {}
  for _, s in pairs(by) do all[#all + 1] = sspec.spec_of(s) end
  table.sort(all, function(a, b) return a.name < b.name end)
  local waves, werr, wcode = gate.plan(pol.rollout, all)
  if not waves then return nil, werr, wcode end
  local out = {}
  for _, wave in ipairs(waves) do
    for _, name in ipairs(wave) do
      if by[name].Spec.Mode.Replicated then out[#out + 1] = {name = name, svc = by[name]} end
    end
  end
  if reverse then
    for i = 1, #out // 2 do out[i], out[#out + 1 - i] = out[#out + 1 - i], out[i] end
  end
  return out
end

function P:stop(instance_id)
  local ok, verr = project.validate_id(instance_id)
  if not ok then return nil, verr, "invalid" end
  local live, err, code = self:_live_services(instance_id, true)
  if not live then return nil, err, code end
  for _, l in ipairs(live) do
    local body = util.copy(l.svc.Spec)
    local n = body.Mode.Replicated.Replicas
    if n > 0 then
      body.Labels[STOPPED_REPLICAS] = tostring(n)
      body.Mode.Replicated.Replicas = 0
      ok, err, code = self:_update(l.svc, body)
      if not ok then return nil, err, code end
      ok, err, code = cluster.poll(self.cfg.stop_timeout + 30, 0.25, function()
        local tasks, terr, tcode = cluster.tasks(self, l.svc.ID)
        if not tasks then return nil, terr, tcode end
        for _, t in ipairs(tasks) do
          local s = t.Status and t.Status.State
          if s == "running" or s == "starting" then return false end
        end
        return true
      end)
      if ok == false then return nil, "service " .. l.name .. " did not stop", "timeout" end
      if not ok then return nil, err, code end
    end
  end
  return true
end

function P:start(instance_id)
  local ok, verr = project.validate_id(instance_id)
  if not ok then return nil, verr, "invalid" end
  local live, err, code = self:_live_services(instance_id, false)
  if not live then return nil, err, code end
  for _, l in ipairs(live) do
    local n
    n, err, code = self:_restore_replicas(l.svc)
    if not n then return nil, err, code end
    ok, err, code = self:_wait_running(l.svc.ID, l.name, n)
    if not ok then return nil, err, code end
  end
  return true
end

-- a rolling restart: every task replaced (ForceUpdate), start-first
function P:restart(instance_id)
  local ok, verr = project.validate_id(instance_id)
  if not ok then return nil, verr, "invalid" end
  local live, err, code = self:_live_services(instance_id, false)
  if not live then return nil, err, code end
  for _, l in ipairs(live) do
    local body = util.copy(l.svc.Spec)
    if tonumber(body.Labels[STOPPED_REPLICAS] or "") then
      return self:start(instance_id)
    end
    body.TaskTemplate.ForceUpdate = (l.svc.Spec.TaskTemplate.ForceUpdate or 0) + 1
    ok, err, code = self:_update(l.svc, body)
    if not ok then return nil, err, code end
    ok, err, code = self:_wait_update(l.svc, l.name,
      self.cfg.ready_timeout * math.max(1, body.Mode.Replicated.Replicas) + 30)
    if not ok then return nil, err, code end
  end
  return true
end

-- for specs
P._task_failure = task_failure

return P
