-- provision and deprovision: create the instance's project (or bring an
-- existing one to the request, as scripts/reprovision.lua decides) and
-- remove all of it.
local engine = require("ctrlplane.docker.engine")
local gate = require("ctrlplane.docker.gate")
local json = require("ctrlplane.docker.json")
local image = require("ctrlplane.docker.image")
local manifest = require("ctrlplane.docker.manifest")
local members = require("ctrlplane.docker.members")
local network = require("ctrlplane.docker.network")
local project = require("ctrlplane.docker.project")
local recover = require("ctrlplane.docker.recover")
local release_history = require("ctrlplane.docker.release_history")
local replace = require("ctrlplane.docker.replace")
local specbuild = require("ctrlplane.docker.specbuild")
local steps = require("ctrlplane.docker.steps")
local trace = require("ctrlplane.docker.trace")
local validate = require("ctrlplane.docker.validate")

local LABEL = project.LABEL
local seg = engine.segment
local create_containers = steps.create_containers
local emit = steps.emit
local endpoints_of = specbuild.endpoints_of
local ensure_images = image.ensure_images
local ensure_network = network.ensure_network
local ensure_volumes = network.ensure_volumes
local history_of = release_history.history_of
local instance_info = specbuild.instance_info
local members_by_service = members.members_by_service
local new_ctx = steps.new_ctx
local record_release = release_history.record_release
local remove_containers = steps.remove_containers
local replica_unit = steps.replica_unit
local run_init = steps.run_init
local snapshot = release_history.snapshot
local spec_of = members.spec_of
local stored_service = specbuild.stored_service
local spec_hash = specbuild.spec_hash
local start_containers = steps.start_containers
local undo = steps.undo
local wait_ready = steps.wait_ready

local P = {}

-- What the provision did to each service, and why: "created", "kept",
-- "replaced: image changed", "started: was exited", "removed: no longer
-- requested".
local DID = {create = "created", keep = "kept", replace = "replaced", start = "started",
  remove = "removed"}

local function changes_of(actions, reasons, services)
  local out = json.object({})
  for _, s in ipairs(services) do
    if not actions[s.name] then out[s.name] = "created" end
  end
  for name, a in pairs(actions) do
    local why = reasons[name]
    out[name] = DID[a] .. ((why and why ~= "" and a ~= "create") and (": " .. why) or "")
  end
  return out
end

local function aliased_on(ci, net, name)
  local ep = ci and ci.NetworkSettings and ci.NetworkSettings.Networks
    and ci.NetworkSettings.Networks[net]
  for _, al in ipairs(ep and ep.Aliases or {}) do
    if al == name then return true, ep end
  end
  return false, ep
end

-- How many containers a service asks for.
local function wanted(s)
  if s.role == "init" then return 1 end
  return math.max(1, (s.resources or {}).replicas or 1)
end

-- A scale sticks: a service the request leaves at the resources its
-- containers were made with keeps the replica count it was scaled to (the
-- manifest's, else as many as there are), and a request that changes its
-- resources gets the replicas it asks for. Returns {name -> replicas}.
local function replica_targets(services, existing, reps, recorded)
  local want = {}
  for _, s in ipairs(services) do
    local c = existing[s.name]
    want[s.name] = wanted(s)
    if c and s.role ~= "init"
        and json.encode(spec_of(c).resources or {}) == json.encode(s.resources or {}) then
      local m = recorded and recorded.services[s.name]
      want[s.name] = math.max(1, m and tonumber(m.replicas) or #(reps[s.name] or {c}))
    end
  end
  return want
end

-- ... and the CPU/memory limits its containers run with now (a scale laid
-- over the recorded spec) go to its new containers too: ctx.limits.
local function sticky_limits(ctx, services, existing, info)
  for _, s in ipairs(services) do
    local c = existing[s.name]
    local live = c and info[c.Id]
    if live and s.role ~= "init"
        and json.encode(spec_of(c).resources or {}) == json.encode(s.resources or {}) then
      local h = live.HostConfig or {}
      ctx.limits = ctx.limits or {}
      ctx.limits[s.name] = {cpu_millis = (h.NanoCpus or 0) // 1000000,
        memory_mb = (h.Memory or 0) // 1048576}
    end
  end
end

-- The state of the services that exist, for the re-provision policy:
-- {role, hash, spec, docker_state, exit_code (replica 1), running (as many
-- replicas as requested, each running, unpaused, on the project network
-- under the service name), paused, connected, replicas, desired_replicas}.
-- Also returns every member's inspect, by container id.
local function current_of(ctx, existing, reps, want_of)
  local ids = {}
  for _, l in pairs(reps) do
    for _, c in ipairs(l) do ids[c.Id] = c.Id end
  end
  local info, err, code = steps.inspect_all(ctx, ids)
  if not info then return nil, err, code end
  local net = project.network_name(ctx.inst.instance_id)
  local current = {}
  for name, c in pairs(existing) do
    local labels = c.Labels or {}
    local l = reps[name] or {c}
    local first = info[c.Id].State or {}
    local want = want_of[name] or #l
    local e = {role = labels[LABEL.role], hash = labels[LABEL.spec_hash], spec = spec_of(c),
      docker_state = first.Status, exit_code = first.ExitCode, paused = false, connected = true,
      replicas = #l, desired_replicas = want}
    local all_running = #l == want
    for _, rc in ipairs(l) do
      local ci = info[rc.Id]
      local st = ci and ci.State or {}
      if st.Status ~= "running" then all_running = false end
      if st.Status == "paused" then e.paused = true end
      if ci and not aliased_on(ci, net, name) then e.connected = false end
    end
    e.running = all_running and e.connected
    current[name] = e
  end
  return current, info
end

-- Brings an unchanged service back to what the request asks for, in place:
-- missing replicas are created (the lowest free numbers), paused ones
-- unpaused, stopped ones started, ones off the project network put back
-- under the service alias, extra ones removed at the end. Returns the
-- units to create, the keys to start, {key -> id} of the ones there, and
-- the ids of the extra ones.
local function repair(ctx, spec, l, info, want)
  local eng = ctx.eng
  local net = project.network_name(ctx.inst.instance_id)
  local to_create, to_start, ids, extra = {}, {}, {}, {}
  local used = {}
  for i, c in ipairs(l or {}) do
    if i > want then
      extra[#extra + 1] = c.Id
    else
      used[c.replica or 1] = true
      local u = replica_unit(ctx, spec, c.replica or 1)
      ids[u.key] = c.Id
      local ci = info[c.Id] or {}
      local st = (ci.State or {}).Status
      local aliased, ep = aliased_on(ci, net, spec.name)
      if not aliased then
        if ep then
          eng:post("/networks/" .. seg(net) .. "/disconnect", nil, {Container = c.Id, Force = true})
        end
        local ok, err, code = eng:post("/networks/" .. seg(net) .. "/connect", nil,
          {Container = c.Id, EndpointConfig = {Aliases = {spec.name}}})
        if not ok then
          return nil, string.format("putting service %s back on its network: %s", u.key, err), code
        end
        emit(ctx, {type = "service", service = u.key, action = "reconnected", container = c.Id})
      end
      if st == "paused" then
        local ok, err, code = eng:post("/containers/" .. seg(c.Id) .. "/unpause")
        if not ok then return nil, string.format("unpausing service %s: %s", u.key, err), code end
        emit(ctx, {type = "service", service = u.key, action = "unpaused", container = c.Id})
      elseif st ~= "running" then
        to_start[#to_start + 1] = u.key
      end
    end
  end
  local rep = 0
  for _ = #(l or {}) + 1, want do
    repeat rep = rep + 1 until not used[rep]
    to_create[#to_create + 1] = replica_unit(ctx, spec, rep)
  end
  return to_create, to_start, ids, extra
end

-- A provision's state, passed between its steps: r (the validated
-- request), pol, waves, inst, ctx, specs, existing, reps, list, actions,
-- reasons, info (inspects by id), want (replicas by service), ids (by
-- replica key), keys_of (service -> its replica keys), doomed (ids to
-- remove once the rest is ready).

-- Validation, policies, the plan, and the secrets resolved (before anything
-- touches the engine: a field error).
local function prepare(p, req, opts)
  local r, verr, vcode, verrors = validate.provision(req, p.cfg)
  if not r then return nil, verr, vcode, verrors end
  r, verr, vcode, verrors = steps.check_host(p.engine, r)
  if not r then return nil, verr, vcode, verrors end
  local pol, perr, pcode = gate.load(p, {"rollout", "reprovision", "status"})
  if not pol then return nil, perr, pcode end
  local waves, werr, wcode = gate.plan(pol.rollout, r.services)
  if not waves then return nil, werr, wcode end
  trace.mark("provision: validate, policies, plan")
  local inst = instance_info(r)
  local st = {r = r, pol = pol, waves = waves, inst = inst, specs = {},
    ctx = new_ctx(p, inst, {on_event = opts.on_event, release = opts.release_id}),
    ids = {}, keys_of = {}, doomed = {}, actions = {}, reasons = {}, info = {}}
  for _, s in ipairs(r.services) do
    st.specs[s.name] = s
    local m, merr, mcode = steps.material_of(st.ctx, s)
    if not m then return nil, merr, mcode end
  end
  return st
end

-- What exists already (a deploy or re-provision killed part-way brought
-- back to one generation per service first), how many replicas each
-- service is to have, and what the re-provision policy does with it.
local function decide(p, st, opts)
  local r = st.r
  local fixed, ferr, fcode = recover.run(p.engine, r.instance_id, opts.on_event)
  if not fixed then return nil, ferr, fcode end
  local existing, reps, list = members_by_service(p.engine, r.instance_id)
  if not existing then return nil, reps, list end
  st.existing, st.reps, st.list = existing, reps, list
  trace.mark("provision: list members")
  local recorded, rerr, rcode = manifest.read(p.engine, r.instance_id)
  if recorded == nil then return nil, rerr, rcode end
  st.want = replica_targets(r.services, existing, reps, recorded)
  if not next(existing) then return true end
  local desired = {}
  for i, s in ipairs(r.services) do
    desired[i] = {name = s.name, role = s.role,
      hash = spec_hash(p.cfg, st.inst, s, st.ctx.material[s.name].digest),
      spec = stored_service(s), replicas = st.want[s.name]}
  end
  local current, info, ccode = current_of(st.ctx, existing, reps, st.want)
  if not current then return nil, info, ccode end
  st.info = info
  sticky_limits(st.ctx, r.services, existing, info)
  local actions, why, dcode = gate.decide(st.pol.reprovision, desired, current)
  if not actions then return nil, why, dcode end
  st.actions, st.reasons = actions, why
  return true
end

-- The images pulled, and (when anything is created or replaced) the
-- release recorded, with the image each service runs by ID.
local function images_and_release(p, st)
  local r, ctx = st.r, st.ctx
  local images = {}
  for _, s in ipairs(r.services) do
    local a = st.actions[s.name] or "create"
    if a == "create" or a == "replace" then images[#images + 1] = s.image end
  end
  local history, keep, err, code
  if #images > 0 then
    history = history_of(st.list)
    keep, err, code = gate.history_max(st.pol.rollout)
    if not keep then return nil, err, code end
    if not ctx.release then
      ctx.release, err, code = gate.release_id(st.pol.rollout, {instance_id = r.instance_id,
        kind = "provision", first = next(st.existing) == nil}, release_history.ids(history))
      if not ctx.release then return nil, err, code end
    end
  end
  local ok
  ok, err, code = ensure_images(ctx, images)
  if not ok then return nil, err, code end
  trace.mark("provision: images")
  if #images == 0 then return true end
  local targets = {}
  for _, s in ipairs(r.services) do
    local a = st.actions[s.name] or "create"
    local c = st.existing[s.name]
    if (a == "keep" or a == "start") and c and c.ImageID then
      targets[s.name] = c.ImageID
    else
      targets[s.name] = image.image_ref(p.cfg, s.image)
    end
  end
  ctx.history = record_release(history, ctx.release,
    snapshot(st.specs, release_history.pins(p.engine, targets)), keep)
  return true
end

-- The network and volumes (stateful_set: one per replica there will be).
local function project_resources(st)
  local ok, err, code = ensure_network(st.ctx)
  if not ok then return nil, err, code end
  trace.mark("provision: network")
  local want_replicas = {}
  for name, l in pairs(st.reps) do want_replicas[name] = #l end
  for _, s in ipairs(st.r.services) do
    want_replicas[s.name] = math.max(want_replicas[s.name] or 0, st.want[s.name])
  end
  ok, err, code = ensure_volumes(st.ctx, st.r.services, want_replicas)
  if not ok then return nil, err, code end
  trace.mark("provision: volumes")
  return true
end

-- a replaced service's units, the way a deploy makes them: the new one
-- ready before the old one goes, the old one put back on failure
local function replace_units_of(p, st, s, n, units)
  local st_kind, serr, scode = replace.strategy(p, st.pol.rollout, s, {release_id = st.ctx.release})
  if not st_kind then return nil, serr, scode end
  local old = st.reps[s.name] or {st.existing[s.name]}
  local top = old[#old] and old[#old].replica or 0
  for i = 1, n do
    -- more replicas than before: the numbers above the old ones
    local rep = old[i] and (old[i].replica or 1) or (top + i - #old)
    local u = replace.apply(replica_unit(st.ctx, s, rep), st_kind)
    u.old = old[i]
    -- only the first replica is a canary; the others follow it start-first
    if st_kind.kind == "canary" and i > 1 then u.strategy = "start-first" end
    units[#units + 1] = u
  end
  for i = n + 1, #old do st.doomed[#st.doomed + 1] = old[i].Id end
  return true
end

-- What one service of a wave needs, by its action: into batch.to_create,
-- batch.to_start (keys) and batch.units (replacements).
local function plan_service(p, st, name, batch)
  local ctx, s = st.ctx, st.specs[name]
  local a = st.actions[name] or "create"
  local n = st.want[name]
  local keys = {}
  st.keys_of[name] = keys
  if a == "create" and s.role == "init" then
    local ok, err, code = run_init(ctx, s)
    if not ok then return nil, err, code end
    st.ids[name] = ctx.created[#ctx.created]
  elseif a == "create" then
    for rep = 1, n do
      local u = replica_unit(ctx, s, rep)
      batch.to_create[#batch.to_create + 1] = u
      keys[rep] = u.key
    end
  elseif a == "replace" then
    return replace_units_of(p, st, s, n, batch.units)
  elseif a == "start" then
    local rc, rs, rids, extra = repair(ctx, s, st.reps[name], st.info, n)
    if not rc then return nil, rs, rids end
    for k, v in pairs(rids) do
      st.ids[k] = v
      keys[#keys + 1] = k
    end
    for _, u in ipairs(rc) do
      batch.to_create[#batch.to_create + 1] = u
      keys[#keys + 1] = u.key
    end
    for _, k in ipairs(rs) do batch.to_start[#batch.to_start + 1] = k end
    for _, id in ipairs(extra) do st.doomed[#st.doomed + 1] = id end
  else -- keep
    for _, c in ipairs(st.reps[name] or {st.existing[name]}) do
      local key = project.replica_key(name, c.replica or 1)
      st.ids[key] = c.Id
      keys[#keys + 1] = key
    end
    emit(ctx, {type = "service", service = name, action = "kept", container = st.ids[name]})
  end
  return true
end

-- One wave of the plan: its services created, started, repaired or
-- replaced. A failed replacement has already put back what it retired
-- (then the 4th value is "restored"); the caller undoes the rest.
local function run_wave(p, st, wave)
  local ctx, ids = st.ctx, st.ids
  local batch = {to_create = {}, to_start = {}, units = {}}
  for _, name in ipairs(wave) do
    local ok, err, code = plan_service(p, st, name, batch)
    if not ok then return nil, err, code end
  end
  if #batch.to_create > 0 then
    local new_ids, err, code = create_containers(ctx, batch.to_create)
    if not new_ids then return nil, err, code end
    for _, u in ipairs(batch.to_create) do
      ids[u.key] = new_ids[u.key]
      batch.to_start[#batch.to_start + 1] = u.key
    end
  end
  if #batch.to_start > 0 then
    local ok, err, code = start_containers(ctx, batch.to_start, ids)
    if not ok then return nil, err, code end
  end
  local units = batch.units
  if #units > 0 then
    local ok, err, code = replace.units(p, ctx, units,
      replace.hooks(p, st.pol.rollout, {release_id = ctx.release}, st.r.instance_id, #units))
    if not ok then return nil, err, code, "restored" end
    for _, u in ipairs(units) do
      ids[u.key] = u.id
      table.insert(st.keys_of[u.spec.name], u.key)
    end
  end
  trace.mark("provision: wave " .. table.concat(wave, ","))
  return true
end

-- readiness of the long-lived services (every replica): their inspects, and
-- the highest replica number of each service
local function await_services(st)
  local live, ready_specs, spans = {}, {}, {}
  for _, s in ipairs(st.r.services) do
    if s.role ~= "init" then
      for _, key in ipairs(st.keys_of[s.name] or {}) do
        live[key] = st.ids[key]
        ready_specs[key] = s
        local rep = tonumber(key:match("_(%d+)$")) or 1
        spans[s.name] = math.max(spans[s.name] or 0, rep)
      end
    end
  end
  local ready, err, code = wait_ready(st.ctx, live, ready_specs)
  if not ready then return nil, err, code end
  trace.mark("provision: ready")
  return ready, spans
end

-- done: the old generation goes (retired containers, services no longer
-- listed, replicas a service no longer has), and the manifest says what
-- there is now
local function commit(p, st)
  replace.commit(st.ctx)
  for name, a in pairs(st.actions) do
    if a == "remove" then
      for _, c in ipairs(st.reps[name] or {st.existing[name]}) do st.doomed[#st.doomed + 1] = c.Id end
      emit(st.ctx, {type = "service", service = name, action = "removed",
        container = st.existing[name].Id})
    end
  end
  if #st.doomed > 0 then remove_containers(p.engine, st.doomed) end
  local services = manifest.of_specs(st.r.services)
  for name, m in pairs(services) do m.replicas = st.want[name] end
  return manifest.write(p.engine, st.inst, services)
end

function P:provision(req, opts)
  opts = opts or {}
  trace.mark("provision: start")
  local st, err, code, errors = prepare(self, req, opts)
  if not st then return nil, err, code, errors end
  local ok
  ok, err, code = decide(self, st, opts)
  if not ok then return nil, err, code end
  ok, err, code = images_and_release(self, st)
  if not ok then return nil, err, code end

  -- a failure puts back every replaced container and removes what this
  -- call created
  local ctx = st.ctx
  local function abort(e, c)
    local _, msg, mcode = replace.restore(ctx, e, c)
    undo(ctx)
    return nil, msg, mcode
  end
  ok, err, code = project_resources(st)
  if not ok then return abort(err, code) end
  for _, wave in ipairs(st.waves) do
    local restored
    ok, err, code, restored = run_wave(self, st, wave)
    if not ok and restored then
      undo(ctx)
      return nil, err, code
    end
    if not ok then return abort(err, code) end
  end
  local ready, spans, rcode = await_services(st)
  if not ready then return abort(spans, rcode) end
  ok, err, code = commit(self, st)
  if not ok then return nil, err, code end

  local r = st.r
  local refs = {}
  for _, s in ipairs(r.services) do refs[s.name] = st.ids[s.name] end
  return {
    provider_ref = project.provider_ref(r.instance_id),
    service_refs = refs,
    endpoints = endpoints_of(r.instance_id, r.services, ready, spans, ctx.cfg),
    -- Go decodes metadata as map[string]string: only strings in it; what
    -- each service went through is an extra top-level field (Go ignores it)
    metadata = {project = project.name(r.instance_id),
      network = project.network_name(r.instance_id)},
    changes = changes_of(st.actions, st.reasons, r.services),
  }
end

function P:deprovision(instance_id)
  local ok, verr = project.validate_id(instance_id)
  if not ok then return nil, verr, "invalid" end
  local eng = self.engine
  -- the members, the network and the volumes are looked up at once (the
  -- removal of a container changes neither of the other two lists)
  local filter = engine.filters({label = {LABEL.project .. "=" .. project.name(instance_id)}})
  local found = eng:batch({project.members_call(instance_id),
    {path = "/networks", query = {filters = filter}},
    {path = "/volumes", query = {filters = filter}}})
  for _, r in ipairs(found) do
    if r.error then return nil, r.error, r.code end
  end
  local ids = {}
  for i, c in ipairs(found[1].value) do ids[i] = c.Id end
  local err, code
  ok, err, code = remove_containers(eng, ids)
  if not ok then return nil, err, code end
  local calls = {}
  for _, n in ipairs(found[2].value) do
    calls[#calls + 1] = {method = "DELETE", path = "/networks/" .. seg(n.Id)}
  end
  for _, v in ipairs(found[3].value.Volumes or {}) do
    calls[#calls + 1] = {method = "DELETE", path = "/volumes/" .. seg(v.Name)}
  end
  for _, r in ipairs(eng:batch(calls)) do
    if r.error and r.code ~= "not_found" then return nil, r.error, r.code end
  end
  return true
end

return P
