-- Docker Engine API calls over the C core's client: JSON in and out, and
-- failures as nil, message, code (codes: unreachable, timeout, not_found,
-- conflict, bad_request, server_error, ...). Wrong argument types raise.
local core = require("ctrlplane.docker.core")
local json = require("ctrlplane.docker.json")
local trace = require("ctrlplane.docker.trace")

local Engine = {}
Engine.__index = Engine

local M = {Engine = Engine}

-- cfg: a table from config.resolve
function M.new(cfg)
  local client, err, code = core.client({
    host = cfg.host,
    tls = cfg.tls,
    tls_verify = cfg.tls_verify,
    ca = cfg.ca,
    cert = cfg.cert,
    key = cfg.key,
    connect_timeout = cfg.connect_timeout,
    timeout = cfg.timeout,
    api_version = cfg.api_version,
  })
  if not client then return nil, err, code end
  return setmetatable({client = client, cfg = cfg}, Engine)
end

-- ---- errors that say what to fix ------------------------------------------

-- Turns a transport failure into one that tells the operator what to change
-- (TLS set-up, the timeout variable). Returns message, code.
function Engine:explain(err, code, status)
  local cfg = self.cfg
  if type(err) ~= "string" then return err, code end
  local host = cfg.host or "?"
  local tcp = host:match("^tcp://") or host:match("^https?://")
  if code == "tls" or (cfg.tls and code == "protocol" and err:find("SSL", 1, true)) then
    local from = cfg.cert_path_from or "DOCKER_CERT_PATH"
    local lower = err:lower()
    if lower:find("wrong version number", 1, true) or lower:find("packet length too long", 1, true)
        or lower:find("unexpected eof", 1, true) then
      return string.format("%s -- the Docker daemon at %s does not speak TLS on this port: "
        .. "use its TLS port (usually 2376), or unset DOCKER_TLS_VERIFY for a plain port", err,
        host), "tls"
    elseif lower:find("certificate required", 1, true) or lower:find("bad certificate", 1, true)
        or lower:find("handshake failure", 1, true) then
      return string.format("%s -- the Docker daemon at %s refused the client certificate%s: "
        .. "put the cert.pem and key.pem its CA signed in %s (%s)", err, host,
        cfg.cert and "" or " (none was sent)", from, cfg.cert_path), "tls"
    elseif lower:find("certificate", 1, true) or lower:find("issuer", 1, true)
        or lower:find("verify", 1, true) or lower:find("self.signed") then
      return string.format("%s -- the Docker daemon's certificate at %s is not signed by %s: "
        .. "point %s at the directory holding the CA that signed it (ca.pem), "
        .. "or check that the host name is one the certificate names", err, host,
        cfg.ca and ("the CA in " .. cfg.ca) or "a CA this system trusts", from), "tls"
    end
    return err, "tls"
  end
  if tcp and not cfg.tls then
    if (status == 400 and err:find("HTTPS server", 1, true))
        or (code == "unreachable" and err:find("Empty reply", 1, true)) then
      return string.format("%s -- the Docker daemon at %s speaks TLS on this port: set "
        .. "DOCKER_TLS_VERIFY=1 and DOCKER_CERT_PATH to the directory holding ca.pem, "
        .. "cert.pem and key.pem", err, host), "tls"
    end
  end
  if code == "timeout" then
    if err:find("Connection timed out", 1, true) or err:find("Failed to connect", 1, true) then
      return string.format("%s (connect timeout %gs: raise CP_DOCKER_CONNECT_TIMEOUT)", err,
        cfg.connect_timeout or 2), code
    end
    return string.format("%s (request timeout %gs: raise CP_DOCKER_TIMEOUT)", err,
      self._timeout_used or cfg.timeout or 60), code
  end
  return err, code
end

-- A stop (or restart) waits up to its `t` seconds for the container to end
-- before Docker kills it: the request's own timeout covers that on top of
-- the usual one, so `stop --timeout 90` works with the default 60 s.
local function request_timeout(cfg, path, query, given)
  if given then return given end
  local t = query and tonumber(query.t)
  if t and (path:match("/stop$") or path:match("/restart$")) then
    return (cfg.timeout or 60) + t
  end
  return nil
end

local function decode_response(res)
  if res.body == "" then return true, res end
  local ctype = res.headers["content-type"] or ""
  if not ctype:find("json", 1, true) then return res.body, res end
  local value, err = json.decode(res.body)
  if value == nil then return nil, "Docker daemon sent invalid JSON: " .. err, "protocol" end
  return value, res
end

-- A request path must not hold a dot segment ("." or "..", literal or
-- percent-encoded): the daemon decodes and cleans paths before routing, so
-- "/images/a%2F..%2F..%2Fcontainers%2Fx/json" would address
-- /containers/x/json. Names that reach paths are validated upstream and
-- each is put in with M.segment; this is the last check before the wire.
function M.check_path(path)
  if type(path) ~= "string" or path:sub(1, 1) ~= "/" then
    return nil, "request path must start with '/' (got " .. tostring(path) .. ")", "bad_request"
  end
  local decoded = path:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end)
  for piece in (decoded .. "/"):gmatch("([^/]*)/") do
    if piece == "." or piece == ".." then
      return nil, string.format("refusing request path %q: it has a %q segment", path, piece),
        "bad_request"
    end
  end
  return true
end

-- A name conflict from the daemon names the container that holds the name
-- ("... is already in use by container \"<id>\". You have to remove (or
-- rename) that container ..."), which may be another tenant's: the id is
-- not passed on, whatever operation ran into it.
function M.scrub(err, code)
  if code ~= "conflict" or type(err) ~= "string" then return err end
  return (err:gsub('by container "?%x+"?', "by another container"))
end

-- Generic call: returns the decoded body (or true for an empty one), and
-- the raw response second.
function Engine:call(method, path, query, body, opts)
  local ok, perr, pcode = M.check_path(path)
  if not ok then return nil, perr, pcode end
  local o = {query = query}
  if body ~= nil then
    o.body = type(body) == "string" and body or json.encode(body)
  end
  if opts then
    for k, v in pairs(opts) do o[k] = v end
  end
  o.timeout = request_timeout(self.cfg, path, query, o.timeout)
  self._timeout_used = o.timeout
  local t0 = trace.on and core.clock()
  local res, err, code, status = self.client:request(method, path, o)
  if t0 then trace.api(method, path, t0, not res and ("failed: " .. tostring(code)) or nil) end
  if not res then
    err, code = self:explain(M.scrub(err, code), code, status)
    self._timeout_used = nil
    return nil, err, code, status
  end
  self._timeout_used = nil
  return decode_response(res)
end

function Engine:get(path, query, opts) return self:call("GET", path, query, nil, opts) end
function Engine:post(path, query, body, opts) return self:call("POST", path, query, body, opts) end
function Engine:delete(path, query, opts) return self:call("DELETE", path, query, nil, opts) end

-- Runs several calls at once (one curl multi); waits for all of them.
-- calls: list of {method, path, query, body}; returns a list of
-- {value = decoded} or {error = message, code = code, status = status}.
function Engine:batch(calls, opts)
  if #calls == 0 then return {} end
  local reqs, refused = {}, {}
  local stretch = 0
  for i, call in ipairs(calls) do
    local c = call
    local ok, perr, pcode = M.check_path(c.path)
    if not ok then
      refused[i] = {error = perr, code = pcode}
      c = {method = "GET", path = "/_ping"} -- a harmless stand-in; its result is dropped
    end
    local body = c.body
    if body ~= nil and type(body) ~= "string" then body = json.encode(body) end
    reqs[i] = {method = c.method or "GET", path = c.path, query = c.query, body = body}
    stretch = math.max(stretch, request_timeout(self.cfg, c.path, c.query) or 0)
  end
  if stretch > 0 and not (opts and opts.timeout) then
    local o = {timeout = stretch}
    for k, v in pairs(opts or {}) do o[k] = v end
    opts = o
  end
  self._timeout_used = opts and opts.timeout
  local t0 = trace.on and core.clock()
  local results, berr, bcode, bstatus = self.client:batch(reqs, opts)
  if t0 then
    for _, r in ipairs(reqs) do trace.api(r.method, r.path, t0, "(batch of " .. #reqs .. ")") end
  end
  if not results then -- the whole batch failed (no daemon to negotiate the API version with)
    local msg, code = self:explain(berr, bcode, bstatus)
    results = {}
    for i = 1, #reqs do results[i] = {error = msg, code = code, status = bstatus, explained = true} end
  end
  local out = {}
  for i, r in ipairs(results) do
    if refused[i] then
      out[i] = refused[i]
    elseif r.error then
      local msg, code = M.scrub(r.error, r.code), r.code
      if not r.explained then msg, code = self:explain(msg, code, r.status) end
      out[i] = {error = msg, code = code, status = r.status}
    else
      local value, err, code = decode_response(r)
      if value == nil then
        out[i] = {error = err, code = code}
      else
        out[i] = {value = value}
      end
    end
  end
  self._timeout_used = nil
  return out
end

-- Opens a streamed response (logs, events, pull progress).
function Engine:stream(method, path, query, opts)
  local ok, perr, pcode = M.check_path(path)
  if not ok then return nil, perr, pcode end
  local o = {query = query}
  if opts then
    for k, v in pairs(opts) do o[k] = v end
  end
  if o.body ~= nil and type(o.body) ~= "string" then o.body = json.encode(o.body) end
  local t0 = trace.on and core.clock()
  local stream, err, code, status = self.client:stream(method, path, o)
  if t0 then trace.api(method, path, t0, "(stream opened)") end
  if not stream then
    err, code = self:explain(err, code, status)
    return nil, err, code, status
  end
  return stream
end

-- Pings the daemon without the version prefix; returns the raw response.
function Engine:ping()
  local res, err, code, status = self.client:request("GET", "/_ping", {raw = true})
  if not res then
    err, code = self:explain(err, code, status)
    return nil, err, code, status
  end
  return res
end

function Engine:api_version()
  return self.client:api_version()
end

function Engine:close()
  self.client:close()
end

-- Encodes a label/name filter table for the `filters` query parameter.
function M.filters(t)
  local out = {}
  for k, v in pairs(t) do
    out[k] = type(v) == "table" and json.array(v) or json.array({v})
  end
  return json.encode(out)
end

-- Path segment: container, network and volume names and image references
-- are validated upstream, but anything put into a path is percent-encoded
-- all the same ('/' included: an image "a/b" is one segment "a%2Fb", which
-- the daemon decodes back).
function M.segment(s)
  return (tostring(s):gsub("[^%w%-%._~]", function(c)
    return string.format("%%%02X", c:byte())
  end))
end

return M
