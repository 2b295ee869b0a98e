-- Engine steps every operation is made of: the operation context, units
-- (one container of a service), create/start/remove, running an init to
-- completion, waiting for readiness, and undoing what a call created.
local core = require("ctrlplane.docker.core")
local engine = require("ctrlplane.docker.engine")
local gate = require("ctrlplane.docker.gate")
local members = require("ctrlplane.docker.members")
local material = require("ctrlplane.docker.material")
local project = require("ctrlplane.docker.project")
local specbuild = require("ctrlplane.docker.specbuild")
local util = require("ctrlplane.docker.util")
local validate = require("ctrlplane.docker.validate")

local seg = engine.segment
local container_body = specbuild.container_body

local function fail(msg, code)
  return nil, msg, code
end

local function emit(ctx, ev)
  if ctx.on_event then ctx.on_event(ev) end
end

-- A container's log output (Docker's frames, or a TTY's raw stream) as
-- text, one line per line the program wrote, in order: the C demultiplexer
-- does the decoding (small outputs only: the last lines of a failed
-- container).
local function frames_to_text(body)
  local d = core.demux({max_line = 4096})
  local events = d:feed(body) or {}
  d:finish(events)
  d:close()
  local lines = {}
  for i, e in ipairs(events) do lines[i] = e.line end
  return table.concat(lines, "\n")
end

local function last_lines(ctx, id, n)
  local res = ctx.eng.client:request("GET", "/containers/" .. seg(id) .. "/logs", {
    query = {stdout = true, stderr = true, tail = n or 10},
  })
  if not res then return "" end
  local text = frames_to_text(res.body):gsub("%s+$", "")
  return text
end

local function new_ctx(p, inst, opts)
  opts = opts or {}
  return {p = p, eng = p.engine, cfg = p.cfg, inst = inst, on_event = opts.on_event,
    release = opts.release, created = {}, created_network = nil, created_volumes = {}}
end

-- A unit is one container of a service: {spec, replica, key, cname}. A
-- plain service spec stands for its first replica.
local function unit_of(ctx, u)
  if u.spec then return u end
  return {spec = u, replica = 1, key = u.name,
    cname = project.container_name(ctx.inst.instance_id, u.name)}
end

local function replica_unit(ctx, spec, r)
  return {spec = spec, replica = r, key = project.replica_key(spec.name, r),
    cname = project.container_name(ctx.inst.instance_id, spec.name, r)}
end

-- Creates the containers of the units at once; records them in
-- ctx.created. Returns {key = container id}.
-- The daemon's "Conflict. The container name ... is already in use by
-- container <id>" names another owner's container; this message does not.
-- A container of this instance holding the name (a leftover the caller did
-- not expect) is reported with the daemon's words.
local function name_taken(ctx, u)
  local c = ctx.eng:get("/containers/" .. seg(u.cname) .. "/json")
  local labels = type(c) == "table" and (c.Config or {}).Labels or {}
  if labels[project.LABEL.instance] == ctx.inst.instance_id then
    return string.format("creating service %s: the container name %s is taken by another "
      .. "container of instance %s (%s)", u.key, u.cname, ctx.inst.instance_id,
      c.Id and c.Id:sub(1, 12) or "?")
  end
  return string.format("creating service %s: the container name %s is taken by a container that "
    .. "does not belong to instance %s; refusing to use or remove it", u.key, u.cname,
    ctx.inst.instance_id)
end

-- Limits that depend on the host (CPUs, memory, storage driver), from
-- /info, before anything is changed; /info is asked only when a request
-- sets a limit. r: a normalized provision request or scale ResourceSpec.
local function check_host(eng, r)
  local need = false
  for _, res in ipairs(r.services and {} or {r}) do
    need = res.cpu_millis ~= nil or res.memory_mb ~= nil or res.disk_mb ~= nil
  end
  for _, s in ipairs(r.services or {}) do
    local res = s.resources or {}
    need = need or res.cpu_millis ~= nil or res.memory_mb ~= nil or res.disk_mb ~= nil
  end
  if not need then return r end
  local info, err, code = eng:get("/info")
  if not info then return nil, "reading the daemon's /info: " .. err, code end
  return validate.against_host(r, info)
end

-- The service's secrets and files (ctx.material, resolved once per
-- operation); nil, message, code when a secret cannot be resolved.
local function material_of(ctx, spec)
  ctx.material = ctx.material or {}
  local m = ctx.material[spec.name]
  if m then return m end
  local err, code
  m, err, code = material.resolve(ctx.p, ctx.inst, spec, spec.field or ("service " .. spec.name))
  if not m then return nil, err, code end
  ctx.material[spec.name] = m
  return m
end

local function create_containers(ctx, units)
  local calls, mats = {}, {}
  for i, u in ipairs(units) do
    u = unit_of(ctx, u)
    units[i] = u
    local m, merr, mcode = material_of(ctx, u.spec)
    if not m then return fail(merr, mcode) end
    mats[i] = m
    calls[i] = {method = "POST", path = "/containers/create", query = {name = u.cname},
      body = container_body(ctx.cfg, ctx.inst, u.spec, ctx.release, u.replica, ctx.history,
        u.no_alias, {material = m, limits = u.limits or (ctx.limits and ctx.limits[u.spec.name]),
          host_ports = u.host_ports})}
  end
  local ids, first_err, first_code = {}, nil, nil
  for i, r in ipairs(ctx.eng:batch(calls)) do
    if r.value then
      ids[units[i].key] = r.value.Id
      ctx.created[#ctx.created + 1] = r.value.Id
      emit(ctx, {type = "service", service = units[i].key, action = "created",
        container = r.value.Id})
    elseif not first_err then
      first_err = string.format("creating service %s: %s", units[i].key, r.error)
      first_code = r.code
      if r.code == "conflict" then first_err = name_taken(ctx, units[i]) end
    end
  end
  if first_err then return fail(first_err, first_code) end
  -- config files and file secrets, before the process starts
  for i, u in ipairs(units) do
    local ok, uerr, ucode = material.upload(ctx.eng, ids[u.key], mats[i], u.spec)
    if not ok then return fail(uerr, ucode) end
  end
  if ctx.cfg.network then
    local conn = {}
    for i, u in ipairs(units) do
      conn[i] = {method = "POST", path = "/networks/" .. seg(ctx.cfg.network) .. "/connect",
        body = {Container = ids[u.key]}}
    end
    for i, r in ipairs(ctx.eng:batch(conn)) do
      if r.error then
        return fail(string.format("connecting service %s to network %s: %s", units[i].key,
          ctx.cfg.network, r.error), r.code)
      end
    end
  end
  return ids
end

local function start_containers(ctx, keys, ids)
  local calls = {}
  for i, key in ipairs(keys) do
    calls[i] = {method = "POST", path = "/containers/" .. seg(ids[key]) .. "/start"}
  end
  for i, r in ipairs(ctx.eng:batch(calls)) do
    if r.error then
      return fail(string.format("starting service %s: %s", keys[i], r.error), r.code)
    end
    emit(ctx, {type = "service", service = keys[i], action = "started", container = ids[keys[i]]})
  end
  return true
end

-- Runs an init container to completion within the init timeout.
local function run_init(ctx, svc)
  local ids, err, code = create_containers(ctx, {svc})
  if not ids then return nil, err, code end
  local id = ids[svc.name]
  local ok, serr, scode = start_containers(ctx, {svc.name}, ids)
  if not ok then return nil, serr, scode end
  local res, werr, wcode = ctx.eng:post("/containers/" .. seg(id) .. "/wait",
    {condition = "not-running"}, nil, {timeout = ctx.cfg.init_timeout})
  if not res then
    if wcode == "timeout" then
      ctx.eng:post("/containers/" .. seg(id) .. "/kill")
      return fail(string.format("init service %s did not finish within %s", svc.name,
        util.human_duration(ctx.cfg.init_timeout)), "init_timeout")
    end
    return fail(string.format("waiting for init service %s: %s", svc.name, werr), wcode)
  end
  local status = res.StatusCode or -1
  if status ~= 0 then
    local logs = last_lines(ctx, id, 10)
    return fail(string.format("init service %s exited with code %d%s", svc.name, status,
      logs ~= "" and ("; last log lines:\n" .. logs) or ""), "init_failed")
  end
  emit(ctx, {type = "service", service = svc.name, action = "completed", container = id})
  return true
end

local function inspect_all(ctx, ids)
  local calls, keys = {}, {}
  for name, id in pairs(ids) do
    keys[#keys + 1] = name
    calls[#calls + 1] = {path = "/containers/" .. seg(id) .. "/json"}
  end
  local out = {}
  for i, r in ipairs(ctx.eng:batch(calls)) do
    if r.error then return fail("inspecting service " .. keys[i] .. ": " .. r.error, r.code) end
    out[keys[i]] = r.value
  end
  return out
end

-- The containers' events that can change readiness, from a second before
-- now (so nothing between the last inspect and the opening is missed); nil
-- when the stream cannot be opened (the caller then polls).
local READY_EVENTS = {"health_status", "die", "start", "restart", "oom"}

local function ready_events(ctx, ids)
  local list = {}
  for _, id in pairs(ids) do list[#list + 1] = id end
  return ctx.eng:stream("GET", "/events", {since = tostring(os.time() - 1),
    filters = engine.filters({type = {"container"}, container = list, event = READY_EVENTS})})
end

-- Waits until the status policy (scripts/status.lua service()) calls every
-- container in ids ready. The runtime only observes: each poll hands the
-- policy the container's state with gating = true and running_for (seconds
-- since this call saw it start; a restart starts the count again) and
-- grace; the policy answers ready, not yet, or a final state (failed,
-- stopped, destroying, destroyed), which fails at once with the container's
-- last log lines. opts: {timeout, grace} or a timeout in seconds.
-- Between inspections it waits on the containers' events stream (a health
-- check result or an exit answers at once) until the next grace period ends,
-- at most 1 s (for a policy with time rules of its own); without the stream
-- it polls every 0.1 s.
-- Returns {key -> inspect} of the ready containers.
local TERMINAL = {failed = true, stopped = true, destroying = true, destroyed = true}

local function wait_ready(ctx, ids, specs, opts)
  if type(opts) ~= "table" then opts = {timeout = opts} end
  local timeout = opts.timeout or ctx.cfg.ready_timeout
  local grace = opts.grace or ctx.cfg.start_grace or 0
  local status = ctx.status_policy
  if not status then
    local pol, perr, pcode = gate.load(ctx.p, {"status"})
    if not pol then return nil, perr, pcode end
    status = pol.status
    ctx.status_policy = status
  end
  local deadline = core.clock() + timeout
  local seen = {} -- key -> {started_at, since}
  local events -- nil: not opened yet; false: unavailable (poll)
  local function finish(...)
    if events then events:close() end
    return ...
  end
  -- restarts count from this wait: a container this call created must not
  -- have restarted at all; one that was there already (kept or repaired by
  -- a re-provision) only must not restart while we wait
  local fresh, base = {}, {}
  for _, id in ipairs(ctx.created or {}) do fresh[id] = true end
  while true do
    local info, err, code = inspect_all(ctx, ids)
    if not info then return finish(nil, err, code) end
    local pending, why
    local wake = 1 -- seconds until a pending container's grace period ends
    for _, key in ipairs(util.sorted_keys(info)) do
      local c = info[key]
      local st = c.State or {}
      local now = core.clock()
      local s = seen[key]
      if st.Status == "running" and (not s or s.started_at ~= st.StartedAt) then
        s = {started_at = st.StartedAt, since = now}
        seen[key] = s
      end
      local input = members.service_input(specs[key].name or key, specs[key], c)
      if not fresh[c.Id] then
        base[key] = base[key] or input.restarts
        input.restarts = input.restarts - base[key]
      end
      input.gating = true
      input.grace = grace
      input.running_for = (st.Status == "running" and s) and (now - s.since) or 0
      local r, rerr, rcode = gate.service(status, input)
      if not r then return finish(nil, rerr, rcode) end
      if TERMINAL[r.state] then
        local logs = last_lines(ctx, c.Id, 10)
        return finish(fail(string.format("service %s %s%s", key,
          r.message ~= "" and r.message or r.state,
          logs ~= "" and ("; last log lines:\n" .. logs) or ""),
          (st.Health and st.Health.Status == "unhealthy") and "unhealthy" or "service_failed"))
      end
      if not r.ready then
        pending, why = key, r.message
        if input.running_for < grace then
          wake = math.min(wake, grace - input.running_for + 0.005)
        end
      end
    end
    if not pending then return finish(info) end
    local left = deadline - core.clock()
    if left < 0 then
      return finish(fail(string.format("service %s did not become ready within %s%s", pending,
        util.human_duration(timeout), (why and why ~= "") and (" (" .. why .. ")") or ""), "timeout"))
    end
    if events == nil then events = ready_events(ctx, ids) or false end
    if events then
      -- wait for something to happen; drain what else has arrived
      local chunk, _, rcode = events:read(math.min(left, wake))
      while chunk do chunk, _, rcode = events:read(0) end
      if chunk == nil then
        if rcode == "interrupted" then return finish(fail("interrupted", "interrupted")) end
        events:close() -- ended or failed: poll from now on
        events = false
      end
    elseif not core.sleep(math.min(0.1, left)) then
      return fail("interrupted", "interrupted")
    end
  end
end

-- A test hook: with CP_DOCKER_TEST_PAUSE=<point> in the environment, the
-- process says so on stderr and sleeps at that named point of a deploy or
-- re-provision, so a spec can kill it there (spec/integration/robust_spec.lua).
-- Points: next-started, old-draining, old-retired, old-stopped, new-started,
-- unit-done.
local function test_pause(point)
  if os.getenv("CP_DOCKER_TEST_PAUSE") == point then
    io.stderr:write("cpdocker: test pause at " .. point .. " (CP_DOCKER_TEST_PAUSE)\n")
    io.stderr:flush()
    core.sleep(300)
  end
end

local function remove_containers(eng, ids)
  local calls = {}
  for i, id in ipairs(ids) do
    calls[i] = {method = "DELETE", path = "/containers/" .. seg(id), query = {force = true, v = true}}
  end
  local first
  for i, r in ipairs(eng:batch(calls)) do
    if r.error and r.code ~= "not_found" and not first then
      first = {"removing container " .. ids[i] .. ": " .. r.error, r.code}
    end
  end
  if first then return nil, first[1], first[2] end
  return true
end

-- Removes what this call created (no orphans after a failed provision).
local function undo(ctx)
  remove_containers(ctx.eng, ctx.created)
  local calls = {}
  for _, v in ipairs(ctx.created_volumes) do
    calls[#calls + 1] = {method = "DELETE", path = "/volumes/" .. seg(v)}
  end
  if ctx.created_network then
    calls[#calls + 1] = {method = "DELETE", path = "/networks/" .. seg(ctx.created_network)}
  end
  ctx.eng:batch(calls)
end

return {
  fail = fail,
  emit = emit,
  frames_to_text = frames_to_text,
  last_lines = last_lines,
  new_ctx = new_ctx,
  unit_of = unit_of,
  replica_unit = replica_unit,
  check_host = check_host,
  material_of = material_of,
  create_containers = create_containers,
  start_containers = start_containers,
  run_init = run_init,
  inspect_all = inspect_all,
  wait_ready = wait_ready,
  test_pause = test_pause,
  remove_containers = remove_containers,
  undo = undo,
}
