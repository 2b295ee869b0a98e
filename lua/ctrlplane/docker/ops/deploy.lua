-- deploy and rollback: replacing containers by the rollout strategy,
-- atomic across the listed services, with the release history recorded.
local core = require("ctrlplane.docker.core")
local engine = require("ctrlplane.docker.engine")
local gate = require("ctrlplane.docker.gate")
local image = require("ctrlplane.docker.image")
local json = require("ctrlplane.docker.json")
local members = require("ctrlplane.docker.members")
local project = require("ctrlplane.docker.project")
local release_history = require("ctrlplane.docker.release_history")
local specbuild = require("ctrlplane.docker.specbuild")
local steps = require("ctrlplane.docker.steps")
local util = require("ctrlplane.docker.util")
local validate = require("ctrlplane.docker.validate")

local seg = engine.segment
local create_containers = steps.create_containers
local current_state = members.current_state
local emit = steps.emit
local ensure_images = image.ensure_images
local history_of = release_history.history_of
local new_ctx = steps.new_ctx
local record_release = release_history.record_release
local remove_containers = steps.remove_containers
local replica_unit = steps.replica_unit
local run_init = steps.run_init
local snapshot = release_history.snapshot
local start_containers = steps.start_containers
local wait_ready = steps.wait_ready

local P = {}

-- ---- replacing containers (deploy, rollback) ------------------------------------------

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


-- Replaces each unit's old container with one made from unit.spec, by the
-- unit's strategy (scripts/rollout.lua documents each):
--   recreate     the old container is renamed and stopped, then the new one
--                starts under the canonical name;
--   start-first  the new one starts beside the old one (no alias), and only
--                once it is ready does it take the alias and the old one
--                leave it, drain and stop;
--   blue-green   every blue-green unit's new container is started and ready
--                (no alias) before any unit is switched; then each switches
--                as in start-first, in rollout order;
--   canary       the new one joins the alias beside the old one for the
--                policy's window, is sampled, judged by the policy, then
--                promoted (the old one leaves) or removed.
-- Old containers are kept until every unit is done: a failure removes the
-- new containers and puts every old one back as it was.
local function replace_units(p, ctx, units, hooks)
  local eng = p.engine
  local net = project.network_name(ctx.inst.instance_id)
  local t = math.ceil(p.cfg.stop_timeout)
  local retired = {}
  local stamp = string.format("%x", math.floor(core.walltime() * 1000))
  local function restore(e, c)
    remove_containers(eng, ctx.created)
    for i = #retired, 1, -1 do
      local old = retired[i]
      eng:post("/containers/" .. seg(old.id) .. "/rename", {name = old.name})
      if old.disconnected then
        eng:post("/networks/" .. seg(net) .. "/disconnect", nil, {Container = old.id, Force = true})
        eng:post("/networks/" .. seg(net) .. "/connect", nil,
          {Container = old.id, EndpointConfig = {Aliases = {old.service}}})
      end
      if old.running then eng:post("/containers/" .. seg(old.id) .. "/start") end
    end
    return nil, e .. (#retired > 0 and " (previous containers restored)"
      or " (the previous containers kept running)"), c
  end

  -- the new container under a temporary name and without the service
  -- alias, so nobody is sent to it before it is ready
  local function stage(u)
    local nu = {spec = u.spec, replica = u.replica, key = u.key, no_alias = true,
      limits = u.limits, cname = project.temp_name(u.cname, "next", stamp)}
    local ids, err, code = create_containers(ctx, {nu})
    if not ids then return nil, err, code end
    u.new_id = ids[u.key]
    return start_containers(ctx, {u.key}, ids)
  end

  -- waits until the staged units are ready (readiness by the status
  -- policy, with each unit's grace and ready timeout)
  local function await(us)
    if #us == 0 then return true end
    local ids, specs, grace, timeout = {}, {}, 0, 0
    for _, u in ipairs(us) do
      ids[u.key], specs[u.key] = u.new_id, u.spec
      grace = math.max(grace, u.grace or 0)
      timeout = math.max(timeout, u.ready_timeout or p.cfg.ready_timeout)
    end
    local info, err, code = wait_ready(ctx, ids, specs, {grace = grace, timeout = timeout})
    if not info then
      local names = {}
      for _, u in ipairs(us) do names[#names + 1] = u.spec.name end
      return nil, "deploy of service " .. table.concat(names, ", ") .. " failed: " .. err, code
    end
    for _, u in ipairs(us) do u.info = info[u.key] end
    return true
  end

  -- the ready new container into the name's rotation, at the address it has
  local function join(u)
    local nc = u.info
    local new_ip = nc and nc.NetworkSettings and nc.NetworkSettings.Networks
      and nc.NetworkSettings.Networks[net] and nc.NetworkSettings.Networks[net].IPAddress
    local endpoint = {Aliases = {u.spec.name}}
    if new_ip and new_ip ~= "" then endpoint.IPAMConfig = {IPv4Address = new_ip} end
    local moved, merr, mcode = eng:post("/networks/" .. seg(net) .. "/disconnect", nil,
      {Container = u.new_id, Force = true})
    if moved then
      moved, merr, mcode = eng:post("/networks/" .. seg(net) .. "/connect", nil,
        {Container = u.new_id, EndpointConfig = endpoint})
      if not moved and endpoint.IPAMConfig then -- a network without an explicit subnet
        endpoint.IPAMConfig = nil
        moved, merr, mcode = eng:post("/networks/" .. seg(net) .. "/connect", nil,
          {Container = u.new_id, EndpointConfig = endpoint})
      end
    end
    if not moved then return nil, "adding service " .. u.key .. " to its network: " .. merr, mcode end
    return true
  end

  -- take the old one out of the name's rotation: off the network, then
  -- back on at the same address without the alias, so a client that
  -- resolved the name a moment ago still reaches it while it drains; then
  -- it stops and the new one takes the canonical name
  local function leave(u)
    local old = u.old
    local old_ip = old.NetworkSettings and old.NetworkSettings.Networks
      and old.NetworkSettings.Networks[net] and old.NetworkSettings.Networks[net].IPAddress
    local done, rerr, rcode = eng:post("/networks/" .. seg(net) .. "/disconnect", nil,
      {Container = old.Id, Force = true})
    if not done then return nil, "retiring service " .. u.key .. ": " .. rerr, rcode end
    retired[#retired + 1] = {id = old.Id, name = u.cname, running = old.State == "running",
      service = u.spec.name, disconnected = true}
    if old_ip and old_ip ~= "" then
      -- needs the network's explicit subnet; without it the old address is simply gone
      eng:post("/networks/" .. seg(net) .. "/connect", nil,
        {Container = old.Id, EndpointConfig = {IPAMConfig = {IPv4Address = old_ip}}})
    end
    if u.drain and u.drain > 0 then core.sleep(u.drain) end
    done, rerr, rcode = eng:post("/containers/" .. seg(old.Id) .. "/rename",
      {name = project.temp_name(u.cname, "retired", stamp)})
    if not done then return nil, "retiring service " .. u.key .. ": " .. rerr, rcode end
    done, rerr, rcode = eng:post("/containers/" .. seg(old.Id) .. "/stop", {t = t})
    if not done then return nil, "stopping service " .. u.key .. ": " .. rerr, rcode end
    emit(ctx, {type = "service", service = u.key, action = "stopped", container = old.Id})
    done, rerr, rcode = eng:post("/containers/" .. seg(u.new_id) .. "/rename", {name = u.cname})
    if not done then return nil, "renaming service " .. u.key .. ": " .. rerr, rcode end
    return true
  end

  local function recreate(u)
    local old, s = u.old, u.spec
    local done, rerr, rcode = eng:post("/containers/" .. seg(old.Id) .. "/rename",
      {name = project.temp_name(u.cname, "retired", stamp)})
    if not done then return nil, "retiring service " .. u.key .. ": " .. rerr, rcode end
    retired[#retired + 1] = {id = old.Id, name = u.cname, running = old.State == "running",
      service = s.name}
    done, rerr, rcode = eng:post("/containers/" .. seg(old.Id) .. "/stop", {t = t})
    if not done then return nil, "stopping service " .. u.key .. ": " .. rerr, rcode end
    emit(ctx, {type = "service", service = u.key, action = "stopped", container = old.Id})
    if s.role == "init" then return run_init(ctx, s) end
    local ids, err, code = create_containers(ctx, {u})
    if not ids then return nil, err, code end
    local ok
    ok, err, code = start_containers(ctx, {u.key}, ids)
    if not ok then return nil, err, code end
    ok, err, code = wait_ready(ctx, ids, {[u.key] = s}, {grace = u.grace, timeout = u.ready_timeout})
    if not ok then return nil, "deploy of service " .. s.name .. " failed: " .. err, code end
    return true
  end

  -- the canary takes real traffic beside the old container for the window,
  -- sampled every interval; the policy judges what was seen
  local function canary(u)
    local ok, err, code = stage(u)
    if ok then ok, err, code = await({u}) end
    if ok then ok, err, code = join(u) end
    if not ok then return nil, err, code end
    emit(ctx, {type = "service", service = u.key, action = "canary", container = u.new_id})
    local win, werr, wcode = hooks.canary_window(u)
    if not win then return nil, werr, wcode end
    local obs = {service = u.spec.name, replica = u.replica, release_id = ctx.release,
      window = win.window, samples = 0, not_ready = 0, ready = true, restarts = 0,
      status = function() return p:status(ctx.inst.instance_id) end}
    local first_restarts = u.info and u.info.RestartCount or 0
    local deadline = core.clock() + win.window
    repeat
      if not core.sleep(math.max(0.05, math.min(win.interval, deadline - core.clock()))) then
        return nil, "interrupted", "interrupted"
      end
      local c, ierr, icode = eng:get("/containers/" .. seg(u.new_id) .. "/json")
      if not c then return nil, "observing the canary of " .. u.key .. ": " .. ierr, icode end
      local st = c.State or {}
      obs.samples = obs.samples + 1
      obs.state = st.Status
      obs.health = st.Health and st.Health.Status or nil
      obs.restarts = math.max(obs.restarts, (c.RestartCount or 0) - first_restarts)
      local ready = st.Status == "running" and (not u.spec.health_check or obs.health == "healthy")
      if not ready then
        obs.ready = false
        obs.not_ready = obs.not_ready + 1
      end
    until core.clock() >= deadline
    local go, why, jcode = hooks.judge(obs)
    if go == nil then return nil, why, jcode end
    if not go then
      return nil, string.format("canary of service %s was not promoted: %s", u.spec.name,
        tostring(why or "the policy gave no reason")), "canary_failed"
    end
    emit(ctx, {type = "service", service = u.key, action = "promoted", container = u.new_id})
    return leave(u)
  end

  -- blue-green: every new container up and ready before anyone switches
  local green = {}
  for _, u in ipairs(units) do
    if u.strategy == "blue-green" then
      local ok, err, code = stage(u)
      if not ok then return restore(err, code) end
      green[#green + 1] = u
    end
  end
  local ok, err, code = await(green)
  if not ok then return restore(err, code) end

  for step, u in ipairs(units) do
    if u.strategy == "recreate" or u.spec.role == "init" then
      ok, err, code = recreate(u)
    elseif u.strategy == "blue-green" then
      ok, err, code = join(u)
      if ok then ok, err, code = leave(u) end
    elseif u.strategy == "canary" then
      ok, err, code = canary(u)
    else -- start-first
      ok, err, code = stage(u)
      if ok then ok, err, code = await({u}) end
      if ok then ok, err, code = join(u) end
      if ok then ok, err, code = leave(u) end
    end
    if not ok then return restore(err, code) end
    if hooks.after_each then
      local go, why, wcode = hooks.after_each(step, u)
      if not go then return restore(why, wcode) end
    end
  end
  local old_ids = {}
  for i, old in ipairs(retired) do old_ids[i] = old.id end
  remove_containers(eng, old_ids)
  return true
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
  local units, images, new_specs, changed, pinned = {}, {}, {}, {}, {}
  local did = json.object({})
  for _, s in pairs(cur.specs) do new_specs[s.name] = s end
  for _, wave in ipairs(waves) do
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
        local st, serr, scode = gate.strategy(pol.rollout, {name = name, role = s.role,
          ports = s.ports, health_check = s.health_check},
          {strategy = strategy_req, release_id = release_id},
          {grace = p.cfg.start_grace, drain = p.cfg.drain, ready_timeout = p.cfg.ready_timeout})
        if not st then return nil, serr, scode end
        if st.kind ~= "recreate" then
          for _, port in ipairs(s.ports or {}) do
            if port.host then st.kind = "recreate" end -- a fixed host port cannot be shared
          end
        end
        -- CP_DOCKER_KEEP_HOST_PORTS: the new container takes the old one's
        -- host ports, so it cannot start beside it (recreate)
        local keep_ports = specbuild.keeps_host_ports(p.cfg, s)
        if keep_ports then st.kind = "recreate" end
        for i, c in ipairs(cur.reps[name] or {cur.by[name]}) do
          local u = replica_unit(ctx, s, c.replica or 1)
          u.old, u.strategy = c, st.kind
          -- only the first replica is a canary; the others follow it start-first
          if st.kind == "canary" and i > 1 then u.strategy = "start-first" end
          u.grace, u.drain, u.ready_timeout = st.grace, st.drain, st.ready_timeout
          if keep_ports then u.host_ports = specbuild.bound_ports(c) end
          units[#units + 1] = u
        end
      end
    end
  end
  -- a scale sticks: new containers get the limits the old ones run with
  ctx.limits, err, code = live_limits(p.engine, cur, changed)
  if not ctx.limits then return nil, err, code end
  -- secrets resolve before anything changes
  for _, name in ipairs(changed) do
    local m, merr, mcode = steps.material_of(ctx, new_specs[name])
    if not m then return nil, merr, mcode end
  end
  local ok
  for _, s in ipairs(pinned) do
    local now = ctx.eng:get("/images/" .. image.image_ref(p.cfg, s.image) .. "/json")
    if type(now) == "table" and now.Id == s.image_id then
      -- the tag still names that image: run it by its ref, as before
      s.image_id, s.repo_digest = nil, nil
    else
      ok, err, code = ensure_pinned(ctx, s)
      if not ok then return nil, err, code end
    end
  end
  ok, err, code = ensure_images(ctx, images)
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

  local hooks = {}
  local rollout = pol.rollout
  function hooks.canary_window(u)
    return gate.canary(rollout, {name = u.spec.name, role = u.spec.role, replica = u.replica},
      {strategy = strategy_req, release_id = release_id})
  end
  function hooks.judge(obs)
    return gate.judge_canary(rollout, obs)
  end
  if rollout.fns.after_service then
    local total = #units
    hooks.after_each = function(step, u)
      return gate.after_service(rollout, {
        service = u.spec.name, replica = u.replica, index = step, total = total,
        release_id = release_id,
        status = function() return p:status(instance_id) end,
        sleep = function(seconds) core.sleep(math.min(seconds, 600)) end,
      })
    end
  end
  ok, err, code = replace_units(p, ctx, units, hooks)
  if not ok then return nil, err, code end
  local st = p:status(instance_id)
  for name, u in pairs(cur.specs) do
    if not did[name] and u.role ~= "init" then did[name] = "kept: not in the release" end
  end
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
  local cur, err, code = current_state(self, req.instance_id)
  if not cur then return nil, err, code end
  local r, verr, vcode, verrors = validate.deploy(req, cur.by)
  if not r then return nil, verr, vcode, verrors end
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
