-- deploy and rollback: replacing containers by the rollout strategy,
-- atomic across the listed services, with the release history recorded.
local engine = require("ctrlplane.docker.engine")
local gate = require("ctrlplane.docker.gate")
local image = require("ctrlplane.docker.image")
local json = require("ctrlplane.docker.json")
local members = require("ctrlplane.docker.members")
local project = require("ctrlplane.docker.project")
local recover = require("ctrlplane.docker.recover")
local release_history = require("ctrlplane.docker.release_history")
local replace = require("ctrlplane.docker.replace")
local specbuild = require("ctrlplane.docker.specbuild")
local steps = require("ctrlplane.docker.steps")
local util = require("ctrlplane.docker.util")
local validate = require("ctrlplane.docker.validate")

local seg = engine.segment
local current_state = members.current_state
local ensure_images = image.ensure_images
local history_of = release_history.history_of
local new_ctx = steps.new_ctx
local record_release = release_history.record_release
local replica_unit = steps.replica_unit
local snapshot = release_history.snapshot

local P = {}

-- (replacing the containers themselves: replace.lua)

-- Why a deploy replaces a service: what the release changes in its spec.
local function why_deployed(old, d)
  local why = {}
  if d.image and d.image ~= old.image then why[#why + 1] = "image changed" end
  if d.env then
    local keys = {}
    for k, v in pairs(d.env) do
      if (old.env or {})[k] ~= v then keys[#keys + 1] = k end
    end
    for k in pairs(old.env or {}) do
      if d.env[k] == nil then keys[#keys + 1] = k end
    end
    table.sort(keys)
    for _, k in ipairs(keys) do why[#why + 1] = "env " .. k .. " changed" end
  end
  if d.health_check and json.encode(d.health_check) ~= json.encode(old.health_check or {}) then
    why[#why + 1] = "health check changed"
  end
  if #why == 0 then return "redeployed (same spec)" end
  return table.concat(why, ", ")
end


-- The limits the service's containers run with now (a scale laid over the
-- recorded spec lives there): {cpu_millis, memory_mb} per service name.
local function live_limits(eng, cur, names)
  local calls, order = {}, {}
  for _, name in ipairs(names) do
    local c = cur.by[name]
    if c then
      order[#order + 1] = name
      calls[#calls + 1] = {path = "/containers/" .. seg(c.Id) .. "/json"}
    end
  end
  local out = {}
  for i, r in ipairs(eng:batch(calls)) do
    if r.error then return nil, "inspecting service " .. order[i] .. ": " .. r.error, r.code end
    local h = r.value.HostConfig or {}
    out[order[i]] = {cpu_millis = (h.NanoCpus or 0) // 1000000, memory_mb = (h.Memory or 0) // 1048576}
  end
  return out
end

-- A pinned image (a release's image ID) must still be on the host; with a
-- repo digest it is pulled by digest first. nil, message when it is gone.
local function ensure_pinned(ctx, s)
  local have = ctx.eng:get("/images/" .. s.image_id .. "/json")
  if have then return true end
  if s.repo_digest then
    ensure_images(ctx, {s.repo_digest})
    have = ctx.eng:get("/images/" .. s.image_id .. "/json")
    if have then return true end
  end
  return nil, string.format("service %s ran image %s as %s%s, which is no longer on this host; "
    .. "that release cannot be restored exactly", s.name, s.image, s.image_id,
    s.repo_digest and (" (" .. s.repo_digest .. " could not be pulled)") or ""), "image_missing"
end

-- The units a release replaces, in rollout order (plan: {ctx, waves,
-- rollout, cur, changes, request = {strategy, release_id}}): returns units,
-- new_specs (every service's spec after the release), changed (names),
-- images (refs to pull), pinned (specs run by image ID), did (what each
-- service goes through).
local function plan_units(p, plan)
  local cur, changes, ctx = plan.cur, plan.changes, plan.ctx
  local units, images, new_specs, changed, pinned = {}, {}, {}, {}, {}
  local did = json.object({})
  for _, s in pairs(cur.specs) do new_specs[s.name] = s end
  for _, wave in ipairs(plan.waves) do
    for _, name in ipairs(wave) do
      local d = changes[name]
      if d then
        local s = util.copy(cur.specs[name])
        did[name] = "replaced: " .. why_deployed(s, d)
        if d.image then
          s.image = d.image
          s.image_id, s.repo_digest = d.image_id, d.repo_digest -- a new ref runs what it names now
        end
        if d.env then s.env = d.env end
        if d.health_check then s.health_check = d.health_check end
        new_specs[name] = s
        changed[#changed + 1] = name
        if s.image_id then pinned[#pinned + 1] = s else images[#images + 1] = s.image end
        local st, serr, scode = replace.strategy(p, plan.rollout, s, plan.request)
        if not st then return nil, serr, scode end
        -- CP_DOCKER_KEEP_HOST_PORTS: the new container takes the old one's
        -- host ports, so it cannot start beside it (recreate)
        local keep_ports = specbuild.keeps_host_ports(p.cfg, s)
        if keep_ports then st.kind = "recreate" end
        for i, c in ipairs(cur.reps[name] or {cur.by[name]}) do
          local u = replace.apply(replica_unit(ctx, s, c.replica or 1), st)
          u.old = c
          -- only the first replica is a canary; the others follow it start-first
          if st.kind == "canary" and i > 1 then u.strategy = "start-first" end
          if keep_ports then u.host_ports = specbuild.bound_ports(c) end
          units[#units + 1] = u
        end
      end
    end
  end
  for name, u in pairs(cur.specs) do
    if not did[name] and u.role ~= "init" then did[name] = "kept: not in the release" end
  end
  return units, new_specs, changed, images, pinned, did
end

-- The images the release runs on the host: pinned ones by ID (by their ref
-- when the tag still names that image), the others pulled as needed.
local function ensure_release_images(p, ctx, images, pinned)
  for _, s in ipairs(pinned) do
    local now = ctx.eng:get("/images/" .. image.image_ref(p.cfg, s.image) .. "/json")
    if type(now) == "table" and now.Id == s.image_id then
      -- the tag still names that image: run it by its ref, as before
      s.image_id, s.repo_digest = nil, nil
    else
      local ok, err, code = ensure_pinned(ctx, s)
      if not ok then return nil, err, code end
    end
  end
  return ensure_images(ctx, images)
end

-- Deploys changes = {name -> {image, env, health_check, image_id, repo_digest}}
-- in rollout order.
-- cur: the instance's current_state, as the caller (holding the instance's
-- lock) has just listed it: one listing per operation.
local function apply_release(p, instance_id, release_id, strategy_req, changes, opts, cur)
  local pol, perr, pcode = gate.load(p, {"rollout", "status"})
  if not pol then return nil, perr, pcode end
  local err, code
  if not cur then
    cur, err, code = current_state(p, instance_id)
    if not cur then return nil, err, code end
  end
  local waves
  waves, err, code = gate.plan(pol.rollout, cur.all)
  if not waves then return nil, err, code end

  local history = history_of(cur.list)
  local keep
  keep, err, code = gate.history_max(pol.rollout)
  if not keep then return nil, err, code end
  if not release_id then
    release_id, err, code = gate.release_id(pol.rollout, {instance_id = instance_id,
      kind = "deploy"}, release_history.ids(history))
    if not release_id then return nil, err, code end
  end
  local ctx = new_ctx(p, cur.inst, {on_event = opts.on_event, release = release_id})
  local request = {strategy = strategy_req, release_id = release_id}
  local units, new_specs, changed, images, pinned, did = plan_units(p, {ctx = ctx, waves = waves,
    rollout = pol.rollout, cur = cur, changes = changes, request = request})
  if not units then return nil, new_specs, changed end
  -- a scale sticks: new containers get the limits the old ones run with
  ctx.limits, err, code = live_limits(p.engine, cur, changed)
  if not ctx.limits then return nil, err, code end
  -- secrets resolve before anything changes
  for _, name in ipairs(changed) do
    local m, merr, mcode = steps.material_of(ctx, new_specs[name])
    if not m then return nil, merr, mcode end
  end
  local ok
  ok, err, code = ensure_release_images(p, ctx, images, pinned)
  if not ok then return nil, err, code end
  -- the release records the image each service runs, by ID
  local targets = {}
  for name, s in pairs(new_specs) do
    local c = cur.by[name]
    if changes[name] then
      targets[name] = s.image_id or image.image_ref(p.cfg, s.image)
    elseif c and c.ImageID then
      targets[name] = c.ImageID
    end
  end
  local pins = release_history.pins(p.engine, targets)
  ctx.history = record_release(history, release_id, snapshot(new_specs, pins), keep)

  local hooks = replace.hooks(p, pol.rollout, request, instance_id, #units)
  ok, err, code = replace.units(p, ctx, units, hooks)
  if not ok then return nil, err, code end
  replace.commit(ctx)
  local st = p:status(instance_id)
  return {provider_ref = project.provider_ref(instance_id),
    status = st and st.state or "running", release_id = release_id,
    metadata = {release_id = release_id, changes = did}}
end

-- deploy: recreate the listed services with the new image/env, keeping
-- everything else of their spec; atomic across the listed services.
function P:deploy(req, opts)
  opts = opts or {}
  if type(req) ~= "table" then return nil, "invalid request: request: expected an object", "invalid" end
  local okid, iderr = project.validate_id(req.instance_id)
  if not okid then return nil, "invalid request: " .. iderr, "invalid" end
  -- one listing: the current state, and the services the instance has,
  -- counting those a deploy killed part-way left only under a temporary name
  local cur, err, code = current_state(self, req.instance_id)
  if not cur and code ~= "not_found" then return nil, err, code end
  local list = cur and cur.list
  if not list then
    list, err, code = project.members(self.engine, req.instance_id)
    if not list then return nil, err, code end
  end
  local known = {}
  for _, c in ipairs(list) do
    local svc = project.service_of(c)
    if svc then known[svc] = true end
  end
  if not next(known) then
    return nil, "instance " .. req.instance_id .. " does not exist", "not_found"
  end
  local r, verr, vcode, verrors = validate.deploy(req, known)
  if not r then return nil, verr, vcode, verrors end
  -- valid: such a dead deploy is brought back to one generation per service
  -- first (and the state listed again)
  if not cur or recover.pending(list, req.instance_id) then
    local fixed, ferr, fcode = recover.run(self.engine, req.instance_id, opts.on_event)
    if not fixed then return nil, ferr, fcode end
    cur = nil
  end
  local changes = {}
  for _, d in ipairs(r.services) do changes[d.name] = d end
  return apply_release(self, req.instance_id, r.release_id, r.strategy,
    changes, opts, cur)
end

-- rollback: every service back to its image and env at that release.
function P:rollback(instance_id, release_id, opts)
  opts = opts or {}
  local ok, verr = project.validate_id(instance_id)
  if not ok then return nil, verr, "invalid" end
  if type(release_id) ~= "string" or release_id == "" then
    return nil, "release_id: expected a release id", "invalid"
  end
  local fixed, ferr, fcode = recover.run(self.engine, instance_id, opts.on_event)
  if not fixed then return nil, ferr, fcode end
  local cur, err, code = current_state(self, instance_id)
  if not cur then return nil, err, code end
  local history, target = history_of(cur.list), nil
  local known = {}
  for _, e in ipairs(history) do
    known[#known + 1] = e.id
    if e.id == release_id then target = e end
  end
  if not target then
    return nil, string.format("instance %s has no release %q (known releases: %s)", instance_id,
      release_id, #known > 0 and table.concat(known, ", ") or "none"), "not_found"
  end
  local changes = {}
  for name, snap in pairs(target.services or {}) do
    local s = cur.specs[name]
    local running_id = cur.by[name] and cur.by[name].ImageID
    if s and (s.image ~= snap.image or json.encode(s.env or {}) ~= json.encode(snap.env or {})
        or (snap.image_id and snap.image_id ~= running_id)) then
      -- exactly the image that ran then (its ID), even if the tag has moved since
      changes[name] = {image = snap.image, env = snap.env or json.object({}),
        image_id = snap.image_id, repo_digest = snap.repo_digest}
    end
  end
  if not next(changes) then
    -- nothing differs: the instance is already at that release
    return {provider_ref = project.provider_ref(instance_id), status = "running",
      release_id = release_id}
  end
  return apply_release(self, instance_id, release_id, opts.strategy, changes, opts, cur)
end

return P
