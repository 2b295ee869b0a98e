-- start, stop and restart: the long-lived services, in the rollout
-- policy's waves (stop in reverse).
local core = require("ctrlplane.docker.core")
local engine = require("ctrlplane.docker.engine")
local gate = require("ctrlplane.docker.gate")
local json = require("ctrlplane.docker.json")
local members = require("ctrlplane.docker.members")
local project = require("ctrlplane.docker.project")
local steps = require("ctrlplane.docker.steps")

local seg = engine.segment
local members_by_service = members.members_by_service
local spec_of = members.spec_of

local P = {}

-- Members (long-lived ones) and the rollout waves over them.
local function live_waves(p, instance_id)
  local ok, verr = project.validate_id(instance_id)
  if not ok then return nil, verr, "invalid" end
  local pol, perr, pcode = gate.load(p, {"rollout"})
  if not pol then return nil, perr, pcode end
  local by, reps, list = members_by_service(p.engine, instance_id)
  if not by then return nil, reps, list end
  if not next(by) then
    return nil, "instance " .. instance_id .. " does not exist", "not_found"
  end
  local services = {}
  for name, c in pairs(by) do
    local s = spec_of(c)
    s.name = name
    if s.role ~= "init" then services[#services + 1] = s end
  end
  table.sort(services, function(a, b) return a.name < b.name end)
  local live = {}
  for _, s in ipairs(services) do live[s.name] = true end
  for _, s in ipairs(services) do -- dependencies on inits do not matter here
    local deps = {}
    for _, d in ipairs(s.depends_on) do if live[d] then deps[#deps + 1] = d end end
    s.depends_on = deps
  end
  local waves, err, code = gate.plan(pol.rollout, services)
  if not waves then return nil, err, code end
  local specs = {}
  for _, s in ipairs(services) do specs[s.name] = s end
  return waves, reps, specs
end

-- start and restart wait for readiness unless opts.no_wait
local function wait_opts(instance_id, specs, opts)
  if opts and opts.no_wait then return nil end
  return {instance_id = instance_id, specs = specs}
end

-- Waits until the containers of one wave are ready (running, and healthy
-- when the service has a health check), as provision does; the failure
-- names the service that is not.
local function wait_wave(p, instance_id, wave, reps, specs)
  local ids, wspecs = {}, {}
  for _, name in ipairs(wave) do
    for _, c in ipairs(reps[name] or {}) do
      local key = project.replica_key(name, c.replica)
      ids[key], wspecs[key] = c.Id, specs[name]
    end
  end
  if not next(ids) then return true end
  local ctx = steps.new_ctx(p, {instance_id = instance_id})
  local info, err, code = steps.wait_ready(ctx, ids, wspecs)
  if not info then return nil, err, code end
  return true
end

-- Reconnects a stopped container to each network where it asked for a
-- fixed address (IPAMConfig), keeping its aliases, without that address.
local function unpin(eng, id)
  local c = eng:get("/containers/" .. seg(id) .. "/json")
  local nets = type(c) == "table" and c.NetworkSettings and c.NetworkSettings.Networks or {}
  for net, ep in pairs(nets) do
    local ipam = type(ep) == "table" and ep.IPAMConfig
    if type(ipam) == "table" and (ipam.IPv4Address or "") ~= "" then
      local aliases = {}
      for _, a in ipairs(type(ep.Aliases) == "table" and ep.Aliases or {}) do
        if not id:find(a, 1, true) then aliases[#aliases + 1] = a end -- not the short id
      end
      eng:post("/networks/" .. seg(net) .. "/disconnect", nil, {Container = id, Force = true})
      eng:post("/networks/" .. seg(net) .. "/connect", nil,
        {Container = id, EndpointConfig = {Aliases = json.array(aliases)}})
    end
  end
end

-- opts.wait: {instance_id, specs} to wait for each wave to be ready after
-- it is started (start, restart), nil not to wait (--no-wait).
local function each_wave(p, waves, reps, action, query, reverse, wait)
  local eng = p.engine
  local from, to, step = 1, #waves, 1
  if reverse then from, to, step = #waves, 1, -1 end
  for w = from, to, step do
    local calls, names = {}, {}
    for _, name in ipairs(waves[w]) do
      for _, c in ipairs(reps[name] or {}) do
        names[#names + 1] = name
        calls[#calls + 1] = {method = "POST", path = "/containers/" .. seg(c.Id) .. "/" .. action,
          query = query, id = c.Id}
      end
    end
    for i, r in ipairs(eng:batch(calls)) do
      if r.error and action == "start" and r.error:lower():find("address already in use", 1, true) then
        -- a container a start-first deploy pinned to its address finds it
        -- taken by one that started meanwhile (a replica): it rejoins its
        -- networks without the pin and starts (bounded retries)
        for _ = 1, 3 do
          unpin(eng, calls[i].id)
          local done, err, code = eng:post(calls[i].path)
          r = done and {} or {error = err, code = code}
          if done or not err:lower():find("address already in use", 1, true) then break end
          core.sleep(0.2)
        end
      end
      if r.error then
        return nil, string.format("%s service %s: %s", action, names[i], r.error), r.code
      end
    end
    if wait then
      local ok, err, code = wait_wave(p, wait.instance_id, waves[w], reps, wait.specs)
      if not ok then return nil, action .. ": " .. err, code end
    end
  end
  return true
end

-- opts (start, restart): {no_wait = true} returns once the containers are
-- started, without waiting for them to be ready.
function P:start(instance_id, opts)
  local waves, reps, specs = live_waves(self, instance_id)
  if not waves then return nil, reps, specs end
  return each_wave(self, waves, reps, "start", nil, false, wait_opts(instance_id, specs, opts))
end

function P:stop(instance_id, opts)
  local waves, reps, code = live_waves(self, instance_id)
  if not waves then return nil, reps, code end
  local t = math.ceil((opts and opts.stop_timeout) or self.cfg.stop_timeout)
  return each_wave(self, waves, reps, "stop", {t = t}, true)
end

function P:restart(instance_id, opts)
  local waves, reps, specs = live_waves(self, instance_id)
  if not waves then return nil, reps, specs end
  local t = math.ceil((opts and opts.stop_timeout) or self.cfg.stop_timeout)
  local ok, err, ecode = each_wave(self, waves, reps, "stop", {t = t}, true)
  if not ok then return nil, err, ecode end
  return each_wave(self, waves, reps, "start", nil, false, wait_opts(instance_id, specs, opts))
end

return P
