-- The project's network (with an explicit subnet from the pool) and its
-- named volumes: found or created, labelled, recorded for undo.
local engine = require("ctrlplane.docker.engine")
local project = require("ctrlplane.docker.project")

local LABEL = project.LABEL
local seg = engine.segment

local function fail(msg, code)
  return nil, msg, code
end

-- IPv4 "a.b.c.d/n" -> first address as an integer, prefix length.
local function parse_cidr(cidr)
  local a, b, c, d, n = tostring(cidr):match("^(%d+)%.(%d+)%.(%d+)%.(%d+)/(%d+)$")
  if not a then return nil end
  return ((tonumber(a) << 24) | (tonumber(b) << 16) | (tonumber(c) << 8) | tonumber(d)),
    tonumber(n)
end

local function overlaps(a, alen, b, blen)
  local len = math.min(alen, blen)
  local mask = len == 0 and 0 or ((0xffffffff << (32 - len)) & 0xffffffff)
  return (a & mask) == (b & mask)
end

-- Subnets (/24) of the pool not used by any network the daemon has: the
-- project network gets an explicit subnet so a retiring container can keep
-- its address (see replace_units).
local function free_subnets(ctx, want)
  local base, plen = parse_cidr(ctx.cfg.subnet_pool)
  if not base or plen > 24 then return {} end
  local nets = ctx.eng:get("/networks") or {}
  local used = {}
  for _, n in ipairs(type(nets) == "table" and nets or {}) do
    for _, c in ipairs((n.IPAM or {}).Config or {}) do
      local ub, ul = parse_cidr(c.Subnet)
      if ub then used[#used + 1] = {ub, ul} end
    end
  end
  local out = {}
  local count = 1 << (24 - plen)
  local start = math.random(0, count - 1) -- spread concurrent callers
  for k = 0, count - 1 do
    local cand = base + (((start + k) % count) << 8)
    local clash = false
    for _, u in ipairs(used) do
      if overlaps(cand, 24, u[1], u[2]) then clash = true break end
    end
    if not clash then
      out[#out + 1] = string.format("%d.%d.%d.0/24", cand >> 24, (cand >> 16) & 255, (cand >> 8) & 255)
      if #out >= want then break end
    end
  end
  return out
end

-- A random /24 of the pool (nil when the pool is not an IPv4 /24 or wider).
local function random_subnet(pool)
  local base, plen = parse_cidr(pool)
  if not base or plen > 24 then return nil end
  local cand = base + (math.random(0, (1 << (24 - plen)) - 1) << 8)
  return string.format("%d.%d.%d.0/24", cand >> 24, (cand >> 16) & 255, (cand >> 8) & 255)
end

local function is_overlap(err)
  return (err or ""):lower():find("overlap", 1, true) ~= nil
end

-- The existing network of that name: used only when labelled for this very
-- instance, else refused (the message names nothing of whoever owns it).
local function adopt_network(ctx, name)
  local net, err, code = ctx.eng:get("/networks/" .. seg(name))
  if not net then return fail("inspecting network " .. name .. ": " .. err, code) end
  local labels = net.Labels or {}
  if labels[LABEL.instance] ~= ctx.inst.instance_id
      or labels[LABEL.project] ~= project.name(ctx.inst.instance_id) then
    return fail(string.format("network %s exists and does not belong to instance %s (its %s "
      .. "label is not %q); refusing to use it", name, ctx.inst.instance_id, LABEL.instance,
      ctx.inst.instance_id), "conflict")
  end
  return true
end

-- Creates the project network, or adopts it when it exists already. The
-- create goes first (one call on the usual path; the daemon refuses a
-- duplicate name), with a random free-looking /24 of the pool: no listing
-- of every network on the daemon. After a few overlaps the pool is scanned
-- for free subnets; without any the daemon picks.
local RANDOM_TRIES = 6

local function ensure_network(ctx)
  local name = project.network_name(ctx.inst.instance_id)
  local body = {
    Name = name, Driver = "bridge", CheckDuplicate = true,
    Labels = {[LABEL.instance] = ctx.inst.instance_id,
      [LABEL.project] = project.name(ctx.inst.instance_id),
      [LABEL.tenant] = ctx.inst.tenant_id or ""},
  }
  local function create(subnet)
    body.IPAM = subnet and {Driver = "default", Config = {{Subnet = subnet}}} or nil
    local created, cerr, ccode = ctx.eng:post("/networks/create", nil, body)
    if created then
      ctx.created_network = created.Id or name
      return true
    end
    if ccode == "conflict" or (cerr or ""):find("already exists", 1, true) then
      return adopt_network(ctx, name)
    end
    return nil, cerr, ccode
  end
  local ok, err, code
  for _ = 1, RANDOM_TRIES do
    local subnet = random_subnet(ctx.cfg.subnet_pool)
    if not subnet then break end
    ok, err, code = create(subnet)
    if ok or not is_overlap(err) then
      if ok then return true end
      return fail("creating network " .. name .. ": " .. err, code)
    end
  end
  -- a crowded pool: the free subnets from a listing, then the daemon's choice
  local candidates = free_subnets(ctx, 4)
  for i = 1, #candidates + 1 do
    ok, err, code = create(candidates[i])
    if ok then return true end
    if not is_overlap(err) then break end
  end
  return fail("creating network " .. name .. ": " .. err, code)
end

-- The named volumes of the services; replicas (service -> count) matters
-- for kind stateful_set, where every replica has its own volumes.
local function ensure_volumes(ctx, services, replicas)
  local want, order = {}, {}
  local stateful = ctx.inst.kind == "stateful_set"
  for _, s in ipairs(services) do
    for _, v in ipairs(s.volumes or {}) do
      if v.type ~= "ephemeral" then
        local n = stateful and math.max((replicas or {})[s.name] or 1, 1) or 1
        for r = 1, n do
          local name = stateful and project.volume_name(ctx.inst.instance_id, v.name, r)
            or project.volume_name(ctx.inst.instance_id, v.name)
          if not want[name] then
            want[name] = true
            order[#order + 1] = name
          end
        end
      end
    end
  end
  if #order == 0 then return true end
  local list, err, code = ctx.eng:get("/volumes", {filters = engine.filters({
    label = {LABEL.project .. "=" .. project.name(ctx.inst.instance_id)}})})
  if not list then return fail("listing volumes: " .. err, code) end
  local have = {}
  for _, v in ipairs(list.Volumes or {}) do
    if (v.Labels or {})[LABEL.instance] == ctx.inst.instance_id then have[v.Name] = true end
  end
  -- a wanted name that is not ours may still exist (another owner's volume):
  -- /volumes/create would hand it back as if new, so look first, and refuse
  -- it without naming anything of its owner
  local missing = {}
  for _, name in ipairs(order) do
    if not have[name] then missing[#missing + 1] = name end
  end
  local looks = {}
  for i, name in ipairs(missing) do looks[i] = {path = "/volumes/" .. seg(name)} end
  for i, r in ipairs(ctx.eng:batch(looks)) do
    if r.value then
      return fail(string.format("volume %s exists and does not belong to instance %s (its %s "
        .. "label is not %q); refusing to use it", missing[i], ctx.inst.instance_id,
        LABEL.instance, ctx.inst.instance_id), "conflict")
    elseif r.code ~= "not_found" then
      return fail("inspecting volume " .. missing[i] .. ": " .. r.error, r.code)
    end
  end
  local calls, names = {}, {}
  for _, name in ipairs(missing) do
    names[#names + 1] = name
    calls[#calls + 1] = {method = "POST", path = "/volumes/create", body = {
      Name = name, Labels = {[LABEL.instance] = ctx.inst.instance_id,
        [LABEL.project] = project.name(ctx.inst.instance_id)}}}
  end
  for i, r in ipairs(ctx.eng:batch(calls)) do
    if r.error then return fail("creating volume " .. names[i] .. ": " .. r.error, r.code) end
    -- created by someone else since the look: the daemon hands that one back
    local labels = type(r.value) == "table" and r.value.Labels or {}
    if labels[LABEL.instance] ~= ctx.inst.instance_id then
      return fail(string.format("volume %s exists and does not belong to instance %s (its %s "
        .. "label is not %q); refusing to use it", names[i], ctx.inst.instance_id,
        LABEL.instance, ctx.inst.instance_id), "conflict")
    end
    ctx.created_volumes[#ctx.created_volumes + 1] = names[i]
  end
  return true
end

return {
  parse_cidr = parse_cidr,
  free_subnets = free_subnets,
  ensure_network = ensure_network,
  ensure_volumes = ensure_volumes,
}
