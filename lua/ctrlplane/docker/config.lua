-- Runtime configuration: explicit options first, then the environment, then
-- defaults. Every setting an operator may need has an environment variable.
--
--   config.resolve(opts, getenv) -> cfg | nil, message
--
-- opts keys (all optional): host, tls, tls_verify, cert_path, api_version,
-- connect_timeout, timeout, network, registry, publish_address,
-- stop_timeout, init_timeout, policy_dir, scripts_dir, region, pull_policy,
-- lock_dir, lock_timeout, max_replicas (CP_DOCKER_MAX_REPLICAS, default
-- 50), allow_privileged_ports (CP_DOCKER_ALLOW_PRIVILEGED_PORTS=1); backend
-- ("engine" | "swarm"), nodes ({hostname = URL} or "name=URL,..."),
-- endpoint_mode, publish_mode (swarm); exec_timeout, exec_output_max;
-- stats_source, stats_interval.
--
-- opts.names (optional) maps an option key to what the operator typed for
-- it (the CLI passes {host = "--host", ...}), so an error names the flag or
-- the environment variable that was set, never an internal key.
--
-- TLS follows the docker CLI: DOCKER_TLS_VERIFY (any non-empty value) turns
-- on TLS *and* verification of the daemon's certificate against
-- DOCKER_CERT_PATH/ca.pem (default ~/.docker; the system CAs when there is
-- no ca.pem), sending cert.pem/key.pem when present. DOCKER_CERT_PATH alone
-- only says where the files are: like `docker`, it does not turn on TLS, so
-- a TLS port answers plain HTTP with an error saying to set
-- DOCKER_TLS_VERIFY. An https:// host or opts.tls means TLS, verified too.
-- Verification is off only when asked for by name: opts.tls_verify = false.
local config = {}

config.DEFAULT_HOST = "unix:///var/run/docker.sock"
config.DEFAULT_LOCK_DIR = "/run/lock/ctrlplane-docker"

local function nonempty(s)
  if s ~= nil and s ~= "" then return s end
  return nil
end

-- Reads a duration in seconds: a number, "250ms", "5s", "2m", "1h", or Go's
-- integer nanoseconds when the value is a large integer (>= 1e6).
function config.seconds(v, field)
  if v == nil then return nil end
  if type(v) == "number" then
    if v < 0 then return nil, field .. ": must not be negative" end
    if math.type(v) == "integer" and v >= 1000000 then return v / 1e9 end
    return v
  end
  if type(v) ~= "string" then
    return nil, field .. ": expected a duration such as \"5s\", got " .. type(v)
  end
  local total, rest = 0, v
  if rest == "" then return nil, field .. ": empty duration" end
  local plain = tonumber(rest)
  if plain then return config.seconds(plain, field) end
  local units = {ns = 1e-9, us = 1e-6, ["µs"] = 1e-6, ms = 1e-3, s = 1, m = 60, h = 3600}
  while rest ~= "" do
    local num, unit, tail = rest:match("^(%d+%.?%d*)(%a+)(.*)$")
    if not num then
      num, unit, tail = rest:match("^(%d+%.?%d*)(µs)(.*)$")
    end
    if not num or not units[unit] then
      return nil, field .. ": invalid duration \"" .. v .. "\" (use e.g. 500ms, 5s, 2m)"
    end
    total = total + tonumber(num) * units[unit]
    rest = tail
  end
  return total
end

-- What the operator set for `key`: the flag or option name, or the variable.
local function source_name(opts, key, env)
  if opts[key] ~= nil then return (opts.names and opts.names[key]) or key end
  return env or key
end

local function number_setting(opts, getenv, key, env, default)
  local v = opts[key]
  if v == nil then v = nonempty(getenv(env)) end
  if v == nil then return default end
  local s, err = config.seconds(v, source_name(opts, key, env))
  if not s then return nil, err end
  return s
end

-- CP_DOCKER_NODES: "name=URL,name=URL" (or a table name -> URL) -> {name = URL}
function config.nodes(v)
  local out = {}
  if v == nil then return out end
  if type(v) == "table" then
    for k, url in pairs(v) do
      if type(k) ~= "string" or type(url) ~= "string" then
        return nil, "nodes: expected node hostname -> daemon URL"
      end
      out[k] = url
    end
    return out
  end
  if type(v) ~= "string" then return nil, "nodes: expected \"name=URL,name=URL\"" end
  for item in v:gmatch("[^,]+") do
    local name, url = item:match("^%s*([^=%s]+)%s*=%s*(%S+)%s*$")
    if not name then
      return nil, "nodes: \"" .. item .. "\" is not name=URL (CP_DOCKER_NODES=\"node1=unix:///..."
        .. ",node2=tcp://host:2376\")"
    end
    if not (url:match("^unix://.") or url:match("^tcp://.") or url:match("^https?://.")) then
      return nil, "nodes: " .. name .. ": invalid Docker host \"" .. url .. "\""
    end
    out[name] = url
  end
  return out
end

local function readable(path)
  local f = io.open(path, "r")
  if f then f:close() end
  return f ~= nil
end

function config.resolve(opts, getenv)
  opts = opts or {}
  getenv = getenv or os.getenv
  local cfg = {}
  local host_from = nonempty(opts.host) and source_name(opts, "host")
    or nonempty(getenv("CP_DOCKER_HOST")) and "CP_DOCKER_HOST"
    or nonempty(getenv("DOCKER_HOST")) and "DOCKER_HOST" or "host"
  cfg.host = nonempty(opts.host) or nonempty(getenv("CP_DOCKER_HOST"))
    or nonempty(getenv("DOCKER_HOST")) or config.DEFAULT_HOST
  cfg.host_from = host_from
  if not (cfg.host:match("^unix://.") or cfg.host:match("^tcp://.")
      or cfg.host:match("^https?://.")) then
    return nil, host_from .. ": invalid Docker host \"" .. cfg.host
      .. "\" (expected unix:///path/to/docker.sock or tcp://host:port)"
  end
  -- TLS as the docker CLI does it (see the top of this file)
  local env_verify = nonempty(getenv("DOCKER_TLS_VERIFY")) ~= nil
  local verify = opts.tls_verify
  if verify == nil then verify = env_verify end
  local cert_path = nonempty(opts.cert_path) or nonempty(getenv("DOCKER_CERT_PATH"))
  cfg.tls = (opts.tls or verify or cfg.host:match("^https://")) and true or false
  if cfg.host:match("^http://") then cfg.tls = false end
  -- on unless switched off by name (tls_verify = false)
  cfg.tls_verify = cfg.tls and opts.tls_verify ~= false
  cfg.cert_path = cert_path or ((getenv("HOME") or "") .. "/.docker")
  cfg.cert_path_from = cert_path and (nonempty(opts.cert_path) and source_name(opts, "cert_path")
    or "DOCKER_CERT_PATH") or "~/.docker"
  if cfg.tls then
    local ca = cfg.cert_path .. "/ca.pem"
    local cert, key = cfg.cert_path .. "/cert.pem", cfg.cert_path .. "/key.pem"
    -- a file that is not there is left out, as docker does (no ca.pem: the
    -- system's CAs; no client certificate: none sent) -- unless the
    -- operator named the directory, where a missing ca.pem is a mistake
    if readable(ca) then
      cfg.ca = ca
    elseif cert_path and cfg.tls_verify then
      return nil, string.format("%s: %s not found (the CA that signed the Docker daemon's "
        .. "certificate); put it there, or point %s at the directory holding ca.pem, "
        .. "cert.pem and key.pem", cfg.cert_path_from, ca, cfg.cert_path_from)
    end
    if readable(cert) and readable(key) then
      cfg.cert, cfg.key = cert, key
    end
  end
  cfg.api_version = nonempty(opts.api_version) or nonempty(getenv("DOCKER_API_VERSION"))
  local err
  cfg.connect_timeout, err = number_setting(opts, getenv, "connect_timeout",
    "CP_DOCKER_CONNECT_TIMEOUT", 2)
  if not cfg.connect_timeout then return nil, err end
  cfg.timeout, err = number_setting(opts, getenv, "timeout", "CP_DOCKER_TIMEOUT", 60)
  if not cfg.timeout then return nil, err end
  cfg.stop_timeout, err = number_setting(opts, getenv, "stop_timeout", "CP_DOCKER_STOP_TIMEOUT", 10)
  if not cfg.stop_timeout then return nil, err end
  cfg.init_timeout, err = number_setting(opts, getenv, "init_timeout", "CP_DOCKER_INIT_TIMEOUT", 300)
  if not cfg.init_timeout then return nil, err end
  cfg.ready_timeout, err = number_setting(opts, getenv, "ready_timeout", "CP_DOCKER_READY_TIMEOUT", 60)
  if not cfg.ready_timeout then return nil, err end
  cfg.start_grace, err = number_setting(opts, getenv, "start_grace", "CP_DOCKER_START_GRACE", 1.5)
  if not cfg.start_grace then return nil, err end
  cfg.drain, err = number_setting(opts, getenv, "drain", "CP_DOCKER_DRAIN", 1)
  if not cfg.drain then return nil, err end
  cfg.subnet_pool = nonempty(opts.subnet_pool) or nonempty(getenv("CP_DOCKER_SUBNET_POOL"))
    or "10.213.0.0/16"
  -- per-instance locks (locking.lua): where, and how long an operation
  -- waits for another one on the same instance before failing "busy"
  cfg.lock_dir = nonempty(opts.lock_dir) or nonempty(getenv("CP_DOCKER_LOCK_DIR"))
    or config.DEFAULT_LOCK_DIR
  cfg.lock_timeout, err = number_setting(opts, getenv, "lock_timeout", "CP_DOCKER_LOCK_TIMEOUT", 300)
  if not cfg.lock_timeout then return nil, err end
  -- exec: the default timeout of an exec over JSON-RPC (the CLI has
  -- --timeout), and the most bytes of each output stream an exec result keeps
  cfg.exec_timeout, err = number_setting(opts, getenv, "exec_timeout", "CP_DOCKER_EXEC_TIMEOUT", 60)
  if not cfg.exec_timeout then return nil, err end
  if cfg.exec_timeout <= 0 then return nil, "exec_timeout: must be more than 0" end
  local omax = opts.exec_output_max
  if omax == nil then omax = nonempty(getenv("CP_DOCKER_EXEC_OUTPUT_MAX")) end
  if omax == nil then omax = 4 * 1024 * 1024 end
  omax = tonumber(omax)
  if not omax or omax ~= omax or omax < 0 or omax > 1 << 40 or omax % 1 ~= 0 then
    return nil, "exec_output_max: expected a number of bytes (CP_DOCKER_EXEC_OUTPUT_MAX)"
  end
  cfg.exec_output_max = math.tointeger(omax)
  -- cold `resources`: "auto" reads a local daemon's containers from their
  -- cgroup files (two readings stats_interval apart), "api" always asks the daemon
  cfg.stats_source = nonempty(opts.stats_source) or nonempty(getenv("CP_DOCKER_STATS_SOURCE"))
    or "auto"
  if cfg.stats_source ~= "auto" and cfg.stats_source ~= "api" then
    return nil, "stats_source: must be auto or api (got \"" .. tostring(cfg.stats_source) .. "\")"
  end
  cfg.stats_interval, err = number_setting(opts, getenv, "stats_interval",
    "CP_DOCKER_STATS_INTERVAL", 0.1)
  if not cfg.stats_interval then return nil, err end
  if cfg.stats_interval < 0.01 or cfg.stats_interval > 10 then
    return nil, "stats_interval: must be between 10ms and 10s (got " .. cfg.stats_interval .. " s)"
  end
  cfg.network = nonempty(opts.network) or nonempty(getenv("CP_DOCKER_NETWORK"))
  cfg.registry = nonempty(opts.registry) or nonempty(getenv("CP_DOCKER_REGISTRY"))
  cfg.publish_address = nonempty(opts.publish_address)
    or nonempty(getenv("CP_DOCKER_PUBLISH_ADDRESS")) or "127.0.0.1"
  -- services whose host ports a deploy keeps (costs start-first: recreate)
  local keep = opts.keep_host_ports
  if keep == nil then keep = nonempty(getenv("CP_DOCKER_KEEP_HOST_PORTS")) end
  if type(keep) == "string" then
    local set = {}
    for name in keep:gmatch("[^,%s]+") do set[name] = true end
    keep = set
  elseif type(keep) == "table" then
    local set = {}
    for k, v in pairs(keep) do
      if type(k) == "number" then set[v] = true else set[k] = v and true or nil end
    end
    keep = set
  elseif keep ~= nil then
    return nil, source_name(opts, "keep_host_ports", "CP_DOCKER_KEEP_HOST_PORTS")
      .. ": expected \"*\" or a comma-separated list of service names"
  end
  cfg.keep_host_ports = keep and next(keep) and keep or nil
  cfg.pull_policy = nonempty(opts.pull_policy) or nonempty(getenv("CP_DOCKER_PULL_POLICY"))
    or "if-not-present"
  if cfg.pull_policy ~= "if-not-present" and cfg.pull_policy ~= "always"
      and cfg.pull_policy ~= "never" then
    return nil, source_name(opts, "pull_policy", "CP_DOCKER_PULL_POLICY")
      .. ": must be if-not-present, always or never (got \""
      .. cfg.pull_policy .. "\")"
  end
  cfg.policy_dir = nonempty(opts.policy_dir) or nonempty(getenv("CP_POLICY_DIR"))
  if cfg.policy_dir then -- a typo must not fall back to the bundled policy silently
    local d = io.open(cfg.policy_dir .. "/.", "r")
    if not d then
      return nil, source_name(opts, "policy_dir", "CP_POLICY_DIR") .. ": " .. cfg.policy_dir
        .. " is not a directory"
    end
    d:close()
  end
  cfg.scripts_dir = nonempty(opts.scripts_dir)
  -- request limits (validate.lua): the most replicas one service may ask
  -- for, and whether fixed host ports below 1024 may be published
  local max = opts.max_replicas
  if max == nil then max = nonempty(getenv("CP_DOCKER_MAX_REPLICAS")) end
  if max == nil then max = 50 end
  cfg.max_replicas = math.tointeger(tonumber(max))
  if not cfg.max_replicas or cfg.max_replicas < 1 or cfg.max_replicas > 10000 then
    return nil, source_name(opts, "max_replicas", "CP_DOCKER_MAX_REPLICAS")
      .. ": must be an integer from 1 to 10000 (got \"" .. tostring(max) .. "\")"
  end
  local priv = opts.allow_privileged_ports
  if priv == nil then priv = nonempty(getenv("CP_DOCKER_ALLOW_PRIVILEGED_PORTS")) end
  if type(priv) == "string" then
    local v = priv:lower()
    if v == "1" or v == "true" or v == "yes" then
      priv = true
    elseif v == "0" or v == "false" or v == "no" then
      priv = false
    else
      return nil, source_name(opts, "allow_privileged_ports", "CP_DOCKER_ALLOW_PRIVILEGED_PORTS")
        .. ": expected 1 or 0 (got \"" .. priv .. "\")"
    end
  end
  cfg.allow_privileged_ports = priv == true
  -- the backend (DESIGN §10): engine (one Docker host) or swarm (--host is a
  -- manager; nodes maps node hostnames to their daemons for stats and exec)
  cfg.backend = nonempty(opts.backend) or nonempty(getenv("CP_DOCKER_BACKEND")) or "engine"
  if cfg.backend ~= "engine" and cfg.backend ~= "swarm" then
    return nil, source_name(opts, "backend", "CP_DOCKER_BACKEND")
      .. ": must be engine or swarm (got \"" .. tostring(cfg.backend) .. "\")"
  end
  local nodes = opts.nodes
  if nodes == nil then nodes = nonempty(getenv("CP_DOCKER_NODES")) end
  cfg.nodes, err = config.nodes(nodes)
  if not cfg.nodes then return nil, err end
  cfg.endpoint_mode = nonempty(opts.endpoint_mode) or nonempty(getenv("CP_DOCKER_ENDPOINT_MODE"))
    or "dnsrr"
  if cfg.endpoint_mode ~= "dnsrr" and cfg.endpoint_mode ~= "vip" then
    return nil, "endpoint_mode: must be dnsrr or vip (got \"" .. tostring(cfg.endpoint_mode) .. "\")"
  end
  cfg.publish_mode = nonempty(opts.publish_mode) or nonempty(getenv("CP_DOCKER_PUBLISH_MODE"))
    or "host"
  if cfg.publish_mode ~= "host" and cfg.publish_mode ~= "ingress" then
    return nil, "publish_mode: must be host or ingress (got \"" .. tostring(cfg.publish_mode) .. "\")"
  end
  -- where the bundled scripts/secrets.lua reads secret values (one file per key)
  cfg.secrets_dir = nonempty(opts.secrets_dir) or nonempty(getenv("CP_DOCKER_SECRETS_DIR"))
  cfg.region = nonempty(opts.region) or nonempty(getenv("CP_DOCKER_REGION")) or "local"
  cfg.country = nonempty(opts.country) or nonempty(getenv("CP_DOCKER_COUNTRY")) or ""
  cfg.city = nonempty(opts.city) or nonempty(getenv("CP_DOCKER_CITY")) or ""
  return cfg
end

return config
