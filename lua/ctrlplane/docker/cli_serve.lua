-- cpdocker serve: the JSON-RPC 2.0 provider server on stdin/stdout.
local rpc = require("ctrlplane.docker.rpc")

local M = {}

function M.install(cli)
  cli.command("serve", {
    usage = "serve",
    summary = "JSON-RPC 2.0 provider server on stdin/stdout (one message per line)",
    help = [[
Methods: the provider operations by their contract names (provision, deploy,
deprovision, start, stop, restart, status, resources, logs, exec, rollback,
scale, info, capabilities, health_check) with the contract's JSON shapes,
plus logs.cancel. A followed logs call answers {"subscription": ID} and then
sends "logs.event" notifications until "logs.end". Errors carry the runtime's
stable code in error.data.code. The server ends when stdin ends.]],
    run = function(ctx)
      local p, err = ctx:provider()
      if not p then return ctx:fail(err) end
      return rpc.serve(p, {out = ctx.stdout})
    end,
  })
end

return M
