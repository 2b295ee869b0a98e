-- cpdocker exec: run a command in a service container.
local core = require("ctrlplane.docker.core")
local util = require("ctrlplane.docker.util")

local M = {}

function M.install(cli)
  cli.command("exec", {
    usage = "exec ID [--service S] [--task T] [-i] [-t] [--timeout S] -- COMMAND [ARG...]",
    summary = "run a command in a running service container (default: main)",
    help = [[
Without --json, the command's stdout and stderr pass through unchanged and
cpdocker exits with the command's own exit status. -i sends cpdocker's stdin
to the command, then closes it (the command sees end of file). -t runs the
command with a TTY (stdout and stderr are then one stream). --json prints an
ExecResult {exit_code, stdout, stderr} with the bytes in base64, as Go
encodes []byte. On the swarm backend the command runs in the service's first
running task, or in --task T (a task id prefix or a slot number), on its node.]],
    args = 1,
    options = {["--service"] = "value", ["-i"] = "flag", ["-t"] = "flag", ["--timeout"] = "value",
      ["--task"] = "value"},
    run = function(ctx, args, opts)
      local command = opts["--"]
      if not command or #command == 0 then
        return cli.usage_error("give the command after --")
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
      if opts.i then req.stdin = io.stdin:read("a") or "" end
      local p, err = ctx:provider()
      if not p then return ctx:fail(err) end
      core.catch_interrupts(true)
      local on_output
      if not ctx.json_out then
        on_output = function(stream, bytes)
          local f = stream == "stderr" and ctx.stderr or ctx.stdout
          f:write(bytes)
          f:flush()
        end
      end
      local res, eerr, code = p:exec(args[1], req, {timeout = timeout, on_output = on_output})
      core.catch_interrupts(false)
      if not res then return ctx:fail_op("exec " .. args[1], eerr, code) end
      if ctx.json_out then
        ctx:json({exit_code = res.exit_code, stdout = util.base64(res.stdout),
          stderr = util.base64(res.stderr)})
        return 0
      end
      return res.exit_code
    end,
  })
end

return M
