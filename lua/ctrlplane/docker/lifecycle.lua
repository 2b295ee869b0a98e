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

-- The body of POST /containers/create for one service.
local function container_body(cfg, inst, svc, release)
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
    Image = image_ref(cfg, svc.image),
    Hostname = svc.name,
    Env = env,
    Labels = labels,
    ExposedPorts = exposed,
    HostConfig = host,
    NetworkingConfig = {EndpointsConfig = {[net] = {Aliases = {svc.name}}}},
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
  local created, cerr, ccode = ctx.eng:post("/networks/create", nil, {
    Name = name, Driver = "bridge", CheckDuplicate = true,
    Labels = {[LABEL.instance] = ctx.inst.instance_id,
      [LABEL.project] = project.name(ctx.inst.instance_id),
      [LABEL.tenant] = ctx.inst.tenant_id or ""},
  })
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

-- Creates the containers of svcs at once; records them in ctx.created.
local function create_containers(ctx, svcs)
  local calls = {}
  for i, svc in ipairs(svcs) do
    calls[i] = {method = "POST", path = "/containers/create",
      query = {name = project.container_name(ctx.inst.instance_id, svc.name)},
      body = container_body(ctx.cfg, ctx.inst, svc, ctx.release)}
  end
  local ids, first_err, first_code = {}, nil, nil
  for i, r in ipairs(ctx.eng:batch(calls)) do
    if r.value then
      ids[svcs[i].name] = r.value.Id
      ctx.created[#ctx.created + 1] = r.value.Id
      emit(ctx, {type = "service", service = svcs[i].name, action = "created",
        container = r.value.Id})
    elseif not first_err then
      first_err = string.format("creating service %s: %s", svcs[i].name, r.error)
      first_code = r.code
    end
  end
  if first_err then return fail(first_err, first_code) end
  if ctx.cfg.network then
    local conn = {}
    for i, svc in ipairs(svcs) do
      conn[i] = {method = "POST", path = "/networks/" .. seg(ctx.cfg.network) .. "/connect",
        body = {Container = ids[svc.name]}}
    end
    for i, r in ipairs(ctx.eng:batch(conn)) do
      if r.error then
        return fail(string.format("connecting service %s to network %s: %s", svcs[i].name,
          ctx.cfg.network, r.error), r.code)
      end
    end
  end
  return ids
end

local function start_containers(ctx, names, ids)
  local calls = {}
  for i, name in ipairs(names) do
    calls[i] = {method = "POST", path = "/containers/" .. seg(ids[name]) .. "/start"}
  end
  for i, r in ipairs(ctx.eng:batch(calls)) do
    if r.error then
      return fail(string.format("starting service %s: %s", names[i], r.error), r.code)
    end
    emit(ctx, {type = "service", service = names[i], action = "started", container = ids[names[i]]})
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

local function endpoints_of(inst_id, specs, info)
  local out = json.array({})
  for _, svc in ipairs(specs) do
    local c = info[svc.name]
    for _, p in ipairs(svc.ports or {}) do
      local scheme = p.protocol == "udp" and "udp" or "http"
      out[#out + 1] = {service_name = svc.name, port = p.container, protocol = p.protocol,
        public = false,
        url = string.format("%s://%s:%d", scheme, project.container_name(inst_id, svc.name),
          p.container)}
      local bound = c and c.NetworkSettings and c.NetworkSettings.Ports
        and c.NetworkSettings.Ports[port_key(p)]
      local hp = type(bound) == "table" and bound[1] and tonumber(bound[1].HostPort)
      if hp then
        out[#out + 1] = {service_name = svc.name, port = math.tointeger(hp), protocol = p.protocol,
          public = true, url = string.format("%s://localhost:%d", scheme, hp)}
      end
    end
  end
  return out
end

-- Members of the project grouped by service: the container with the
-- canonical name wins over leftovers of an interrupted deploy.
local function members_by_service(eng, inst_id)
  local list, err, code = project.members(eng, inst_id)
  if not list then return nil, err, code end
  local by = {}
  for _, c in ipairs(list) do
    local svc = project.service_of(c)
    if svc then
      local canonical = "/" .. project.container_name(inst_id, svc)
      local names = c.Names or {}
      local is_canonical = names[1] == canonical
      if not by[svc] or is_canonical then
        by[svc] = c
        c.canonical = is_canonical
      end
    end
  end
  return by, list
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
  local existing, merr, mcode = members_by_service(self.engine, r.instance_id)
  if not existing then return nil, merr, mcode end
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

  local images = {}
  for _, s in ipairs(r.services) do
    local a = actions[s.name] or "create"
    if a == "create" or a == "replace" then images[#images + 1] = s.image end
  end
  local ok, err, code = ensure_images(ctx, images)
  if not ok then return nil, err, code end

  local function abort(e, c)
    undo(ctx)
    return nil, e, c
  end

  -- services no longer listed and replaced ones go first
  local doomed = {}
  for name, a in pairs(actions) do
    if a == "remove" or a == "replace" then
      doomed[#doomed + 1] = existing[name].Id
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

  local ids = {}
  for name, c in pairs(existing) do
    local a = actions[name]
    if a == "keep" or a == "start" then ids[name] = c.Id end
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
          to_create[#to_create + 1] = specs[name]
        end
      elseif a == "start" then
        to_start[#to_start + 1] = name
      else
        emit(ctx, {type = "service", service = name, action = "kept", container = ids[name]})
      end
    end
    if #to_create > 0 then
      local new_ids
      new_ids, err, code = create_containers(ctx, to_create)
      if not new_ids then return abort(err, code) end
      for _, s in ipairs(to_create) do
        ids[s.name] = new_ids[s.name]
        to_start[#to_start + 1] = s.name
      end
    end
    if #to_start > 0 then
      ok, err, code = start_containers(ctx, to_start, ids)
      if not ok then return abort(err, code) end
    end
  end

  -- readiness of the long-lived services
  local live = {}
  for _, s in ipairs(r.services) do
    if s.role ~= "init" then live[s.name] = ids[s.name] end
  end
  local info
  info, err, code = wait_ready(ctx, live, specs)
  if not info then return abort(err, code) end

  local refs = {}
  for name, id in pairs(ids) do refs[name] = id end
  return {
    provider_ref = project.provider_ref(r.instance_id),
    service_refs = refs,
    endpoints = endpoints_of(r.instance_id, r.services, info),
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
  local by, err, code = members_by_service(p.engine, instance_id)
  if not by then return nil, err, code end
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
  local waves
  waves, err, code = plan_waves(pol.rollout, services)
  if not waves then return nil, err, code end
  return waves, by
end

local function each_wave(p, waves, by, action, query, reverse)
  local eng = p.engine
  local from, to, step = 1, #waves, 1
  if reverse then from, to, step = #waves, 1, -1 end
  for w = from, to, step do
    local calls, names = {}, {}
    for _, name in ipairs(waves[w]) do
      names[#names + 1] = name
      calls[#calls + 1] = {method = "POST", path = "/containers/" .. seg(by[name].Id) .. "/" .. action,
        query = query}
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
  local waves, by, code = live_waves(self, instance_id)
  if not waves then return nil, by, code end
  return each_wave(self, waves, by, "start")
end

function P:stop(instance_id, opts)
  local waves, by, code = live_waves(self, instance_id)
  if not waves then return nil, by, code end
  local t = math.ceil((opts and opts.stop_timeout) or self.cfg.stop_timeout)
  return each_wave(self, waves, by, "stop", {t = t}, true)
end

function P:restart(instance_id, opts)
  local waves, by, code = live_waves(self, instance_id)
  if not waves then return nil, by, code end
  local t = math.ceil((opts and opts.stop_timeout) or self.cfg.stop_timeout)
  local ok, err, ecode = each_wave(self, waves, by, "stop", {t = t}, true)
  if not ok then return nil, err, ecode end
  return each_wave(self, waves, by, "start")
end

function P:status(instance_id)
  local ok, verr = project.validate_id(instance_id)
  if not ok then return nil, verr, "invalid" end
  local pol, perr, pcode = policies(self, {"status"})
  if not pol then return nil, perr, pcode end
  local by, err, code = members_by_service(self.engine, instance_id)
  if not by then return nil, err, code end
  local result = {state = "destroyed", ready = false, restarts = 0, message = "",
    endpoints = json.array({}), services = json.object({}),
    metadata = {project = project.name(instance_id)}}
  if not next(by) then
    result.message = "no containers"
    return result
  end
  local ids = {}
  for name, c in pairs(by) do ids[name] = c.Id end
  local ctx = {eng = self.engine}
  local info
  info, err, code = inspect_all(ctx, ids)
  if not info then return nil, err, code end
  local list, specs = {}, {}
  for _, name in ipairs(util.sorted_keys(info)) do
    local c = info[name]
    local st = c.State or {}
    local spec = spec_of(c)
    spec.name = name
    specs[#specs + 1] = spec
    local input = {name = name, role = spec.role, docker_state = st.Status,
      exit_code = st.ExitCode, oom_killed = st.OOMKilled or false, error = st.Error or "",
      health = st.Health and st.Health.Status, has_health_check = spec.health_check ~= nil,
      restart_policy = c.HostConfig and c.HostConfig.RestartPolicy
        and c.HostConfig.RestartPolicy.Name or "no",
      restarts = c.RestartCount or 0, started_at = st.StartedAt, finished_at = st.FinishedAt}
    local s, serr, scode = policy.call(pol.status, "service", input)
    if not s then return nil, serr, scode end
    if type(s) ~= "table" then
      return nil, "policy " .. pol.status.path .. ": service must return a table", "policy"
    end
    local entry = {state = s.state, ready = s.ready and true or false, message = s.message or "",
      restarts = c.RestartCount or 0, provider_ref = c.Id}
    result.services[name] = entry
    list[#list + 1] = {name = name, role = spec.role, state = entry.state, ready = entry.ready,
      message = entry.message, restarts = entry.restarts}
    result.restarts = result.restarts + entry.restarts
    local labels = c.Config and c.Config.Labels or {}
    if spec.role == "main" then
      if st.Running then result.started_at = st.StartedAt end
      if labels[LABEL.release] and labels[LABEL.release] ~= "" then
        result.metadata.release = labels[LABEL.release]
      end
    end
  end
  local agg, aerr, acode = policy.call(pol.status, "aggregate", list)
  if not agg then return nil, aerr, acode end
  if type(agg) ~= "table" then
    return nil, "policy " .. pol.status.path .. ": aggregate must return a table", "policy"
  end
  result.state = agg.state
  result.ready = agg.ready and true or false
  result.message = agg.message or ""
  result.endpoints = endpoints_of(instance_id, specs, info)
  result.metadata.network = project.network_name(instance_id)
  return result
end

-- deploy: recreate the listed services with the new image/env, keeping
-- everything else of their spec; atomic across the listed services.
function P:deploy(req, opts)
  opts = opts or {}
  if type(req) ~= "table" then return nil, "invalid request: request: expected an object", "invalid" end
  local okid, iderr = project.validate_id(req.instance_id)
  if not okid then return nil, "invalid request: " .. iderr, "invalid" end
  local pol, perr, pcode = policies(self, {"rollout", "status"})
  if not pol then return nil, perr, pcode end
  local by, err, code = members_by_service(self.engine, req.instance_id)
  if not by then return nil, err, code end
  if not next(by) then
    return nil, "instance " .. req.instance_id .. " does not exist", "not_found"
  end
  local r, verr, vcode, verrors = validate.deploy(req, by)
  if not r then return nil, verr, vcode, verrors end

  -- the full spec set, for the order
  local all, specs = {}, {}
  local inst
  for name, c in pairs(by) do
    local s = spec_of(c)
    s.name = name
    all[#all + 1] = s
    specs[name] = s
    local labels = c.Labels or {}
    inst = inst or (labels[LABEL.instance_spec] and json.decode(labels[LABEL.instance_spec]))
  end
  table.sort(all, function(a, b) return a.name < b.name end)
  inst = type(inst) == "table" and inst or {instance_id = req.instance_id, tenant_id = "",
    labels = json.object({})}
  local waves
  waves, err, code = plan_waves(pol.rollout, all)
  if not waves then return nil, err, code end

  local changes = {}
  for _, d in ipairs(r.services) do changes[d.name] = d end
  local order, new_specs, images = {}, {}, {}
  for _, wave in ipairs(waves) do
    for _, name in ipairs(wave) do
      local d = changes[name]
      if d then
        local s = util.copy(specs[name])
        if d.image then s.image = d.image end
        if d.env then s.env = d.env end
        if d.health_check then s.health_check = d.health_check end
        new_specs[name] = s
        order[#order + 1] = name
        images[#images + 1] = s.image
        local strategy = policy.call(pol.rollout, "strategy", {name = name, role = s.role,
          ports = s.ports}, {strategy = r.strategy, release_id = r.release_id}) or "recreate"
        if strategy ~= "recreate" and strategy ~= "rolling" then
          return nil, string.format("strategy %q is not supported by this runtime (use recreate)",
            strategy), "invalid"
        end
      end
    end
  end

  local ctx = new_ctx(self, inst, {on_event = opts.on_event, release = r.release_id})
  local ok
  ok, err, code = ensure_images(ctx, images)
  if not ok then return nil, err, code end

  -- retire the old containers (renamed, stopped) but keep them until every
  -- new one is ready, so a failure can put them back
  local retired = {}
  local function restore(e, c)
    remove_containers(self.engine, ctx.created)
    for i = #retired, 1, -1 do
      local old = retired[i]
      self.engine:post("/containers/" .. seg(old.id) .. "/rename", {name = old.name})
      if old.running then self.engine:post("/containers/" .. seg(old.id) .. "/start") end
    end
    return nil, e .. (#retired > 0 and " (previous containers restored)" or ""), c
  end
  local t = math.ceil(self.cfg.stop_timeout)
  for step, name in ipairs(order) do
    local old = by[name]
    local canonical = project.container_name(req.instance_id, name)
    local tmp = string.format("%s-retired-%x", canonical, math.floor(core.walltime() * 1000))
    local done, rerr, rcode = self.engine:post("/containers/" .. seg(old.Id) .. "/rename",
      {name = tmp})
    if not done then return restore("retiring service " .. name .. ": " .. rerr, rcode) end
    retired[#retired + 1] = {id = old.Id, name = canonical, running = old.State == "running"}
    done, rerr, rcode = self.engine:post("/containers/" .. seg(old.Id) .. "/stop", {t = t})
    if not done then return restore("stopping service " .. name .. ": " .. rerr, rcode) end
    emit(ctx, {type = "service", service = name, action = "stopped", container = old.Id})
    local s = new_specs[name]
    if s.role == "init" then
      ok, err, code = run_init(ctx, s)
      if not ok then return restore(err, code) end
    else
      local ids
      ids, err, code = create_containers(ctx, {s})
      if not ids then return restore(err, code) end
      ok, err, code = start_containers(ctx, {name}, ids)
      if not ok then return restore(err, code) end
      ok, err, code = wait_ready(ctx, ids, {[name] = s})
      if not ok then return restore("deploy of service " .. name .. " failed: " .. err, code) end
    end
    -- the rollout policy may pause here, look at the instance, and stop the deploy
    if pol.rollout.fns.after_service then
      local provider = self
      local go, why = policy.call(pol.rollout, "after_service", {
        service = name, index = step, total = #order, release_id = r.release_id,
        status = function() return provider:status(req.instance_id) end,
        sleep = function(seconds) core.sleep(math.min(seconds, 600)) end,
      })
      if go == nil and why then return restore(why, "policy") end
      if go == false then
        return restore(string.format("deploy stopped by the rollout policy after service %s: %s",
          name, tostring(why or "no reason given")), "rollout_aborted")
      end
    end
  end
  local old_ids = {}
  for i, old in ipairs(retired) do old_ids[i] = old.id end
  remove_containers(self.engine, old_ids)
  local st = self:status(req.instance_id)
  return {provider_ref = project.provider_ref(req.instance_id),
    status = st and st.state or "running", release_id = r.release_id}
end

function lifecycle.install(M)
  for k, fn in pairs(P) do M.Provider[k] = fn end
  M.register_capabilities({"provision", "deploy", "volumes", "strategy:recreate"})
end

-- for specs
lifecycle._fnv1a = fnv1a
lifecycle._frames_to_text = frames_to_text
lifecycle._container_body = container_body
lifecycle._split_ref = split_ref
lifecycle._image_ref = image_ref

return lifecycle
