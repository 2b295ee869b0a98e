-- The exec operation: run a command in a running service container with
-- Docker's exec create/start/inspect. stdout and stderr come back apart
-- (byte for byte), with the command's real exit code.
--
--   provider:exec(instance_id, {command = {...}, stdin = "...", tty = false,
--                 service = "web"}, opts)
--     -> {exit_code, stdout, stderr, stdout_truncated, stderr_truncated}
--      | nil, message, code
--
-- Input and output move at the same time over the hijacked connection: the
-- loop below polls both directions, so a command such as `cat` can echo any
-- amount of input without either side blocking the other.
--
-- opts (all optional):
--   timeout      seconds for the whole exec, from looking up the container
--                to the exit code. When it passes, the command is killed
--                inside the container (see kill_command) and the call fails
--                with code "timeout".
--   on_output    fn(stream, bytes), called as output arrives ("stdout" or
--                "stderr"; with a TTY everything is "stdout"); returning
--                false, message stops the exec: the command is killed and
--                the call fails with code "output_closed"
--   collect      false: keep no output in the result (for callers that
--                stream it with on_output; memory then stays bounded)
--   max_output   the most bytes of each stream kept in the result (default
--                the provider's exec_output_max, CP_DOCKER_EXEC_OUTPUT_MAX);
--                past it the rest is read and dropped and the result says
--                stdout_truncated / stderr_truncated = true
--   stdin_fd     a file descriptor whose bytes are streamed to the command
--                until its end (instead of req.stdin)
--   console      for a TTY: {size = fn() -> rows, cols, resized = fn() ->
--                bool}; the size is sent when the command starts and again
--                whenever resized() says so
--
-- An interrupt (core.interrupted, e.g. Ctrl-C) also kills the command and
-- fails with code "interrupted".
local core = require("ctrlplane.docker.core")
local engine = require("ctrlplane.docker.engine")
local json = require("ctrlplane.docker.json")
local project = require("ctrlplane.docker.project")

local M = {}

local seg = engine.segment

-- Every exec carries this variable with a value unique to it, so that the
-- command and everything it started can be found and killed from a second
-- exec (the Engine API has no way to signal an exec's process).
M.TOKEN_VAR = "CTRLPLANE_EXEC"

-- Run by the killing exec (as root in the container): kills every process
-- whose environment holds the token. Twice, for children forked meanwhile.
local KILL_SCRIPT = [[
t="$1"
for round in 1 2; do
  for d in /proc/[0-9]*; do
    p=${d#/proc/}
    [ "$p" = "$$" ] && continue
    if tr '\0' '\n' < "$d/environ" 2>/dev/null | grep -qxF -- "$t"; then
      kill -KILL "$p" 2>/dev/null
    fi
  done
done
exit 0
]]

local counter = 0
local function new_token()
  counter = counter + 1
  return string.format("%x%08x%x", os.time(), math.random(0, 0x7fffffff), counter)
end

-- Splits Docker's multiplexed frames as bytes arrive (the C core cuts
-- them: core.split_frames); calls out(stream, bytes) for each payload piece
-- (out returns nil, message, code to stop). Returns a feed function and a
-- check that nothing is left half-read.
local function frame_splitter(out)
  local buf = ""
  local function feed(chunk)
    buf = buf .. chunk
    local pieces, used, code = core.split_frames(buf)
    if not pieces then return nil, used, code end
    for i = 1, #pieces, 2 do
      local ok, err, ecode = out(pieces[i], pieces[i + 1])
      if not ok then return nil, err, ecode end
    end
    buf = buf:sub(used + 1)
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

local function check_opts(opts)
  local t = opts.timeout
  if t ~= nil and (type(t) ~= "number" or t ~= t or t <= 0 or t > 1e9) then
    return nil, "timeout: expected a positive number of seconds (at most 1e9)"
  end
  local m = opts.max_output
  if m ~= nil and (math.type(m) ~= "integer" or m < 0) then
    return nil, "max_output: expected a number of bytes (0 or more)"
  end
  return true
end

-- The exec's state, polled until it is no longer running (bounded).
local function wait_exit(eng, exec_id, seconds)
  local info, err, code
  local stop = core.clock() + seconds
  repeat
    info, err, code = eng:get("/exec/" .. seg(exec_id) .. "/json", nil, {timeout = 5})
    if not info then return nil, err, code end
    if not info.Running then return info end
  until core.clock() >= stop or not core.sleep(0.05)
  return info
end

-- Kills the command of exec exec_id (and what it started) from a second
-- exec in the same container. Returns true once the exec has stopped, or
-- nil, message.
local function kill_command(eng, container_id, exec_id, token)
  core.interrupted(true) -- an interrupt that ended the exec must not stop these calls
  local created, err = eng:post("/containers/" .. seg(container_id) .. "/exec", nil, {
    AttachStdout = false, AttachStderr = false, User = "0",
    Cmd = {"sh", "-c", KILL_SCRIPT, "sh", M.TOKEN_VAR .. "=" .. token},
  }, {timeout = 10})
  local ok
  if created then
    ok, err = eng:post("/exec/" .. seg(created.Id) .. "/start", nil, {Detach = true},
      {timeout = 10})
  end
  local info
  if ok then
    local kinfo = wait_exit(eng, created.Id, 5)
    local kerr = kinfo and kinfo.ExitCode ~= 0
      and ("the killing exec (sh in the container) exited with " .. tostring(kinfo.ExitCode))
    info, err = wait_exit(eng, exec_id, 3)
    if info and info.Running then err = kerr or "it is still running" end
  end
  if info and not info.Running then return true end
  return nil, err or "unknown error"
end

-- Keeps up to max bytes of one stream; says whether it dropped any.
local function collector(max)
  local parts, size, truncated = {}, 0, false
  local c = {}
  function c.add(bytes)
    if size >= max then
      truncated = truncated or #bytes > 0
      return
    end
    if size + #bytes > max then
      bytes = bytes:sub(1, max - size)
      truncated = true
    end
    parts[#parts + 1] = bytes
    size = size + #bytes
  end
  function c.result() return table.concat(parts), truncated end
  return c
end

-- Finds the container of the service asked for (default: the main one).
local function find_target(eng, instance_id, want, timeout)
  local list, lerr, lcode = project.members(eng, instance_id, {timeout = timeout})
  if not list then return nil, lerr, lcode end
  if #list == 0 then return nil, "instance " .. instance_id .. " does not exist", "not_found" end
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
  return target, name
end

-- Moves bytes both ways until the command's output ends. Returns true, or
-- nil, message, code ("timeout", "interrupted", or the transport's).
--
-- The end of the input: without a TTY the write side is closed, so the
-- command reads end of file. With a TTY, Docker would close the output too
-- when the write side closes, losing what the command prints afterwards; so
-- the end is typed instead, as on a terminal: Ctrl-D (twice when the line
-- is not empty), and the connection stays open until the command ends.
local function pump(eng, raw, exec_id, feed, req, opts, deadline)
  local tty = req.tty == true
  local fd = opts.stdin_fd
  local in_open = req.stdin ~= nil or fd ~= nil
  local pending, pos = nil, 1 -- input taken but not yet sent
  local closing = false       -- pending is the end-of-input keys
  local last = "\n"           -- the last byte sent
  local function source_done()
    if tty then
      pending, pos, closing = (last == "\n" or last == "\r") and "\4" or "\4\4", 1, true
    else
      in_open, pending = false, nil
      raw:close_write()
    end
  end
  if not in_open then
    raw:close_write()
  elseif req.stdin ~= nil then
    if #req.stdin > 0 then pending = req.stdin else source_done() end
  end
  local console = opts.console
  while true do
    local left = -1
    if deadline then
      left = deadline - core.clock()
      if left <= 0 then return nil, "timed out", "timeout" end
    end
    local watch = in_open and not pending and fd or nil
    local readable, writable, fd_ready = raw:poll(left, pending ~= nil, watch)
    if readable == nil then return nil, writable, fd_ready end
    if console and console.resized() then
      local rows, cols = console.size()
      if rows then
        eng:post("/exec/" .. seg(exec_id) .. "/resize", {h = rows, w = cols}, nil, {timeout = 5})
      end
    end
    if writable and pending then
      local n = raw:send(pending, pos)
      if not n then
        -- the far side stopped taking input (the command ended or closed
        -- its stdin): keep reading its output to the end
        in_open, pending = false, nil
      else
        pos = pos + n
        if pos > #pending then
          last = pending:sub(-1)
          pending, pos = nil, 1
          if closing then
            in_open = false
          elseif not fd then
            source_done()
          end
        end
      end
    end
    if fd_ready and in_open and not pending then
      local chunk = core.read_fd(fd, 65536)
      if chunk == nil or chunk == "" then
        source_done()
      else
        pending, pos = chunk, 1
      end
    end
    if readable then
      local chunk, rerr, rcode = raw:read(0)
      if chunk == nil then
        if rerr then return nil, rerr, rcode end
        return true
      end
      if chunk then
        local ok, ferr, fcode = feed(chunk)
        if not ok then return nil, ferr, fcode end
      end
    end
    if core.interrupted() then return nil, "interrupted", "interrupted" end
  end
end

-- The time left before deadline for one more call to the daemon (never
-- more than the client's own per-request timeout); nil without a deadline.
local function time_left(eng, deadline)
  if not deadline then return nil end
  return math.max(0.001, math.min(deadline - core.clock(), eng.cfg and eng.cfg.timeout or 60))
end

local function timed_out(name, timeout, killed, kerr)
  return nil, string.format("exec in service %s timed out after %s s (%s)", name, timeout,
    killed and "the command was killed"
      or ("the command may still be running: killing it failed: " .. tostring(kerr))), "timeout"
end

local function exec(self, instance_id, req, opts)
  opts = opts or {}
  local ok, err = project.validate_id(instance_id)
  if not ok then return nil, err, "invalid" end
  ok, err = M.check_request(req)
  if not ok then return nil, "invalid request: " .. err, "invalid" end
  ok, err = check_opts(opts)
  if not ok then return nil, "invalid options: " .. err, "invalid" end
  local eng = self.engine
  -- the timeout covers the whole exec, the container's lookup included
  local deadline = opts.timeout and (core.clock() + opts.timeout)
  local target, name, tcode = find_target(eng, instance_id, req.service or req.service_name,
    time_left(eng, deadline))
  if not target then return nil, name, tcode end
  if deadline and core.clock() >= deadline then return timed_out(name, opts.timeout, true) end
  return M.exec_in(eng, target.Id, name, req, opts, deadline)
end

-- Runs req (checked by M.check_request) in container `id` on engine `eng`;
-- `name` names the service in messages; opts as for provider:exec.
-- deadline (core.clock() time) is where opts.timeout started counting;
-- default: now. Shared with the swarm backend (a task's container on its
-- node's daemon).
function M.exec_in(eng, id, name, req, opts, deadline)
  opts = opts or {}
  local ok, err = check_opts(opts)
  if not ok then return nil, "invalid options: " .. err, "invalid" end
  deadline = opts.timeout and (deadline or (core.clock() + opts.timeout)) or nil
  local function left() return time_left(eng, deadline) end
  local tty = req.tty == true
  local token = new_token()
  -- the window size: API 1.42+ takes it at create and start (older daemons
  -- ignore the field); for them it is also sent by resize once started
  local rows, cols
  if tty and opts.console then rows, cols = opts.console.size() end
  local size = rows and cols and rows > 0 and cols > 0 and {rows, cols} or nil
  local created, cerr, ccode = eng:post("/containers/" .. seg(id) .. "/exec", nil, {
    AttachStdin = req.stdin ~= nil or opts.stdin_fd ~= nil, AttachStdout = true,
    AttachStderr = true, Tty = tty, Cmd = req.command, Env = {M.TOKEN_VAR .. "=" .. token},
    ConsoleSize = size,
  }, {timeout = left()})
  if not created then
    if ccode == "conflict" then ccode = "not_running" end
    return nil, "exec in service " .. name .. ": " .. cerr, ccode
  end
  local version, verr, vcode = eng:api_version()
  if not version then return nil, verr, vcode end
  local raw, rerr, rcode = eng.client:hijack("POST", "/v" .. version .. "/exec/" .. seg(created.Id)
    .. "/start", json.encode({Detach = false, Tty = tty, ConsoleSize = size}), {timeout = left()})
  if not raw then
    if rcode == "timeout" and deadline then
      return timed_out(name, opts.timeout, kill_command(eng, id, created.Id, token))
    end
    return nil, "exec in service " .. name .. ": " .. rerr, rcode
  end
  if size then
    -- the daemon waits for the process to start before it resizes
    eng:post("/exec/" .. seg(created.Id) .. "/resize", {h = rows, w = cols}, nil,
      {timeout = left() or 10})
  end

  local max = opts.max_output or (eng.cfg and eng.cfg.exec_output_max) or 4 * 1024 * 1024
  local collect = opts.collect ~= false
  local keep = {stdout = collector(collect and max or 0), stderr = collector(collect and max or 0)}
  local on_output = opts.on_output
  local function out(stream, bytes)
    if collect then keep[stream].add(bytes) end
    if on_output then
      local go_on, why = on_output(stream, bytes)
      if go_on == false then return nil, why or "the output was closed", "output_closed" end
    end
    return true
  end
  local feed = tty and function(chunk) return out("stdout", chunk) end or frame_splitter(out)

  local pok, perr, pcode = pump(eng, raw, created.Id, feed, req, opts, deadline)
  raw:close()
  if not pok then
    if pcode == "timeout" or pcode == "interrupted" or pcode == "output_closed" then
      local killed, kerr = kill_command(eng, id, created.Id, token)
      if pcode == "timeout" then return timed_out(name, opts.timeout, killed, kerr) end
      return nil, "exec in service " .. name .. ": " .. perr .. (killed
        and " (the command was killed)" or (" (killing the command failed: " .. tostring(kerr)
        .. ")")), pcode
    end
    return nil, "exec in service " .. name .. ": " .. tostring(perr), pcode
  end
  -- the exit code; the process may take a moment to be reaped
  local info, ierr, icode = wait_exit(eng, created.Id, deadline and math.max(0.1,
    deadline - core.clock()) or 10)
  if not info then return nil, ierr, icode end
  if info.Running then
    if deadline and core.clock() >= deadline then
      return timed_out(name, opts.timeout, kill_command(eng, id, created.Id, token))
    end
    return nil, string.format("exec in service %s: its output ended but the command is still "
      .. "running", name), "protocol"
  end
  local stdout, stdout_truncated = keep.stdout.result()
  local stderr, stderr_truncated = keep.stderr.result()
  return {exit_code = info.ExitCode or -1, stdout = stdout, stderr = stderr,
    stdout_truncated = collect and stdout_truncated, stderr_truncated = collect and stderr_truncated}
end

function M.install(docker)
  docker.Provider.exec = exec
  docker.register_capabilities({"exec"})
end

M._frame_splitter = frame_splitter

return M
