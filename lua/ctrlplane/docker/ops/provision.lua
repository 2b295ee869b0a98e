-- provision and deprovision: create the instance's project (or bring an
-- existing one to the request, as scripts/reprovision.lua decides) and
-- remove all of it.
local engine = require("ctrlplane.docker.engine")
local gate = require("ctrlplane.docker.gate")
local json = require("ctrlplane.docker.json")
local image = require("ctrlplane.docker.image")
local members = require("ctrlplane.docker.members")
local network = require("ctrlplane.docker.network")
local project = require("ctrlplane.docker.project")
local release_history = require("ctrlplane.docker.release_history")
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

  -- what exists already, and what the re-provision policy does with it
  local existing, reps, list = members_by_service(self.engine, r.instance_id)
  if not existing then return nil, reps, list end
  trace.mark("provision: list members")
  local actions, reasons = {}, {}
  if next(existing) then
    local desired, current = {}, {}
    for i, s in ipairs(r.services) do
      desired[i] = {name = s.name, role = s.role,
        hash = spec_hash(self.cfg, inst, s, ctx.material[s.name].digest), spec = stored_service(s)}
    end
    for name, c in pairs(existing) do
      local labels = c.Labels or {}
      current[name] = {role = labels[LABEL.role], hash = labels[LABEL.spec_hash],
        spec = spec_of(c), replicas = #(reps[name] or {c}),
        docker_state = c.State, running = c.State == "running",
        exit_code = tonumber((c.Status or ""):match("^Exited %((%-?%d+)%)"))}
    end
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

  local function abort(e, c)
    undo(ctx)
    return nil, e, c
  end

  -- a scale sticks: a replaced service whose request leaves its resources as
  -- recorded keeps the replica count and the limits its containers run with
  local sticky = {}
  for _, s in ipairs(r.services) do
    local c = existing[s.name]
    if actions[s.name] == "replace" and c and s.role ~= "init" then
      local recorded = members.spec_of(c).resources or {}
      if json.encode(recorded) == json.encode(s.resources or {}) then
        local live = self.engine:get("/containers/" .. seg(c.Id) .. "/json")
        local h = type(live) == "table" and live.HostConfig or {}
        ctx.limits = ctx.limits or {}
        ctx.limits[s.name] = {cpu_millis = (h.NanoCpus or 0) // 1000000,
          memory_mb = (h.Memory or 0) // 1048576}
        sticky[s.name] = #(reps[s.name] or {c})
      end
    end
  end

  -- services no longer listed and replaced ones go first (every replica)
  local doomed = {}
  for name, a in pairs(actions) do
    if a == "remove" or a == "replace" then
      for _, c in ipairs(reps[name] or {existing[name]}) do doomed[#doomed + 1] = c.Id end
      emit(ctx, {type = "service", service = name, action = a == "remove" and "removed" or "replacing",
        container = existing[name].Id})
    end
  end
  if #doomed > 0 then
    ok, err, code = remove_containers(self.engine, doomed)
    if not ok then return nil, err, code end
  end

  ok, err, code = ensure_network(ctx)
  if not ok then return abort(err, code) end
  trace.mark("provision: network")
  local want_replicas = {}
  for name, l in pairs(reps) do want_replicas[name] = #l end
  for _, s in ipairs(r.services) do
    local a = actions[s.name] or "create"
    if a == "create" or a == "replace" then
      want_replicas[s.name] = sticky[s.name] or math.max((s.resources or {}).replicas or 1, 1)
    end
  end
  ok, err, code = ensure_volumes(ctx, r.services, want_replicas)
  if not ok then return abort(err, code) end
  trace.mark("provision: volumes")

  local ids, counts, ready_specs = {}, {}, {}
  for name, a in pairs(actions) do
    if a == "keep" or a == "start" then
      for _, c in ipairs(reps[name] or {existing[name]}) do
        local u = replica_unit(ctx, specs[name], c.replica or 1)
        ids[u.key] = c.Id
        counts[name] = c.replica or 1
      end
    end
  end
  for _, wave in ipairs(waves) do
    local to_create, to_start = {}, {}
    for _, name in ipairs(wave) do
      local a = actions[name] or "create"
      if a == "create" or a == "replace" then
        if specs[name].role == "init" then
          ok, err, code = run_init(ctx, specs[name])
          if not ok then return abort(err, code) end
          ids[name] = ctx.created[#ctx.created]
        else
          local n = sticky[name] or (specs[name].resources or {}).replicas or 1
          if n < 1 then n = 1 end
          counts[name] = n
          for rep = 1, n do to_create[#to_create + 1] = replica_unit(ctx, specs[name], rep) end
        end
      elseif a == "start" then
        for _, c in ipairs(reps[name] or {existing[name]}) do
          to_start[#to_start + 1] = replica_unit(ctx, specs[name], c.replica or 1).key
        end
      else
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
    trace.mark("provision: wave " .. table.concat(wave, ","))
  end

  -- readiness of the long-lived services (every replica)
  local live = {}
  for _, s in ipairs(r.services) do
    if s.role ~= "init" then
      for rep = 1, counts[s.name] or 1 do
        local u = replica_unit(ctx, s, rep)
        live[u.key] = ids[u.key]
        ready_specs[u.key] = s
      end
    end
  end
  local info
  info, err, code = wait_ready(ctx, live, ready_specs)
  if not info then return abort(err, code) end
  trace.mark("provision: ready")

  local refs = {}
  for _, s in ipairs(r.services) do refs[s.name] = ids[s.name] end
  return {
    provider_ref = project.provider_ref(r.instance_id),
    service_refs = refs,
    endpoints = endpoints_of(r.instance_id, r.services, info, counts, ctx.cfg),
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
