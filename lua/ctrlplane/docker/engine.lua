-- Docker Engine API calls over the C core's client: JSON in and out, and
-- failures as nil, message, code (codes: unreachable, timeout, not_found,
-- conflict, bad_request, server_error, ...). Wrong argument types raise.
local core = require("ctrlplane.docker.core")
local json = require("ctrlplane.docker.json")
local trace = require("ctrlplane.docker.trace")

local Engine = {}
Engine.__index = Engine

local M = {}

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
  local t0 = trace.on and core.clock()
  local res, err, code, status = self.client:request(method, path, o)
  if t0 then trace.api(method, path, t0, not res and ("failed: " .. tostring(code)) or nil) end
  if not res then return nil, M.scrub(err, code), code, status end
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
  end
  local t0 = trace.on and core.clock()
  local results, berr, bcode, bstatus = self.client:batch(reqs, opts)
  if t0 then
    for _, r in ipairs(reqs) do trace.api(r.method, r.path, t0, "(batch of " .. #reqs .. ")") end
  end
  if not results then -- the whole batch failed (no daemon to negotiate the API version with)
    results = {}
    for i = 1, #reqs do results[i] = {error = berr, code = bcode, status = bstatus} end
  end
  local out = {}
  for i, r in ipairs(results) do
    if refused[i] then
      out[i] = refused[i]
    elseif r.error then
      out[i] = {error = M.scrub(r.error, r.code), code = r.code, status = r.status}
    else
      local value, err, code = decode_response(r)
      if value == nil then
        out[i] = {error = err, code = code}
      else
        out[i] = {value = value}
      end
    end
  end
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
  return stream, err, code, status
end

-- Pings the daemon without the version prefix; returns the raw response.
function Engine:ping()
  return self.client:request("GET", "/_ping", {raw = true})
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
