-- Replacing a service's containers, shared by deploy, rollback and
-- re-provision: the new container is ready before the old one goes, and a
-- failure puts every old one back.
--
--   replace.strategy(p, rollout, spec, request) -> {kind, grace, drain, ready_timeout}
--                                                  | nil, message, code
--   replace.apply(unit, strategy) -> the unit with the strategy's parameters
--   replace.hooks(p, rollout, request, instance_id, total) -> hooks for units()
--       {canary_window(u), judge(obs), after_each(step, u) (with an
--       after_service policy function)}
--   replace.units(p, ctx, units, hooks) -> true | nil, message, code
--       units: {spec, replica, key, cname, old (a listed container, or nil
--       for a replica that did not exist), strategy, grace, drain,
--       ready_timeout, limits}. On success each
--       unit has .id (its new container) and the old containers wait, retired,
--       in ctx.retired for commit(); on failure restore() has already run.
--   replace.commit(ctx)              removes the retired containers
--   replace.restore(ctx, msg, code)  removes ctx.created, puts back ctx.retired;
--                                    returns nil, msg (+ what was restored), code
local core = require("ctrlplane.docker.core")
local engine = require("ctrlplane.docker.engine")
local gate = require("ctrlplane.docker.gate")
local project = require("ctrlplane.docker.project")
local steps = require("ctrlplane.docker.steps")

local seg = engine.segment
local create_containers = steps.create_containers
local emit = steps.emit
local remove_containers = steps.remove_containers
local run_init = steps.run_init
local start_containers = steps.start_containers
local test_pause = steps.test_pause
local wait_ready = steps.wait_ready

local replace = {}

-- The rollout policy's strategy for one service (gate.strategy: {kind,
-- grace, drain, ready_timeout}); init services are always recreated, and so
-- is a service with a fixed host port (two containers cannot hold it, so
-- neither start-first, blue-green nor canary can run it).
function replace.strategy(p, rollout, s, request)
  local st, err, code = gate.strategy(rollout, {name = s.name, role = s.role, ports = s.ports,
    health_check = s.health_check}, request,
    {grace = p.cfg.start_grace, drain = p.cfg.drain, ready_timeout = p.cfg.ready_timeout})
  if not st then return nil, err, code end
  if s.role == "init" then st.kind = "recreate" end
  if st.kind ~= "recreate" then
    for _, port in ipairs(s.ports or {}) do
      if port.host then st.kind = "recreate" end
    end
  end
  return st
end

-- The policy calls units() makes: the canary's window and judgement, and
-- after_service between units (when the rollout policy has one).
function replace.hooks(p, rollout, request, instance_id, total)
  local hooks = {}
  function hooks.canary_window(u)
    return gate.canary(rollout, {name = u.spec.name, role = u.spec.role, replica = u.replica},
      request)
  end
  function hooks.judge(obs)
    return gate.judge_canary(rollout, obs)
  end
  if rollout.fns.after_service then
    hooks.after_each = function(step, u)
      return gate.after_service(rollout, {
        service = u.spec.name, replica = u.replica, index = step, total = total,
        release_id = request.release_id,
        status = function() return p:status(instance_id) end,
        sleep = function(seconds) core.sleep(math.min(seconds, 600)) end,
      })
    end
  end
  return hooks
end

-- A unit carrying a strategy's parameters.
function replace.apply(u, st)
  u.strategy, u.grace, u.drain, u.ready_timeout = st.kind, st.grace, st.drain, st.ready_timeout
  return u
end

-- readiness of a unit's new container, by its strategy's parameters
local function ready_opts(u)
  return {grace = u.grace, timeout = u.ready_timeout}
end

function replace.restore(ctx, e, c)
  local eng = ctx.eng
  local net = project.network_name(ctx.inst.instance_id)
  remove_containers(eng, ctx.created)
  local retired = ctx.retired or {}
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
  ctx.retired = {}
  if not ctx.replacing then return nil, e, c end
  return nil, e .. (#retired > 0 and " (previous containers restored)"
    or " (the previous containers kept running)"), c
end

function replace.commit(ctx)
  local ids = {}
  for i, old in ipairs(ctx.retired or {}) do ids[i] = old.id end
  ctx.retired = {}
  return remove_containers(ctx.eng, ids)
end

-- One replacement run: r = {p, ctx, eng, net, t (stop timeout), stamp,
-- retired (ctx.retired), hooks}. Each step returns true | nil, msg, code.

local function failed(names, err)
  return "deploy of service " .. names .. " failed: " .. err
end

-- a replica that did not exist: created, started and gated
local function fresh(r, u)
  local ids, err, code = create_containers(r.ctx, {u})
  if not ids then return nil, err, code end
  local ok
  ok, err, code = start_containers(r.ctx, {u.key}, ids)
  if not ok then return nil, err, code end
  ok, err, code = wait_ready(r.ctx, ids, {[u.key] = u.spec}, ready_opts(u))
  if not ok then return nil, failed(u.spec.name, err), code end
  u.id = ids[u.key]
  return true
end

-- the new container under a temporary name and without the service
-- alias, so nobody is sent to it before it is ready
local function stage(r, u)
  local nu = {spec = u.spec, replica = u.replica, key = u.key, no_alias = true,
    limits = u.limits, cname = project.temp_name(u.cname, "next", r.stamp)}
  local ids, err, code = create_containers(r.ctx, {nu})
  if not ids then return nil, err, code end
  u.new_id = ids[u.key]
  local ok
  ok, err, code = start_containers(r.ctx, {u.key}, ids)
  if not ok then return nil, err, code end
  test_pause("next-started")
  return true
end

-- waits until the staged units are ready (readiness by the status policy,
-- with each unit's grace and ready timeout)
local function await(r, us)
  if #us == 0 then return true end
  local ids, specs, grace, timeout = {}, {}, 0, 0
  for _, u in ipairs(us) do
    ids[u.key], specs[u.key] = u.new_id, u.spec
    grace = math.max(grace, u.grace or 0)
    timeout = math.max(timeout, u.ready_timeout or r.p.cfg.ready_timeout)
  end
  local info, err, code = wait_ready(r.ctx, ids, specs, {grace = grace, timeout = timeout})
  if not info then
    local names = {}
    for _, u in ipairs(us) do names[#names + 1] = u.spec.name end
    return nil, failed(table.concat(names, ", "), err), code
  end
  for _, u in ipairs(us) do u.info = info[u.key] end
  return true
end

-- the ready new container into the name's rotation, at the address it has
local function join(r, u)
  local eng, net = r.eng, r.net
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

-- take the old one out of the name's rotation: off the network, then back
-- on at the same address without the alias, so a client that resolved the
-- name a moment ago still reaches it while it drains; then it stops (kept,
-- retired, until commit) and the new one takes the canonical name
local function leave(r, u)
  local eng, net, old = r.eng, r.net, u.old
  local old_ip = old.NetworkSettings and old.NetworkSettings.Networks
    and old.NetworkSettings.Networks[net] and old.NetworkSettings.Networks[net].IPAddress
  local done, rerr, rcode = eng:post("/networks/" .. seg(net) .. "/disconnect", nil,
    {Container = old.Id, Force = true})
  if not done then return nil, "retiring service " .. u.key .. ": " .. rerr, rcode end
  r.retired[#r.retired + 1] = {id = old.Id, name = u.cname, running = old.State == "running",
    service = u.spec.name, disconnected = true}
  if old_ip and old_ip ~= "" then
    -- needs the network's explicit subnet; without it the old address is simply gone
    eng:post("/networks/" .. seg(net) .. "/connect", nil,
      {Container = old.Id, EndpointConfig = {IPAMConfig = {IPv4Address = old_ip}}})
  end
  test_pause("old-draining")
  if u.drain and u.drain > 0 then core.sleep(u.drain) end
  done, rerr, rcode = eng:post("/containers/" .. seg(old.Id) .. "/rename",
    {name = project.temp_name(u.cname, "retired", r.stamp)})
  if not done then return nil, "retiring service " .. u.key .. ": " .. rerr, rcode end
  done, rerr, rcode = eng:post("/containers/" .. seg(old.Id) .. "/stop", {t = r.t})
  if not done then return nil, "stopping service " .. u.key .. ": " .. rerr, rcode end
  emit(r.ctx, {type = "service", service = u.key, action = "stopped", container = old.Id})
  test_pause("old-retired")
  done, rerr, rcode = eng:post("/containers/" .. seg(u.new_id) .. "/rename", {name = u.cname})
  if not done then return nil, "renaming service " .. u.key .. ": " .. rerr, rcode end
  u.id = u.new_id
  return true
end

-- the old one renamed and stopped (kept, retired), then the new one starts
-- under the canonical name
local function recreate(r, u)
  local eng, old, s = r.eng, u.old, u.spec
  local done, rerr, rcode = eng:post("/containers/" .. seg(old.Id) .. "/rename",
    {name = project.temp_name(u.cname, "retired", r.stamp)})
  if not done then return nil, "retiring service " .. u.key .. ": " .. rerr, rcode end
  r.retired[#r.retired + 1] = {id = old.Id, name = u.cname, running = old.State == "running",
    service = s.name}
  done, rerr, rcode = eng:post("/containers/" .. seg(old.Id) .. "/stop", {t = r.t})
  if not done then return nil, "stopping service " .. u.key .. ": " .. rerr, rcode end
  emit(r.ctx, {type = "service", service = u.key, action = "stopped", container = old.Id})
  test_pause("old-stopped")
  if s.role == "init" then
    local ok, err, code = run_init(r.ctx, s)
    if not ok then return nil, err, code end
    u.id = r.ctx.created[#r.ctx.created]
    return true
  end
  local ids, err, code = create_containers(r.ctx, {u})
  if not ids then return nil, err, code end
  local ok
  ok, err, code = start_containers(r.ctx, {u.key}, ids)
  if not ok then return nil, err, code end
  test_pause("new-started")
  ok, err, code = wait_ready(r.ctx, ids, {[u.key] = s}, ready_opts(u))
  if not ok then return nil, failed(s.name, err), code end
  u.id = ids[u.key]
  return true
end

-- the canary's window, sampled every interval: what the policy judges
local function observe(r, u, win)
  local obs = {service = u.spec.name, replica = u.replica, release_id = r.ctx.release,
    window = win.window, samples = 0, not_ready = 0, ready = true, restarts = 0,
    status = function() return r.p:status(r.ctx.inst.instance_id) end}
  local first_restarts = u.info and u.info.RestartCount or 0
  local deadline = core.clock() + win.window
  repeat
    if not core.sleep(math.max(0.05, math.min(win.interval, deadline - core.clock()))) then
      return nil, "interrupted", "interrupted"
    end
    local c, ierr, icode = r.eng:get("/containers/" .. seg(u.new_id) .. "/json")
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
  return obs
end

-- the canary takes real traffic beside the old container for the window;
-- the policy judges what was seen, then it is promoted (the old one leaves)
-- or the whole replacement fails
local function canary(r, u)
  local ok, err, code = stage(r, u)
  if ok then ok, err, code = await(r, {u}) end
  if ok then ok, err, code = join(r, u) end
  if not ok then return nil, err, code end
  emit(r.ctx, {type = "service", service = u.key, action = "canary", container = u.new_id})
  local win, werr, wcode = r.hooks.canary_window(u)
  if not win then return nil, werr, wcode end
  local obs, oerr, ocode = observe(r, u, win)
  if not obs then return nil, oerr, ocode end
  local go, why, jcode = r.hooks.judge(obs)
  if go == nil then return nil, why, jcode end
  if not go then
    return nil, string.format("canary of service %s was not promoted: %s", u.spec.name,
      tostring(why or "the policy gave no reason")), "canary_failed"
  end
  emit(r.ctx, {type = "service", service = u.key, action = "promoted", container = u.new_id})
  return leave(r, u)
end

-- one unit by its strategy (blue-green ones are already staged and ready)
local function one(r, u)
  if not u.old then return fresh(r, u) end
  if u.strategy == "recreate" or u.spec.role == "init" then return recreate(r, u) end
  if u.strategy == "canary" then return canary(r, u) end
  local ok, err, code = true, nil, nil
  if u.strategy ~= "blue-green" then -- start-first
    ok, err, code = stage(r, u)
    if ok then ok, err, code = await(r, {u}) end
  end
  if ok then ok, err, code = join(r, u) end
  if ok then ok, err, code = leave(r, u) end
  return ok, err, code
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
-- A unit without an old container is simply created, started and gated.
-- Old containers are kept (ctx.retired) until the caller commits: a failure
-- removes the new containers and puts every old one back as it was.
function replace.units(p, ctx, units, hooks)
  ctx.retired = ctx.retired or {}
  ctx.replacing = true
  local r = {p = p, ctx = ctx, eng = p.engine, net = project.network_name(ctx.inst.instance_id),
    t = math.ceil(p.cfg.stop_timeout), retired = ctx.retired, hooks = hooks or {},
    stamp = string.format("%x", math.floor(core.walltime() * 1000))}
  local function restore(e, c) return replace.restore(ctx, e, c) end
  -- blue-green: every new container up and ready before anyone switches
  local green = {}
  for _, u in ipairs(units) do
    if u.old and u.strategy == "blue-green" and u.spec.role ~= "init" then
      local ok, err, code = stage(r, u)
      if not ok then return restore(err, code) end
      green[#green + 1] = u
    end
  end
  local ok, err, code = await(r, green)
  if not ok then return restore(err, code) end
  for step, u in ipairs(units) do
    ok, err, code = one(r, u)
    if not ok then return restore(err, code) end
    test_pause("unit-done")
    if r.hooks.after_each then
      local go, why, wcode = r.hooks.after_each(step, u)
      if not go then return restore(why, wcode) end
    end
  end
  return true
end

return replace
