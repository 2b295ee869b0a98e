-- Replacing a service's containers, shared by deploy, rollback and
-- re-provision: the new container is ready before the old one goes, and a
-- failure puts every old one back.
--
--   replace.strategy(p, rollout, spec, request) -> {kind, grace, drain, ready_timeout}
--                                                  | nil, message, code
--   replace.apply(unit, strategy) -> the unit with the strategy's parameters
--   replace.units(p, ctx, units, after_each) -> true | nil, message, code
--       units: {spec, replica, key, cname, old (a listed container, or nil
--       for a replica that did not exist), strategy, grace, drain,
--       ready_timeout}. On success each
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
-- is a service with a fixed host port (two containers cannot hold it).
function replace.strategy(p, rollout, s, request)
  local st, err, code = gate.strategy(rollout, {name = s.name, role = s.role, ports = s.ports,
    health_check = s.health_check}, request,
    {grace = p.cfg.start_grace, drain = p.cfg.drain, ready_timeout = p.cfg.ready_timeout})
  if not st then return nil, err, code end
  if s.role == "init" then st.kind = "recreate" end
  if st.kind == "start-first" then
    for _, port in ipairs(s.ports or {}) do
      if port.host then st.kind = "recreate" end
    end
  end
  return st
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

-- Replaces each unit's old container with one made from unit.spec, by the
-- unit's strategy:
--   recreate     the old container is renamed and stopped, then the new one
--                starts under the canonical name;
--   start-first  the new one starts beside the old one (same network alias),
--                and only once it is ready is the old one taken off the
--                network, drained and stopped, so the service name always
--                resolves to a running container.
-- A unit without an old container is simply created, started and gated.
-- Old containers are kept (ctx.retired) until the caller commits: a failure
-- removes the new containers and puts every old one back as it was.
function replace.units(p, ctx, units, after_each)
  local eng = p.engine
  local net = project.network_name(ctx.inst.instance_id)
  local t = math.ceil(p.cfg.stop_timeout)
  ctx.retired = ctx.retired or {}
  ctx.replacing = true
  local retired = ctx.retired
  local stamp = string.format("%x", math.floor(core.walltime() * 1000))
  local function restore(e, c) return replace.restore(ctx, e, c) end
  for step, u in ipairs(units) do
    local old = u.old
    local s = u.spec
    local failed = "deploy of service " .. s.name .. " failed: "
    if not old then
      local ids, err, code = create_containers(ctx, {u})
      if not ids then return restore(err, code) end
      local ok
      ok, err, code = start_containers(ctx, {u.key}, ids)
      if not ok then return restore(err, code) end
      ok, err, code = wait_ready(ctx, ids, {[u.key] = s}, ready_opts(u))
      if not ok then return restore(failed .. err, code) end
      u.id = ids[u.key]
    elseif s.role == "init" or u.strategy ~= "start-first" then
      local was_running = old.State == "running"
      local retire_name = project.temp_name(u.cname, "retired", stamp)
      local done, rerr, rcode = eng:post("/containers/" .. seg(old.Id) .. "/rename", {name = retire_name})
      if not done then return restore("retiring service " .. u.key .. ": " .. rerr, rcode) end
      retired[#retired + 1] = {id = old.Id, name = u.cname, running = was_running, service = s.name}
      done, rerr, rcode = eng:post("/containers/" .. seg(old.Id) .. "/stop", {t = t})
      if not done then return restore("stopping service " .. u.key .. ": " .. rerr, rcode) end
      emit(ctx, {type = "service", service = u.key, action = "stopped", container = old.Id})
      test_pause("old-stopped")
      if s.role == "init" then
        local ok, err, code = run_init(ctx, s)
        if not ok then return restore(err, code) end
        u.id = ctx.created[#ctx.created]
      else
        local ids, err, code = create_containers(ctx, {u})
        if not ids then return restore(err, code) end
        local ok
        ok, err, code = start_containers(ctx, {u.key}, ids)
        if not ok then return restore(err, code) end
        test_pause("new-started")
        ok, err, code = wait_ready(ctx, ids, {[u.key] = s}, ready_opts(u))
        if not ok then return restore(failed .. err, code) end
        u.id = ids[u.key]
      end
    else
      local was_running = old.State == "running"
      local retire_name = project.temp_name(u.cname, "retired", stamp)
      -- start-first: the new container under a temporary name and without
      -- the service alias, so nobody is sent to it before it is ready
      local nu = {spec = s, replica = u.replica, key = u.key, no_alias = true,
        cname = project.temp_name(u.cname, "next", stamp)}
      local ids, err, code = create_containers(ctx, {nu})
      if not ids then return restore(err, code) end
      local ok, info
      ok, err, code = start_containers(ctx, {u.key}, ids)
      if not ok then return restore(err, code) end
      test_pause("next-started")
      -- ready: its health check, or (without one) still running, never
      -- restarted, after the start grace period
      info, err, code = wait_ready(ctx, ids, {[u.key] = s}, ready_opts(u))
      if not info then return restore(failed .. err, code) end
      -- into the name's rotation, at the address it has
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
      test_pause("old-draining")
      if u.drain and u.drain > 0 then core.sleep(u.drain) end
      done, rerr, rcode = eng:post("/containers/" .. seg(old.Id) .. "/rename", {name = retire_name})
      if not done then return restore("retiring service " .. u.key .. ": " .. rerr, rcode) end
      done, rerr, rcode = eng:post("/containers/" .. seg(old.Id) .. "/stop", {t = t})
      if not done then return restore("stopping service " .. u.key .. ": " .. rerr, rcode) end
      emit(ctx, {type = "service", service = u.key, action = "stopped", container = old.Id})
      test_pause("old-retired")
      done, rerr, rcode = eng:post("/containers/" .. seg(ids[u.key]) .. "/rename", {name = u.cname})
      if not done then return restore("renaming service " .. u.key .. ": " .. rerr, rcode) end
      u.id = ids[u.key]
    end
    test_pause("unit-done")
    if after_each then
      local go, why, wcode = after_each(step, u)
      if not go then return restore(why, wcode) end
    end
  end
  return true
end

return replace
