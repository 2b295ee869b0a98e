-- scale: live CPU/memory limits on the main service (same containers) and
-- its number of replicas.
local engine = require("ctrlplane.docker.engine")
local gate = require("ctrlplane.docker.gate")
local manifest = require("ctrlplane.docker.manifest")
local members = require("ctrlplane.docker.members")
local network = require("ctrlplane.docker.network")
local project = require("ctrlplane.docker.project")
local recover = require("ctrlplane.docker.recover")
local steps = require("ctrlplane.docker.steps")
local validate = require("ctrlplane.docker.validate")

local LABEL = project.LABEL
local seg = engine.segment
local create_containers = steps.create_containers
local current_state = members.current_state
local new_ctx = steps.new_ctx
local remove_containers = steps.remove_containers
local replica_unit = steps.replica_unit
local start_containers = steps.start_containers
local wait_ready = steps.wait_ready

local P = {}

-- The manifest (manifest.lua): want replicas of the scaled service from now
-- on, so that status tells a scale-down from a replica removed behind the
-- runtime's back.
local function record(p, cur, main, want)
  local wanted, err, code = manifest.read(p.engine, cur.inst.instance_id)
  if wanted == nil then return nil, err, code end
  local services = wanted and wanted.services or {}
  if not wanted then
    for name, l in pairs(cur.reps) do
      services[name] = {role = cur.specs[name] and cur.specs[name].role or "main", replicas = #l}
    end
  end
  services[main.name] = {role = main.role or "main", replicas = want}
  return manifest.write(p.engine, cur.inst, services)
end

-- Live limits on the containers there are (same containers).
local function apply_limits(eng, main, reps, rs)
  local update = {}
  if rs.cpu_millis then
    update.NanoCpus = rs.cpu_millis * 1000000
  end
  if rs.memory_mb then
    update.Memory = rs.memory_mb * 1048576
    update.MemorySwap = rs.memory_mb > 0 and 2 * rs.memory_mb * 1048576 or -1
  end
  if not next(update) then return true end
  local calls = {}
  for i, c in ipairs(reps) do
    calls[i] = {method = "POST", path = "/containers/" .. seg(c.Id) .. "/update", body = update}
  end
  for i, r in ipairs(eng:batch(calls)) do
    if r.error then
      return nil, string.format("updating %s replica %d: %s", main.name, reps[i].replica or 1,
        r.error), r.code
    end
  end
  return true
end

-- Up: the new replicas (the lowest free numbers) carry the recorded spec
-- (same spec hash as the others) and run with the limits the others run
-- with now, so a scale sticks; all of them ready, or none is left.
local function scale_up(p, cur, main, reps, want, opts)
  for _, port in ipairs(main.ports or {}) do
    if port.host then
      return nil, string.format("replicas: service %s publishes the fixed host port %d, which "
        .. "%d replicas cannot share", main.name, port.host, want), "invalid"
    end
  end
  local eng = p.engine
  local first = cur.by[main.name]
  local ctx = new_ctx(p, cur.inst, {on_event = opts.on_event,
    release = (first.Labels or {})[LABEL.release]})
  ctx.history = (first.Labels or {})[LABEL.releases]
  local live, lerr, lcode = eng:get("/containers/" .. seg(first.Id) .. "/json")
  if not live then return nil, "inspecting service " .. main.name .. ": " .. lerr, lcode end
  local h = live.HostConfig or {}
  ctx.limits = {[main.name] = {cpu_millis = (h.NanoCpus or 0) // 1000000,
    memory_mb = (h.Memory or 0) // 1048576}}
  local units, keys, used, rep = {}, {}, {}, 0
  for _, c in ipairs(reps) do used[c.replica or 1] = true end
  for _ = #reps + 1, want do
    repeat rep = rep + 1 until not used[rep]
    local u = replica_unit(ctx, main, rep)
    units[#units + 1] = u
    keys[#keys + 1] = u.key
  end
  -- stateful_set: the new replicas get (or find again) their own volumes
  local top = rep
  for r in pairs(used) do top = math.max(top, r) end
  local ok, err, code = network.ensure_volumes(ctx, {main}, {[main.name] = top})
  if not ok then return nil, "scaling " .. main.name .. " up: " .. err, code end
  local ids
  ids, err, code = create_containers(ctx, units)
  if ids then
    ok, err, code = start_containers(ctx, keys, ids)
    if ok then
      local specs = {}
      for _, k in ipairs(keys) do specs[k] = main end
      ok, err, code = wait_ready(ctx, ids, specs)
    end
  end
  if not ids or not ok then
    remove_containers(eng, ctx.created)
    return nil, "scaling " .. main.name .. " up: " .. err, code
  end
  return true
end

-- scale: live CPU/memory limits on the main service (same containers) and
-- its number of replicas (down: the scale policy picks the replicas that
-- go). The manifest records the new number once it is there.
function P:scale(instance_id, spec, opts)
  opts = opts or {}
  local ok, verr = project.validate_id(instance_id)
  if not ok then return nil, verr, "invalid" end
  local rs, serr, scode, serrors = validate.resources(spec, self.cfg)
  if not rs then return nil, serr, scode, serrors end
  rs, serr, scode, serrors = steps.check_host(self.engine, rs)
  if not rs then return nil, serr, scode, serrors end
  -- a deploy killed part-way: one generation per service first
  local fixed, ferr, fcode = recover.run(self.engine, instance_id, opts.on_event)
  if not fixed then return nil, ferr, fcode end
  local cur, err, code = current_state(self, instance_id)
  if not cur then return nil, err, code end
  local pol, perr, pcode = gate.load(self, {"scale"})
  if not pol then return nil, perr, pcode end
  local main
  main, err, code = gate.scale_target(pol.scale, cur, rs)
  if not main then return nil, err, code end
  if rs.disk_mb and rs.disk_mb ~= (main.resources or {}).disk_mb then
    return nil, string.format("invalid request: spec.disk_mb: a disk limit cannot change on a "
      .. "running container (it is %s; re-provision with the new disk_mb)",
      tostring((main.resources or {}).disk_mb or 0)), "invalid"
  end
  local reps = cur.reps[main.name] or {cur.by[main.name]}
  ok, err, code = apply_limits(self.engine, main, reps, rs)
  if not ok then return nil, err, code end
  local want = rs.replicas
  if not want then return true end
  if want > #reps then
    ok, err, code = scale_up(self, cur, main, reps, want, opts)
  elseif want < #reps then
    local doomed
    doomed, err, code = gate.retire(pol.scale, reps, want)
    if not doomed then return nil, err, code end
    ok, err, code = remove_containers(self.engine, doomed)
  end
  if not ok then return nil, err, code end
  return record(self, cur, main, want)
end

return P
