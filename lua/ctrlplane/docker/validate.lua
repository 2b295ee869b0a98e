-- Validation of ProvisionRequest and DeployRequest before anything touches
-- the engine. Every error names its field the way a Go control plane would
-- see it: services[2].ports[0].container (indices from 0).
--
--   validate.provision(req[, limits]) -> normalized request | nil, message, "invalid", errors
--   validate.deploy(req[, existing])   -> normalized request | nil, message, "invalid", errors
--   validate.resources(spec[, limits]) -> normalized ResourceSpec (scale) | nil, ...
--   validate.against_host(r, info)     -> r | nil, ...   (after provision/scale
--       validation, before any mutation: limits that depend on the daemon's
--       /info, passed in so validation itself stays pure)
--   validate.image_reference(s)        -> true | nil, reason
--
-- limits: {max_replicas = n, allow_privileged_ports = bool} (a cfg from
-- config.resolve has both); absent fields take the defaults below.
--
-- Requests as Go's encoding/json writes them are accepted: a JSON null is
-- an absent field, and zero values mean "unset" (replicas 0 = 1, cpu_millis
-- and memory_mb 0 = no limit, health check fields 0 = the runtime's
-- defaults, an all-zero health_check = none).
local config = require("ctrlplane.docker.config")
local graph = require("ctrlplane.docker.graph")
local json = require("ctrlplane.docker.json")
local project = require("ctrlplane.docker.project")

local validate = {}

validate.SERVICE_NAME = "^[a-z0-9][a-z0-9-]*$"
validate.SERVICE_NAME_MAX = 63
validate.VOLUME_NAME = "^[a-z0-9][a-z0-9_.-]*$"
validate.ENV_KEY = "^[A-Za-z_][A-Za-z0-9_]*$"
validate.LABEL_KEY = "^[%w][%w%._/%-]*$"
validate.ROLES = {main = true, sidecar = true, init = true}
validate.KINDS = {deployment = true, stateful_set = true}
validate.VOLUME_TYPES = {persistent = true, ephemeral = true}
validate.STRATEGIES = {recreate = true, rolling = true, ["start-first"] = true,
  ["blue-green"] = true, canary = true}
-- Docker refuses memory limits below 6 MiB
validate.MIN_MEMORY_MB = 6
validate.MAX_SERVICES = 64
-- default for CP_DOCKER_MAX_REPLICAS
validate.MAX_REPLICAS = 50
-- one "KEY=value" string with its NUL: the kernel's MAX_ARG_STRLEN
validate.ENV_MAX = 131072
-- health check durations (seconds): Docker's minimum, and a day
validate.MIN_DURATION = 0.001
validate.MAX_DURATION = 86400
validate.RESERVED_LABEL_PREFIX = "ctrlplane."
-- mount targets that would shadow the kernel's interfaces
validate.FORBIDDEN_MOUNTS = {"/proc", "/sys", "/dev"}
-- storage drivers that can limit a container's disk (HostConfig.StorageOpt
-- size); overlay2 only on xfs (mounted with pquota, which /info cannot show:
-- the daemon's own error says so when it is missing)
validate.DISK_DRIVERS = {btrfs = true, zfs = true, devicemapper = true, windowsfilter = true}

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

local function typename(v)
  if v == json.null then return "null" end
  return type(v)
end

local function show(v)
  if type(v) == "string" then return string.format("%q", v) end
  if v == json.null then return "null" end
  return tostring(v)
end

-- A copy of a decoded request without JSON nulls as object values: Go
-- writes null for a nil map, slice or pointer, which means "not given".
-- Nulls inside lists stay (and fail their element's check).
local function denull(v, depth)
  if type(v) ~= "table" or depth > 32 then return v end
  local out = {}
  for k, x in pairs(v) do
    if not (x == json.null and type(k) == "string") then out[k] = denull(x, depth + 1) end
  end
  return out
end

local function check_type(errs, field, v, ty)
  if v == nil then return false end
  if type(v) ~= ty then
    errs:add(field, "expected a %s, got %s", ty, typename(v))
    return false
  end
  return true
end

local function check_int(errs, field, v, lo, hi)
  if v == nil then return true end
  if type(v) ~= "number" or v ~= math.floor(v) or not math.tointeger(v) then
    errs:add(field, "expected an integer, got %s", show(v))
    return false
  end
  if v < lo or v > hi then
    errs:add(field, "must be an integer from %d to %d (got %s)", lo, hi, show(v))
    return false
  end
  return true
end

local function check_map(errs, field, m, key_pattern, key_what, reserved)
  if not check_type(errs, field, m, "table") then return end
  for k, v in pairs(m) do
    if type(k) ~= "string" or not k:match(key_pattern) then
      errs:add(field .. "[" .. show(k) .. "]", "invalid %s", key_what)
    elseif reserved and k:lower():sub(1, #reserved) == reserved then
      errs:add(field .. "[" .. show(k) .. "]", "keys starting with %q are reserved for the "
        .. "runtime's own labels", reserved)
    elseif type(v) ~= "string" then
      errs:add(field .. "." .. k, "expected a string value, got %s", typename(v))
    end
  end
end

-- env: names as check_map, values without NUL and within MAX_ARG_STRLEN
local function check_env(errs, field, m, key_what)
  if not check_type(errs, field, m, "table") then return end
  check_map(errs, field, m, validate.ENV_KEY, key_what)
  for k, v in pairs(m) do
    if type(k) == "string" and type(v) == "string" then
      if v:find("\0", 1, true) then
        errs:add(field .. "." .. k, "must not contain a NUL byte")
      elseif #k + #v + 2 > validate.ENV_MAX then
        errs:add(field .. "." .. k, "%s=value is %d bytes; at most %d (the kernel's "
          .. "MAX_ARG_STRLEN, including the name, '=' and NUL)", k, #k + #v + 2, validate.ENV_MAX)
      end
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
      errs:add(string.format("%s[%d]", field, i - 1), "expected a string, got %s", typename(s))
    elseif s:find("\0", 1, true) then
      errs:add(string.format("%s[%d]", field, i - 1), "must not contain a NUL byte")
    end
  end
end

-- A Go time.Duration on the wire: integer nanoseconds, always (900000 is
-- 0.9 ms); a string with units ("3s", "250ms") is accepted too. Returns
-- seconds, or nil for zero/absent (the runtime's default), or nil, error.
function validate.duration(v)
  if v == nil then return nil end
  local secs
  if type(v) == "number" then
    local ns = math.tointeger(v)
    if not ns then
      return nil, string.format("expected integer nanoseconds (a Go time.Duration) or a string "
        .. "such as \"5s\", got %s", show(v))
    end
    if ns < 0 then return nil, "must not be negative (got " .. ns .. ")" end
    if ns == 0 then return nil end
    secs = ns / 1e9
  elseif type(v) == "string" then
    if tonumber(v) and tonumber(v) ~= 0 then
      return nil, string.format("%s has no unit (numbers are nanoseconds; write e.g. \"5s\")",
        show(v))
    end
    local err
    secs, err = config.seconds(v, "")
    if not secs then return nil, (err:gsub("^[^:]*: ", "")) end
    if secs == 0 then return nil end
  else
    return nil, "expected a duration (integer nanoseconds or e.g. \"5s\"), got " .. typename(v)
  end
  if secs < validate.MIN_DURATION then
    return nil, string.format("%s is below Docker's minimum of 1ms", show(v))
  end
  if secs > validate.MAX_DURATION then
    return nil, string.format("%s is more than 24h", show(v))
  end
  return secs
end

local function check_duration(errs, field, v)
  local secs, err = validate.duration(v)
  if err then errs:add(field, "%s", err) end
  return secs
end

-- Docker's image reference grammar (distribution/reference):
--   [domain[:port]/]path-component[/path-component...][:tag][@algorithm:hex]
-- path components lowercase alphanumerics joined by '.', '_', '__' or runs
-- of '-'; a first component is a domain when it has '.' or ':' or is
-- localhost. A ref that passes has no '..' segment and no character a URL
-- path would treat specially except '/', ':' and '@'.
local function path_component_ok(c)
  local rest = c:match("^[a-z0-9]+(.*)$")
  if not rest then return false end
  while rest ~= "" do
    local sep, tail = rest:match("^(__)([a-z0-9].*)$")
    if not sep then sep, tail = rest:match("^([._])([a-z0-9].*)$") end
    if not sep then sep, tail = rest:match("^(%-+)([a-z0-9].*)$") end
    if not sep then return false end
    rest = tail:match("^[a-z0-9]+(.*)$")
  end
  return true
end

local function domain_ok(d)
  local host, port = d:match("^(.-):(%d+)$")
  if not host then host = d end
  if port and (tonumber(port) < 1 or tonumber(port) > 65535) then return false end
  for label in (host .. "."):gmatch("([^.]*)%.") do
    if not (label:match("^[%w]$") or label:match("^[%w][%w%-]*[%w]$")) then return false end
  end
  return true
end

function validate.image_reference(ref)
  if ref == nil then return nil, "is required" end
  if type(ref) ~= "string" then return nil, "expected a string, got " .. typename(ref) end
  if ref == "" then return nil, "is required" end
  if #ref > 512 then return nil, "is longer than 512 characters" end
  local rest = ref
  local at = ref:find("@", 1, true)
  if at then
    rest = ref:sub(1, at - 1)
    local algo, hex = ref:sub(at + 1):match("^([%a][%w]*[%w+._-]*):(%x+)$")
    if not algo or #hex < 32 then
      return nil, "has an invalid digest (want algorithm:hex, e.g. sha256: and 64 hex digits)"
    end
  end
  local name, tag = rest, nil
  local last_slash = rest:match(".*()/") or 0
  local colon = rest:match(".*():")
  if colon and colon > last_slash then name, tag = rest:sub(1, colon - 1), rest:sub(colon + 1) end
  if tag and not (tag:match("^[%w_][%w_.-]*$") and #tag <= 128) then
    return nil, "has an invalid tag " .. show(tag)
  end
  if #name > 255 then return nil, "has a name longer than 255 characters" end
  local parts = {}
  for p in (name .. "/"):gmatch("([^/]*)/") do parts[#parts + 1] = p end
  if #parts > 1 and (parts[1]:find("[.:]") or parts[1] == "localhost" or parts[1]:find("%u")) then
    local domain = table.remove(parts, 1)
    if not domain_ok(domain) then return nil, "has an invalid registry host " .. show(domain) end
  end
  for _, p in ipairs(parts) do
    if p ~= p:lower() and p:lower():match("^[a-z0-9._-]+$") then
      return nil, "must be lowercase (" .. show(p) .. ")"
    end
    if not path_component_ok(p) then
      return nil, "has an invalid path component " .. show(p) .. " (lowercase letters and digits, "
        .. "joined by '.', '_', '__' or '-')"
    end
  end
  return true
end

local function check_image(errs, field, v)
  local ok, why = validate.image_reference(v)
  if ok then return v end
  if why == "is required" then
    errs:add(field, "is required")
  else
    errs:add(field, "%s is not a valid image reference: it %s", show(v), why)
  end
  return nil
end

-- A mount target: absolute, normalized, not / and not under /proc /sys /dev.
local function check_mount_path(errs, field, p)
  if type(p) ~= "string" or p:sub(1, 1) ~= "/" or p:find("[,:%c]") then
    errs:add(field, "must be an absolute path without ',' or ':' (got %s)", show(p))
    return nil
  end
  local parts = {}
  for c in p:gmatch("[^/]+") do
    if c == "." or c == ".." then
      errs:add(field, "must not contain '.' or '..' components (got %s)", show(p))
      return nil
    end
    parts[#parts + 1] = c
  end
  local norm = "/" .. table.concat(parts, "/")
  if norm == "/" then
    errs:add(field, "must not be / (the container's root)")
    return nil
  end
  for _, bad in ipairs(validate.FORBIDDEN_MOUNTS) do
    if norm == bad or norm:sub(1, #bad + 1) == bad .. "/" then
      errs:add(field, "must not be %s or under it (got %s)", bad, show(p))
      return nil
    end
  end
  return norm
end

local function limit(limits, key, default)
  local v = limits and limits[key]
  if v == nil then return default end
  return v
end

-- Validates and normalizes a health_check; returns the normalized table.
local function check_health(errs, field, h)
  if not check_type(errs, field, h, "table") then return nil end
  local function zero(v) return v == nil or v == 0 or v == "" end
  if zero(h.path) and zero(h.port) and zero(h.interval) and zero(h.timeout) and zero(h.retries) then
    return nil -- Go's zero HealthCheckSpec: no health check
  end
  local out = {}
  if h.path ~= nil and h.path ~= "" then
    if type(h.path) ~= "string" or h.path:sub(1, 1) ~= "/" or h.path:find("[%s\"'`$\\]") then
      errs:add(field .. ".path", "must be an absolute URL path without spaces or quotes (got %s)",
        show(h.path))
    else
      out.path = h.path
    end
  end
  if h.port == nil or h.port == 0 then
    errs:add(field .. ".port", "is required (the container port to check)")
  elseif check_int(errs, field .. ".port", h.port, 1, 65535) then
    out.port = math.tointeger(h.port)
  end
  out.interval = check_duration(errs, field .. ".interval", h.interval)
  out.timeout = check_duration(errs, field .. ".timeout", h.timeout)
  if check_int(errs, field .. ".retries", h.retries, 0, 100) and h.retries and h.retries ~= 0 then
    out.retries = math.tointeger(h.retries)
  end
  return out
end

-- A ResourceSpec. Zero means "not set" for every field (no limit, one
-- replica); scale keeps cpu_millis/memory_mb 0 (= remove the limit).
local function check_resources(errs, field, r, limits, keep_zero_limits)
  if not check_type(errs, field, r, "table") then return nil end
  local out = {}
  for _, k in ipairs({"cpu_millis", "memory_mb", "disk_mb", "replicas"}) do
    if check_int(errs, field .. "." .. k, r[k], 0, 1 << 40) and r[k] then
      local v = math.tointeger(r[k])
      if v ~= 0 or (keep_zero_limits and (k == "cpu_millis" or k == "memory_mb")) then out[k] = v end
    end
  end
  if out.memory_mb and out.memory_mb > 0 and out.memory_mb < validate.MIN_MEMORY_MB then
    errs:add(field .. ".memory_mb", "Docker's minimum memory limit is %d MB (got %d)",
      validate.MIN_MEMORY_MB, out.memory_mb)
  end
  local max = limit(limits, "max_replicas", validate.MAX_REPLICAS)
  if out.replicas and out.replicas > max then
    errs:add(field .. ".replicas", "at most %d replicas (got %d; the operator's "
      .. "CP_DOCKER_MAX_REPLICAS)", max, out.replicas)
  end
  local gpu = r.gpu
  if gpu ~= nil and gpu ~= "" and gpu ~= 0 then
    if type(gpu) ~= "string" and type(gpu) ~= "number" then
      errs:add(field .. ".gpu", "expected a string, got %s", typename(gpu))
    else
      errs:add(field .. ".gpu", "GPUs are not supported by this provider (got %s)", show(gpu))
    end
  end
  return out
end

-- ---- config_files and secrets (issue #11) -----------------------------------

validate.CONFIG_FORMATS = {json = true, yaml = true, env = true, text = true}
validate.CONFIG_FILE_MAX = 64 * 1024      -- bytes of one file's content
validate.CONFIG_TOTAL_MAX = 256 * 1024    -- bytes of all of a service's files
validate.SECRET_KEY = "^[A-Za-z0-9][A-Za-z0-9_.-]*$"
validate.SECRET_KEY_MAX = 128
-- env and file are applied; registry and tls are Go SecretRef types this
-- provider does not implement (rejected, naming the field)
validate.SECRET_TYPES = {env = true, file = true}
validate.SECRETS_DIR = "/run/secrets"

-- The environment variable a type-env secret becomes: the key in upper
-- snake case ("db-password" and "db.password" -> DB_PASSWORD).
function validate.secret_env_name(key)
  return (key:gsub("[^%w]", "_"):upper())
end

local FORBIDDEN_ROOTS = {"/proc", "/sys", "/dev"}

-- An absolute, normalized file path that is not / and not under /proc,
-- /sys or /dev. Returns the reason it is not, or nil.
local function bad_file_path(path)
  if type(path) ~= "string" or path:sub(1, 1) ~= "/" then return "must be an absolute path" end
  if #path > 1024 then return "at most 1024 characters" end
  if path:find("%c") then return "must not contain control characters" end
  if path == "/" or path:sub(-1) == "/" then return "must name a file, not a directory" end
  for part in path:gmatch("[^/]*", 2) do
    if part == "" or part == "." or part == ".." then
      return "must be normalized (no empty, '.' or '..' parts)"
    end
    if #part > 255 then return "a path component is longer than 255 bytes" end
  end
  for _, root in ipairs(FORBIDDEN_ROOTS) do
    if path == root or path:sub(1, #root + 1) == root .. "/" then
      return "must not be under " .. root
    end
  end
  return nil
end

-- A list field of objects, each checked by item(errs, field, value).
local function check_objects(errs, f, list, item)
  local out = {}
  if list == nil then return out end
  if not is_list(list) then
    errs:add(f, "expected a list")
    return out
  end
  for i, v in ipairs(list) do
    local vf = string.format("%s[%d]", f, i - 1)
    if type(v) ~= "table" then
      errs:add(vf, "expected an object, got %s", type(v))
    else
      out[#out + 1] = item(errs, vf, v)
    end
  end
  return out
end

local function check_config_files(errs, f, list, out)
  if list == json.null then list = nil end
  local paths, names, total = {}, {}, 0
  out.config_files = check_objects(errs, f .. ".config_files", list, function(_, cf, c)
    local file = {}
    if type(c.name) ~= "string" or c.name == "" then
      errs:add(cf .. ".name", "is required")
    elseif names[c.name] then
      errs:add(cf .. ".name", "duplicate config file name %s (also %s)", show(c.name), names[c.name])
    else
      names[c.name] = cf
      file.name = c.name
    end
    local why = bad_file_path(c.path)
    if why then
      errs:add(cf .. ".path", "%s (got %s)", why, show(c.path))
    elseif paths[c.path] then
      errs:add(cf .. ".path", "%s is also written by %s", show(c.path), paths[c.path])
    elseif c.path == validate.SECRETS_DIR or c.path:sub(1, #validate.SECRETS_DIR + 1)
        == validate.SECRETS_DIR .. "/" then
      errs:add(cf .. ".path", "%s is reserved for secrets", validate.SECRETS_DIR)
    else
      paths[c.path] = cf
      file.path = c.path
    end
    local fmt = c.format
    if fmt == nil or fmt == "" then fmt = "text" end
    if not validate.CONFIG_FORMATS[fmt] then
      errs:add(cf .. ".format", "must be json, yaml, env or text (got %s)", show(c.format))
    end
    file.format = fmt
    local content = c.content
    if content == nil then content = "" end
    if type(content) ~= "string" then
      errs:add(cf .. ".content", "expected a string, got %s", type(content))
    elseif #content > validate.CONFIG_FILE_MAX then
      errs:add(cf .. ".content", "at most %d bytes (got %d)", validate.CONFIG_FILE_MAX, #content)
    else
      total = total + #content
      if fmt == "json" then
        local v, err = json.decode(content)
        if v == nil then errs:add(cf .. ".content", "format is json but %s", err) end
      end
      file.content = content
    end
    return file
  end)
  if total > validate.CONFIG_TOTAL_MAX then
    errs:add(f .. ".config_files", "at most %d bytes of content per service (got %d)",
      validate.CONFIG_TOTAL_MAX, total)
  end
end

local function check_secrets(errs, f, list, out)
  if list == json.null then list = nil end
  local seen = {}
  out.secrets = check_objects(errs, f .. ".secrets", list, function(_, sf, r)
    local ok = true
    if type(r.key) ~= "string" or r.key == "" then
      errs:add(sf .. ".key", "is required")
      ok = false
    elseif #r.key > validate.SECRET_KEY_MAX or not r.key:match(validate.SECRET_KEY) then
      errs:add(sf .. ".key", "%s is not a valid secret key (letters, digits, '_', '.', '-', "
        .. "starting with a letter or digit, at most %d characters)", show(r.key),
        validate.SECRET_KEY_MAX)
      ok = false
    end
    if r.type == "registry" or r.type == "tls" then
      errs:add(sf .. ".type", "secret type %s is not supported by this provider (env, file)",
        show(r.type))
      ok = false
    elseif not validate.SECRET_TYPES[r.type] then
      errs:add(sf .. ".type", "must be env or file (got %s)", show(r.type))
      ok = false
    end
    if ok then
      local target = r.type == "env" and validate.secret_env_name(r.key)
        or (validate.SECRETS_DIR .. "/" .. r.key)
      if seen[target] then
        errs:add(sf .. ".key", "%s becomes %s, as %s does", show(r.key), target, seen[target])
      elseif r.type == "env" and out.env and out.env[target] ~= nil then
        errs:add(sf .. ".key", "%s becomes env %s, which %s.env also sets", show(r.key), target, f)
      else
        seen[target] = sf
        return {key = r.key, type = r.type}
      end
    end
  end)
end

-- config_files and secrets of one service (normalized into out; left out
-- when empty, so a service without them keeps the spec hash it had before).
function validate.files_and_secrets(errs, f, s, out)
  check_config_files(errs, f, s.config_files, out)
  check_secrets(errs, f, s.secrets, out)
  if #out.config_files == 0 then out.config_files = nil end
  if #out.secrets == 0 then out.secrets = nil end
end

local function check_name(errs, f, s, seen_names, out)
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
end

local function check_port(errs, pf, p, limits)
  local port = {}
  if p.container == nil then
    errs:add(pf .. ".container", "is required")
  elseif check_int(errs, pf .. ".container", p.container, 1, 65535) then
    port.container = math.tointeger(p.container)
  end
  if check_int(errs, pf .. ".host", p.host, 0, 65535) and p.host and p.host ~= 0 then
    port.host = math.tointeger(p.host)
    if port.host < 1024 and not limit(limits, "allow_privileged_ports", false) then
      errs:add(pf .. ".host", "host port %d is privileged (below 1024); the operator "
        .. "must allow it (CP_DOCKER_ALLOW_PRIVILEGED_PORTS=1)", port.host)
    end
  end
  local proto = p.protocol
  if proto == nil or proto == "" then proto = "tcp" end
  if type(proto) == "string" then proto = proto:lower() end
  if proto ~= "tcp" and proto ~= "udp" then
    errs:add(pf .. ".protocol", "must be tcp or udp (got %s)", show(p.protocol))
    proto = "tcp" -- reported above; keeps the checks below well-typed
  end
  port.protocol = proto
  return port
end

local function check_volume(errs, vf, v)
  local vol = {}
  if type(v.name) ~= "string" or not v.name:match(validate.VOLUME_NAME) or #v.name > 63 then
    errs:add(vf .. ".name", "%s is not a valid volume name (lowercase letters, digits, "
      .. "'_', '.', '-')", show(v.name))
  else
    vol.name = v.name
  end
  vol.mount_path = check_mount_path(errs, vf .. ".mount_path", v.mount_path)
  if check_int(errs, vf .. ".size_mb", v.size_mb, 0, 1 << 30) then
    vol.size_mb = v.size_mb and math.tointeger(v.size_mb) or nil
  end
  local ty = v.type
  if ty == nil or ty == "" then ty = "persistent" end
  if not validate.VOLUME_TYPES[ty] then
    errs:add(vf .. ".type", "must be persistent or ephemeral (got %s)", show(v.type))
  end
  vol.type = ty
  return vol
end

-- What a role allows: no ports on an init, replicas only on the main
-- service, and no fixed host port shared by replicas.
local function check_role_limits(errs, f, role, out)
  if role == "init" and #out.ports > 0 then
    errs:add(f .. ".ports", "an init service runs once and exits: it cannot publish ports")
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
end

local function check_service(errs, f, s, seen_names, limits)
  local out = {}
  if type(s) ~= "table" then
    errs:add(f, "expected an object, got %s", type(s))
    return nil
  end
  check_name(errs, f, s, seen_names, out)
  out.image = check_image(errs, f .. ".image", s.image)
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
  if s.resources ~= nil then
    out.resources = check_resources(errs, f .. ".resources", s.resources, limits)
  end
  if s.env ~= nil then
    check_env(errs, f .. ".env", s.env,
      "environment variable name (letters, digits, '_'; not starting with a digit)")
    out.env = s.env
  end
  out.ports = check_objects(errs, f .. ".ports", s.ports, function(e, pf, p)
    return check_port(e, pf, p, limits)
  end)
  out.volumes = check_objects(errs, f .. ".volumes", s.volumes, check_volume)
  if s.health_check ~= nil then
    out.health_check = check_health(errs, f .. ".health_check", s.health_check)
  end
  check_role_limits(errs, f, role, out)
  if s.annotations ~= nil then
    check_map(errs, f .. ".annotations", s.annotations, validate.LABEL_KEY, "annotation key",
      validate.RESERVED_LABEL_PREFIX)
    out.annotations = s.annotations
  end
  for _, k in ipairs({"command", "args"}) do
    if s[k] ~= nil then
      check_string_list(errs, f .. "." .. k, s[k])
      out[k] = s[k]
    end
  end
  validate.files_and_secrets(errs, f, s, out)
  return out
end

function validate.provision(req, limits)
  local errs = new_errors()
  if type(req) ~= "table" then
    errs:add("request", "expected an object, got %s", typename(req))
    return errs:result()
  end
  req = denull(req, 0)
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
    check_map(errs, "labels", req.labels, validate.LABEL_KEY, "label key",
      validate.RESERVED_LABEL_PREFIX)
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
    local svc = check_service(errs, f, s, names, limits)
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
-- replicas 0 (Go's zero value) leaves the replica count alone.
function validate.resources(spec, limits)
  local errs = new_errors()
  if type(spec) ~= "table" then
    errs:add("spec", "expected a ResourceSpec object, got %s", typename(spec))
    return errs:result()
  end
  spec = denull(spec, 0)
  local out = check_resources(errs, "spec", spec, limits, true) or {}
  if #errs.list == 0 and out.cpu_millis == nil and out.memory_mb == nil and out.replicas == nil then
    errs:add("spec", "nothing to scale: give cpu_millis, memory_mb or replicas")
  end
  return errs:result(out)
end

function validate.deploy(req, existing)
  local errs = new_errors()
  if type(req) ~= "table" then
    errs:add("request", "expected an object, got %s", typename(req))
    return errs:result()
  end
  req = denull(req, 0)
  local ok, err = project.validate_id(req.instance_id)
  if not ok then errs:add("instance_id", "%s", (err:gsub("^instance_id: ", ""))) end
  if req.release_id ~= nil and (type(req.release_id) ~= "string"
      or not req.release_id:match("^[%w][%w%._:-]*$") or #req.release_id > 128) then
    errs:add("release_id", "%s is not a valid release id (letters, digits, '.', '_', ':', '-')",
      show(req.release_id))
  end
  if req.strategy ~= nil and req.strategy ~= "" and not validate.STRATEGIES[req.strategy] then
    errs:add("strategy", "must be recreate, rolling, start-first, blue-green or canary (got %s)",
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
      if s.image ~= nil and s.image ~= "" then svc.image = check_image(errs, f .. ".image", s.image) end
      if s.env ~= nil then
        check_env(errs, f .. ".env", s.env, "environment variable name")
        svc.env = s.env
      end
      if s.health_check ~= nil then
        svc.health_check = check_health(errs, f .. ".health_check", s.health_check)
      end
      if (s.image == nil or s.image == "") and s.env == nil and svc.health_check == nil then
        errs:add(f, "nothing to deploy: give an image, env or health_check")
      end
      out.services[#out.services + 1] = svc
    end
  end
  return errs:result(out)
end

-- Limits that depend on the daemon, from its /info (NCPU, MemTotal,
-- Driver, DriverStatus): checked after validate.provision / validate.resources
-- and before anything is created. r: a normalized provision request, or a
-- normalized ResourceSpec (field "spec").
function validate.against_host(r, info)
  local errs = new_errors()
  info = type(info) == "table" and info or {}
  local ncpu = math.tointeger(info.NCPU)
  local mem_mb = type(info.MemTotal) == "number" and info.MemTotal // 1048576 or nil
  local driver = type(info.Driver) == "string" and info.Driver or "unknown"
  local backing
  for _, kv in ipairs(type(info.DriverStatus) == "table" and info.DriverStatus or {}) do
    if type(kv) == "table" and kv[1] == "Backing Filesystem" then backing = kv[2] end
  end
  local function check(field, res)
    if type(res) ~= "table" then return end
    if ncpu and ncpu > 0 and res.cpu_millis and res.cpu_millis > ncpu * 1000 then
      errs:add(field .. ".cpu_millis", "at most %d (the host has %d CPUs; got %d)", ncpu * 1000,
        ncpu, res.cpu_millis)
    end
    if mem_mb and mem_mb > 0 and res.memory_mb and res.memory_mb > mem_mb then
      errs:add(field .. ".memory_mb", "at most %d MB (the host's memory; got %d)", mem_mb,
        res.memory_mb)
    end
    if res.disk_mb and res.disk_mb > 0 and not validate.disk_limit_supported(driver, backing) then
      errs:add(field .. ".disk_mb", "cannot be enforced: the daemon's storage driver is %s%s, "
        .. "which has no per-container size limit (StorageOpt size needs overlay2 on xfs with "
        .. "pquota, btrfs, zfs or devicemapper); send 0 for no limit", driver,
        backing and (" on " .. backing) or "")
    end
  end
  if r.services then
    for i, s in ipairs(r.services) do
      check((s.field or string.format("services[%d]", i - 1)) .. ".resources", s.resources)
    end
  else
    check("spec", r)
  end
  return errs:result(r)
end

function validate.disk_limit_supported(driver, backing)
  if driver == "overlay2" then return backing == "xfs" end
  return validate.DISK_DRIVERS[driver] == true
end

return validate
