-- Bringing an instance back to one generation per service after a deploy,
-- rollback or re-provision that was killed part-way (kill -9, a crash, the
-- machine gone). Such a run leaves containers of a service under temporary
-- names (project.temp_name): `<name>_next_<stamp>` (start-first: the new
-- one, not yet in place) and `<name>_retired_<stamp>` (the old one, waiting
-- to be removed). They carry the project, instance, service and replica
-- labels like every member, so they are found by label; the name says which
-- kind each is.
--
--   recover.run(eng, instance_id, on_event) -> number of containers put
--       back or removed | nil, message, code
--   recover.pending(list, instance_id) -> whether a listing holds any
--
-- For each (service, replica):
--   - the canonical container exists and was started at some point: it is
--     the generation (put back under the service alias if it was draining);
--     every _next_ and _retired_ one is removed;
--   - otherwise (no canonical container, or one created and never started):
--     the newest _retired_ container (the generation that was serving) is
--     put back under the canonical name, on the project network under the
--     service alias, and started; without one, the newest _next_ container
--     is promoted the same way. Everything else of that replica is removed.
-- Every operation that changes an instance (provision, deploy, rollback,
-- scale) runs this first, under the instance's lock; deprovision removes
-- every member anyway.
local engine = require("ctrlplane.docker.engine")
local members = require("ctrlplane.docker.members")
local project = require("ctrlplane.docker.project")
local steps = require("ctrlplane.docker.steps")

local seg = engine.segment

local recover = {}

local function starts_with(s, prefix)
  return s:sub(1, #prefix) == prefix
end

-- Groups the members by (service, replica): {service, cname, canonical,
-- next = {...}, retired = {...}}, newest first.
function recover.groups(list, instance_id)
  local groups = {}
  for _, c in ipairs(list) do
    local svc = project.service_of(c)
    if svc then
      local cname = project.container_name(instance_id, svc, members.replica_of(c))
      local g = groups[cname]
      if not g then
        g = {service = svc, cname = cname, next = {}, retired = {}}
        groups[cname] = g
      end
      local name = (c.Names or {})[1] or ""
      if name == "/" .. cname then
        g.canonical = c
      elseif starts_with(name, "/" .. project.temp_name(cname, "next", "")) then
        g.next[#g.next + 1] = c
      elseif starts_with(name, "/" .. project.temp_name(cname, "retired", "")) then
        g.retired[#g.retired + 1] = c
      end
    end
  end
  local newest = function(a, b) return (a.Created or 0) > (b.Created or 0) end
  for _, g in pairs(groups) do
    table.sort(g.next, newest)
    table.sort(g.retired, newest)
  end
  return groups
end

-- Whether a listing of the members holds a dead run's temporary container.
function recover.pending(list, instance_id)
  for _, g in pairs(recover.groups(list, instance_id)) do
    if #g.next > 0 or #g.retired > 0 then return true end
  end
  return false
end

-- Puts a container on the project network under the service alias unless
-- it is there already.
local function realias(eng, net, id, service)
  local c, err, code = eng:get("/containers/" .. seg(id) .. "/json")
  if not c then return nil, "inspecting service " .. service .. ": " .. err, code end
  local ep = c.NetworkSettings and c.NetworkSettings.Networks and c.NetworkSettings.Networks[net]
  for _, a in ipairs(ep and ep.Aliases or {}) do
    if a == service then return true end
  end
  if ep then eng:post("/networks/" .. seg(net) .. "/disconnect", nil, {Container = id, Force = true}) end
  local ok
  ok, err, code = eng:post("/networks/" .. seg(net) .. "/connect", nil,
    {Container = id, EndpointConfig = {Aliases = {service}}})
  if not ok then
    return nil, string.format("putting service %s back on its network: %s", service, err), code
  end
  return true
end

function recover.run(eng, instance_id, on_event)
  local list, err, code = project.members(eng, instance_id)
  if not list then return nil, err, code end
  local net = project.network_name(instance_id)
  local doomed, count = {}, 0
  for cname, g in pairs(recover.groups(list, instance_id)) do
    if #g.next > 0 or #g.retired > 0 then
      local canonical_stays = g.canonical and g.canonical.State ~= "created"
      local back = not canonical_stays and (g.retired[1] or g.next[1]) or nil
      if canonical_stays then
        -- killed while it drained, it is on the network without its alias
        local ok, rerr, rcode = realias(eng, net, g.canonical.Id, g.service)
        if not ok then return nil, rerr, rcode end
      end
      for _, c in ipairs(g.next) do
        if c ~= back then doomed[#doomed + 1] = c.Id end
      end
      for _, c in ipairs(g.retired) do
        if c ~= back then doomed[#doomed + 1] = c.Id end
      end
      if back then
        if g.canonical then -- created by the dead run, never started: the name must be free
          local ok, rerr, rcode = steps.remove_containers(eng, {g.canonical.Id})
          if not ok then return nil, rerr, rcode end
        end
        local ok, rerr, rcode = eng:post("/containers/" .. seg(back.Id) .. "/rename", {name = cname})
        if not ok then
          return nil, string.format("putting back service %s (%s): %s", g.service, cname, rerr), rcode
        end
        ok, rerr, rcode = realias(eng, net, back.Id, g.service)
        if not ok then return nil, rerr, rcode end
        if back.State ~= "running" then
          ok, rerr, rcode = eng:post("/containers/" .. seg(back.Id) .. "/start")
          if not ok then
            return nil, string.format("starting service %s again: %s", g.service, rerr), rcode
          end
        end
        count = count + 1
        if on_event then
          on_event({type = "service", service = g.service, action = "recovered", container = back.Id})
        end
      end
    end
  end
  if #doomed > 0 then
    local ok, rerr, rcode = steps.remove_containers(eng, doomed)
    if not ok then return nil, rerr, rcode end
  end
  return count + #doomed
end

return recover
