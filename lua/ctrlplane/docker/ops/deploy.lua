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

-- Replaces each unit's old container with one made from unit.spec, by the
-- unit's strategy:
--   recreate     the old container is renamed and stopped, then the new one
--                starts under the canonical name;
--   start-first  the new one starts beside the old one (same network alias),
--                and only once it is ready is the old one taken off the
--                network, drained and stopped, so the service name always
--                resolves to a running container.
-- Old containers are kept until every unit is done: a failure removes the
-- new containers and puts every old one back as it was.
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

-- readiness of a unit's new container, by its strategy's parameters
local function ready_opts(u)
  return {grace = u.grace, timeout = u.ready_timeout}
end

local function replace_units(p, ctx, units, after_each)
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
  for step, u in ipairs(units) do
    local old = u.old
    local was_running = old.State == "running"
    local retire_name = project.temp_name(u.cname, "retired", stamp)
    local s = u.spec
    if s.role == "init" or u.strategy ~= "start-first" then
      local done, rerr, rcode = eng:post("/containers/" .. seg(old.Id) .. "/rename", {name = retire_name})
      if not done then return restore("retiring service " .. u.key .. ": " .. rerr, rcode) end
      retired[#retired + 1] = {id = old.Id, name = u.cname, running = was_running, service = s.name}
      done, rerr, rcode = eng:post("/containers/" .. seg(old.Id) .. "/stop", {t = t})
      if not done then return restore("stopping service " .. u.key .. ": " .. rerr, rcode) end
      emit(ctx, {type = "service", service = u.key, action = "stopped", container = old.Id})
      if s.role == "init" then
        local ok, err, code = run_init(ctx, s)
        if not ok then return restore(err, code) end
      else
        local ids, err, code = create_containers(ctx, {u})
        if not ids then return restore(err, code) end
        local ok
        ok, err, code = start_containers(ctx, {u.key}, ids)
        if not ok then return restore(err, code) end
        ok, err, code = wait_ready(ctx, ids, {[u.key] = s}, ready_opts(u))
        if not ok then return restore("deploy of service " .. s.name .. " failed: " .. err, code) end
      end
    else
      -- start-first: the new container under a temporary name and without
      -- the service alias, so nobody is sent to it before it is ready
      local nu = {spec = s, replica = u.replica, key = u.key, no_alias = true,
        cname = project.temp_name(u.cname, "next", stamp)}
      local ids, err, code = create_containers(ctx, {nu})
      if not ids then return restore(err, code) end
      local ok, info
      ok, err, code = start_containers(ctx, {u.key}, ids)
      if not ok then return restore(err, code) end
      info, err, code = wait_ready(ctx, ids, {[u.key] = s}, ready_opts(u))
      if not info then return restore("deploy of service " .. s.name .. " failed: " .. err, code) end
      -- ready: into the name's rotation, at the address it has
      local nc = info[u.key]
      local new_ip = nc and nc.NetworkSettings and nc.NetworkSettings.Networks
        and nc.NetworkSettings.Networks[net] and nc.NetworkSettings.Networks[net].IPAddress
      local endpoint = {Aliases = {s.name}}
      if new_ip and new_ip ~= "" then endpoint.IPAMConfig = {IPv4Address = new_ip} end
      local moved, merr, mcode = eng:post("/networks/" .. seg(net) .. "/disconnect", nil,
        {Container = ids[u.key], Force = true})
      if moved then
        moved, merr, mcode = eng:post("/networks/" .. seg(net) .. "/connect", nil,
          {Container = ids[u.key], EndpointConfig = endpoint})
        if not moved and endpoint.IPAMConfig then -- a network without an explicit subnet
          endpoint.IPAMConfig = nil
          moved, merr, mcode = eng:post("/networks/" .. seg(net) .. "/connect", nil,
            {Container = ids[u.key], EndpointConfig = endpoint})
        end
      end
      if not moved then return restore("adding service " .. u.key .. " to its network: " .. merr, mcode) end
      -- take the old one out of the name's rotation: off the network, then
      -- back on at the same address without the alias, so a client that
      -- resolved the name a moment ago still reaches it while it drains
      local old_ip = old.NetworkSettings and old.NetworkSettings.Networks
        and old.NetworkSettings.Networks[net] and old.NetworkSettings.Networks[net].IPAddress
      local done, rerr, rcode = eng:post("/networks/" .. seg(net) .. "/disconnect", nil,
        {Container = old.Id, Force = true})
      if not done then return restore("retiring service " .. u.key .. ": " .. rerr, rcode) end
      retired[#retired + 1] = {id = old.Id, name = u.cname, running = was_running, service = s.name,
        disconnected = true}
      if old_ip and old_ip ~= "" then
        -- needs the network's explicit subnet; without it the old address is simply gone
        eng:post("/networks/" .. seg(net) .. "/connect", nil,
          {Container = old.Id, EndpointConfig = {IPAMConfig = {IPv4Address = old_ip}}})
      end
      if u.drain and u.drain > 0 then core.sleep(u.drain) end
      done, rerr, rcode = eng:post("/containers/" .. seg(old.Id) .. "/rename", {name = retire_name})
      if not done then return restore("retiring service " .. u.key .. ": " .. rerr, rcode) end
      done, rerr, rcode = eng:post("/containers/" .. seg(old.Id) .. "/stop", {t = t})
      if not done then return restore("stopping service " .. u.key .. ": " .. rerr, rcode) end
      emit(ctx, {type = "service", service = u.key, action = "stopped", container = old.Id})
      done, rerr, rcode = eng:post("/containers/" .. seg(ids[u.key]) .. "/rename", {name = u.cname})
      if not done then return restore("renaming service " .. u.key .. ": " .. rerr, rcode) end
    end
    if after_each then
      local go, why, wcode = after_each(step, u)
      if not go then return restore(why, wcode) end
    end
  end
  local old_ids = {}
  for i, old in ipairs(retired) do old_ids[i] = old.id end
  remove_containers(eng, old_ids)
  return true
end


-- Deploys changes = {name -> {image, env, health_check}} in rollout order.
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
  local units, images, new_specs, did = {}, {}, {}, json.object({})
  for _, s in pairs(cur.specs) do new_specs[s.name] = s end
  for _, wave in ipairs(waves) do
    for _, name in ipairs(wave) do
      local d = changes[name]
      if d then
        local s = util.copy(cur.specs[name])
        did[name] = "replaced: " .. why_deployed(s, d)
        if d.image then s.image = d.image end
        if d.env then s.env = d.env end
        if d.health_check then s.health_check = d.health_check end
        new_specs[name] = s
        images[#images + 1] = s.image
        local st, serr, scode = gate.strategy(pol.rollout, {name = name, role = s.role,
          ports = s.ports, health_check = s.health_check},
          {strategy = strategy_req, release_id = release_id},
          {grace = p.cfg.start_grace, drain = p.cfg.drain, ready_timeout = p.cfg.ready_timeout})
        if not st then return nil, serr, scode end
        if st.kind == "start-first" then
          for _, port in ipairs(s.ports or {}) do
            if port.host then st.kind = "recreate" end -- a fixed host port cannot be shared
          end
        end
        for _, c in ipairs(cur.reps[name] or {cur.by[name]}) do
          local u = replica_unit(ctx, s, c.replica or 1)
          u.old, u.strategy = c, st.kind
          u.grace, u.drain, u.ready_timeout = st.grace, st.drain, st.ready_timeout
          units[#units + 1] = u
        end
      end
    end
  end
  ctx.history = record_release(history, release_id, snapshot(new_specs), keep)
  local ok
  ok, err, code = ensure_images(ctx, images)
  if not ok then return nil, err, code end

  local after
  if pol.rollout.fns.after_service then
    local total = #units
    after = function(step, u)
      return gate.after_service(pol.rollout, {
        service = u.spec.name, replica = u.replica, index = step, total = total,
        release_id = release_id,
        status = function() return p:status(instance_id) end,
        sleep = function(seconds) core.sleep(math.min(seconds, 600)) end,
      })
    end
  end
  ok, err, code = replace_units(p, ctx, units, after)
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
    if s and (s.image ~= snap.image or json.encode(s.env or {}) ~= json.encode(snap.env or {})) then
      changes[name] = {image = snap.image, env = snap.env or json.object({})}
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
