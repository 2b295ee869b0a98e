-- cpdocker ps: every instance on the daemon with its state (one listing
-- call, aggregated by scripts/status.lua), or the full status of the given
-- instances, all at once.
local json = require("ctrlplane.docker.json")

local M = {}

local function state_text(st)
  return st.state .. (st.ready and " (ready)" or "")
end

function M.install(cli)
  cli.command("ps", {
    usage = "ps [ID...]",
    summary = "every instance on the daemon with its state, or the status of several at once",
    varargs = true,
    help = [[
Without IDs: one row per instance found on the daemon (containers labelled
ctrlplane.instance), its tenant, state and readiness as scripts/status.lua
aggregates them from one container listing, and its service and container
counts. The listing has no restart counts or OOM flags; `status ID` gives
the full picture.
With IDs: the full status of each, fetched concurrently (one scheduler task
per instance); exit status 1 when any of them failed.
--json prints a list: {instance_id, tenant_id, state, ready, message,
services, containers} rows, or {instance_id, status | error, code} per ID.]],
    run = function(ctx, args)
      local p, err = ctx:provider()
      if not p then return ctx:fail(err) end
      if #args == 0 then
        local rows, perr, code = p:ps()
        if not rows then return ctx:fail_op("ps", perr, code) end
        if ctx.json_out then
          ctx:json(rows)
          return 0
        end
        local t = {}
        for _, r in ipairs(rows) do
          t[#t + 1] = {r.instance_id, r.tenant_id ~= "" and r.tenant_id or "-", state_text(r),
            r.services, r.containers, r.message}
        end
        ctx:table({"INSTANCE", "TENANT", "STATE", "SERVICES", "CONTAINERS", "MESSAGE"}, t)
        return 0
      end
      local results, serr, code = p:status_many(args)
      if not results then return ctx:fail_op("ps", serr, code) end
      local status = 0
      for _, r in ipairs(results) do
        if r.error then status = 1 end
      end
      if ctx.json_out then
        ctx:json(json.array(results))
        return status
      end
      local t = {}
      for _, r in ipairs(results) do
        if r.error then
          t[#t + 1] = {r.instance_id, "error", "", r.error .. " [" .. tostring(r.code) .. "]"}
        else
          local n = 0
          for _ in pairs(r.status.services or {}) do n = n + 1 end
          t[#t + 1] = {r.instance_id, state_text(r.status), n, r.status.message or ""}
        end
      end
      ctx:table({"INSTANCE", "STATE", "SERVICES", "MESSAGE"}, t)
      return status
    end,
  })
end

return M
