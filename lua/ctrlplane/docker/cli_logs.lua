-- `cpdocker logs`: an instance's logs, one line per line the program wrote.
-- Text for people goes to stdout/stderr as the program wrote it; --json
-- prints one {ts, stream, line} object per line (plus service when several
-- services are merged). The formatting of each line is done in C
-- (core.demux's render) so a large log streams at the daemon's pace.
local core = require("ctrlplane.docker.core")
local json = require("ctrlplane.docker.json")

local M = {}
local usage_error -- cli.usage_error, set by install

-- colours for service prefixes on a terminal, like docker-compose
local COLOURS = {"36", "33", "32", "35", "34", "31"}

-- Several services without --follow: the events come merged by time as
-- Lua tables and are formatted here (the same bytes the C renderer writes).
local function print_ordered(ctx, stream, fmt)
  local outs, cont = {}, {}
  local function flush()
    if #outs > 0 then ctx.stdout:write(table.concat(outs)) end
    outs = {}
  end
  while true do
    local ev, err, code = stream:next()
    if not ev then
      flush()
      if err then return ctx:fail(err, code) end
      return 0
    end
    if fmt.json then
      outs[#outs + 1] = json.encode(ev) .. "\n"
    else
      local key = ev.service .. "\0" .. ev.stream
      local text = ev.line .. (ev.partial and "" or "\n")
      if not cont[key] then
        text = (fmt.prefix and fmt.prefix(ev.service) or "")
          .. (fmt.timestamps and ev.ts and (ev.ts .. " ") or "") .. text
      end
      cont[key] = ev.partial
      if ev.stream == "stdout" then
        outs[#outs + 1] = text
      else
        flush()
        ctx.stdout:flush()
        ctx.stderr:write(text)
      end
    end
    if #outs >= 1024 then flush() end
  end
end

local function run(ctx, args, opts)
  -- every chunk makes short-lived strings: collect them young, so memory
  -- stays flat whatever the size of the log
  collectgarbage("generational")
  local id = args[1]
  if opts.service and opts.all then
    return usage_error("--service and --all cannot be used together")
  end
  local tail = opts.tail
  if tail ~= nil and not tostring(tail):match("^%d+$") and tail ~= "all" then
    return usage_error("--tail expects a number of lines or all")
  end
  -- as docker: --tail 0 prints no old lines (the provider's tail = 0 is
  -- ctrlplane's "not set", every line)
  if tail ~= nil and tail ~= "all" and tonumber(tail) == 0 then tail = "none" end
  local p, perr, pcode = ctx:provider()
  if not p then return ctx:fail(perr, pcode) end
  local follow = opts.f or opts.follow or false
  local stream, err, scode = p:logs(id, {service_name = opts.service, all = opts.all, follow = follow,
    tail = tail, since = opts.since})
  if not stream then return ctx:fail("logs " .. id .. ": " .. tostring(err), scode) end
  local services = stream:services()
  local width = 0
  for _, s in ipairs(services) do width = math.max(width, #s) end
  local prefixes = {}
  local fmt = {json = ctx.json_out, timestamps = opts.t or opts.timestamps}
  if #services > 1 and not ctx.json_out then
    local n = 0
    fmt.prefix = function(service)
      if not prefixes[service] then
        n = n + 1
        local label = string.format("%-" .. width .. "s |", service)
        prefixes[service] = ctx:color(COLOURS[(n - 1) % #COLOURS + 1], label) .. " "
      end
      return prefixes[service]
    end
  end
  if stream.ordered then
    local status = print_ordered(ctx, stream, fmt)
    stream:close()
    return status
  end
  if follow then core.catch_interrupts(true) end
  local status = 0
  while true do
    local out, e, code = stream:read_text(fmt)
    if not out then -- the end, or a failure (no timeout was asked for)
      if e and code ~= "interrupted" then status = ctx:fail(e, code) end
      break
    end
    if out ~= "" then ctx.stdout:write(out) end
    if e ~= "" then
      ctx.stdout:flush()
      ctx.stderr:write(e)
    end
    if follow then ctx.stdout:flush() end
  end
  stream:close()
  if follow then
    core.catch_interrupts(false)
    core.interrupted(true)
  end
  return status
end

function M.install(cli)
  usage_error = cli.usage_error
  cli.command("logs", {
    usage = "logs ID [--service NAME | --all] [-f|--follow] [--tail N] [--since TIME] [-t]",
    summary = "print an instance's logs (the main service unless --service or --all)",
    help = [[
options:
  --service NAME   one service of the instance (default: the main service)
  --all            every service, each line prefixed by its service; merged by
                   time (with --follow: as lines arrive)
  -f, --follow     keep printing new lines until interrupted (Ctrl-C)
  --tail N         only the last N lines of each container (0: none, only new
                   lines with -f; all: every line, the default)
  --since TIME     only lines after TIME: RFC 3339 (2024-05-01T10:00:00Z), Unix
                   seconds, or a duration ago (10m, 1h30m)
  -t, --timestamps start each text line with its time (always present with --json)

Lines written to stderr go to stderr. A line of any length is one line; with
--json, one object per line, bytes that are not UTF-8 become U+FFFD.]],
    options = {["--service"] = "value", ["--all"] = "flag", ["-f"] = "flag", ["--follow"] = "flag",
      ["--tail"] = "value", ["--since"] = "value", ["-t"] = "flag", ["--timestamps"] = "flag"},
    args = 1,
    run = run,
  })
end

return M
