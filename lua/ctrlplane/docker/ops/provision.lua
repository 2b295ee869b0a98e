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

function P:provision(req, opts)
  opts = opts or {}
  trace.mark("provision: start")
  local r, verr, vcode, verrors = validate.provision(req, self.cfg)
  if not r then return nil, verr, vcode, verrors end
  r, verr, vcode, verrors = steps.check_host(self.engine, r)
  if not r then return nil, verr, vcode, verrors end
  local pol, perr, pcode = gate.load(self, {"rollout", "reprovision", "status"})
  if not pol then return nil, perr, pcode end
  local waves, werr, wcode = gate.plan(pol.rollout, r.services)
  if not waves then return nil, werr, wcode end
  trace.mark("provision: validate, policies, plan")

  local inst = instance_info(r)
  local ctx = new_ctx(self, inst, {on_event = opts.on_event, release = opts.release_id})
  local specs = {}
  for _, s in ipairs(r.services) do specs[s.name] = s end
  -- secrets resolve before anything touches the engine (a field error)
  for _, s in ipairs(r.services) do
    local m, merr, mcode = steps.material_of(ctx, s)
    if not m then return nil, merr, mcode end
  end

  -- a deploy or re-provision killed part-way: one generation per service first
  local fixed, ferr, fcode = recover.run(self.engine, r.instance_id, opts.on_event)
  if not fixed then return nil, ferr, fcode end

  -- what exists already, and what the re-provision policy does with it
  local existing, reps, list = members_by_service(self.engine, r.instance_id)
  if not existing then return nil, reps, list end
  trace.mark("provision: list members")
  local actions, reasons, info = {}, {}, {}
  local recorded, rerr, rcode = manifest.read(self.engine, r.instance_id)
  if recorded == nil then return nil, rerr, rcode end
  local want = replica_targets(r.services, existing, reps, recorded)
  if next(existing) then
    local desired = {}
    for i, s in ipairs(r.services) do
      desired[i] = {name = s.name, role = s.role,
        hash = spec_hash(self.cfg, inst, s, ctx.material[s.name].digest), spec = stored_service(s),
        replicas = want[s.name]}
    end
    local current, inspected, ccode = current_of(ctx, existing, reps, want)
    if not current then return nil, inspected, ccode end
    info = inspected
    sticky_limits(ctx, r.services, existing, info)
    local decided, why, dcode = gate.decide(pol.reprovision, desired, current)
    if not decided then return nil, why, dcode end
    actions, reasons = decided, why
  end

  local images, changes = {}, false
  for _, s in ipairs(r.services) do
    local a = actions[s.name] or "create"
    if a == "create" or a == "replace" then
      images[#images + 1] = s.image
      changes = true
    end
  end
  local history, keep
  if changes then
    local herr, hcode
    history = history_of(list)
    keep, herr, hcode = gate.history_max(pol.rollout)
    if not keep then return nil, herr, hcode end
    if not ctx.release then
      ctx.release, herr, hcode = gate.release_id(pol.rollout, {instance_id = r.instance_id,
        kind = "provision", first = next(existing) == nil}, release_history.ids(history))
      if not ctx.release then return nil, herr, hcode end
    end
  end
  local ok, err, code = ensure_images(ctx, images)
  if not ok then return nil, err, code end
  trace.mark("provision: images")
  if changes then
    -- the release records the image each service runs, by ID
    local targets = {}
    for _, s in ipairs(r.services) do
      local a = actions[s.name] or "create"
      local c = existing[s.name]
      if (a == "keep" or a == "start") and c and c.ImageID then
        targets[s.name] = c.ImageID
      else
        targets[s.name] = image.image_ref(self.cfg, s.image)
      end
    end
    ctx.history = record_release(history, ctx.release,
      snapshot(specs, release_history.pins(self.engine, targets)), keep)
  end

  -- a failure puts back every replaced container and removes what this
  -- call created
  local function abort(e, c)
    local _, msg, mcode = replace.restore(ctx, e, c)
    undo(ctx)
    return nil, msg, mcode
  end

  ok, err, code = ensure_network(ctx)
  if not ok then return abort(err, code) end
  trace.mark("provision: network")
  local want_replicas = {}
  for name, l in pairs(reps) do want_replicas[name] = #l end
  for _, s in ipairs(r.services) do
    want_replicas[s.name] = math.max(want_replicas[s.name] or 0, want[s.name])
  end
  ok, err, code = ensure_volumes(ctx, r.services, want_replicas)
  if not ok then return abort(err, code) end
  trace.mark("provision: volumes")

  -- services no longer listed, and replicas a service no longer has, go
  -- once everything else is ready
  local doomed = {}
  for name, a in pairs(actions) do
    if a == "remove" then
      for _, c in ipairs(reps[name] or {existing[name]}) do doomed[#doomed + 1] = c.Id end
    end
  end

  local ids, keys_of = {}, {}
  for _, wave in ipairs(waves) do
    local to_create, to_start, units = {}, {}, {}
    for _, name in ipairs(wave) do
      local s = specs[name]
      local a = actions[name] or "create"
      local n = want[name]
      if a == "create" then
        if s.role == "init" then
          ok, err, code = run_init(ctx, s)
          if not ok then return abort(err, code) end
          ids[name] = ctx.created[#ctx.created]
        else
          keys_of[name] = {}
          for rep = 1, n do
            local u = replica_unit(ctx, s, rep)
            to_create[#to_create + 1] = u
            keys_of[name][rep] = u.key
          end
        end
      elseif a == "replace" then
        -- the way a deploy does it: the new one ready before the old one
        -- goes, the old one put back on failure
        local st, serr, scode = replace.strategy(self, pol.rollout, s, {release_id = ctx.release})
        if not st then return abort(serr, scode) end
        local old = reps[name] or {existing[name]}
        local top = old[#old] and old[#old].replica or 0
        for i = 1, n do
          -- more replicas than before: the numbers above the old ones
          local rep = old[i] and (old[i].replica or 1) or (top + i - #old)
          local u = replace.apply(replica_unit(ctx, s, rep), st)
          u.old = old[i]
          -- only the first replica is a canary; the others follow it start-first
          if st.kind == "canary" and i > 1 then u.strategy = "start-first" end
          units[#units + 1] = u
        end
        for i = n + 1, #old do doomed[#doomed + 1] = old[i].Id end
      elseif a == "start" then
        local rc, rs, rids, extra = repair(ctx, s, reps[name], info, n)
        if not rc then return abort(rs, rids) end
        for k, v in pairs(rids) do ids[k] = v end
        for _, u in ipairs(rc) do to_create[#to_create + 1] = u end
        for _, k in ipairs(rs) do to_start[#to_start + 1] = k end
        for _, id in ipairs(extra) do doomed[#doomed + 1] = id end
        keys_of[name] = {}
        for k in pairs(rids) do keys_of[name][#keys_of[name] + 1] = k end
        for _, u in ipairs(rc) do keys_of[name][#keys_of[name] + 1] = u.key end
      else -- keep
        keys_of[name] = {}
        for _, c in ipairs(reps[name] or {existing[name]}) do
          local key = project.replica_key(name, c.replica or 1)
          ids[key] = c.Id
          keys_of[name][#keys_of[name] + 1] = key
        end
        emit(ctx, {type = "service", service = name, action = "kept", container = ids[name]})
      end
    end
    if #to_create > 0 then
      local new_ids
      new_ids, err, code = create_containers(ctx, to_create)
      if not new_ids then return abort(err, code) end
      for _, u in ipairs(to_create) do
        ids[u.key] = new_ids[u.key]
        to_start[#to_start + 1] = u.key
      end
    end
    if #to_start > 0 then
      ok, err, code = start_containers(ctx, to_start, ids)
      if not ok then return abort(err, code) end
    end
    if #units > 0 then
      ok, err, code = replace.units(self, ctx, units,
        replace.hooks(self, pol.rollout, {release_id = ctx.release}, r.instance_id, #units))
      if not ok then
        undo(ctx)
        return nil, err, code
      end
      for _, u in ipairs(units) do
        ids[u.key] = u.id
        keys_of[u.spec.name] = keys_of[u.spec.name] or {}
        table.insert(keys_of[u.spec.name], u.key)
      end
    end
    trace.mark("provision: wave " .. table.concat(wave, ","))
  end

  -- readiness of the long-lived services (every replica)
  local live, ready_specs, spans = {}, {}, {}
  for _, s in ipairs(r.services) do
    if s.role ~= "init" then
      for _, key in ipairs(keys_of[s.name] or {}) do
        live[key] = ids[key]
        ready_specs[key] = s
        local rep = tonumber(key:match("_(%d+)$")) or 1
        spans[s.name] = math.max(spans[s.name] or 0, rep)
      end
    end
  end
  local ready
  ready, err, code = wait_ready(ctx, live, ready_specs)
  if not ready then return abort(err, code) end
  trace.mark("provision: ready")

  -- done: the old generation goes, and the manifest says what there is now
  replace.commit(ctx)
  if #doomed > 0 then
    for name, a in pairs(actions) do
      if a == "remove" then
        emit(ctx, {type = "service", service = name, action = "removed", container = existing[name].Id})
      end
    end
    remove_containers(self.engine, doomed)
  end
  local services = manifest.of_specs(r.services)
  for name, m in pairs(services) do m.replicas = want[name] end
  ok, err, code = manifest.write(self.engine, inst, services)
  if not ok then return nil, err, code end

  local refs = {}
  for _, s in ipairs(r.services) do refs[s.name] = ids[s.name] end
  return {
    provider_ref = project.provider_ref(r.instance_id),
    service_refs = refs,
    endpoints = endpoints_of(r.instance_id, r.services, ready, spans),
    -- Go decodes metadata as map[string]string: only strings in it; what
    -- each service went through is an extra top-level field (Go ignores it)
    metadata = {project = project.name(r.instance_id),
      network = project.network_name(r.instance_id)},
    changes = changes_of(actions, reasons, r.services),
  }
end

function P:deprovision(instance_id)
  local ok, verr = project.validate_id(instance_id)
  if not ok then return nil, verr, "invalid" end
  local eng = self.engine
  local list, err, code = project.members(eng, instance_id)
  if not list then return nil, err, code end
  local ids = {}
  for i, c in ipairs(list) do ids[i] = c.Id end
  ok, err, code = remove_containers(eng, ids)
  if not ok then return nil, err, code end
  local filter = engine.filters({label = {LABEL.project .. "=" .. project.name(instance_id)}})
  local found = eng:batch({{path = "/networks", query = {filters = filter}},
    {path = "/volumes", query = {filters = filter}}})
  for _, r in ipairs(found) do
    if r.error then return nil, r.error, r.code end
  end
  local calls = {}
  for _, n in ipairs(found[1].value) do
    calls[#calls + 1] = {method = "DELETE", path = "/networks/" .. seg(n.Id)}
  end
  for _, v in ipairs(found[2].value.Volumes or {}) do
    calls[#calls + 1] = {method = "DELETE", path = "/volumes/" .. seg(v.Name)}
  end
  for _, r in ipairs(eng:batch(calls)) do
    if r.error and r.code ~= "not_found" then return nil, r.error, r.code end
  end
  return true
end

return P
