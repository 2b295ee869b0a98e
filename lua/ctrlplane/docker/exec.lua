-- The exec operation: run a command in a running service container with
-- Docker's exec create/start/inspect. stdout and stderr come back apart
-- (byte for byte), with the command's real exit code; stdin, when given, is
-- sent and then the write side closed so the command sees end of file.
--
--   provider:exec(instance_id, {command = {...}, stdin = "...", tty = false,
--                 service = "web"}, {timeout = 30, on_output = fn(stream, bytes)})
--     -> {exit_code, stdout, stderr} | nil, message, code
local core = require("ctrlplane.docker.core")
local engine = require("ctrlplane.docker.engine")
local project = require("ctrlplane.docker.project")

local M = {}

local seg = engine.segment

-- Splits Docker's multiplexed frames as bytes arrive; calls out(stream,
-- bytes) for each payload piece. Returns a feed function and a check that
-- nothing is left half-read.
local function frame_splitter(out)
  local buf = ""
  local function feed(chunk)
    buf = buf .. chunk
    local pos = 1
    while #buf - pos + 1 >= 8 do
      local stream, size = string.unpack(">BxxxI4", buf, pos)
      if stream > 2 then return nil, "malformed stream header from the Docker daemon" end
      if #buf - pos + 1 < 8 + size then break end
      out(stream == 2 and "stderr" or "stdout", buf:sub(pos + 8, pos + 7 + size))
      pos = pos + 8 + size
    end
    buf = buf:sub(pos)
    return true
  end
  local function rest() return #buf end
  return feed, rest
end

function M.check_request(req)
  if type(req) ~= "table" then return nil, "request: expected an ExecRequest object" end
  local cmd = req.command
  if type(cmd) ~= "table" or #cmd == 0 then
    return nil, "command: a non-empty list of strings is required"
  end
  for i, a in ipairs(cmd) do
    if type(a) ~= "string" then
      return nil, string.format("command[%d]: expected a string, got %s", i - 1, type(a))
    end
  end
  if req.stdin ~= nil and type(req.stdin) ~= "string" then
    return nil, "stdin: expected a string (bytes)"
  end
  if req.tty ~= nil and type(req.tty) ~= "boolean" then return nil, "tty: expected a boolean" end
  local svc = req.service or req.service_name
  if svc ~= nil and (type(svc) ~= "string" or not svc:match("^[a-z0-9][a-z0-9-]*$")) then
    return nil, "service: not a valid service name"
  end
  return true
end

local function exec(self, instance_id, req, opts)
  opts = opts or {}
  local ok, err = project.validate_id(instance_id)
  if not ok then return nil, err, "invalid" end
  ok, err = M.check_request(req)
  if not ok then return nil, "invalid request: " .. err, "invalid" end
  local eng = self.engine
  local list, lerr, lcode = project.members(eng, instance_id)
  if not list then return nil, lerr, lcode end
  if #list == 0 then return nil, "instance " .. instance_id .. " does not exist", "not_found" end
  local want = req.service or req.service_name
  local target
  for _, c in ipairs(list) do
    local labels = c.Labels or {}
    local canonical = (c.Names or {})[1] == "/" .. project.container_name(instance_id,
      labels[project.LABEL.service] or "")
    if canonical and ((want and labels[project.LABEL.service] == want)
        or (not want and labels[project.LABEL.role] == "main")) then
      target = c
    end
  end
  if not target then
    return nil, string.format("instance %s has no service %s", instance_id, want or "with role main"),
      "not_found"
  end
  local name = target.Labels[project.LABEL.service]
  if target.State ~= "running" then
    return nil, string.format("service %s of instance %s is not running (%s)", name, instance_id,
      target.Status or target.State), "not_running"
  end
  return M.exec_in(eng, target.Id, name, req, opts)
end

-- Runs req (checked) in container `id` on engine `eng`; `name` names the
-- service in messages. Shared with the swarm backend (a task's container on
-- its node's daemon).
function M.exec_in(eng, id, name, req, opts)
  opts = opts or {}
  local tty = req.tty == true
  local created, cerr, ccode = eng:post("/containers/" .. seg(id) .. "/exec", nil, {
    AttachStdin = req.stdin ~= nil, AttachStdout = true, AttachStderr = true, Tty = tty,
    Cmd = req.command,
  })
  if not created then
    if ccode == "conflict" then ccode = "not_running" end
    return nil, "exec in service " .. name .. ": " .. cerr, ccode
  end
  local version, verr, vcode = eng:api_version()
  if not version then return nil, verr, vcode end
  local raw, rerr, rcode = eng.client:hijack("POST", "/v" .. version .. "/exec/" .. seg(created.Id)
    .. "/start", string.format('{"Detach":false,"Tty":%s}', tty and "true" or "false"))
  if not raw then return nil, "exec in service " .. name .. ": " .. rerr, rcode end
  if req.stdin ~= nil then
    local wok, werr, wcode = raw:write(req.stdin)
    if not wok then
      raw:close()
      return nil, werr, wcode
    end
  end
  raw:close_write()

  local outs = {stdout = {}, stderr = {}}
  local function out(stream, bytes)
    local t = outs[stream]
    t[#t + 1] = bytes
    if opts.on_output then opts.on_output(stream, bytes) end
  end
  local feed = tty and function(chunk) out("stdout", chunk) return true end or frame_splitter(out)
  local deadline = opts.timeout and (core.clock() + opts.timeout)
  while true do
    local left = deadline and math.max(0, deadline - core.clock()) or nil
    local chunk, e2, c2 = raw:read(left)
    if chunk == false then
      raw:close()
      return nil, string.format("exec in service %s timed out after %s s (the command may "
        .. "still be running)", name, opts.timeout), "timeout"
    end
    if chunk == nil then
      if e2 then
        raw:close()
        return nil, e2, c2
      end
      break
    end
    local fok, ferr = feed(chunk)
    if not fok then
      raw:close()
      return nil, ferr, "protocol"
    end
  end
  raw:close()
  -- the exit code; the process may take a moment to be reaped
  local info
  for _ = 1, 100 do
    local ierr, icode
    info, ierr, icode = eng:get("/exec/" .. seg(created.Id) .. "/json")
    if not info then return nil, ierr, icode end
    if not info.Running then break end
    core.sleep(0.05)
  end
  return {exit_code = info.ExitCode or -1, stdout = table.concat(outs.stdout),
    stderr = table.concat(outs.stderr)}
end

function M.install(docker)
  docker.Provider.exec = exec
  docker.register_capabilities({"exec"})
end

M._frame_splitter = frame_splitter

return M
