-- Pure spec building (no Docker): the body of POST /containers/create for
-- a service, its health check, the spec hash that decides whether a
-- container is up to date, and the endpoints of a running project.
local image = require("ctrlplane.docker.image")
local json = require("ctrlplane.docker.json")
local project = require("ctrlplane.docker.project")
local util = require("ctrlplane.docker.util")

local LABEL = project.LABEL
local image_ref = image.image_ref

-- FNV-1a, 64 bit: a stable fingerprint of an applied spec.
local function fnv1a(s)
  local h = 0xcbf29ce484222325
  for i = 1, #s do
    h = (h ~ s:byte(i)) * 0x100000001b3
  end
  return string.format("%016x", h)
end

local function stored_service(svc)
  local s = util.copy(svc)
  s.field = nil
  return s
end

local function instance_info(r)
  return {instance_id = r.instance_id, tenant_id = r.tenant_id or "", name = r.name or "",
    kind = r.kind or "deployment", labels = r.labels or json.object({})}
end

-- secret_digest: material.resolve's digest of the service's secret values
-- (nil without secrets, which keeps the hash services had before secrets).
local function spec_hash(cfg, inst, svc, secret_digest)
  return fnv1a(json.encode({inst = inst, svc = stored_service(svc), image = image_ref(cfg, svc.image),
    network = cfg.network or "", publish = cfg.publish_address, secrets = secret_digest}))
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

-- The volume a persistent VolumeSpec mounts for replica n: kind
-- stateful_set gives each replica its own, deployment shares one.
local function volume_source(inst, v, replica)
  if inst.kind == "stateful_set" then
    return project.volume_name(inst.instance_id, v.name, replica or 1)
  end
  return project.volume_name(inst.instance_id, v.name)
end

-- The body of POST /containers/create for one service (replica n of it).
-- extra (optional): {material = material.resolve's result (secret env and
-- digest), limits = {cpu_millis, memory_mb} a scale laid over the spec,
-- host_ports = {"8080/tcp" = 32768} host ports to publish on where the
-- spec gives none (a deploy keeping a service's ports)}.
local function container_body(cfg, inst, svc, release, replica, history, no_alias, extra)
  extra = extra or {}
  local m = extra.material
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
  labels[LABEL.spec_hash] = spec_hash(cfg, inst, svc, m and m.digest)
  labels[LABEL.replica] = tostring(replica or 1)
  if history then labels[LABEL.releases] = history end

  local env = json.array({})
  for _, k in ipairs(util.sorted_keys(svc.env or {})) do env[#env + 1] = k .. "=" .. svc.env[k] end
  for _, k in ipairs(util.sorted_keys(m and m.env or {})) do env[#env + 1] = k .. "=" .. m.env[k] end

  local exposed, bindings = {}, {}
  for _, p in ipairs(svc.ports or {}) do
    local key = port_key(p)
    exposed[key] = json.object({})
    local hp = p.host or (extra.host_ports and extra.host_ports[key])
    bindings[key] = {{HostIp = cfg.publish_address, HostPort = hp and tostring(hp) or ""}}
  end

  local mounts = json.array({})
  for _, v in ipairs(svc.volumes or {}) do
    if v.type == "ephemeral" then
      local t = {Type = "tmpfs", Target = v.mount_path}
      if v.size_mb and v.size_mb > 0 then t.TmpfsOptions = {SizeBytes = v.size_mb * 1048576} end
      mounts[#mounts + 1] = t
    else
      mounts[#mounts + 1] = {Type = "volume", Source = volume_source(inst, v, replica),
        Target = v.mount_path}
    end
  end

  local res = svc.resources or {}
  if extra.limits then
    res = util.copy(res)
    for k, v in pairs(extra.limits) do res[k] = v end
  end
  local net = project.network_name(inst.instance_id)
  local host = {
    NetworkMode = net,
    RestartPolicy = {Name = svc.role == "init" and "no" or "unless-stopped"},
    PortBindings = bindings,
    Mounts = mounts,
  }
  if res.cpu_millis and res.cpu_millis > 0 then host.NanoCpus = res.cpu_millis * 1000000 end
  if res.memory_mb and res.memory_mb > 0 then host.Memory = res.memory_mb * 1048576 end
  -- disk_mb: validate.against_host let it through only where the storage
  -- driver can enforce it (the daemon's own error covers overlay2 on xfs
  -- without pquota)
  if res.disk_mb and res.disk_mb > 0 then host.StorageOpt = {size = res.disk_mb .. "M"} end

  local body = {
    -- no Hostname: Docker makes the hostname a network alias, and the
    -- service alias must stay under the runtime's control (start-first)
    -- a release restored by rollback runs exactly the image it ran (its ID)
    Image = svc.image_id or image_ref(cfg, svc.image),
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

-- The host a client uses for a port published on `ip` (what Docker reports
-- as the binding's HostIp, i.e. CP_DOCKER_PUBLISH_ADDRESS): that address
-- itself; for every interface (0.0.0.0, ::) the daemon's host when it is a
-- tcp:// daemon, else 127.0.0.1. Never "localhost", which may resolve to ::1
-- while the port listens on 127.0.0.1. IPv6 goes in brackets.
local function public_host(cfg, ip)
  if ip == nil or ip == "" or ip == "0.0.0.0" or ip == "::" then
    local h = cfg and cfg.host and (cfg.host:match("^tcp://([^/]+)")
      or cfg.host:match("^https?://([^/]+)"))
    ip = h and (h:match("^%[(.-)%]") or h:match("^([^:]+)")) or "127.0.0.1"
  end
  if ip:find(":", 1, true) then return "[" .. ip .. "]" end
  return ip
end

-- Whether a deploy keeps service s's host ports (CP_DOCKER_KEEP_HOST_PORTS:
-- "*" every service, or a comma list of names): only ports without a fixed
-- `host` are concerned, those already keep theirs.
local function keeps_host_ports(cfg, s)
  local keep = cfg.keep_host_ports
  if not keep or not (keep["*"] or keep[s.name]) then return false end
  for _, p in ipairs(s.ports or {}) do
    if not p.host then return true end
  end
  return false
end

-- The host ports a running container holds: {"8080/tcp" = 32768}, from a
-- /containers/json entry (Ports) or an inspect document.
local function bound_ports(c)
  local out = {}
  for _, p in ipairs(c.Ports or {}) do
    if p.PublicPort and p.PrivatePort then
      out[string.format("%d/%s", p.PrivatePort, p.Type or "tcp")] = math.tointeger(p.PublicPort)
    end
  end
  local ns = c.NetworkSettings and c.NetworkSettings.Ports
  for key, b in pairs(type(ns) == "table" and ns or {}) do
    if type(b) == "table" and b[1] and tonumber(b[1].HostPort) then
      out[key] = math.tointeger(tonumber(b[1].HostPort))
    end
  end
  return out
end

-- Endpoints of every replica of every service. info: key -> inspect.
-- cfg: the provider's configuration (public URLs, above).
local function endpoints_of(inst_id, specs, info, counts, cfg)
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
        local c = info[project.replica_key(svc.name, r)]
        local bound = c and c.NetworkSettings and c.NetworkSettings.Ports
          and c.NetworkSettings.Ports[port_key(p)]
        local hp = type(bound) == "table" and bound[1] and tonumber(bound[1].HostPort)
        if hp then
          out[#out + 1] = {service_name = svc.name, port = math.tointeger(hp), protocol = p.protocol,
            public = true, url = string.format("%s://%s:%d", scheme,
              public_host(cfg, bound[1].HostIp), hp)}
        end
      end
    end
  end
  return out
end

return {
  fnv1a = fnv1a,
  stored_service = stored_service,
  instance_info = instance_info,
  spec_hash = spec_hash,
  volume_source = volume_source,
  port_key = port_key,
  healthcheck = healthcheck,
  container_body = container_body,
  endpoints_of = endpoints_of,
  public_host = public_host,
  keeps_host_ports = keeps_host_ports,
  bound_ports = bound_ports,
}
