-- Validation of ProvisionRequest and DeployRequest before anything touches
-- the engine. Every error names its field the way a Go control plane would
-- see it: services[2].ports[0].container (indices from 0).
--
--   validate.provision(req) -> normalized request | nil, message, "invalid", errors
--   validate.deploy(req)    -> normalized request | nil, message, "invalid", errors
local config = require("ctrlplane.docker.config")
local graph = require("ctrlplane.docker.graph")
local project = require("ctrlplane.docker.project")

local validate = {}

validate.SERVICE_NAME = "^[a-z0-9][a-z0-9-]*$"
validate.SERVICE_NAME_MAX = 63
validate.VOLUME_NAME = "^[a-z0-9][a-z0-9_.-]*$"
validate.ENV_KEY = "^[A-Za-z_][A-Za-z0-9_]*$"
validate.LABEL_KEY = "^[%w][%w%._/%-]*$"
validate.IMAGE_REF = "^[%w][%w%._/:@%-]*$"
validate.ROLES = {main = true, sidecar = true, init = true}
validate.KINDS = {deployment = true, stateful_set = true}
validate.VOLUME_TYPES = {persistent = true, ephemeral = true}
validate.STRATEGIES = {recreate = true, rolling = true, ["start-first"] = true,
  ["blue-green"] = true}
-- Docker refuses memory limits below 6 MiB
validate.MIN_MEMORY_MB = 6
validate.MAX_SERVICES = 64

local Errors = {}
Errors.__index = Errors

local function new_errors()
  return setmetatable({list = {}}, Errors)
end

function Errors:add(field, fmt, ...)
  self.list[#self.list + 1] = {field = field, message = string.format(fmt, ...)}
end

function Errors:result(value)
  if #self.list == 0 then return value end
  local parts = {}
  for i, e in ipairs(self.list) do parts[i] = e.field .. ": " .. e.message end
  return nil, "invalid request: " .. table.concat(parts, "; "), "invalid", self.list
end

local function is_list(t)
  if type(t) ~= "table" then return false end
  local n = 0
  for _ in pairs(t) do n = n + 1 end
  return n == #t
end

local function show(v)
  if type(v) == "string" then return string.format("%q", v) end
  return tostring(v)
end

local function check_type(errs, field, v, ty)
  if v == nil then return false end
  if type(v) ~= ty then
    errs:add(field, "expected a %s, got %s", ty, type(v))
    return false
  end
  return true
end

local function check_int(errs, field, v, lo, hi)
  if v == nil then return true end
  if type(v) ~= "number" or v ~= math.floor(v) then
    errs:add(field, "expected an integer, got %s", show(v))
    return false
  end
  if v < lo or v > hi then
    errs:add(field, "must be an integer from %d to %d (got %s)", lo, hi, show(v))
    return false
  end
  return true
end

local function check_map(errs, field, m, key_pattern, key_what)
  if not check_type(errs, field, m, "table") then return end
  for k, v in pairs(m) do
    if type(k) ~= "string" or not k:match(key_pattern) then
      errs:add(field .. "[" .. show(k) .. "]", "invalid %s", key_what)
    elseif type(v) ~= "string" then
      errs:add(field .. "." .. k, "expected a string value, got %s", type(v))
    end
  end
end

local function check_string_list(errs, field, v)
  if v == nil then return end
  if not is_list(v) then
    errs:add(field, "expected a list of strings")
    return
  end
  for i, s in ipairs(v) do
    if type(s) ~= "string" then
      errs:add(string.format("%s[%d]", field, i - 1), "expected a string, got %s", type(s))
    end
  end
end

local function check_duration(errs, field, v)
  if v == nil then return nil end
  local s, err = config.seconds(v, field)
  if not s then
    errs:add(field, "%s", (err:gsub("^[^:]*: ", "")))
    return nil
  end
  return s
end

-- Validates and normalizes a health_check; returns the normalized table.
local function check_health(errs, field, h)
  if not check_type(errs, field, h, "table") then return nil end
  local out = {}
  if h.path ~= nil then
    if type(h.path) ~= "string" or h.path:sub(1, 1) ~= "/" or h.path:find("[%s\"'`$\\]") then
      errs:add(field .. ".path", "must be an absolute URL path without spaces or quotes (got %s)",
        show(h.path))
    else
      out.path = h.path
    end
  end
  if h.port == nil then
    errs:add(field .. ".port", "is required (the container port to check)")
  elseif check_int(errs, field .. ".port", h.port, 1, 65535) then
    out.port = math.tointeger(h.port)
  end
  out.interval = check_duration(errs, field .. ".interval", h.interval)
  out.timeout = check_duration(errs, field .. ".timeout", h.timeout)
  if check_int(errs, field .. ".retries", h.retries, 0, 100) and h.retries then
    out.retries = math.tointeger(h.retries)
  end
  return out
end

local function check_resources(errs, field, r)
  if not check_type(errs, field, r, "table") then return nil end
  local out = {}
  for _, k in ipairs({"cpu_millis", "memory_mb", "disk_mb", "replicas", "gpu"}) do
    if check_int(errs, field .. "." .. k, r[k], 0, 1 << 40) and r[k] then
      out[k] = math.tointeger(r[k])
    end
  end
  if out.memory_mb and out.memory_mb > 0 and out.memory_mb < validate.MIN_MEMORY_MB then
    errs:add(field .. ".memory_mb", "Docker's minimum memory limit is %d MB (got %d)",
      validate.MIN_MEMORY_MB, out.memory_mb)
  end
  if r.replicas ~= nil and out.replicas and out.replicas < 1 then
    errs:add(field .. ".replicas", "must be at least 1 (got %d)", out.replicas)
  end
  if out.gpu and out.gpu > 0 then
    errs:add(field .. ".gpu", "GPUs are not supported by this provider")
  end
  return out
end

local function check_service(errs, f, s, seen_names)
  local out = {}
  if type(s) ~= "table" then
    errs:add(f, "expected an object, got %s", type(s))
    return nil
  end
  if type(s.name) ~= "string" or s.name == "" then
    errs:add(f .. ".name", "is required")
  elseif #s.name > validate.SERVICE_NAME_MAX or not s.name:match(validate.SERVICE_NAME)
      or s.name:sub(-1) == "-" then
    errs:add(f .. ".name", "%s is not DNS-safe (lowercase letters, digits and '-', "
      .. "starting and ending with a letter or digit, at most %d characters)",
      show(s.name), validate.SERVICE_NAME_MAX)
  elseif seen_names[s.name] then
    errs:add(f .. ".name", "duplicate service name %s (also %s)", show(s.name), seen_names[s.name])
  else
    seen_names[s.name] = f
    out.name = s.name
  end
  if s.image == nil or s.image == "" then
    errs:add(f .. ".image", "is required")
  elseif type(s.image) ~= "string" or not s.image:match(validate.IMAGE_REF) then
    errs:add(f .. ".image", "%s is not a valid image reference", show(s.image))
  else
    out.image = s.image
  end
  local role = s.role
  if role == nil or role == "" then role = "main" end
  if not validate.ROLES[role] then
    errs:add(f .. ".role", "must be main, sidecar or init (got %s)", show(s.role))
  end
  out.role = role
  out.depends_on = {}
  if s.depends_on ~= nil then
    check_string_list(errs, f .. ".depends_on", s.depends_on)
    if is_list(s.depends_on) then
      for i, d in ipairs(s.depends_on) do
        if type(d) == "string" then out.depends_on[i] = d end
      end
    end
  end
  if s.resources ~= nil then out.resources = check_resources(errs, f .. ".resources", s.resources) end
  if s.env ~= nil then
    check_map(errs, f .. ".env", s.env, validate.ENV_KEY,
      "environment variable name (letters, digits, '_'; not starting with a digit)")
    out.env = s.env
  end
  out.ports = {}
  if s.ports ~= nil then
    if not is_list(s.ports) then
      errs:add(f .. ".ports", "expected a list")
    else
      for i, p in ipairs(s.ports) do
        local pf = string.format("%s.ports[%d]", f, i - 1)
        if type(p) ~= "table" then
          errs:add(pf, "expected an object, got %s", type(p))
        else
          local port = {}
          if p.container == nil then
            errs:add(pf .. ".container", "is required")
          elseif check_int(errs, pf .. ".container", p.container, 1, 65535) then
            port.container = math.tointeger(p.container)
          end
          if check_int(errs, pf .. ".host", p.host, 0, 65535) and p.host and p.host ~= 0 then
            port.host = math.tointeger(p.host)
          end
          local proto = p.protocol
          if proto == nil or proto == "" then proto = "tcp" end
          if type(proto) == "string" then proto = proto:lower() end
          if proto ~= "tcp" and proto ~= "udp" then
            errs:add(pf .. ".protocol", "must be tcp or udp (got %s)", show(p.protocol))
            proto = "tcp" -- reported above; keeps the checks below well-typed
          end
          port.protocol = proto
          out.ports[#out.ports + 1] = port
        end
      end
    end
  end
  out.volumes = {}
  if s.volumes ~= nil then
    if not is_list(s.volumes) then
      errs:add(f .. ".volumes", "expected a list")
    else
      for i, v in ipairs(s.volumes) do
        local vf = string.format("%s.volumes[%d]", f, i - 1)
        if type(v) ~= "table" then
          errs:add(vf, "expected an object, got %s", type(v))
        else
          local vol = {}
          if type(v.name) ~= "string" or not v.name:match(validate.VOLUME_NAME) or #v.name > 63 then
            errs:add(vf .. ".name", "%s is not a valid volume name (lowercase letters, digits, "
              .. "'_', '.', '-')", show(v.name))
          else
            vol.name = v.name
          end
          if type(v.mount_path) ~= "string" or v.mount_path:sub(1, 1) ~= "/"
              or v.mount_path:find("[,:%c]") then
            errs:add(vf .. ".mount_path", "must be an absolute path without ',' or ':' (got %s)",
              show(v.mount_path))
          else
            vol.mount_path = v.mount_path
          end
          if check_int(errs, vf .. ".size_mb", v.size_mb, 0, 1 << 30) then
            vol.size_mb = v.size_mb and math.tointeger(v.size_mb) or nil
          end
          local ty = v.type
          if ty == nil or ty == "" then ty = "persistent" end
          if not validate.VOLUME_TYPES[ty] then
            errs:add(vf .. ".type", "must be persistent or ephemeral (got %s)", show(v.type))
          end
          vol.type = ty
          out.volumes[#out.volumes + 1] = vol
        end
      end
    end
  end
  if s.health_check ~= nil then
    out.health_check = check_health(errs, f .. ".health_check", s.health_check)
  end
  local n = out.resources and out.resources.replicas
  if n and n > 1 then
    if role ~= "main" then
      errs:add(f .. ".resources.replicas", "only the main service can run replicas (got %d for a %s)",
        n, role)
    end
    for j, p in ipairs(out.ports) do
      if p.host then
        errs:add(string.format("%s.ports[%d].host", f, j - 1), "fixed host port %d cannot be "
          .. "shared by %d replicas", p.host, n)
      end
    end
  end
  if s.annotations ~= nil then
    check_map(errs, f .. ".annotations", s.annotations, validate.LABEL_KEY, "annotation key")
    out.annotations = s.annotations
  end
  for _, k in ipairs({"command", "args"}) do
    if s[k] ~= nil then
      check_string_list(errs, f .. "." .. k, s[k])
      out[k] = s[k]
    end
  end
  return out
end

function validate.provision(req)
  local errs = new_errors()
  if type(req) ~= "table" then
    errs:add("request", "expected an object, got %s", type(req))
    return errs:result()
  end
  local ok, err = project.validate_id(req.instance_id)
  if not ok then errs:add("instance_id", "%s", (err:gsub("^instance_id: ", ""))) end
  local out = {instance_id = req.instance_id, services = {}}
  if req.tenant_id ~= nil and type(req.tenant_id) ~= "string" then
    errs:add("tenant_id", "expected a string, got %s", type(req.tenant_id))
  end
  out.tenant_id = req.tenant_id or ""
  if req.name ~= nil and type(req.name) ~= "string" then
    errs:add("name", "expected a string, got %s", type(req.name))
  end
  out.name = req.name or ""
  if req.kind ~= nil and req.kind ~= "" and not validate.KINDS[req.kind] then
    errs:add("kind", "must be deployment or stateful_set (got %s)", show(req.kind))
  end
  out.kind = (req.kind ~= nil and req.kind ~= "") and req.kind or "deployment"
  if req.labels ~= nil then
    check_map(errs, "labels", req.labels, validate.LABEL_KEY, "label key")
    out.labels = req.labels
  end
  if req.services == nil or (type(req.services) == "table" and next(req.services) == nil) then
    errs:add("services", "at least one service is required")
    return errs:result()
  end
  if not is_list(req.services) then
    errs:add("services", "expected a list")
    return errs:result()
  end
  if #req.services > validate.MAX_SERVICES then
    errs:add("services", "at most %d services (got %d)", validate.MAX_SERVICES, #req.services)
  end
  local names, mains = {}, {}
  for i, s in ipairs(req.services) do
    local f = string.format("services[%d]", i - 1)
    local svc = check_service(errs, f, s, names)
    if svc then
      svc.field = f
      out.services[#out.services + 1] = svc
      if svc.role == "main" then mains[#mains + 1] = f end
    end
  end
  if #mains == 0 then
    errs:add("services", "exactly one service must have role main (found none)")
  elseif #mains > 1 then
    errs:add("services", "exactly one service must have role main (found %d: %s)", #mains,
      table.concat(mains, ", "))
  end
  -- dependencies: names exist, no self-reference, inits only on inits, no cycle
  local by_name = {}
  for _, s in ipairs(out.services) do
    if s.name then by_name[s.name] = s end
  end
  for _, s in ipairs(out.services) do
    for j, d in ipairs(s.depends_on) do
      local df = string.format("%s.depends_on[%d]", s.field, j - 1)
      if not by_name[d] then
        errs:add(df, "no service named %s", show(d))
      elseif d == s.name then
        errs:add(df, "a service cannot depend on itself")
      elseif s.role == "init" and by_name[d].role ~= "init" then
        errs:add(df, "init service %s runs before %s services start; it can depend only on "
          .. "init services (%s is %s)", show(s.name), by_name[d].role, show(d), by_name[d].role)
      end
    end
  end
  if #errs.list == 0 then
    local cycle = graph.find_cycle(out.services)
    if cycle then
      errs:add("services", "dependency cycle: %s", table.concat(cycle, " -> "))
    end
  end
  -- two services cannot publish the same host port
  local host_ports = {}
  for _, s in ipairs(out.services) do
    for j, p in ipairs(s.ports) do
      if p.host then
        local key = p.host .. "/" .. p.protocol
        local pf = string.format("%s.ports[%d].host", s.field, j - 1)
        if host_ports[key] then
          errs:add(pf, "host port %d/%s is already used by %s", p.host, p.protocol, host_ports[key])
        else
          host_ports[key] = pf
        end
      end
    end
  end
  return errs:result(out)
end

-- A ResourceSpec for scale: every field optional, at least one given.
function validate.resources(spec)
  local errs = new_errors()
  if type(spec) ~= "table" then
    errs:add("spec", "expected a ResourceSpec object, got %s", type(spec))
    return errs:result()
  end
  local out = check_resources(errs, "spec", spec) or {}
  if out.replicas and out.replicas > 100 then
    errs:add("spec.replicas", "at most 100 replicas (got %d)", out.replicas)
  end
  if #errs.list == 0 and out.cpu_millis == nil and out.memory_mb == nil and out.replicas == nil then
    errs:add("spec", "nothing to scale: give cpu_millis, memory_mb or replicas")
  end
  return errs:result(out)
end

function validate.deploy(req, existing)
  local errs = new_errors()
  if type(req) ~= "table" then
    errs:add("request", "expected an object, got %s", type(req))
    return errs:result()
  end
  local ok, err = project.validate_id(req.instance_id)
  if not ok then errs:add("instance_id", "%s", (err:gsub("^instance_id: ", ""))) end
  if req.release_id ~= nil and (type(req.release_id) ~= "string"
      or not req.release_id:match("^[%w][%w%._:-]*$") or #req.release_id > 128) then
    errs:add("release_id", "%s is not a valid release id (letters, digits, '.', '_', ':', '-')",
      show(req.release_id))
  end
  if req.strategy ~= nil and req.strategy ~= "" and not validate.STRATEGIES[req.strategy] then
    errs:add("strategy", "must be recreate, rolling, start-first or blue-green (got %s)",
      show(req.strategy))
  end
  local out = {instance_id = req.instance_id, release_id = req.release_id,
    strategy = (req.strategy ~= "" and req.strategy) or nil, services = {}}
  if not is_list(req.services) or #req.services == 0 then
    errs:add("services", "at least one service to deploy is required")
    return errs:result()
  end
  local seen = {}
  for i, s in ipairs(req.services) do
    local f = string.format("services[%d]", i - 1)
    if type(s) ~= "table" then
      errs:add(f, "expected an object, got %s", type(s))
    else
      local svc = {field = f}
      if type(s.name) ~= "string" or s.name == "" then
        errs:add(f .. ".name", "is required")
      elseif existing and not existing[s.name] then
        local names = {}
        for n in pairs(existing) do names[#names + 1] = n end
        table.sort(names)
        errs:add(f .. ".name", "instance has no service %s (it has: %s)", show(s.name),
          table.concat(names, ", "))
      elseif seen[s.name] then
        errs:add(f .. ".name", "service %s is listed twice", show(s.name))
      else
        seen[s.name] = true
        svc.name = s.name
      end
      if s.image ~= nil and s.image ~= "" then
        if type(s.image) ~= "string" or not s.image:match(validate.IMAGE_REF) then
          errs:add(f .. ".image", "%s is not a valid image reference", show(s.image))
        else
          svc.image = s.image
        end
      end
      if s.env ~= nil then
        check_map(errs, f .. ".env", s.env, validate.ENV_KEY, "environment variable name")
        svc.env = s.env
      end
      if s.health_check ~= nil then
        svc.health_check = check_health(errs, f .. ".health_check", s.health_check)
      end
      if svc.image == nil and svc.env == nil and svc.health_check == nil then
        errs:add(f, "nothing to deploy: give an image, env or health_check")
      end
      out.services[#out.services + 1] = svc
    end
  end
  return errs:result(out)
end

return validate
