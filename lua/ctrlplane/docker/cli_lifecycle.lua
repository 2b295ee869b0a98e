-- cpdocker commands for the lifecycle: provision, deprovision, start, stop,
-- restart, status, deploy.
local core = require("ctrlplane.docker.core")
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

-- Progress for people, on stderr: one line per step, and while an image is
-- pulled a bar like `docker pull`'s that moves -- bytes and percent of the
-- layers being downloaded, then extracted -- redrawn at most every
-- REDRAW seconds of wall-clock time (core.clock). The bar is drawn only
-- when stderr is a terminal; elsewhere only the step lines are written.
--
--   M.pull_progress(write, {tty = bool, clock = fn}) -> fn(event)
M.REDRAW = 0.1

local DONE = {["Download complete"] = "downloaded", ["Pull complete"] = "complete",
  ["Already exists"] = "complete", ["Verifying Checksum"] = "downloaded"}

function M.pull_progress(write, o)
  local clock = o.clock or core.clock
  local tty = o.tty
  local layers, order, last_draw, drawn = {}, {}, nil, false

  local function layer(id)
    local l = layers[id]
    if not l then
      l = {dl = 0, dl_total = 0, ex = 0, ex_total = 0, state = "waiting"}
      layers[id] = l
      order[#order + 1] = id
    end
    return l
  end

  local function line()
    local cur, tot, done, extracting = 0, 0, 0, false
    for _, id in ipairs(order) do
      local l = layers[id]
      if l.state == "complete" then done = done + 1 end
      if l.state == "extracting" then extracting = true end
      if l.ex_total > 0 and (l.state == "extracting" or l.state == "complete") then
        cur = cur + (l.state == "complete" and l.ex_total or l.ex)
        tot = tot + l.ex_total
      elseif l.dl_total > 0 then
        cur = cur + ((l.state == "downloaded" or l.state == "complete") and l.dl_total or l.dl)
        tot = tot + l.dl_total
      end
    end
    local width, pct = 30, tot > 0 and math.min(1, cur / tot) or 0
    local fill = math.floor(width * pct)
    local bar = string.rep("=", fill) .. (fill < width and ">" or "")
    bar = bar .. string.rep(" ", width - #bar)
    return string.format("  %-11s [%s] %3d%%  %s / %s  (%d/%d layers done)",
      extracting and "extracting" or "downloading", bar, math.floor(100 * pct), mb(cur), mb(tot),
      done, #order)
  end

  local function draw(force)
    local now = clock()
    if not force and last_draw and now - last_draw < M.REDRAW then return end
    last_draw = now
    write("\r\27[K" .. line())
    drawn = true
  end

  local function clear()
    if drawn then write("\r\27[K") end
    drawn = false
  end

  return function(ev)
    if ev.type == "pull" then
      if ev.status == "Pulling" then
        write("pulling " .. ev.image .. "\n")
        layers, order, last_draw = {}, {}, nil
      elseif ev.status == "Pulled" then
        clear()
        write("pulled " .. ev.image .. "\n")
      elseif ev.id and tty then
        local l = layer(ev.id)
        local st = ev.status or ""
        if st == "Downloading" then
          l.state = "downloading"
          l.dl, l.dl_total = ev.current or l.dl, ev.total or l.dl_total
        elseif st == "Extracting" then
          l.state = "extracting"
          l.ex, l.ex_total = ev.current or l.ex, ev.total or l.ex_total
        elseif DONE[st] then
          l.state = DONE[st]
        end
        -- a layer finishing is always shown; byte counts at most every REDRAW
        draw(DONE[st] ~= nil)
      end
    elseif ev.type == "service" then
      clear()
      write(string.format("  %-10s %s\n", ev.action, ev.service))
    elseif ev.type == "warning" then
      clear()
      write("warning: " .. ev.message .. "\n")
    end
  end
end

local function progress(ctx)
  if ctx.json_out then return nil end
  local err = ctx.stderr
  return M.pull_progress(function(text) err:write(text) end, {tty = ctx.err_tty and not ctx.dumb})
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
  if ctx.color_ok then
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

-- start, stop, restart: stop and restart take --timeout (seconds Docker
-- waits before it kills); start and restart wait until the instance is
-- ready, as provision does, unless --no-wait.
local function simple(cli, name, summary, method, past)
  local stops = name == "stop" or name == "restart"
  local starts = name == "start" or name == "restart"
  local options = {}
  if stops then options["--timeout"] = "value" end
  if starts then options["--no-wait"] = "flag" end
  cli.command(name, {
    usage = name .. " ID" .. (stops and " [--timeout S]" or "") .. (starts and " [--no-wait]" or ""),
    summary = summary,
    help = (stops and "  --timeout S   seconds each container gets to stop before it is killed "
      .. "(default\n                $CP_DOCKER_STOP_TIMEOUT, 10)\n" or "")
      .. (starts and "  --no-wait     return once the containers are started, without waiting "
      .. "until\n                they are running (and healthy, with a health check)" or ""),
    args = 1,
    options = options,
    run = function(ctx, args, opts)
      local call_opts = {no_wait = opts.no_wait}
      if opts.timeout then
        local t = tonumber(opts.timeout)
        if not t or t ~= t or t < 0 or t > 86400 then
          return cli.usage_error("--timeout needs a number of seconds from 0 to 86400")
        end
        call_opts.stop_timeout = t
      end
      local p, err, pcode = ctx:provider()
      if not p then return ctx:fail(err, pcode) end
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
    if not req then return ctx:fail(rerr, "invalid") end
    local p, err, pcode = ctx:provider()
    if not p then return ctx:fail(err, pcode) end
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
      local p, err, pcode = ctx:provider()
      if not p then return ctx:fail(err, pcode) end
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

  simple(cli, "start", "start the main and sidecar containers and wait until ready (inits "
    .. "are not re-run)", "start", "started")
  simple(cli, "stop", "stop the main and sidecar containers, in reverse order", "stop", "stopped")
  simple(cli, "restart", "stop, then start, the main and sidecar containers; wait until ready",
    "restart", "restarted")

  cli.command("status", {
    usage = "status ID",
    summary = "the instance's state, readiness, services and endpoints",
    args = 1,
    run = function(ctx, args)
      local p, err, pcode = ctx:provider()
      if not p then return ctx:fail(err, pcode) end
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
      local p, err, pcode = ctx:provider()
      if not p then return ctx:fail(err, pcode) end
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
      local p, err, pcode = ctx:provider()
      if not p then return ctx:fail(err, pcode) end
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
