-- cpdocker commands for the lifecycle: provision, deprovision, start, stop,
-- restart, status, deploy.
local json = require("ctrlplane.docker.json")
local util = require("ctrlplane.docker.util")

local M = {}

-- Reads a JSON request from a file or "-" (stdin).
local function read_request(path)
  local text
  if path == "-" then
    text = io.stdin:read("a")
  else
    local f, err = io.open(path, "r")
    if not f then return nil, "cannot read " .. path .. ": " .. err end
    local rerr
    text, rerr = f:read("a")
    f:close()
    if not text then -- a directory opens, then fails to read
      return nil, "cannot read " .. path .. ": " .. tostring(rerr):gsub("^[^:]*: ", "")
    end
  end
  local req, jerr = json.decode_request(text or "")
  if req == nil then return nil, (path == "-" and "stdin" or path) .. ": " .. jerr end
  if type(req) ~= "table" then return nil, path .. ": expected a JSON object" end
  return req
end

local function mb(n)
  return string.format("%.1f MB", (n or 0) / 1048576)
end

-- Progress for people: pull bars on a terminal, one line per step.
local function progress(ctx)
  if ctx.json_out then return nil end
  local err = ctx.stderr
  local layers, last_draw = {}, 0
  local tty = ctx.tty
  return function(ev)
    if ev.type == "pull" then
      if ev.status == "Pulling" then
        err:write("pulling ", ev.image, "\n")
        layers = {}
      elseif ev.status == "Pulled" then
        if tty then err:write("\r\27[K") end
        err:write("pulled ", ev.image, "\n")
      elseif ev.id and ev.total and ev.total > 0 then
        layers[ev.id] = {current = ev.current or 0, total = ev.total}
        if tty then
          local cur, tot = 0, 0
          for _, l in pairs(layers) do
            cur, tot = cur + l.current, tot + l.total
          end
          local now = os.clock()
          if now - last_draw > 0.05 then
            last_draw = now
            local width = 30
            local fill = math.floor(width * cur / tot)
            err:write(string.format("\r\27[K  [%s%s] %3d%%  %s / %s", string.rep("#", fill),
              string.rep(".", width - fill), math.floor(100 * cur / tot), mb(cur), mb(tot)))
          end
        end
      end
    elseif ev.type == "service" then
      err:write(string.format("  %-10s %s\n", ev.action, ev.service))
    elseif ev.type == "warning" then
      err:write("warning: ", ev.message, "\n")
    end
  end
end

local function print_endpoints(ctx, endpoints)
  if #endpoints == 0 then return end
  local rows = {}
  for _, e in ipairs(endpoints) do
    rows[#rows + 1] = {e.service_name, e.url, e.protocol, e.public and "public" or "in-network"}
  end
  ctx:print("")
  ctx:table({"SERVICE", "ENDPOINT", "PROTOCOL", "REACH"}, rows)
end

local function print_status(ctx, id, st)
  local state = st.state
  if ctx.tty then
    local colors = {running = "32", failed = "31", stopped = "33", destroyed = "90"}
    state = ctx:color(colors[state] or "36", state)
  end
  local rows = {{"instance", id}, {"state", state .. (st.ready and " (ready)" or " (not ready)")},
    {"restarts", st.restarts}}
  if st.started_at then rows[#rows + 1] = {"started_at", st.started_at} end
  if st.metadata and st.metadata.release then rows[#rows + 1] = {"release", st.metadata.release} end
  if st.message ~= "" then rows[#rows + 1] = {"message", st.message} end
  ctx:fields(rows)
  local names = util.sorted_keys(st.services)
  if #names > 0 then
    local trows = {}
    for _, n in ipairs(names) do
      local s = st.services[n]
      trows[#trows + 1] = {n, s.state, s.ready and "yes" or "no", s.replicas or 1, s.restarts,
        (s.provider_ref or "-"):sub(1, 12), s.message}
    end
    ctx:print("")
    ctx:table({"SERVICE", "STATE", "READY", "REPLICAS", "RESTARTS", "CONTAINER", "MESSAGE"}, trows)
  end
  print_endpoints(ctx, st.endpoints)
end

local function simple(cli, name, summary, method, past)
  cli.command(name, {
    usage = name .. " ID" .. ((name == "stop" or name == "restart") and " [--timeout SECONDS]" or ""),
    summary = summary,
    args = 1,
    options = (name == "stop" or name == "restart") and {["--timeout"] = "value"} or nil,
    run = function(ctx, args, opts)
      local p, err = ctx:provider()
      if not p then return ctx:fail(err) end
      local call_opts
      if opts.timeout then
        local t = tonumber(opts.timeout)
        if not t or t ~= t or t < 0 or t > 86400 then
          return cli.usage_error("--timeout needs a number of seconds from 0 to 86400")
        end
        call_opts = {stop_timeout = t}
      end
      local ok, ferr, code = p[method](p, args[1], call_opts)
      if not ok then return ctx:fail_op(name .. " " .. args[1], ferr, code) end
      if ctx.json_out then
        ctx:json({instance_id = args[1], result = past})
      else
        ctx:print(past .. " " .. args[1])
      end
      return 0
    end,
  })
end

-- A command that reads a request (FILE or -), calls the provider's method
-- with progress, and prints the result as JSON or with show(ctx, req, res).
local function request_command(method, show)
  return function(ctx, args)
    local req, rerr = read_request(args[1])
    if not req then return ctx:fail(rerr) end
    local p, err = ctx:provider()
    if not p then return ctx:fail(err) end
    local res, merr, code, errors = p[method](p, req, {on_event = progress(ctx)})
    if not res then
      return ctx:fail_op(method .. " " .. tostring(req.instance_id), merr, code, errors)
    end
    if ctx.json_out then
      ctx:json(res)
    else
      show(ctx, req, res)
    end
    return 0
  end
end

function M.install(cli)
  cli.command("provision", {
    usage = "provision FILE|-",
    summary = "create an instance's project from a ProvisionRequest (JSON file or stdin)",
    args = 1,
    run = request_command("provision", function(ctx, req, res)
      ctx:print("provisioned " .. req.instance_id .. " (" .. res.provider_ref .. ")")
      local rows, changes = {}, res.changes or {}
      for _, n in ipairs(util.sorted_keys(res.service_refs)) do
        rows[#rows + 1] = {n, res.service_refs[n]:sub(1, 12), changes[n] or ""}
      end
      for _, n in ipairs(util.sorted_keys(changes)) do -- removed services have no container
        if not res.service_refs[n] then rows[#rows + 1] = {n, "", changes[n]} end
      end
      ctx:print("")
      ctx:table({"SERVICE", "CONTAINER", "WHAT AND WHY"}, rows)
      print_endpoints(ctx, res.endpoints)
    end),
  })

  cli.command("deprovision", {
    usage = "deprovision ID",
    summary = "remove every container, the network and the volumes of an instance",
    args = 1,
    run = function(ctx, args)
      local p, err = ctx:provider()
      if not p then return ctx:fail(err) end
      local ok, derr, code = p:deprovision(args[1])
      if not ok then return ctx:fail_op("deprovision " .. args[1], derr, code) end
      if ctx.json_out then
        ctx:json({instance_id = args[1], result = "deprovisioned"})
      else
        ctx:print("deprovisioned " .. args[1])
      end
      return 0
    end,
  })

  simple(cli, "start", "start the main and sidecar containers (inits are not re-run)", "start",
    "started")
  simple(cli, "stop", "stop the main and sidecar containers, in reverse order", "stop", "stopped")
  simple(cli, "restart", "stop, then start, the main and sidecar containers", "restart",
    "restarted")

  cli.command("status", {
    usage = "status ID",
    summary = "the instance's state, readiness, services and endpoints",
    args = 1,
    run = function(ctx, args)
      local p, err = ctx:provider()
      if not p then return ctx:fail(err) end
      local st, serr, code = p:status(args[1])
      if not st then return ctx:fail_op("status " .. args[1], serr, code) end
      if ctx.json_out then
        ctx:json(st)
      else
        print_status(ctx, args[1], st)
      end
      return 0
    end,
  })

  cli.command("rollback", {
    usage = "rollback ID RELEASE_ID",
    summary = "bring every service back to its image and env at a recorded release",
    args = 2,
    run = function(ctx, args)
      local p, err = ctx:provider()
      if not p then return ctx:fail(err) end
      local res, rerr, code = p:rollback(args[1], args[2], {on_event = progress(ctx)})
      if not res then return ctx:fail_op("rollback " .. args[1], rerr, code) end
      if ctx.json_out then
        ctx:json(res)
      else
        ctx:print(string.format("rolled %s back to release %s: %s", args[1], args[2], res.status))
      end
      return 0
    end,
  })

  cli.command("scale", {
    usage = "scale ID [--cpu-millis N] [--memory-mb N] [--replicas N]",
    summary = "change the main service's CPU/memory limits live, and its replicas",
    args = 1,
    options = {["--cpu-millis"] = "value", ["--memory-mb"] = "value", ["--replicas"] = "value"},
    run = function(ctx, args, opts)
      local spec = {}
      for flag, key in pairs({cpu_millis = "cpu_millis", memory_mb = "memory_mb",
          replicas = "replicas"}) do
        if opts[flag] then
          local n = math.tointeger(tonumber(opts[flag]))
          if not n then
            return cli.usage_error("--" .. flag:gsub("_", "-") .. " needs a whole number")
          end
          spec[key] = n
        end
      end
      if not next(spec) then return cli.usage_error("give --cpu-millis, --memory-mb or --replicas") end
      local p, err = ctx:provider()
      if not p then return ctx:fail(err) end
      local ok, serr, code, errors = p:scale(args[1], spec, {on_event = progress(ctx)})
      if not ok then return ctx:fail_op("scale " .. args[1], serr, code, errors) end
      if ctx.json_out then
        ctx:json({instance_id = args[1], result = "scaled", spec = spec})
      else
        local parts = {}
        for _, k in ipairs(util.sorted_keys(spec)) do parts[#parts + 1] = k .. "=" .. spec[k] end
        ctx:print("scaled " .. args[1] .. ": " .. table.concat(parts, " "))
      end
      return 0
    end,
  })

  cli.command("deploy", {
    usage = "deploy FILE|-",
    summary = "roll out new images/env to listed services from a DeployRequest",
    args = 1,
    run = request_command("deploy", function(ctx, req, res)
      ctx:print(string.format("deployed %s%s: %s", req.instance_id,
        res.release_id and (" release " .. res.release_id) or "", res.status))
      local changes = (res.metadata or {}).changes or {}
      if next(changes) then
        local rows = {}
        for _, n in ipairs(util.sorted_keys(changes)) do rows[#rows + 1] = {n, changes[n]} end
        ctx:print("")
        ctx:table({"SERVICE", "WHAT AND WHY"}, rows)
      end
    end),
  })
end

return M
