-- cpdocker exec: run a command in a service container.
local core = require("ctrlplane.docker.core")
local util = require("ctrlplane.docker.util")

local M = {}

-- Runs the exec with the local terminal in raw mode (keys go to the command
-- as typed, Ctrl-C and Ctrl-D included) and restores it afterwards, also
-- when the exec fails or raises. Returns what provider:exec returns.
local function with_raw_terminal(p, id, req, opts)
  local rok = core.tty_raw(0)
  if not rok then return p:exec(id, req, opts) end
  local size_fd = core.isatty(1) and 1 or 0
  opts.console = {
    size = function() return core.tty_size(size_fd) end,
    resized = core.tty_resized,
  }
  local results = table.pack(pcall(p.exec, p, id, req, opts))
  core.tty_restore()
  if not results[1] then error(results[2], 0) end
  return table.unpack(results, 2, results.n)
end

function M.install(cli)
  cli.command("exec", {
    usage = "exec ID [--service S] [--task T] [-i] [-t] [--timeout S] -- COMMAND [ARG...]",
    summary = "run a command in a running service container (default: main)",
    help = [[
Without --json, the command's stdout and stderr pass through unchanged as
they arrive and cpdocker exits with the command's own exit status.
-i streams cpdocker's stdin to the command while its output comes back (any
amount: nothing is held in memory); at the end of stdin the command sees end
of file. -t runs the command with a TTY (stdout and stderr are then one
stream); -it on a terminal is interactive like `docker exec -it`: the local
terminal is in raw mode while attached (restored afterwards), its window size
follows, and Ctrl-D or `exit` end the command with its own status.
--timeout S covers the whole exec; when it passes, the command is killed
inside the container (from a second exec, which needs sh in the image) and
cpdocker exits 1. Ctrl-C (without -t) also kills the command.
--json prints an ExecResult {exit_code, stdout, stderr} with the bytes in
base64, as Go encodes []byte; each stream keeps at most
CP_DOCKER_EXEC_OUTPUT_MAX bytes (default 4 MiB) and stdout_truncated /
stderr_truncated say whether any were dropped.
On the swarm backend the command runs in the service's first running task,
or in --task T (a task id prefix or a slot number), on its node.]],
    args = 1,
    usage_hint = "the command goes after --, e.g. cpdocker exec ID -- ls /",
    options = {["--service"] = "value", ["-i"] = "flag", ["-t"] = "flag", ["--timeout"] = "value",
      ["--task"] = "value"},
    run = function(ctx, args, opts)
      local command = opts["--"]
      if not command or #command == 0 then
        return cli.usage_error("give the command after --, e.g. cpdocker exec ID -- ls /")
      end
      local timeout
      if opts.timeout then
        timeout = tonumber(opts.timeout)
        if not timeout or timeout ~= timeout or timeout <= 0 or timeout > 86400 then
          return cli.usage_error("--timeout needs seconds, more than 0 and at most 86400")
        end
      end
      local req = {command = command, service = opts.service, tty = opts.t or false,
        task = opts.task}
      local xopts = {timeout = timeout}
      if opts.i then xopts.stdin_fd = 0 end
      if opts.t and core.isatty(1) then
        -- the command's TTY gets the size of ours (with -i also on resize)
        xopts.console = {size = function() return core.tty_size(1) end,
          resized = function() return false end}
      end
      if not ctx.json_out then
        xopts.collect = false
        xopts.on_output = function(stream, bytes)
          local f = stream == "stderr" and ctx.stderr or ctx.stdout
          local ok, werr = f:write(bytes)
          if ok then ok, werr = f:flush() end
          if not ok then return false, "writing its " .. stream .. ": " .. tostring(werr) end
        end
      end
      local p, err = ctx:provider()
      if not p then return ctx:fail(err) end
      -- Ctrl-C, SIGTERM, SIGHUP and a closed output pipe end the exec
      -- through its cleanup (the command is killed, the terminal restored)
      core.catch_interrupts(true)
      core.hold_signals(true)
      local res, eerr, code
      if opts.i and opts.t and core.isatty(0) then
        res, eerr, code = with_raw_terminal(p, args[1], req, xopts)
      else
        res, eerr, code = p:exec(args[1], req, xopts)
      end
      core.hold_signals(false)
      core.catch_interrupts(false)
      core.interrupted(true)
      -- like a program killed by SIGPIPE, without a message: the reader left
      if code == "output_closed" then return 141 end
      if not res then return ctx:fail_op("exec " .. args[1], eerr, code) end
      if ctx.json_out then
        ctx:json({exit_code = res.exit_code, stdout = util.base64(res.stdout),
          stderr = util.base64(res.stderr), stdout_truncated = res.stdout_truncated,
          stderr_truncated = res.stderr_truncated})
        return 0
      end
      return res.exit_code
    end,
  })
end

return M
