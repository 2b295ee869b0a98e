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
-- ({subscription}) for a log stream and cancel ({id}) for a request.
--
-- Concurrency (DESIGN §11): every request runs as a scheduler task
-- (sched.lua); requests on one instance run one after another in arrival
-- order, requests on different instances interleave, and replies come as
-- each finishes (the ids match them). At most max_inflight instance
-- operations run at once (CP_DOCKER_MAX_INFLIGHT, default 32); more wait
-- in arrival order, and beyond max_queued waiting (CP_DOCKER_MAX_QUEUED,
-- default 256) a request fails at once with data.code "busy". A request
-- may carry "deadline_ms" (a member of the request object, or of params
-- when params is an object): when it passes, the operation is cancelled
-- as by the cancel method and fails with data.code "deadline".
--
-- Errors: -32700 parse error, -32600 invalid request, -32601 unknown
-- method, -32602 invalid params (data.errors names each field), -32000 the
-- operation failed; data.code is always the runtime's stable error code.
local config = require("ctrlplane.docker.config")
local core = require("ctrlplane.docker.core")
local json = require("ctrlplane.docker.json")
local util = require("ctrlplane.docker.util")
local sched = require("ctrlplane.docker.sched")

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

-- For the C embedding API: a provider from a JSON configuration object,
-- and its runner (rpc.embed). max_inflight and max_queued in the
-- configuration bound the runner.
function rpc.open_json(config_json)
  local cfg = json.null
  if config_json and config_json ~= "" then
    local v, err = json.decode(config_json)
    if v == nil then return nil, "configuration: " .. err end
    cfg = v
  end
  if cfg == json.null then cfg = {} end
  if type(cfg) ~= "table" then return nil, "configuration: expected a JSON object" end
  local limits = {}
  for _, k in ipairs({"max_inflight", "max_queued"}) do
    local v = cfg[k]
    if v ~= nil then
      if math.type(v) ~= "integer" or v < 1 then
        return nil, "configuration: " .. k .. " must be a positive integer"
      end
      limits[k] = v
      cfg[k] = nil
    end
  end
  local docker = require("ctrlplane.docker")
  local p, err = docker.new(cfg)
  if not p then return nil, err end
  if p.engine and p.engine.api_version then p.engine:api_version() end
  return p, rpc.embed(p, limits)
end

-- ---- requests as tasks (shared by serve and the embedding API) -------------

-- The instance a request is about (its operations are serialized), or nil.
local INSTANCE_METHODS = {provision = true, deploy = true, deprovision = true, start = true,
  stop = true, restart = true, status = true, resources = true, rollback = true, scale = true,
  exec = true}

local function key_of(method, params)
  if not INSTANCE_METHODS[method] then return nil end
  local id = instance_id(params)
  if type(id) == "string" then return id end
  return nil
end

local MAX_DEADLINE_MS = 24 * 3600 * 1000

-- Takes deadline_ms out of the request (msg member first, then params).
-- Returns true, params (a copy without it), deadline in seconds or nil,
-- or false, error object.
local function take_deadline(msg_deadline, params)
  local d = msg_deadline
  if type(params) == "table" and params ~= json.null and params.deadline_ms ~= nil then
    local copy = {}
    for k, v in pairs(params) do copy[k] = v end
    d = d or copy.deadline_ms
    copy.deadline_ms = nil
    params = setmetatable(copy, getmetatable(params))
  end
  if d == nil or d == json.null then return true, params, nil end
  if type(d) ~= "number" or d ~= d or d <= 0 or d > MAX_DEADLINE_MS then
    return false, bad_params("deadline_ms: expected a number of milliseconds between 1 and "
      .. MAX_DEADLINE_MS, "deadline_ms")
  end
  return true, params, d / 1000
end

local function env_int(name, default)
  local v = math.tointeger(tonumber(os.getenv(name) or ""))
  if v and v > 0 then return v end
  return default
end

local Runner = {}
Runner.__index = Runner

-- A runner: a scheduler over the provider. opts: max_inflight, max_queued.
function rpc.runner(p, opts)
  opts = opts or {}
  local cfg = p.cfg or {}
  local self = setmetatable({p = p, live = {}}, Runner)
  self.sched = sched.new({
    max_inflight = opts.max_inflight or cfg.max_inflight
      or env_int("CP_DOCKER_MAX_INFLIGHT", sched.DEFAULT_MAX_INFLIGHT),
    max_queued = opts.max_queued or cfg.max_queued
      or env_int("CP_DOCKER_MAX_QUEUED", sched.DEFAULT_MAX_QUEUED),
  })
  return self
end

local function id_key(id)
  return type(id) .. ":" .. tostring(id)
end

-- The reply for a finished task: ok, result or false, error object.
local function task_outcome(task, ok, a, b, c)
  if not ok then
    if b == "internal" then
      return false, err_obj(rpc.INTERNAL_ERROR, "internal error: " .. tostring(a):match("[^\n]*"),
        {code = "internal"})
    end
    return false, err_obj(rpc.SERVER_ERROR, tostring(a), {code = b or "error"})
  end
  -- rpc.call's own result: a, b = ok, result | false, error object
  local _ = c
  if not a and task.cancel then
    local e = b
    local why = task.cancel.message
    if type(e) == "table" and e.message and e.message ~= why then
      why = why .. " (" .. tostring(e.message) .. ")"
    end
    return false, err_obj(rpc.SERVER_ERROR, why, {code = task.cancel.code})
  end
  return a, b
end

-- Submits method(params) as a task. done(ok, result|error object) is
-- called when it finishes. req_id: the request id (for cancel), or nil.
-- Returns the task, or nil, error object (busy, bad deadline).
function Runner:submit(method, params, done, req_id, msg_deadline)
  local okd, p2, deadline = take_deadline(msg_deadline, params)
  if not okd then return nil, p2 end
  params = p2
  local key = key_of(method, params)
  local entry
  local task, err, code = self.sched:spawn(function()
    return rpc.call(self.p, method, params)
  end, {
    key = key,
    limited = key ~= nil,
    deadline = deadline,
    name = method,
    on_done = function(t, ok, a, b, c)
      if entry then
        local l = self.live[entry]
        if l then l[t] = nil end
        if l and not next(l) then self.live[entry] = nil end
      end
      local rok, res = task_outcome(t, ok, a, b, c)
      done(rok, res)
    end,
  })
  if not task then return nil, err_obj(rpc.SERVER_ERROR, err, {code = code}) end
  if req_id ~= nil and not task.finished then
    entry = id_key(req_id)
    self.live[entry] = self.live[entry] or {}
    self.live[entry][task] = true
  end
  return task
end

-- Cancels every live request with this id: the count.
function Runner:cancel(req_id, code, message)
  local l = self.live[id_key(req_id)]
  local n = 0
  if l then
    for task in pairs(l) do
      if self.sched:cancel(task, code or "cancelled", message or "cancelled by request") then
        n = n + 1
      end
    end
  end
  return n
end

rpc.Runner = Runner

-- ---- the C embedding API's runner: submit / poll / cancel ---------------------

local Embed = {}
Embed.__index = Embed

-- A runner whose finished calls wait in a queue for poll.
function rpc.embed(p, opts)
  return setmetatable({runner = rpc.runner(p, opts), done = {}, next_id = 0, live = 0}, Embed)
end

local function decode_params(params_json)
  if not params_json or params_json == "" then return true, json.null end
  local v, err = json.decode_request(params_json)
  if v == nil then
    return false, json.encode(err_obj(rpc.PARSE_ERROR, "params: " .. err, {code = "invalid"}))
  end
  return true, v
end

-- Returns the call's id, or nil, error JSON (parse error, busy, bad deadline).
function Embed:submit(method, params_json, deadline_ms)
  local ok, params = decode_params(params_json)
  if not ok then return nil, params end
  self.next_id = self.next_id + 1
  local id = self.next_id
  local task, e = self.runner:submit(method, params, function(rok, res)
    self.live = self.live - 1
    self.done[#self.done + 1] = {id, rok, json.encode(res)}
  end, id, deadline_ms and deadline_ms > 0 and deadline_ms or nil)
  if not task then return nil, json.encode(e) end
  self.live = self.live + 1
  return id
end

-- Runs the loop until a call finishes or timeout seconds pass (<0: until
-- one finishes). Returns id, ok, result JSON, or nil when none finished
-- (or none is in flight).
function Embed:poll(timeout)
  local deadline = timeout and timeout >= 0 and core.clock() + timeout
  while true do
    local d = table.remove(self.done, 1)
    if d then return d[1], d[2], d[3] end
    local s = self.runner.sched
    if s:idle() then return nil end
    local left = deadline and deadline - core.clock()
    if left and left <= 0 then return nil end
    local ok, err = s:step(left and math.min(left, 1) or 1)
    if not ok then return nil, err end
  end
end

-- Cancels call id: true when it was in flight.
function Embed:cancel(id)
  return self.runner:cancel(id, "cancelled", "cancelled by the caller") > 0
end

function Embed:pending()
  return self.live
end

-- The blocking call: runs the loop until this call finishes (other calls
-- in flight progress meanwhile; their results wait for poll).
function Embed:call(method, params_json)
  local id, err = self:submit(method, params_json)
  if not id then return false, err end
  local mine
  while not mine do
    for i, d in ipairs(self.done) do
      if d[1] == id then
        mine = d
        table.remove(self.done, i)
        break
      end
    end
    if not mine then
      local ok, e = self.runner.sched:step(1)
      if not ok then return false, json.encode(err_obj(rpc.INTERNAL_ERROR, tostring(e),
        {code = "internal"})) end
    end
  end
  return mine[2], mine[3]
end

rpc.Embed = Embed

-- ---- logs parameters ---------------------------------------------------------

local MAX_LINE_CAP = 64 * 1024 * 1024

-- Checks a logs params object; returns instance id, opts or nil, error object.
local function logs_params(params)
  local iid, e = need_id(params)
  if not iid then return nil, e end
  local opts = params.opts
  if opts == nil or opts == json.null then
    opts = {}
  elseif type(opts) ~= "table" then
    return nil, bad_params("params.opts: expected a LogOptions object", "opts")
  end
  local function bad(field, what)
    return nil, bad_params("params.opts." .. field .. ": " .. what, "opts." .. field)
  end
  local o = {}
  if opts.follow ~= nil and opts.follow ~= json.null then
    if type(opts.follow) ~= "boolean" then return bad("follow", "expected a boolean") end
    o.follow = opts.follow
  end
  if opts.all ~= nil and opts.all ~= json.null then
    if type(opts.all) ~= "boolean" then return bad("all", "expected a boolean") end
    o.all = opts.all
  end
  if opts.service_name ~= nil and opts.service_name ~= json.null and opts.service_name ~= "" then
    if type(opts.service_name) ~= "string" then return bad("service_name", "expected a string") end
    o.service_name = opts.service_name
  end
  local tail = opts.tail
  if tail ~= nil and tail ~= json.null then
    if type(tail) == "number" then
      if math.tointeger(tail) == nil or tail < 0 or tail > 1e9 then
        return bad("tail", "expected a whole number of lines from 0 (all) to 1e9")
      end
      o.tail = math.tointeger(tail)
    elseif tail ~= "all" and tail ~= "" then
      return bad("tail", "expected a number of lines or \"all\"")
    end
  end
  local since = opts.since
  if since ~= nil and since ~= json.null and since ~= "" then
    if type(since) == "number" then
      if since ~= since or since < 0 or since > 1e11 then
        return bad("since", "expected Unix seconds between 0 and 1e11")
      end
    elseif type(since) ~= "string" or #since > 64 then
      return bad("since", "expected an RFC 3339 time, Unix seconds or a duration")
    end
    local logs = require("ctrlplane.docker.logs")
    local ok, v, err = pcall(logs.since_param, since)
    if not ok or not v then
      return bad("since", tostring(ok and err or "out of range"):gsub("^since: ", ""))
    end
    o.since = since
  end
  local ml = opts.max_line
  if ml ~= nil and ml ~= json.null then
    if type(ml) ~= "number" or math.tointeger(ml) == nil or ml < 1 or ml > MAX_LINE_CAP then
      return bad("max_line", "expected a whole number of bytes from 1 to " .. MAX_LINE_CAP)
    end
    o.max_line = math.tointeger(ml)
  end
  return iid, o
end
rpc.logs_params = logs_params

-- ---- the stdio server ---------------------------------------------------------

local Server = {}
Server.__index = Server

-- Messages are written as they come and flushed once per turn of the
-- loop (rpc.serve), not one write(2) per log event.
function Server:send(msg)
  msg.jsonrpc = "2.0"
  self.out:write(json.encode(msg), "\n")
  self.dirty = true
end

local function response(id, ok, res)
  if ok then return {jsonrpc = "2.0", id = id, result = res} end
  return {jsonrpc = "2.0", id = id, error = res}
end

-- logs: answers {subscription} at once; the events follow as "logs.event"
-- notifications and "logs.end" closes the subscription — with follow when
-- logs.cancel is called, the instance goes away or stdin ends; without
-- follow when the log is read to its end. Nothing is accumulated: the
-- server writes each event as it reads it, so memory stays bounded however
-- long the log is.
function Server:logs(params, respond)
  if type(self.p.logs) ~= "function" then
    return respond(false, err_obj(rpc.METHOD_NOT_FOUND, "unknown method 'logs'",
      {code = "method_not_found"}))
  end
  if type(params) ~= "table" then
    return respond(false, bad_params("params: expected {instance_id, opts}", "params"))
  end
  local iid, opts = logs_params(params)
  if not iid then return respond(false, opts) end
  self.next_sub = self.next_sub + 1
  local sub = {id = "logs-" .. self.next_sub}
  local task = self.runner.sched:spawn(function()
    local stream, err, code = self.p:logs(iid, opts)
    if not stream then return respond(false, op_error(err, code)) end
    sub.stream = stream
    respond(true, {subscription = sub.id})
    local reason
    local burst = 0
    while true do
      local ev, rerr, rcode = stream:next()
      if sub.ended then break end
      if ev == nil then
        reason = rerr and (rerr .. " [" .. tostring(rcode) .. "]") or "end of stream"
        break
      end
      if ev then self:send({method = "logs.event", params = {subscription = sub.id, event = ev}}) end
      -- a long run of buffered events gives the other tasks a turn now and then
      burst = burst + 1
      if burst >= 32 then
        burst = 0
        core.sleep(1e-6)
      end
    end
    stream:close()
    if not sub.ended then
      sub.ended = true
      self:send({method = "logs.end", params = {subscription = sub.id, reason = reason}})
    end
  end, {limited = false, name = "logs", on_done = function(_, ok, err)
    self.subs[sub.id] = nil
    if sub.stream then sub.stream:close() end
    if not ok then
      if not sub.stream then
        respond(false, err_obj(rpc.INTERNAL_ERROR, "internal error: " .. tostring(err):match("[^\n]*"),
          {code = "internal"}))
      elseif not sub.ended then
        sub.ended = true
        self:send({method = "logs.end", params = {subscription = sub.id, reason = "internal error"}})
      end
    end
  end})
  sub.task = task
  self.subs[sub.id] = sub
end

function Server:logs_cancel(params, respond)
  local sid = type(params) == "table" and (params.subscription or params[1])
  local sub = type(sid) == "string" and self.subs[sid]
  if not sub then
    return respond(false, bad_params("params.subscription: no such subscription", "subscription"))
  end
  self:end_sub(sub, "cancelled")
  respond(true, {cancelled = true})
end

function Server:end_sub(sub, reason)
  if sub.ended then return end
  sub.ended = true
  self.subs[sub.id] = nil
  self.runner.sched:cancel(sub.task, "cancelled", reason)
  self:send({method = "logs.end", params = {subscription = sub.id, reason = reason}})
end

-- cancel {id}: the request with that id stops at its next wait and fails
-- with data.code "cancelled" (a queued one at once).
function Server:cancel(params, respond)
  local rid
  if type(params) == "table" then rid = params.id if rid == nil then rid = params[1] end end
  if type(rid) ~= "string" and type(rid) ~= "number" then
    return respond(false, bad_params("params.id: expected the id of a request in flight", "id"))
  end
  local n = self.runner:cancel(rid, "cancelled", "cancelled by request")
  if n == 0 then
    return respond(false, err_obj(rpc.SERVER_ERROR, "no request in flight with id " .. tostring(rid),
      {code = "not_found"}))
  end
  respond(true, {cancelled = true})
end

local function valid_id(id)
  local t = type(id)
  return id == nil or id == json.null or t == "string" or t == "number"
end

-- Dispatches one request object; respond(ok, res) is called once, now or
-- when the operation ends (not at all for a notification's answer).
function Server:dispatch(msg, respond)
  if type(msg) ~= "table" or msg.jsonrpc ~= "2.0" or type(msg.method) ~= "string" or not valid_id(msg.id) then
    return respond(false, err_obj(rpc.INVALID_REQUEST,
      "invalid request: expected {\"jsonrpc\":\"2.0\",\"method\":...} with a string, number or null id",
      {code = "invalid"}), true)
  end
  local method, params = msg.method, msg.params
  if method == "logs" then return self:logs(params, respond) end
  if method == "logs.cancel" then return self:logs_cancel(params, respond) end
  if method == "cancel" then return self:cancel(params, respond) end
  local task, e = self.runner:submit(method, params, respond, msg.id, msg.deadline_ms)
  if not task then return respond(false, e) end
end

-- One message (object) or batch (array) from one line.
function Server:handle(line)
  if line:match("^%s*$") then return end
  local msg, err = json.decode_request(line)
  if msg == nil then
    return self:send({id = json.null, error = err_obj(rpc.PARSE_ERROR, "parse error: " .. err,
      {code = "invalid"})})
  end
  local function id_of(m)
    if type(m) == "table" and valid_id(m.id) and m.id ~= nil then return m.id end
    return nil
  end
  if type(msg) == "table" and line:match("^%s*%[") then
    if #msg == 0 then
      return self:send({id = json.null, error = err_obj(rpc.INVALID_REQUEST,
        "invalid request: empty batch", {code = "invalid"})})
    end
    -- a batch: one array of the responses once every member has finished
    local out, waiting, all_sent = {}, 0, false
    local function flush()
      if all_sent and waiting == 0 and #out > 0 then
        self.out:write(json.encode(json.array(out)), "\n")
        self.dirty = true
      end
    end
    for _, m in ipairs(msg) do
      local rid = id_of(m)
      local answered = false
      local invalid = type(m) ~= "table" or not valid_id(m.id)
      local wants = invalid or (type(m) == "table" and m.id ~= nil)
      if wants then waiting = waiting + 1 end
      self:dispatch(m, function(ok, res, force)
        if answered then return end
        answered = true
        if wants or force then
          out[#out + 1] = response(invalid and json.null or (rid == nil and json.null or rid), ok, res)
          if wants then waiting = waiting - 1 end
          flush()
        end
      end)
    end
    all_sent = true
    return flush()
  end
  local rid = id_of(msg)
  local notification = type(msg) == "table" and msg.id == nil
  self:dispatch(msg, function(ok, res, force)
    if notification and not force then return end
    self:send(response(rid == nil and json.null or rid, ok, res))
  end)
end

-- Reads stdin as a task: complete lines are handled as they come; a line
-- longer than MAX_LINE is answered with -32600 "too_large" (also when end
-- of file ends it).
function Server:reader(fd)
  local parts, size, discarding = {}, 0, false
  local function too_large()
    self:send({id = json.null, error = err_obj(rpc.INVALID_REQUEST,
      string.format("request line longer than %d bytes", rpc.MAX_LINE), {code = "too_large"})})
  end
  local function protected(line)
    local ok, err = xpcall(self.handle, debug.traceback, self, line)
    if not ok then
      io.stderr:write("cpdocker serve: internal error: ", tostring(err), "\n")
      self:send({id = json.null, error = err_obj(rpc.INTERNAL_ERROR,
        "internal error: " .. tostring(err):match("[^\n]*"), {code = "internal"})})
    end
  end
  while true do
    local ready, werr = core.wait_fd(fd, "r")
    if ready == nil then io.stderr:write("cpdocker serve: ", tostring(werr), "\n") end
    local chunk = core.read_fd(fd, 65536)
    if chunk == nil or chunk == "" then break end
    local start = 1
    while true do
      local nl = chunk:find("\n", start, true)
      local piece = chunk:sub(start, nl and nl - 1 or #chunk)
      if not discarding then
        if size + #piece > rpc.MAX_LINE then
          discarding = true -- drop the rest of this line as it arrives
          parts, size = {}, 0
        else
          parts[#parts + 1] = piece
          size = size + #piece
        end
      end
      if not nl then break end
      if discarding then
        discarding = false
        too_large()
      else
        local line = table.concat(parts)
        parts, size = {}, 0
        protected(line)
      end
      start = nl + 1
    end
  end
  if discarding then
    too_large()
  elseif size > 0 then
    protected(table.concat(parts))
  end
  self.eof = true
  -- stdin is gone: nobody can cancel, so end the subscriptions; the
  -- operations in flight finish and are answered
  for _, sub in pairs(self.subs) do self:end_sub(sub, "end of input") end
end

-- Serves until stdin ends and every operation is answered. Returns 0.
-- opts: out (file), fd (input, default 0), max_inflight, max_queued.
function rpc.serve(p, opts)
  opts = opts or {}
  local self = setmetatable({p = p, out = opts.out or io.stdout, subs = {}, next_sub = 0},
    Server)
  self.runner = rpc.runner(p, opts)
  local s = self.runner.sched
  -- learn the API version before the tasks start (a blocking round trip once)
  if p.engine and p.engine.api_version then p.engine:api_version() end
  s:spawn(Server.reader, {limited = false, name = "reader", on_done = function(_, ok, err)
    if not ok then
      io.stderr:write("cpdocker serve: input reader failed: ", tostring(err), "\n")
      self.eof = true
    end
  end}, self, opts.fd or 0)
  local function flush()
    if self.dirty then
      self.dirty = false
      self.out:flush()
    end
  end
  s.before_wait = flush
  local ok, err = s:run(function()
    flush()
    return self.eof and s:idle()
  end)
  self.out:flush()
  if not ok and err ~= "interrupted" then
    io.stderr:write("cpdocker serve: ", tostring(err), "\n")
    return 1
  end
  return 0
end

rpc.Server = Server

return rpc
