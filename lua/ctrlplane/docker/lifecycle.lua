-- Lifecycle operations: provision, deprovision, start, stop, restart,
-- status and deploy. Mechanism lives here; the decisions (order, strategy,
-- what a state means, what re-provisioning keeps) come from the policy
-- scripts (scripts/rollout.lua, status.lua, reprovision.lua).
--
-- All operations return plain tables in the contract's shape, or nil,
-- message, code. Progress is reported through opts.on_event(event) with
-- event = {type = "pull", image, status, id, current, total}
--       | {type = "service", service, action, container}.
local core = require("ctrlplane.docker.core")
local engine = require("ctrlplane.docker.engine")
local json = require("ctrlplane.docker.json")
local policy = require("ctrlplane.docker.policy")
local project = require("ctrlplane.docker.project")
local util = require("ctrlplane.docker.util")
local validate = require("ctrlplane.docker.validate")

local LABEL = project.LABEL
local seg = engine.segment

local lifecycle = {}

-- ---- small helpers -------------------------------------------------------------

-- FNV-1a, 64 bit: a stable fingerprint of an applied spec.
local function fnv1a(s)
  local h = 0xcbf29ce484222325
  for i = 1, #s do
    h = (h ~ s:byte(i)) * 0x100000001b3
  end
  return string.format("%016x", h)
end

local function fail(msg, code)
  return nil, msg, code
end

local function emit(ctx, ev)
  if ctx.on_event then ctx.on_event(ev) end
end

-- Decodes Docker's multiplexed log frames (small outputs only: the last
-- lines of a failed container) into text.
local function frames_to_text(body)
  local out, pos = {}, 1
  while pos + 7 <= #body do
    local stream, size = string.unpack(">BxxxI4", body, pos)
    if stream > 2 then return body end -- not multiplexed (TTY)
    out[#out + 1] = body:sub(pos + 8, pos + 7 + size)
    pos = pos + 8 + size
  end
  return table.concat(out)
end

local function last_lines(ctx, id, n)
  local res = ctx.eng.client:request("GET", "/containers/" .. seg(id) .. "/logs", {
    query = {stdout = true, stderr = true, tail = n or 10},
  })
  if not res then return "" end
  local text = frames_to_text(res.body):gsub("%s+$", "")
  return text
end

local function policies(p, names)
  local want = {}
  for _, n in ipairs(names) do
    want[n] = ({rollout = {"plan"}, status = {"service", "aggregate"},
      reprovision = {"decide"}})[n]
  end
  return policy.load_all(p.cfg, want)
end

-- Registry prefix for refs without a registry host.
local function image_ref(cfg, image)
  if cfg.registry then
    local first = image:match("^([^/]+)/")
    local has_registry = first and (first:find("[.:]") or first == "localhost")
    if not has_registry then return (cfg.registry:gsub("/+$", "")) .. "/" .. image end
  end
  return image
end

-- Splits a ref into what /images/create wants.
local function split_ref(ref)
  if ref:find("@", 1, true) then return ref, nil end
  local name, tag = ref:match("^(.+):([%w][%w_.-]*)$")
  if name and not tag:find("/", 1, true) then return name, tag end
  return ref, "latest"
end

-- ---- waves from the rollout policy ------------------------------------------

local function plan_waves(rollout, services)
  local shape = {}
  for i, s in ipairs(services) do
    shape[i] = {name = s.name, role = s.role, depends_on = s.depends_on or {}}
  end
  local waves, err, code = policy.call(rollout, "plan", shape)
  if not waves then return nil, err, code end
  -- the plan must place every service once, after its dependencies
  local placed, by_name = {}, {}
  for _, s in ipairs(services) do by_name[s.name] = s end
  if type(waves) ~= "table" then
    return nil, "policy " .. rollout.path .. ": plan must return a list of waves", "policy"
  end
  for wi, wave in ipairs(waves) do
    for _, name in ipairs(wave) do
      local s = by_name[name]
      if not s then
        return nil, string.format("policy %s: plan wave %d names unknown service %q",
          rollout.path, wi, tostring(name)), "policy"
      end
      if placed[name] then
        return nil, string.format("policy %s: plan places %q twice", rollout.path, name), "policy"
      end
      for _, d in ipairs(s.depends_on or {}) do
        if by_name[d] and not placed[d] then
          return nil, string.format("policy %s: plan starts %q before its dependency %q",
            rollout.path, name, d), "policy"
        end
      end
    end
    for _, name in ipairs(wave) do placed[name] = wi end
  end
  for _, s in ipairs(services) do
    if not placed[s.name] then
      return nil, string.format("policy %s: plan leaves out service %q", rollout.path, s.name),
        "policy"
    end
  end
  return waves
end

-- ---- the container spec ---------------------------------------------------------

local function stored_service(svc)
  local s = util.copy(svc)
  s.field = nil
  return s
end

local function instance_info(r)
  return {instance_id = r.instance_id, tenant_id = r.tenant_id or "", name = r.name or "",
    kind = r.kind or "deployment", labels = r.labels or json.object({})}
end

local function spec_hash(cfg, inst, svc)
  return fnv1a(json.encode({inst = inst, svc = stored_service(svc), image = image_ref(cfg, svc.image),
    network = cfg.network or "", publish = cfg.publish_address}))
end

local function port_key(p)
  return string.format("%d/%s", p.container, p.protocol or "tcp")
end

local function healthcheck(hc)
  local timeout = hc.timeout or 3
  local test
  if hc.path then
    -- Docker's Timeout bounds the probe (busybox wget's own -T is unreliable)
    test = {"CMD", "wget", "-q", "-O", "/dev/null",
      string.format("http://127.0.0.1:%d%s", hc.port, hc.path)}
  else
    test = {"CMD-SHELL", string.format("nc -w %d 127.0.0.1 %d </dev/null",
      math.max(1, math.ceil(timeout)), hc.port)}
  end
  return {Test = test, Interval = util.nanos(hc.interval or 1), Timeout = util.nanos(timeout),
    Retries = hc.retries or 3, StartPeriod = 0}
end

-- The body of POST /containers/create for one service (replica n of it).
local function container_body(cfg, inst, svc, release, replica, history, no_alias)
  local labels = {}
  for k, v in pairs(inst.labels or {}) do labels[k] = v end
  for k, v in pairs(svc.annotations or {}) do labels[k] = v end
  labels[LABEL.instance] = inst.instance_id
  labels[LABEL.project] = project.name(inst.instance_id)
  labels[LABEL.tenant] = inst.tenant_id or ""
  labels[LABEL.service] = svc.name
  labels[LABEL.role] = svc.role
  labels[LABEL.release] = release or ""
  labels[LABEL.spec] = json.encode(stored_service(svc))
  labels[LABEL.instance_spec] = json.encode(inst)
  labels[LABEL.spec_hash] = spec_hash(cfg, inst, svc)
  labels[LABEL.replica] = tostring(replica or 1)
  if history then labels[LABEL.releases] = history end

  local env = json.array({})
  for _, k in ipairs(util.sorted_keys(svc.env or {})) do env[#env + 1] = k .. "=" .. svc.env[k] end

  local exposed, bindings = {}, {}
  for _, p in ipairs(svc.ports or {}) do
    local key = port_key(p)
    exposed[key] = json.object({})
    bindings[key] = {{HostIp = cfg.publish_address, HostPort = p.host and tostring(p.host) or ""}}
  end

  local mounts = json.array({})
  for _, v in ipairs(svc.volumes or {}) do
    if v.type == "ephemeral" then
      local m = {Type = "tmpfs", Target = v.mount_path}
      if v.size_mb and v.size_mb > 0 then m.TmpfsOptions = {SizeBytes = v.size_mb * 1048576} end
      mounts[#mounts + 1] = m
    else
      mounts[#mounts + 1] = {Type = "volume", Source = project.volume_name(inst.instance_id, v.name),
        Target = v.mount_path}
    end
  end

  local res = svc.resources or {}
  local net = project.network_name(inst.instance_id)
  local host = {
    NetworkMode = net,
    RestartPolicy = {Name = svc.role == "init" and "no" or "unless-stopped"},
    PortBindings = bindings,
    Mounts = mounts,
  }
  if res.cpu_millis and res.cpu_millis > 0 then host.NanoCpus = res.cpu_millis * 1000000 end
  if res.memory_mb and res.memory_mb > 0 then host.Memory = res.memory_mb * 1048576 end

  local body = {
    -- no Hostname: Docker makes the hostname a network alias, and the
    -- service alias must stay under the runtime's control (start-first)
    Image = image_ref(cfg, svc.image),
    Env = env,
    Labels = labels,
    ExposedPorts = exposed,
    HostConfig = host,
    NetworkingConfig = {EndpointsConfig = {[net] = no_alias and json.object({})
      or {Aliases = {svc.name}}}},
  }
  if svc.command and #svc.command > 0 then body.Entrypoint = svc.command end
  if svc.args and #svc.args > 0 then body.Cmd = svc.args end
  if svc.health_check then body.Healthcheck = healthcheck(svc.health_check) end
  return body
end

-- ---- engine steps ------------------------------------------------------------------

local function new_ctx(p, inst, opts)
  opts = opts or {}
  return {p = p, eng = p.engine, cfg = p.cfg, inst = inst, on_event = opts.on_event,
    release = opts.release, created = {}, created_network = nil, created_volumes = {}}
end

-- Pulls each image by the pull policy; a missing image that cannot be
-- pulled is an error.
local function ensure_images(ctx, images)
  local cfg = ctx.cfg
  local seen, refs = {}, {}
  for _, img in ipairs(images) do
    local ref = image_ref(cfg, img)
    if not seen[ref] then
      seen[ref] = true
      refs[#refs + 1] = ref
    end
  end
  local present = {}
  if cfg.pull_policy ~= "always" then
    local calls = {}
    for i, ref in ipairs(refs) do calls[i] = {path = "/images/" .. ref .. "/json"} end
    for i, r in ipairs(ctx.eng:batch(calls)) do
      if r.value then
        present[refs[i]] = true
      elseif r.code ~= "not_found" then
        return fail("inspecting image " .. refs[i] .. ": " .. r.error, r.code)
      end
    end
  end
  for _, ref in ipairs(refs) do
    if not present[ref] then
      if cfg.pull_policy == "never" then
        return fail(string.format("image %s is not present locally and the pull policy is never",
          ref), "image_missing")
      end
      local name, tag = split_ref(ref)
      emit(ctx, {type = "pull", image = ref, status = "Pulling"})
      local stream, err, code = ctx.eng:stream("POST", "/images/create",
        {fromImage = name, tag = tag}, {idle_timeout = 120})
      if not stream then
        return fail(string.format("pulling image %s: %s", ref, err), code == "not_found"
          and "image_missing" or code)
      end
      local buf, perr = "", nil
      while true do
        local chunk, rerr, rcode = stream:read(cfg.timeout)
        if chunk == nil then
          if rerr then
            stream:close()
            return fail("pulling image " .. ref .. ": " .. rerr, rcode)
          end
          break
        end
        if chunk then
          buf = buf .. chunk
          for line in buf:gmatch("([^\n]*)\n") do
            local ev = json.decode(line)
            if type(ev) == "table" then
              if ev.error then
                perr = ev.error
              else
                local d = type(ev.progressDetail) == "table" and ev.progressDetail or {}
                emit(ctx, {type = "pull", image = ref, id = ev.id, status = ev.status,
                  current = d.current, total = d.total})
              end
            end
          end
          buf = buf:match("[^\n]*$")
        end
      end
      stream:close()
      if perr then
        return fail(string.format("pulling image %s: %s", ref, perr), "image_missing")
      end
      emit(ctx, {type = "pull", image = ref, status = "Pulled"})
    end
  end
  return true
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

local function ensure_network(ctx)
  local name = project.network_name(ctx.inst.instance_id)
  local net, err, code = ctx.eng:get("/networks/" .. seg(name))
  if net then
    local labels = net.Labels or {}
    if labels[LABEL.project] ~= project.name(ctx.inst.instance_id) then
      return fail(string.format("network %s exists but is not managed by ctrlplane "
        .. "(no %s label); refusing to use it", name, LABEL.project), "conflict")
    end
    return true
  end
  if code ~= "not_found" then return fail("inspecting network " .. name .. ": " .. err, code) end
  local body = {
    Name = name, Driver = "bridge", CheckDuplicate = true,
    Labels = {[LABEL.instance] = ctx.inst.instance_id,
      [LABEL.project] = project.name(ctx.inst.instance_id),
      [LABEL.tenant] = ctx.inst.tenant_id or ""},
  }
  -- an explicit subnet from the pool; a clash with a concurrent caller
  -- moves on to the next free one, and without any the daemon picks
  local candidates = free_subnets(ctx, 4)
  local created, cerr, ccode
  for i = 1, #candidates + 1 do
    body.IPAM = candidates[i] and {Driver = "default", Config = {{Subnet = candidates[i]}}} or nil
    created, cerr, ccode = ctx.eng:post("/networks/create", nil, body)
    if created or not (cerr or ""):lower():find("overlap", 1, true) then break end
  end
  if not created then return fail("creating network " .. name .. ": " .. cerr, ccode) end
  ctx.created_network = created.Id or name
  return true
end

local function ensure_volumes(ctx, services)
  local want, order = {}, {}
  for _, s in ipairs(services) do
    for _, v in ipairs(s.volumes or {}) do
      if v.type ~= "ephemeral" then
        local name = project.volume_name(ctx.inst.instance_id, v.name)
        if not want[name] then
          want[name] = true
          order[#order + 1] = name
        end
      end
    end
  end
  if #order == 0 then return true end
  local list, err, code = ctx.eng:get("/volumes", {filters = engine.filters({
    label = {LABEL.project .. "=" .. project.name(ctx.inst.instance_id)}})})
  if not list then return fail("listing volumes: " .. err, code) end
  local have = {}
  for _, v in ipairs(list.Volumes or {}) do have[v.Name] = true end
  local calls, names = {}, {}
  for _, name in ipairs(order) do
    if not have[name] then
      names[#names + 1] = name
      calls[#calls + 1] = {method = "POST", path = "/volumes/create", body = {
        Name = name, Labels = {[LABEL.instance] = ctx.inst.instance_id,
          [LABEL.project] = project.name(ctx.inst.instance_id)}}}
    end
  end
  for i, r in ipairs(ctx.eng:batch(calls)) do
    if r.error then return fail("creating volume " .. names[i] .. ": " .. r.error, r.code) end
    ctx.created_volumes[#ctx.created_volumes + 1] = names[i]
  end
  return true
end

-- A unit is one container of a service: {spec, replica, key, cname}. A
-- plain service spec stands for its first replica.
local function unit_of(ctx, u)
  if u.spec then return u end
  return {spec = u, replica = 1, key = u.name,
    cname = project.container_name(ctx.inst.instance_id, u.name)}
end

local function replica_unit(ctx, spec, r)
  return {spec = spec, replica = r, key = r == 1 and spec.name or (spec.name .. "_" .. r),
    cname = project.container_name(ctx.inst.instance_id, spec.name, r)}
end

-- Creates the containers of the units at once; records them in
-- ctx.created. Returns {key = container id}.
local function create_containers(ctx, units)
  local calls = {}
  for i, u in ipairs(units) do
    u = unit_of(ctx, u)
    units[i] = u
    calls[i] = {method = "POST", path = "/containers/create", query = {name = u.cname},
      body = container_body(ctx.cfg, ctx.inst, u.spec, ctx.release, u.replica, ctx.history,
        u.no_alias)}
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
    end
  end
  if first_err then return fail(first_err, first_code) end
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

-- Waits until every service in ids is running and, with a health check,
-- healthy. A container that stops or turns unhealthy fails at once.
local function wait_ready(ctx, ids, specs, timeout)
  local deadline = core.clock() + (timeout or ctx.cfg.ready_timeout)
  while true do
    local info, err, code = inspect_all(ctx, ids)
    if not info then return nil, err, code end
    local pending
    for name, c in pairs(info) do
      local st = c.State or {}
      local health = st.Health and st.Health.Status
      if st.Status == "exited" or st.Status == "dead" or st.Status == "restarting" then
        local logs = last_lines(ctx, c.Id, 10)
        return fail(string.format("service %s stopped (exit code %d)%s%s", name, st.ExitCode or -1,
          st.OOMKilled and ", killed: out of memory" or "",
          logs ~= "" and ("; last log lines:\n" .. logs) or ""), "service_failed")
      end
      if health == "unhealthy" then
        local log = st.Health.Log and st.Health.Log[#st.Health.Log]
        return fail(string.format("service %s is unhealthy%s", name,
          log and (": " .. (log.Output or ""):gsub("%s+$", "")) or ""), "unhealthy")
      end
      if st.Status ~= "running" or (specs[name].health_check and health ~= "healthy") then
        pending = name
      end
    end
    if not pending then return info end
    if core.clock() > deadline then
      return fail(string.format("service %s did not become ready within %s", pending,
        util.human_duration(timeout or ctx.cfg.ready_timeout)), "timeout")
    end
    if not core.sleep(0.1) then return fail("interrupted", "interrupted") end
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

-- Endpoints of every replica of every service. info: key -> inspect.
local function endpoints_of(inst_id, specs, info, counts)
  local out = json.array({})
  for _, svc in ipairs(specs) do
    local n = counts and counts[svc.name] or 1
    for _, p in ipairs(svc.ports or {}) do
      local scheme = p.protocol == "udp" and "udp" or "http"
      out[#out + 1] = {service_name = svc.name, port = p.container, protocol = p.protocol,
        public = false,
        url = string.format("%s://%s:%d", scheme, project.container_name(inst_id, svc.name),
          p.container)}
      for r = 1, n do
        local c = info[r == 1 and svc.name or (svc.name .. "_" .. r)]
        local bound = c and c.NetworkSettings and c.NetworkSettings.Ports
          and c.NetworkSettings.Ports[port_key(p)]
        local hp = type(bound) == "table" and bound[1] and tonumber(bound[1].HostPort)
        if hp then
          out[#out + 1] = {service_name = svc.name, port = math.tointeger(hp), protocol = p.protocol,
            public = true, url = string.format("%s://localhost:%d", scheme, hp)}
        end
      end
    end
  end
  return out
end

local function replica_of(c)
  local labels = c.Labels or (c.Config and c.Config.Labels) or {}
  return math.tointeger(tonumber(labels[LABEL.replica] or "1")) or 1
end

-- Members of the project grouped by service. Only containers with their
-- canonical name count (a deploy that was interrupted may leave a retired
-- one behind under another name). Returns by (service -> replica 1),
-- reps (service -> list of replicas in order), and the full list.
local function members_by_service(eng, inst_id)
  local list, err, code = project.members(eng, inst_id)
  if not list then return nil, err, code end
  local by, reps = {}, {}
  for _, c in ipairs(list) do
    local svc = project.service_of(c)
    if svc then
      local r = replica_of(c)
      local canonical = "/" .. project.container_name(inst_id, svc, r)
      if (c.Names or {})[1] == canonical then
        c.replica = r
        reps[svc] = reps[svc] or {}
        table.insert(reps[svc], c)
        if r == 1 then by[svc] = c end
      end
    end
  end
  for svc, l in pairs(reps) do
    table.sort(l, function(a, b) return a.replica < b.replica end)
    if not by[svc] then by[svc] = l[1] end
  end
  return by, reps, list
end

local function spec_of(c)
  local labels = c.Labels or (c.Config and c.Config.Labels) or {}
  local s = labels[LABEL.spec] and json.decode(labels[LABEL.spec])
  if type(s) ~= "table" then
    s = {name = labels[LABEL.service], role = labels[LABEL.role] or "main", depends_on = {}}
  end
  s.depends_on = s.depends_on or {}
  return s
end

-- ---- release history (labels on the engine) ---------------------------------------

lifecycle.HISTORY_MAX = 10

-- The newest history among the members (the last container created
-- carries the most recent one).
local function history_of(list)
  local newest, at = nil, -1
  for _, c in ipairs(list or {}) do
    local labels = c.Labels or {}
    if labels[LABEL.releases] and (c.Created or 0) > at then
      newest, at = labels[LABEL.releases], c.Created or 0
    end
  end
  local h = newest and json.decode(newest)
  return type(h) == "table" and h or {}
end

local function snapshot(specs)
  local out = {}
  for _, s in pairs(specs) do
    out[s.name] = {image = s.image, env = s.env or json.object({})}
  end
  return out
end

-- Appends (or moves to the end) the release id with its snapshot; keeps the
-- last HISTORY_MAX. Returns the JSON text for the label.
local function record_release(history, id, services)
  local out = json.array({})
  for _, e in ipairs(history) do
    if e.id ~= id then out[#out + 1] = e end
  end
  out[#out + 1] = {id = id, at = util.rfc3339(), services = services}
  while #out > lifecycle.HISTORY_MAX do table.remove(out, 1) end
  return json.encode(out), out
end

-- ---- operations ----------------------------------------------------------------------

local P = {}

function P:provision(req, opts)
  opts = opts or {}
  local r, verr, vcode, verrors = validate.provision(req)
  if not r then return nil, verr, vcode, verrors end
  local pol, perr, pcode = policies(self, {"rollout", "reprovision", "status"})
  if not pol then return nil, perr, pcode end
  local waves, werr, wcode = plan_waves(pol.rollout, r.services)
  if not waves then return nil, werr, wcode end

  local inst = instance_info(r)
  local ctx = new_ctx(self, inst, {on_event = opts.on_event, release = opts.release_id})
  local specs = {}
  for _, s in ipairs(r.services) do specs[s.name] = s end

  -- what exists already, and what the re-provision policy does with it
  local existing, reps, list = members_by_service(self.engine, r.instance_id)
  if not existing then return nil, reps, list end
  local actions = {}
  if next(existing) then
    local desired, current = {}, {}
    for i, s in ipairs(r.services) do
      desired[i] = {name = s.name, role = s.role, hash = spec_hash(self.cfg, inst, s)}
    end
    for name, c in pairs(existing) do
      local labels = c.Labels or {}
      current[name] = {role = labels[LABEL.role], hash = labels[LABEL.spec_hash],
        docker_state = c.State, running = c.State == "running",
        exit_code = tonumber((c.Status or ""):match("^Exited %((%-?%d+)%)"))}
    end
    local decided, derr, dcode = policy.call(pol.reprovision, "decide", desired, current)
    if not decided then return nil, derr, dcode end
    actions = decided
  end

  local images, changes = {}, false
  for _, s in ipairs(r.services) do
    local a = actions[s.name] or "create"
    if a == "create" or a == "replace" then
      images[#images + 1] = s.image
      changes = true
    end
  end
  if changes then
    ctx.history = record_release(history_of(list),
      ctx.release or (next(existing) and ("provision-" .. os.time()) or "initial"), snapshot(specs))
  end
  local ok, err, code = ensure_images(ctx, images)
  if not ok then return nil, err, code end

  local function abort(e, c)
    undo(ctx)
    return nil, e, c
  end

  -- services no longer listed and replaced ones go first (every replica)
  local doomed = {}
  for name, a in pairs(actions) do
    if a == "remove" or a == "replace" then
      for _, c in ipairs(reps[name] or {existing[name]}) do doomed[#doomed + 1] = c.Id end
      emit(ctx, {type = "service", service = name, action = a == "remove" and "removed" or "replacing",
        container = existing[name].Id})
    end
  end
  if #doomed > 0 then
    ok, err, code = remove_containers(self.engine, doomed)
    if not ok then return nil, err, code end
  end

  ok, err, code = ensure_network(ctx)
  if not ok then return abort(err, code) end
  ok, err, code = ensure_volumes(ctx, r.services)
  if not ok then return abort(err, code) end

  local ids, counts, ready_specs = {}, {}, {}
  for name, a in pairs(actions) do
    if a == "keep" or a == "start" then
      for _, c in ipairs(reps[name] or {existing[name]}) do
        local u = replica_unit(ctx, specs[name], c.replica or 1)
        ids[u.key] = c.Id
        counts[name] = c.replica or 1
      end
    end
  end
  for _, wave in ipairs(waves) do
    local to_create, to_start = {}, {}
    for _, name in ipairs(wave) do
      local a = actions[name] or "create"
      if a == "create" or a == "replace" then
        if specs[name].role == "init" then
          ok, err, code = run_init(ctx, specs[name])
          if not ok then return abort(err, code) end
          ids[name] = ctx.created[#ctx.created]
        else
          local n = (specs[name].resources or {}).replicas or 1
          if n < 1 then n = 1 end
          counts[name] = n
          for rep = 1, n do to_create[#to_create + 1] = replica_unit(ctx, specs[name], rep) end
        end
      elseif a == "start" then
        for _, c in ipairs(reps[name] or {existing[name]}) do
          to_start[#to_start + 1] = replica_unit(ctx, specs[name], c.replica or 1).key
        end
      else
        emit(ctx, {type = "service", service = name, action = "kept", container = ids[name]})
      end
    end
    if #to_create > 0 then
      local new_ids
      new_ids, err, code = create_containers(ctx, to_create)
      if not new_ids then return abort(err, code) end
      for _, u in ipairs(to_create) do
        ids[u.key] = new_ids[u.key]
        to_start[#to_start + 1] = u.key
      end
    end
    if #to_start > 0 then
      ok, err, code = start_containers(ctx, to_start, ids)
      if not ok then return abort(err, code) end
    end
  end

  -- readiness of the long-lived services (every replica)
  local live = {}
  for _, s in ipairs(r.services) do
    if s.role ~= "init" then
      for rep = 1, counts[s.name] or 1 do
        local u = replica_unit(ctx, s, rep)
        live[u.key] = ids[u.key]
        ready_specs[u.key] = s
      end
    end
  end
  local info
  info, err, code = wait_ready(ctx, live, ready_specs)
  if not info then return abort(err, code) end

  local refs = {}
  for _, s in ipairs(r.services) do refs[s.name] = ids[s.name] end
  return {
    provider_ref = project.provider_ref(r.instance_id),
    service_refs = refs,
    endpoints = endpoints_of(r.instance_id, r.services, info, counts),
    metadata = {project = project.name(r.instance_id),
      network = project.network_name(r.instance_id)},
  }
end

function P:deprovision(instance_id)
  local ok, verr = project.validate_id(instance_id)
  if not ok then return nil, verr, "invalid" end
  local eng = self.engine
  local list, err, code = project.members(eng, instance_id)
  if not list then return nil, err, code end
  local ids = {}
  for i, c in ipairs(list) do ids[i] = c.Id end
  ok, err, code = remove_containers(eng, ids)
  if not ok then return nil, err, code end
  local filter = engine.filters({label = {LABEL.project .. "=" .. project.name(instance_id)}})
  local found = eng:batch({{path = "/networks", query = {filters = filter}},
    {path = "/volumes", query = {filters = filter}}})
  for _, r in ipairs(found) do
    if r.error then return nil, r.error, r.code end
  end
  local calls = {}
  for _, n in ipairs(found[1].value) do
    calls[#calls + 1] = {method = "DELETE", path = "/networks/" .. seg(n.Id)}
  end
  for _, v in ipairs(found[2].value.Volumes or {}) do
    calls[#calls + 1] = {method = "DELETE", path = "/volumes/" .. seg(v.Name)}
  end
  for _, r in ipairs(eng:batch(calls)) do
    if r.error and r.code ~= "not_found" then return nil, r.error, r.code end
  end
  return true
end

-- Members (long-lived ones) and the rollout waves over them.
local function live_waves(p, instance_id)
  local ok, verr = project.validate_id(instance_id)
  if not ok then return nil, verr, "invalid" end
  local pol, perr, pcode = policies(p, {"rollout"})
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
  local waves, err, code = plan_waves(pol.rollout, services)
  if not waves then return nil, err, code end
  return waves, reps
end

local function each_wave(p, waves, reps, action, query, reverse)
  local eng = p.engine
  local from, to, step = 1, #waves, 1
  if reverse then from, to, step = #waves, 1, -1 end
  for w = from, to, step do
    local calls, names = {}, {}
    for _, name in ipairs(waves[w]) do
      for _, c in ipairs(reps[name] or {}) do
        names[#names + 1] = name
        calls[#calls + 1] = {method = "POST", path = "/containers/" .. seg(c.Id) .. "/" .. action,
          query = query}
      end
    end
    for i, r in ipairs(eng:batch(calls)) do
      if r.error then
        return nil, string.format("%s service %s: %s", action, names[i], r.error), r.code
      end
    end
  end
  return true
end

function P:start(instance_id)
  local waves, reps, code = live_waves(self, instance_id)
  if not waves then return nil, reps, code end
  return each_wave(self, waves, reps, "start")
end

function P:stop(instance_id, opts)
  local waves, reps, code = live_waves(self, instance_id)
  if not waves then return nil, reps, code end
  local t = math.ceil((opts and opts.stop_timeout) or self.cfg.stop_timeout)
  return each_wave(self, waves, reps, "stop", {t = t}, true)
end

function P:restart(instance_id, opts)
  local waves, reps, code = live_waves(self, instance_id)
  if not waves then return nil, reps, code end
  local t = math.ceil((opts and opts.stop_timeout) or self.cfg.stop_timeout)
  local ok, err, ecode = each_wave(self, waves, reps, "stop", {t = t}, true)
  if not ok then return nil, err, ecode end
  return each_wave(self, waves, reps, "start")
end

local SEVERITY = {failed = 1, destroying = 2, stopping = 3, stopped = 4, provisioning = 5,
  starting = 6, running = 7, destroyed = 8}

function P:status(instance_id)
  local ok, verr = project.validate_id(instance_id)
  if not ok then return nil, verr, "invalid" end
  local pol, perr, pcode = policies(self, {"status"})
  if not pol then return nil, perr, pcode end
  local by, reps, list = members_by_service(self.engine, instance_id)
  if not by then return nil, reps, list end
  local result = {state = "destroyed", ready = false, restarts = 0, message = "",
    endpoints = json.array({}), services = json.object({}),
    metadata = {project = project.name(instance_id)}}
  if not next(by) then
    result.message = "no containers"
    return result
  end
  local ids, counts = {}, {}
  for name, l in pairs(reps) do
    counts[name] = #l
    for _, c in ipairs(l) do
      ids[c.replica == 1 and name or (name .. "_" .. c.replica)] = c.Id
    end
  end
  local ctx = {eng = self.engine}
  local info, err, code = inspect_all(ctx, ids)
  if not info then return nil, err, code end
  local agg_in, specs = {}, {}
  for _, name in ipairs(util.sorted_keys(reps)) do
    local spec = spec_of(by[name])
    spec.name = name
    specs[#specs + 1] = spec
    local entry
    for _, rc in ipairs(reps[name]) do
      local c = info[rc.replica == 1 and name or (name .. "_" .. rc.replica)]
      local st = c.State or {}
      local input = {name = name, role = spec.role, docker_state = st.Status,
        exit_code = st.ExitCode, oom_killed = st.OOMKilled or false, error = st.Error or "",
        health = st.Health and st.Health.Status, has_health_check = spec.health_check ~= nil,
        restart_policy = c.HostConfig and c.HostConfig.RestartPolicy
          and c.HostConfig.RestartPolicy.Name or "no",
        replica = rc.replica,
        restarts = c.RestartCount or 0, started_at = st.StartedAt, finished_at = st.FinishedAt}
      local s, serr, scode = policy.call(pol.status, "service", input)
      if not s then return nil, serr, scode end
      if type(s) ~= "table" then
        return nil, "policy " .. pol.status.path .. ": service must return a table", "policy"
      end
      if not entry then
        entry = {state = s.state, ready = s.ready and true or false, message = s.message or "",
          restarts = c.RestartCount or 0, provider_ref = c.Id, replicas = counts[name]}
      else -- the worst replica speaks for the service
        if (SEVERITY[s.state] or 0) < (SEVERITY[entry.state] or 0) then
          entry.state = s.state
          entry.message = string.format("replica %d: %s", rc.replica, s.message or "")
        end
        entry.ready = entry.ready and (s.ready and true or false)
        entry.restarts = entry.restarts + (c.RestartCount or 0)
      end
      local labels = c.Config and c.Config.Labels or {}
      if spec.role == "main" and rc.replica == 1 then
        if st.Running then result.started_at = st.StartedAt end
        if labels[LABEL.release] and labels[LABEL.release] ~= "" then
          result.metadata.release = labels[LABEL.release]
        end
      end
    end
    result.services[name] = entry
    agg_in[#agg_in + 1] = {name = name, role = spec.role, state = entry.state, ready = entry.ready,
      message = entry.message, restarts = entry.restarts, replicas = entry.replicas}
    result.restarts = result.restarts + entry.restarts
  end
  local agg, aerr, acode = policy.call(pol.status, "aggregate", agg_in)
  if not agg then return nil, aerr, acode end
  if type(agg) ~= "table" then
    return nil, "policy " .. pol.status.path .. ": aggregate must return a table", "policy"
  end
  result.state = agg.state
  result.ready = agg.ready and true or false
  result.message = agg.message or ""
  result.endpoints = endpoints_of(instance_id, specs, info, counts)
  result.metadata.network = project.network_name(instance_id)
  local releases = json.array({})
  for _, e in ipairs(history_of(list)) do releases[#releases + 1] = e.id end
  result.metadata.releases = table.concat(releases, ",")
  return result
end

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
    local retire_name = string.format("%s-retired-%s", u.cname, stamp)
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
        ok, err, code = wait_ready(ctx, ids, {[u.key] = s})
        if not ok then return restore("deploy of service " .. s.name .. " failed: " .. err, code) end
      end
    else
      -- start-first: the new container under a temporary name and without
      -- the service alias, so nobody is sent to it before it is ready
      local nu = {spec = s, replica = u.replica, key = u.key, no_alias = true,
        cname = string.format("%s-next-%s", u.cname, stamp)}
      local ids, err, code = create_containers(ctx, {nu})
      if not ids then return restore(err, code) end
      local ok, info
      ok, err, code = start_containers(ctx, {u.key}, ids)
      if not ok then return restore(err, code) end
      info, err, code = wait_ready(ctx, ids, {[u.key] = s})
      if not info then return restore("deploy of service " .. s.name .. " failed: " .. err, code) end
      if u.grace and u.grace > 0 and not s.health_check then
        -- no health check: it must keep running for the grace period
        core.sleep(u.grace)
        info, err, code = wait_ready(ctx, ids, {[u.key] = s})
        if not info then return restore("deploy of service " .. s.name .. " failed: " .. err, code) end
      end
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

-- What a deploy or rollback needs to know about an instance.
local function current_state(p, instance_id)
  local by, reps, list = members_by_service(p.engine, instance_id)
  if not by then return nil, reps, list end
  if not next(by) then
    return nil, "instance " .. instance_id .. " does not exist", "not_found"
  end
  local all, specs, inst = {}, {}, nil
  for name, c in pairs(by) do
    local s = spec_of(c)
    s.name = name
    all[#all + 1] = s
    specs[name] = s
    local labels = c.Labels or {}
    inst = inst or (labels[LABEL.instance_spec] and json.decode(labels[LABEL.instance_spec]))
  end
  table.sort(all, function(a, b) return a.name < b.name end)
  inst = type(inst) == "table" and inst or {instance_id = instance_id, tenant_id = "",
    labels = json.object({})}
  return {by = by, reps = reps, list = list, all = all, specs = specs, inst = inst}
end

-- Deploys changes = {name -> {image, env, health_check}} in rollout order.
local function apply_release(p, instance_id, release_id, strategy_req, changes, opts)
  local pol, perr, pcode = policies(p, {"rollout", "status"})
  if not pol then return nil, perr, pcode end
  local cur, err, code = current_state(p, instance_id)
  if not cur then return nil, err, code end
  local waves
  waves, err, code = plan_waves(pol.rollout, cur.all)
  if not waves then return nil, err, code end

  local ctx = new_ctx(p, cur.inst, {on_event = opts.on_event, release = release_id})
  local units, images, new_specs = {}, {}, {}
  for _, s in pairs(cur.specs) do new_specs[s.name] = s end
  for _, wave in ipairs(waves) do
    for _, name in ipairs(wave) do
      local d = changes[name]
      if d then
        local s = util.copy(cur.specs[name])
        if d.image then s.image = d.image end
        if d.env then s.env = d.env end
        if d.health_check then s.health_check = d.health_check end
        new_specs[name] = s
        images[#images + 1] = s.image
        local strategy = policy.call(pol.rollout, "strategy", {name = name, role = s.role,
          ports = s.ports, health_check = s.health_check},
          {strategy = strategy_req, release_id = release_id}) or "recreate"
        if strategy == "rolling" then strategy = "start-first" end
        if strategy ~= "recreate" and strategy ~= "start-first" then
          return nil, string.format("strategy %q is not supported by this runtime "
            .. "(recreate, start-first)", strategy), "invalid"
        end
        if strategy == "start-first" then
          for _, port in ipairs(s.ports or {}) do
            if port.host then strategy = "recreate" end -- a fixed host port cannot be shared
          end
        end
        for _, c in ipairs(cur.reps[name] or {cur.by[name]}) do
          local u = replica_unit(ctx, s, c.replica or 1)
          u.old, u.strategy = c, strategy
          u.grace = p.cfg.start_grace
          u.drain = p.cfg.drain
          units[#units + 1] = u
        end
      end
    end
  end
  ctx.history = record_release(history_of(cur.list), release_id, snapshot(new_specs))
  local ok
  ok, err, code = ensure_images(ctx, images)
  if not ok then return nil, err, code end

  local after
  if pol.rollout.fns.after_service then
    local total = #units
    after = function(step, u)
      local go, why = policy.call(pol.rollout, "after_service", {
        service = u.spec.name, replica = u.replica, index = step, total = total,
        release_id = release_id,
        status = function() return p:status(instance_id) end,
        sleep = function(seconds) core.sleep(math.min(seconds, 600)) end,
      })
      if go == nil and why then return nil, why, "policy" end
      if go == false then
        return nil, string.format("deploy stopped by the rollout policy after service %s: %s",
          u.spec.name, tostring(why or "no reason given")), "rollout_aborted"
      end
      return true
    end
  end
  ok, err, code = replace_units(p, ctx, units, after)
  if not ok then return nil, err, code end
  local st = p:status(instance_id)
  return {provider_ref = project.provider_ref(instance_id),
    status = st and st.state or "running", release_id = release_id}
end

-- deploy: recreate the listed services with the new image/env, keeping
-- everything else of their spec; atomic across the listed services.
function P:deploy(req, opts)
  opts = opts or {}
  if type(req) ~= "table" then return nil, "invalid request: request: expected an object", "invalid" end
  local okid, iderr = project.validate_id(req.instance_id)
  if not okid then return nil, "invalid request: " .. iderr, "invalid" end
  local by, reps, list = members_by_service(self.engine, req.instance_id)
  if not by then return nil, reps, list end
  if not next(by) then
    return nil, "instance " .. req.instance_id .. " does not exist", "not_found"
  end
  local r, verr, vcode, verrors = validate.deploy(req, by)
  if not r then return nil, verr, vcode, verrors end
  local changes = {}
  for _, d in ipairs(r.services) do changes[d.name] = d end
  return apply_release(self, req.instance_id, r.release_id or ("deploy-" .. os.time()), r.strategy,
    changes, opts)
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
  return apply_release(self, instance_id, release_id, opts.strategy, changes, opts)
end

-- scale: live CPU/memory limits on the main service (same containers) and
-- its number of replicas.
function P:scale(instance_id, spec, opts)
  opts = opts or {}
  local ok, verr = project.validate_id(instance_id)
  if not ok then return nil, verr, "invalid" end
  local rs, serr, scode, serrors = validate.resources(spec)
  if not rs then return nil, serr, scode, serrors end
  local cur, err, code = current_state(self, instance_id)
  if not cur then return nil, err, code end
  local main
  for _, s in ipairs(cur.all) do
    if s.role == "main" then main = s end
  end
  if not main then return nil, "instance " .. instance_id .. " has no main service", "not_found" end
  local eng = self.engine
  local reps = cur.reps[main.name] or {cur.by[main.name]}

  -- limits, live, on the containers there are
  local res = util.copy(main.resources or {})
  local update = {}
  if rs.cpu_millis then
    res.cpu_millis = rs.cpu_millis
    update.NanoCpus = rs.cpu_millis * 1000000
  end
  if rs.memory_mb then
    res.memory_mb = rs.memory_mb
    update.Memory = rs.memory_mb * 1048576
    update.MemorySwap = rs.memory_mb > 0 and 2 * rs.memory_mb * 1048576 or -1
  end
  if next(update) then
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
  end

  local want = rs.replicas
  if not want or want == #reps then return true end
  if want > #reps then
    for _, port in ipairs(main.ports or {}) do
      if port.host then
        return nil, string.format("replicas: service %s publishes the fixed host port %d, which "
          .. "%d replicas cannot share", main.name, port.host, want), "invalid"
      end
    end
    local s = util.copy(main)
    s.resources = res
    local ctx = new_ctx(self, cur.inst, {on_event = opts.on_event,
      release = (cur.by[main.name].Labels or {})[LABEL.release]})
    ctx.history = (cur.by[main.name].Labels or {})[LABEL.releases]
    local units, keys = {}, {}
    for rep = #reps + 1, want do
      local u = replica_unit(ctx, s, rep)
      units[#units + 1] = u
      keys[#keys + 1] = u.key
    end
    local ids
    ids, err, code = create_containers(ctx, units)
    if ids then
      ok, err, code = start_containers(ctx, keys, ids)
      if ok then
        local specs = {}
        for _, k in ipairs(keys) do specs[k] = s end
        ok, err, code = wait_ready(ctx, ids, specs)
      end
    end
    if not ids or not ok then
      remove_containers(eng, ctx.created)
      return nil, "scaling " .. main.name .. " up: " .. err, code
    end
    return true
  end
  -- down: the newest replicas go first
  local doomed = {}
  for i = #reps, want + 1, -1 do doomed[#doomed + 1] = reps[i].Id end
  return remove_containers(eng, doomed)
end

function lifecycle.install(M)
  for k, fn in pairs(P) do M.Provider[k] = fn end
  M.register_capabilities({"provision", "deploy", "rollback", "scale", "volumes",
    "strategy:recreate", "strategy:rolling"})
end

-- for specs
lifecycle._fnv1a = fnv1a
lifecycle._frames_to_text = frames_to_text
lifecycle._container_body = container_body
lifecycle._split_ref = split_ref
lifecycle._image_ref = image_ref
lifecycle._record_release = record_release

return lifecycle
