-- `cpdocker resources ID` and `cpdocker top ID` (DESIGN §9).
local core = require("ctrlplane.docker.core")
local util = require("ctrlplane.docker.util")

local M = {}

-- 12.5MiB, 1.50GiB, 820KiB from a number of MB (2^20 bytes)
local function size(mb)
  if mb >= 1024 then return string.format("%.2fGiB", mb / 1024) end
  if mb >= 1 then return string.format("%.1fMiB", mb) end
  return string.format("%.0fKiB", mb * 1024)
end

local function rate(mb_s)
  if not mb_s then return "-" end
  return size(mb_s) .. "/s"
end

local function pct(x, known)
  if known == false then return "-" end
  return string.format("%.1f%%", x)
end

-- Prints rows (lists of strings) as left-aligned columns; the first is the header.
local function table_out(ctx, rows)
  local widths = {}
  for _, r in ipairs(rows) do
    for i, cell in ipairs(r) do widths[i] = math.max(widths[i] or 0, utf8.len(cell) or #cell) end
  end
  for ri, r in ipairs(rows) do
    local cells = {}
    for i, cell in ipairs(r) do
      local pad = string.rep(" ", widths[i] - (utf8.len(cell) or #cell))
      cells[i] = i == 1 and cell .. pad or pad .. cell
    end
    local line = table.concat(cells, "  ")
    ctx.stdout:write(ri == 1 and ctx:color("1", line) or line, "\n")
  end
end

local function service_rows(usage, with_rates)
  local head = {"SERVICE", "RUNNING", "CPU %", "MEM USED", "MEM LIMIT", "MEM %"}
  if with_rates then
    head[#head + 1] = "NET IN/s"
    head[#head + 1] = "NET OUT/s"
  else
    head[#head + 1] = "NET IN"
    head[#head + 1] = "NET OUT"
  end
  local rows = {head}
  local function row(name, u)
    local mem_pct = u.memory_limit_mb > 0 and u.memory_used_mb / u.memory_limit_mb * 100 or 0
    local r = {name, string.format("%d/%d", u.running, u.containers), pct(u.cpu_percent, u.cpu_known),
      size(u.memory_used_mb), size(u.memory_limit_mb), pct(mem_pct)}
    if with_rates then
      r[#r + 1] = rate(u.network_in_rate_mb)
      r[#r + 1] = rate(u.network_out_rate_mb)
    else
      r[#r + 1] = size(u.network_in_mb)
      r[#r + 1] = size(u.network_out_mb)
    end
    rows[#rows + 1] = r
  end
  for _, name in ipairs(util.sorted_keys(usage.services)) do row(name, usage.services[name]) end
  if with_rates then
    -- the project's rates: the services' rates summed
    local tin, tout
    for _, s in pairs(usage.services) do
      if s.network_in_rate_mb then
        tin = (tin or 0) + s.network_in_rate_mb
        tout = (tout or 0) + s.network_out_rate_mb
      end
    end
    usage.network_in_rate_mb, usage.network_out_rate_mb = tin, tout
  end
  row("TOTAL", usage)
  usage.network_in_rate_mb, usage.network_out_rate_mb = nil, nil
  return rows
end

-- "cgroup v2, readings 100 ms apart" / "daemon stats API"
local function source_text(meta)
  meta = meta or {}
  if meta.source == "cgroup" then
    return string.format("kernel (cgroup v%s), readings %d ms apart", tostring(meta.cgroup_version),
      meta.interval_ms or 0)
  elseif meta.source == "cgroup+api" then
    return "kernel (cgroup), and the daemon's stats API for containers it could not read"
  elseif meta.source == "api" then
    return "the daemon's stats API"
  end
  return "-"
end

function M.install(cli)
  cli.command("resources", {
    usage = "resources ID [--one-shot]",
    summary = "CPU, memory and network of an instance, summed and per service",
    help = "Samples every running container of the instance at once. With a local daemon\n"
      .. "the kernel's figures are read directly (cgroup files, twice 0.1 s apart:\n"
      .. "CP_DOCKER_STATS_INTERVAL); otherwise the daemon's stats API answers (about 1-2 s:\n"
      .. "it measures CPU over a second; --one-shot answers at once without CPU).\n"
      .. "Stopped containers count as zeros; an instance with no containers has a zero\n"
      .. "usage; an unreachable daemon is an error.",
    options = {["--one-shot"] = "flag"},
    args = 1,
    run = function(ctx, args, opts)
      local p, err = ctx:provider()
      if not p then return ctx:fail(err) end
      local usage, uerr, ucode = p:resources(args[1], {one_shot = opts.one_shot})
      if not usage then return ctx:fail("resources " .. args[1] .. ": " .. tostring(uerr), ucode) end
      if ctx.json_out then
        ctx:json(usage)
        return 0
      end
      ctx:fields({
        {"instance", string.format("%s (%d containers, %d running)", args[1], usage.containers,
          usage.running)},
        {"cpu", pct(usage.cpu_percent, usage.cpu_known)},
        {"memory", size(usage.memory_used_mb) .. " / " .. size(usage.memory_limit_mb)},
        {"network", "in " .. size(usage.network_in_mb) .. ", out " .. size(usage.network_out_mb)},
        {"sampled_at", usage.sampled_at},
        {"source", source_text(usage.metadata)},
      })
      if usage.containers == 0 then
        ctx.stdout:write("\n(no containers: zero usage)\n")
        return 0
      end
      ctx.stdout:write("\n")
      table_out(ctx, service_rows(usage, false))
      return 0
    end,
  })

  cli.command("top", {
    usage = "top ID [--no-stream] [--interval S] [--count N]",
    summary = "live per-service CPU, memory and network rates (Ctrl-C ends)",
    help = "Keeps one stats stream per container open and redraws the table every\n"
      .. "--interval seconds (default 1) until interrupted, or --count times.\n"
      .. "--no-stream prints one table once the samples are warm. With --json, one\n"
      .. "ResourceUsage document per refresh.",
    options = {["--no-stream"] = "flag", ["--interval"] = "value", ["--count"] = "value"},
    args = 1,
    run = function(ctx, args, opts)
      local interval = tonumber(opts.interval or "1")
      if not interval or interval < 0.1 then
        return cli.usage_error("--interval must be a number of seconds >= 0.1")
      end
      local count = opts.count and tonumber(opts.count)
      if opts.count and (not count or count < 1) then
        return cli.usage_error("--count must be a positive integer")
      end
      if opts.no_stream then count = 1 end
      local p, err = ctx:provider()
      if not p then return ctx:fail(err) end
      local mon, merr, mcode = p:resource_monitor(args[1])
      if not mon then return ctx:fail("top " .. args[1] .. ": " .. tostring(merr), mcode) end
      core.catch_interrupts(true)
      local status = 0
      local warm, werr, wcode = mon:warm(2, 3)
      if warm == nil then status = ctx:fail(werr, wcode) end
      local shown = 0
      while status == 0 and not core.interrupted() do
        local usage, uerr, ucode = mon:usage()
        if not usage then
          status = ctx:fail(uerr, ucode)
          break
        end
        if ctx.json_out then
          ctx:json(usage)
        else
          if ctx.tty and not ctx.dumb then ctx.stdout:write("\27[H\27[2J") end
          ctx.stdout:write(string.format("%s  %s  (%d containers, %d running)\n\n", args[1],
            usage.sampled_at, usage.containers, usage.running))
          table_out(ctx, service_rows(usage, true))
          if (not ctx.tty or ctx.dumb) and not count then ctx.stdout:write("\n") end
        end
        ctx.stdout:flush()
        shown = shown + 1
        if count and shown >= count then break end
        local next_at = core.clock() + interval
        while not core.interrupted() do
          local left = next_at - core.clock()
          if left <= 0 then break end
          local ok, perr, pcode = mon:poll(left)
          if not ok then
            if core.interrupted() then break end
            status = ctx:fail(perr, pcode)
            break
          end
        end
      end
      mon:close()
      core.catch_interrupts(false)
      core.interrupted(true)
      return status
    end,
  })
end

return M
