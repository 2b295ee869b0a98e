-- JSON-RPC 2.0 for the provider: the method table shared by `cpdocker
-- serve` (one JSON message per line on stdin/stdout) and the C embedding
-- API (runtime/include/ctrlplane_docker.h).
--
-- Methods are the provider operations by their contract names, taking the
-- contract's JSON shapes: provision (ProvisionRequest), deploy
-- (DeployRequest), deprovision/start/stop/restart/status/resources
-- ({instance_id}), rollback ({instance_id, release_id}), scale
-- ({instance_id, spec}), exec ({instance_id, request, timeout?}), logs ({instance_id,
-- opts}), info, capabilities, health_check; plus logs.cancel
-- ({subscription}) for a followed log stream.
--
-- Errors: -32700 parse error, -32600 invalid request, -32601 unknown
-- method, -32602 invalid params (data.errors names each field), -32000 the
-- operation failed; data.code is always the runtime's stable error code.
local config = require("ctrlplane.docker.config")
local core = require("ctrlplane.docker.core")
local json = require("ctrlplane.docker.json")
local util = require("ctrlplane.docker.util")

local rpc = {}

rpc.PARSE_ERROR = -32700
rpc.INVALID_REQUEST = -32600
rpc.METHOD_NOT_FOUND = -32601
rpc.INVALID_PARAMS = -32602
rpc.INTERNAL_ERROR = -32603
rpc.SERVER_ERROR = -32000

rpc.MAX_LINE = 4 * 1024 * 1024

local function err_obj(code, message, data)
  return {code = code, message = message, data = data}
end

local function bad_params(message, field)
  return err_obj(rpc.INVALID_PARAMS, message, {code = "invalid",
    errors = json.array({{field = field, message = message}})})
end

-- Maps an operation failure (nil, message, code, errors) to an error object.
local function op_error(message, code, errors)
  if code == "invalid" then
    return err_obj(rpc.INVALID_PARAMS, message, {code = code,
      errors = json.array(errors or {})})
  end
  return err_obj(rpc.SERVER_ERROR, message or "operation failed", {code = code or "error"})
end

-- The instance id from {instance_id = ...}, ["id"] or "id".
local function instance_id(params)
  if type(params) == "string" then return params end
  if type(params) == "table" then
    return params.instance_id or params[1]
  end
  return nil
end

local function need_id(params)
  local id = instance_id(params)
  if type(id) ~= "string" then
    return nil, bad_params("params.instance_id: expected a string", "instance_id")
  end
  return id
end

local function by_id(op)
  return function(p, params)
    local id, e = need_id(params)
    if not id then return nil, e end
    local res, err, code, errors = p[op](p, id)
    if res == nil then return nil, op_error(err, code, errors) end
    if res == true then return json.null end
    return res
  end
end

-- start, stop, restart: {instance_id, stop_timeout? (stop, restart: a
-- duration, "90s" or Go nanoseconds), no_wait? (start, restart: do not
-- wait until ready)}
local function power(op)
  return function(p, params)
    local id, e = need_id(params)
    if not id then return nil, e end
    local o = {}
    if type(params) == "table" then
      if params.no_wait ~= nil and params.no_wait ~= json.null then
        if op == "stop" or type(params.no_wait) ~= "boolean" then
          return nil, bad_params("params.no_wait: expected a boolean (start, restart)", "no_wait")
        end
        o.no_wait = params.no_wait
      end
      if params.stop_timeout ~= nil and params.stop_timeout ~= json.null then
        local t, terr = config.seconds(params.stop_timeout, "params.stop_timeout")
        if op == "start" or not t then
          return nil, bad_params(terr or "params.stop_timeout: only for stop and restart",
            "stop_timeout")
        end
        o.stop_timeout = t
      end
    end
    local res, err, code, errors = p[op](p, id, o)
    if res == nil then return nil, op_error(err, code, errors) end
    return json.null
  end
end

local function whole(op)
  return function(p, params)
    if type(params) ~= "table" then
      return nil, bad_params("params: expected the " .. op .. " request object", "params")
    end
    local res, err, code, errors = p[op](p, params)
    if res == nil then return nil, op_error(err, code, errors) end
    return res
  end
end

rpc.methods = {
  info = function(p) return p:info() end,
  capabilities = function(p) return p:capabilities() end,
  health_check = function(p) return p:health_check() end,
  provision = whole("provision"),
  deploy = whole("deploy"),
  deprovision = by_id("deprovision"),
  start = power("start"),
  stop = power("stop"),
  restart = power("restart"),
  status = by_id("status"),
  resources = by_id("resources"),
  rollback = function(p, params)
    local id, e = need_id(params)
    if not id then return nil, e end
    local rel = type(params) == "table" and (params.release_id or params[2])
    if type(rel) ~= "string" then
      return nil, bad_params("params.release_id: expected a string", "release_id")
    end
    local res, err, code, errors = p:rollback(id, rel)
    if res == nil then return nil, op_error(err, code, errors) end
    return res == true and json.null or res
  end,
  scale = function(p, params)
    local id, e = need_id(params)
    if not id then return nil, e end
    local spec = type(params) == "table" and (params.spec or params[2])
    if type(spec) ~= "table" then
      return nil, bad_params("params.spec: expected a ResourceSpec object", "spec")
    end
    local res, err, code, errors = p:scale(id, spec)
    if res == nil then return nil, op_error(err, code, errors) end
    return res == true and json.null or res
  end,
  exec = function(p, params)
    local id, e = need_id(params)
    if not id then return nil, e end
    local req = type(params) == "table" and (params.request or params[2])
    if type(req) ~= "table" then
      return nil, bad_params("params.request: expected an ExecRequest object", "request")
    end
    -- bytes travel as base64 on the wire, as Go encodes []byte
    local call = {command = req.command, tty = req.tty, service = req.service or params.service}
    if req.stdin ~= nil and req.stdin ~= json.null then
      if type(req.stdin) ~= "string" or not req.stdin:match("^[%w%+/=%s]*$") then
        return nil, bad_params("params.request.stdin: expected base64 text", "request.stdin")
      end
      call.stdin = util.unbase64(req.stdin)
    end
    -- bounded: a timeout (params.timeout, default the exec_timeout setting)
    -- ends the command, and each stream keeps at most exec_output_max bytes
    local timeout = p.cfg.exec_timeout
    local t = type(params) == "table" and params.timeout
    if t ~= nil and t ~= false and t ~= json.null then
      local secs = config.seconds(t, "params.timeout")
      if not secs or secs <= 0 or secs > 1e9 then
        return nil, bad_params("params.timeout: expected a duration (\"30s\", nanoseconds or "
          .. "seconds) more than 0", "timeout")
      end
      timeout = secs
    end
    local res, err, code, errors = p:exec(id, call, {timeout = timeout})
    if res == nil then return nil, op_error(err, code, errors) end
    return {exit_code = res.exit_code, stdout = util.base64(res.stdout),
      stderr = util.base64(res.stderr), stdout_truncated = res.stdout_truncated,
      stderr_truncated = res.stderr_truncated}
  end,
}

-- The operations a provider really has (the RPC only offers those).
local function available(p, method)
  local fn = rpc.methods[method]
  if not fn then return nil end
  local needs = ({provision = "provision", deploy = "deploy", deprovision = "deprovision",
    start = "start", stop = "stop", restart = "restart", status = "status",
    resources = "resources", rollback = "rollback", scale = "scale", exec = "exec"})[method]
  if needs and type(p[needs]) ~= "function" then return nil end
  return fn
end

-- Calls one method: returns true, result or false, error object. Never
-- raises: an error inside an operation becomes an internal error.
function rpc.call(p, method, params)
  if type(method) ~= "string" then
    return false, err_obj(rpc.INVALID_REQUEST, "method must be a string", {code = "invalid"})
  end
  local fn = available(p, method)
  if not fn then
    return false, err_obj(rpc.METHOD_NOT_FOUND, "unknown method '" .. method .. "'",
      {code = "method_not_found"})
  end
  local ok, res, e = xpcall(fn, debug.traceback, p, params)
  if not ok then
    return false, err_obj(rpc.INTERNAL_ERROR, "internal error: " .. tostring(res), {code = "internal"})
  end
  if res == nil then return false, e end
  return true, res
end

-- For the C embedding API: params and result as JSON text.
function rpc.call_json(p, method, params_json)
  local params = json.null
  if params_json and params_json ~= "" then
    local v, err = json.decode_request(params_json)
    if v == nil then
      return false, json.encode(err_obj(rpc.PARSE_ERROR, "params: " .. err, {code = "invalid"}))
    end
    params = v
  end
  local ok, res = rpc.call(p, method, params)
  return ok, json.encode(res)
end

-- For the C embedding API: a provider from a JSON configuration object.
function rpc.open_json(config_json)
  local cfg = json.null
  if config_json and config_json ~= "" then
    local v, err = json.decode(config_json)
    if v == nil then return nil, "configuration: " .. err end
    cfg = v
  end
  if cfg == json.null then cfg = {} end
  if type(cfg) ~= "table" then return nil, "configuration: expected a JSON object" end
  local docker = require("ctrlplane.docker")
  local p, err = docker.new(cfg)
  if not p then return nil, err end
  return p
end

-- ---- the stdio server ---------------------------------------------------------

local Server = {}
Server.__index = Server

function Server:send(msg)
  msg.jsonrpc = "2.0"
  self.out:write(json.encode(msg), "\n")
  self.out:flush()
end

function Server:reply(id, ok, res)
  if id == nil then return end -- a notification gets no answer
  if ok then
    self:send({id = id, result = res})
  else
    self:send({id = id, error = res})
  end
end

-- logs: without follow, the events as a list; with follow, a subscription
-- whose events arrive as "logs.event" notifications until "logs.end".
function Server:logs(id, params)
  local iid, e = need_id(params)
  if not iid then return self:reply(id, false, e) end
  if type(self.p.logs) ~= "function" then
    return self:reply(id, false, err_obj(rpc.METHOD_NOT_FOUND, "unknown method 'logs'",
      {code = "method_not_found"}))
  end
  local opts = type(params) == "table" and (params.opts or params) or {}
  local stream, err, code = self.p:logs(iid, opts)
  if not stream then return self:reply(id, false, op_error(err, code)) end
  if not opts.follow then
    local events = json.array({})
    while true do
      local ev, rerr, rcode = stream:next(self.timeout)
      if ev == nil and rerr then
        stream:close()
        return self:reply(id, false, op_error(rerr, rcode))
      end
      if not ev then break end
      events[#events + 1] = ev
    end
    stream:close()
    return self:reply(id, true, events)
  end
  self.next_sub = self.next_sub + 1
  local sub = "logs-" .. self.next_sub
  self.subs[sub] = stream
  self:reply(id, true, {subscription = sub})
end

function Server:cancel(id, params)
  local sub = type(params) == "table" and (params.subscription or params[1])
  local stream = sub and self.subs[sub]
  if not stream then
    return self:reply(id, false, bad_params("params.subscription: no such subscription", "subscription"))
  end
  stream:close()
  self.subs[sub] = nil
  self:send({method = "logs.end", params = {subscription = sub, reason = "cancelled"}})
  self:reply(id, true, {cancelled = true})
end

function Server:handle(line)
  if line:match("^%s*$") then return end
  local msg, err = json.decode_request(line)
  if msg == nil then
    return self:send({id = json.null, error = err_obj(rpc.PARSE_ERROR, "parse error: " .. err,
      {code = "invalid"})})
  end
  if type(msg) ~= "table" or msg.jsonrpc ~= "2.0" or type(msg.method) ~= "string" then
    local id = type(msg) == "table" and msg.id or json.null
    return self:send({id = id ~= nil and id or json.null, error = err_obj(rpc.INVALID_REQUEST,
      "invalid request: expected {\"jsonrpc\":\"2.0\",\"method\":...}", {code = "invalid"})})
  end
  local id = msg.id
  if msg.method == "logs" then return self:logs(id, msg.params) end
  if msg.method == "logs.cancel" then return self:cancel(id, msg.params) end
  self:reply(id, rpc.call(self.p, msg.method, msg.params))
end

-- Moves the events that are ready from each followed stream to stdout.
function Server:pump()
  for sub, stream in pairs(self.subs) do
    for _ = 1, 1000 do -- bounded, so one busy stream cannot starve stdin
      local ev, err, code = stream:next(0)
      if ev == false then break end
      if not ev then
        stream:close()
        self.subs[sub] = nil
        self:send({method = "logs.end", params = {subscription = sub,
          reason = err and (err .. " [" .. tostring(code) .. "]") or "end of stream"}})
        break
      end
      self:send({method = "logs.event", params = {subscription = sub, event = ev}})
    end
  end
end

-- Serves until stdin ends. Returns 0.
function rpc.serve(p, opts)
  opts = opts or {}
  local self = setmetatable({p = p, out = opts.out or io.stdout, subs = {}, next_sub = 0,
    timeout = opts.timeout or 30}, Server)
  local fd = opts.fd or 0
  local buf, discarding, eof = "", false, false
  while not eof or next(self.subs) do
    local wait = next(self.subs) and 0.05 or -1
    if not eof and core.poll_fd(fd, wait) then
      local chunk = core.read_fd(fd, 65536)
      if chunk == nil or chunk == "" then
        eof = true
        if #buf > 0 and not discarding then self:handle(buf) end
        buf = ""
      else
        buf = buf .. chunk
        while true do
          local nl = buf:find("\n", 1, true)
          if not nl then
            if #buf > rpc.MAX_LINE then
              discarding = true -- drop the rest of this line as it arrives
              buf = ""
            end
            break
          end
          local line = buf:sub(1, nl - 1)
          buf = buf:sub(nl + 1)
          if discarding then
            discarding = false
            self:send({id = json.null, error = err_obj(rpc.INVALID_REQUEST,
              string.format("request line longer than %d bytes", rpc.MAX_LINE), {code = "too_large"})})
          else
            self:handle(line)
          end
        end
      end
    elseif eof then
      core.sleep(0.05)
    end
    if core.interrupted() then break end
    self:pump()
    if eof then
      -- stdin is gone: nobody can cancel, so end the subscriptions
      for sub, stream in pairs(self.subs) do
        stream:close()
        self.subs[sub] = nil
      end
    end
  end
  return 0
end

return rpc
