-- Many tenants through one `cpdocker serve` (issue 14). Run by
-- bench_serve.sh (lua5.4 with package.path at spec/ and lua/).
--
--   1. one provision alone through serve (a 2-service instance), median of 3
--   2. LOGS instances, each printing a line every 50 ms; SUBS followed log
--      subscriptions over them (SUBS / LOGS each)
--   3. N provisions of N different 2-service instances sent at once to the
--      same serve; meanwhile status / health_check every 50 ms (latency),
--      the gaps between events of every subscription, the server's RSS
--   4. the same N provisions as N separate `cpdocker provision` processes
--   5. the API floor (serve_floor.sh): the same calls with curl, one
--      instance alone and N at once; and, during (3), the status and
--      health_check calls sent raw, and the tickers' logs followed raw, from
--      processes of their own (raw_probe.lua): what any client of this
--      daemon sees meanwhile
--
-- Targets: wall(3) <= 2x (1); status/health p99 <= 50 ms; no subscription
-- gap > 200 ms during (3); serve RSS <= 64 MB.
--
-- The machine is shared: the same probes also go to a second, idle serve
-- (the latency floor of this machine at that moment), and each log event's
-- delivery lag (arrival - its Docker timestamp) is reported beside the
-- arrival gaps, which also contain the ticker's own scheduling jitter.
local core = require("ctrlplane.docker.core")
local json = require("ctrlplane.docker.json")
local helper = require("support.helper")
local rpc_session = require("support.rpc_session")
local logs = require("ctrlplane.docker.logs")

local N = tonumber(os.getenv("N") or "20")
local LOGS = tonumber(os.getenv("LOGS") or "20")
local SUBS = tonumber(os.getenv("SUBS") or "100")
local tag = string.format("%x", os.time())

local IDLE = {"sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1 & wait $!; done"}
local WEB = {"sh", "-c", "trap 'exit 0' TERM; httpd -f -p 8080 -h /www & wait"}
local TICK = {"sh", "-c", "trap 'exit 0' TERM; i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.05; done"}

local function two(id)
  return {instance_id = id, tenant_id = "ten_bench", name = "bench",
    services = {
      {name = "web", role = "main", image = helper.IMAGE1, command = WEB, ports = {{container = 8080}}},
      {name = "side", role = "sidecar", image = helper.IMAGE1, depends_on = {"web"}, command = IDLE},
    }}
end

local function ticker(id)
  return {instance_id = id, tenant_id = "ten_bench", name = "ticker",
    services = {{name = "tick", role = "main", image = helper.IMAGE1, command = TICK}}}
end

local function pct(list, p)
  if #list == 0 then return 0 end
  table.sort(list)
  return list[math.max(1, math.ceil(#list * p))]
end

local function median(list) return pct(list, 0.5) end

-- user + system CPU seconds of a process
local function cpu_s(pid)
  local f = io.open("/proc/" .. pid .. "/stat")
  if not f then return 0 end
  local rest = f:read("a"):match("%) (.*)$") or ""
  f:close()
  local fields = {}
  for x in rest:gmatch("%S+") do fields[#fields + 1] = x end
  local ticks = (tonumber(fields[12]) or 0) + (tonumber(fields[13]) or 0) -- utime, stime
  return ticks / 100
end

local function rss_mb(pid)
  local f = io.open("/proc/" .. pid .. "/status")
  if not f then return 0 end
  local kb = tonumber(f:read("a"):match("VmRSS:%s*(%d+)")) or 0
  f:close()
  return kb / 1024
end

helper.daemon()
-- SERVE_ENV="NAME=value ..." settings for the measured server (e.g. CP_SCHED_TRACE=0.02)
local serve_env = {}
for k, v in (os.getenv("SERVE_ENV") or ""):gmatch("([%w_]+)=(%S*)") do serve_env[k] = v end
local s = rpc_session.start(nil, serve_env)
local idle = rpc_session.start()
local created = {}
local function cleanup()
  local rids = {}
  for _, id in ipairs(created) do rids[#rids + 1] = s:send("deprovision", {instance_id = id}) end
  for _, rid in ipairs(rids) do pcall(s.reply, s, rid, 180) end
  if os.getenv("SERVE_ERR") then helper.sh("cp " .. s.dir .. "/err " .. os.getenv("SERVE_ERR")) end
  s:close()
  idle:close()
  -- the separate-process run's instances
  for i = 1, N do helper.sh("./cpdocker deprovision inst_bsp" .. tag .. "x" .. i .. " >/dev/null 2>&1") end
end

local ok, err = pcall(function()
  -- 1. one alone
  local alone = {}
  for r = 1, 3 do
    local id = "inst_bsa" .. tag .. "x" .. r
    local t0 = core.clock()
    local rep = s:call("provision", two(id), 120)
    assert(not rep.error, json.encode(rep.error))
    alone[#alone + 1] = core.clock() - t0
    assert(not s:call("deprovision", {instance_id = id}, 120).error)
  end
  local t_alone = median(alone)
  print(string.format("one provision alone (serve, median of 3): %.2f s", t_alone))

  -- 2. tickers and subscriptions
  local tickers = {}
  for i = 1, LOGS do
    local id = "inst_bst" .. tag .. "x" .. i
    tickers[i] = id
    created[#created + 1] = id
  end
  local pending = {}
  for i, id in ipairs(tickers) do pending[i] = s:send("provision", ticker(id)) end
  for _, rid in ipairs(pending) do
    local rep = s:reply(rid, 300)
    assert(not rep.error, json.encode(rep.error))
  end
  local subs = {}
  local sub_req = {}
  for k = 1, SUBS do
    local id = tickers[(k - 1) % LOGS + 1]
    sub_req[k] = s:send("logs", {instance_id = id, opts = {follow = true, tail = 1}})
  end
  for k = 1, SUBS do
    local rep = s:reply(sub_req[k], 60)
    assert(rep.result and rep.result.subscription, json.encode(rep))
    subs[rep.result.subscription] = {last = nil, max_gap = 0, events = 0, max_lag = 0, max_ts_gap = 0}
  end
  -- let every subscription deliver before measuring
  local warm = core.clock() + 1.5
  local function drain(measuring)
    s:poll()
    local now = core.clock()
    local keep = {}
    for _, m in ipairs(s.msgs) do
      if m.method == "logs.event" then
        local st = subs[m.params.subscription]
        if st then
          local ts = logs.parse_rfc3339(m.params.event.ts or "")
          if measuring and st.last then
            st.max_gap = math.max(st.max_gap, now - st.last)
            if ts and st.last_ts then st.max_ts_gap = math.max(st.max_ts_gap, ts - st.last_ts) end
            if ts then st.max_lag = math.max(st.max_lag, core.walltime() - ts) end
          end
          st.last = now
          st.last_ts = ts
          st.events = st.events + 1
        end
      elseif m.method == "logs.end" then
        local st = subs[m.params.subscription]
        if st then st.ended = m.params.reason end
      else
        keep[#keep + 1] = m
      end
    end
    s.msgs = keep
  end
  while core.clock() < warm do drain(false); helper.sleep(0.005) end
  for _, st in pairs(subs) do st.max_gap, st.max_lag, st.max_ts_gap = 0, 0, 0 end

  -- 3. N provisions at once, with probes
  local ids, sent = {}, {}
  local cpu0 = cpu_s(s.pid)
  local t0 = core.clock()
  for i = 1, N do
    ids[i] = "inst_bsc" .. tag .. "x" .. i
    created[#created + 1] = ids[i]
    sent[s:send("provision", two(ids[i]))] = i
  end
  local probe_dir = (helper.sh("mktemp -d")):gsub("%s+$", "")
  helper.sh(string.format("lua5.4 spec/bench/raw_probe.lua calls %s/stop %s/lat %s >/dev/null 2>&1 &",
    probe_dir, probe_dir, table.concat(tickers, " ")) .. " true")
  helper.sh(string.format("lua5.4 spec/bench/raw_probe.lua follow %s/stop %s/gap %s >/dev/null 2>&1 &",
    probe_dir, probe_dir, table.concat(tickers, " ")) .. " true")
  local done, failures, t_last = 0, 0, 0
  local lat_status, lat_health, lat_idle, idle_probes = {}, {}, {}, {}
  local probes = {}
  local next_probe = core.clock()
  local max_rss = 0
  local probe_turn = 0
  while done < N do
    local now = core.clock()
    if now - t0 > 300 then error("the provisions did not finish in 300 s") end
    if now >= next_probe then
      probe_turn = probe_turn + 1
      local rid
      if probe_turn % 2 == 0 then
        rid = s:send("health_check")
        probes[rid] = {t = core.clock(), kind = "health"}
      else
        rid = s:send("status", {instance_id = tickers[probe_turn % LOGS + 1]})
        probes[rid] = {t = core.clock(), kind = "status"}
      end
      next_probe = now + 0.05
      max_rss = math.max(max_rss, rss_mb(s.pid))
      -- the same probe to the idle serve
      local irid = idle:send(probe_turn % 2 == 0 and "health_check" or "status",
        probe_turn % 2 == 0 and nil or {instance_id = tickers[probe_turn % LOGS + 1]})
      idle_probes[irid] = core.clock()
    end
    idle:poll()
    for _, m in ipairs(idle.msgs) do
      if m.id and idle_probes[m.id] then
        lat_idle[#lat_idle + 1] = core.clock() - idle_probes[m.id]
        idle_probes[m.id] = nil
      end
    end
    idle.msgs = {}
    drain(true)
    local keep = {}
    for _, m in ipairs(s.msgs) do
      if m.id and probes[m.id] then
        local p = probes[m.id]
        local l = core.clock() - p.t
        if p.kind == "status" then lat_status[#lat_status + 1] = l else lat_health[#lat_health + 1] = l end
        probes[m.id] = nil
      elseif m.id and sent[m.id] then
        done = done + 1
        if m.error then
          failures = failures + 1
          io.stderr:write("provision failed: ", json.encode(m.error), "\n")
        end
        t_last = core.clock() - t0
      else
        keep[#keep + 1] = m
      end
    end
    s.msgs = keep
    helper.sleep(0.003)
  end
  drain(true)
  helper.sh("touch " .. probe_dir .. "/stop")
  max_rss = math.max(max_rss, rss_mb(s.pid))
  helper.sleep(0.2)
  local lat_raw = {}
  for line in io.lines(probe_dir .. "/lat") do
    local v = tonumber(line:match("%S+%s+(%S+)"))
    if v then lat_raw[#lat_raw + 1] = v end
  end
  local gapf = io.open(probe_dir .. "/gap")
  local raw_gap = gapf and tonumber(gapf:read("a")) or 0
  if gapf then gapf:close() end
  helper.sh("rm -rf " .. probe_dir)
  local worst_gap, ended, quiet, worst_lag, worst_ts_gap = 0, 0, 0, 0, 0
  for _, st in pairs(subs) do
    worst_gap = math.max(worst_gap, st.max_gap)
    worst_lag = math.max(worst_lag, st.max_lag)
    worst_ts_gap = math.max(worst_ts_gap, st.max_ts_gap)
    if st.ended then ended = ended + 1 end
    if st.events == 0 then quiet = quiet + 1 end
  end
  local lat_all = {}
  for _, l in ipairs(lat_status) do lat_all[#lat_all + 1] = l end
  for _, l in ipairs(lat_health) do lat_all[#lat_all + 1] = l end
  print(string.format("%d provisions at once through one serve: %.2f s (%.2fx one alone; target <= 2x), %d failed",
    N, t_last, t_last / t_alone, failures))
  print(string.format("  status latency meanwhile: %d probes, p50 %.1f ms, p99 %.1f ms, max %.1f ms",
    #lat_status, median(lat_status) * 1000, pct(lat_status, 0.99) * 1000, pct(lat_status, 1) * 1000))
  print(string.format("  health_check latency meanwhile: %d probes, p50 %.1f ms, p99 %.1f ms, max %.1f ms",
    #lat_health, median(lat_health) * 1000, pct(lat_health, 0.99) * 1000, pct(lat_health, 1) * 1000))
  print(string.format("  status+health p99 %.1f ms (target <= 50 ms); the same probes to an idle serve "
    .. "meanwhile: p50 %.1f ms, p99 %.1f ms", pct(lat_all, 0.99) * 1000, median(lat_idle) * 1000,
    pct(lat_idle, 0.99) * 1000))
  print(string.format("  the same Docker API calls sent raw from a process of their own meanwhile: "
    .. "%d probes, p50 %.1f ms, p99 %.1f ms", #lat_raw, median(lat_raw) * 1000, pct(lat_raw, 0.99) * 1000))
  print(string.format("  %d followed log subscriptions over %d instances: largest arrival gap %.0f ms "
    .. "(target <= 200 ms; the tickers' own largest gap between lines %.0f ms), largest delivery lag "
    .. "%.0f ms, %d ended, %d silent", SUBS, LOGS, worst_gap * 1000, worst_ts_gap * 1000,
    worst_lag * 1000, ended, quiet))
  print(string.format("  the same logs followed raw from a process of their own (one stream a ticker) meanwhile: "
    .. "largest arrival gap %.0f ms", raw_gap * 1000))
  print(string.format("  serve RSS peak %.1f MB (target <= 64 MB); serve CPU %.2f s over those %.2f s",
    max_rss, cpu_s(s.pid) - cpu0, t_last))
  local la = io.open("/proc/loadavg")
  if la then
    print("  load average: " .. la:read("l"))
    la:close()
  end

  -- 4. N separate processes
  local dir = (helper.sh("mktemp -d")):gsub("%s+$", "")
  local parts = {}
  for i = 1, N do
    local id = "inst_bsp" .. tag .. "x" .. i
    local f = assert(io.open(dir .. "/r" .. i .. ".json", "w"))
    f:write(json.encode(two(id)))
    f:close()
    parts[#parts + 1] = string.format("(./cpdocker provision %s/r%d.json > %s/o%d 2>&1; echo $? > %s/rc%d) &",
      dir, i, dir, i, dir, i)
  end
  local p0 = core.clock()
  helper.sh(table.concat(parts, " ") .. " wait")
  local t_procs = core.clock() - p0
  local pfail = 0
  for i = 1, N do
    local f = io.open(dir .. "/rc" .. i)
    local rc = f and tonumber(f:read("a")) or -1
    if f then f:close() end
    if rc ~= 0 then pfail = pfail + 1 end
  end
  helper.sh("rm -rf " .. dir)
  print(string.format("%d separate `cpdocker provision` processes at once: %.2f s (%.2fx one alone), %d failed; "
    .. "one serve: %.2fx of that", N, t_procs, t_procs / t_alone, pfail, t_last / t_procs))
  -- 5. the API floor of (1) and (3)
  local function floor(n)
    local out = helper.sh(string.format("bash spec/bench/serve_floor.sh %d %s%d", n, tag, n))
    local t, failed = out:match("([%d.]+)%s+(%d+)")
    assert(t and tonumber(failed) == 0, "the API floor failed: " .. tostring(out))
    return tonumber(t)
  end
  local f_alone, f_all = floor(1), floor(N)
  print(string.format("API floor (curl): one instance alone %.2f s; %d at once %.2f s (%.2fx alone); "
    .. "one serve: %.2fx the floor at once", f_alone, N, f_all, f_all / f_alone, t_last / f_all))
  -- rows of the summary table (spec/bench/lib.sh): work, anchor, anchor, ours, target
  local rows = os.getenv("BENCH_ROWS")
  local out = rows and assert(io.open(rows, "a"))
  if out then
    local function row(work, anchor, a, o, target)
      out:write(string.format("%s\t%s\t%.6f\t%.6f\t%s\n", work, anchor, a, o, target))
    end
    row(N .. " provisions at once, one serve", "one provision alone", t_alone, t_last, "2")
    row(N .. " provisions at once, one serve", "API floor, " .. N .. " at once (curl)", f_all, t_last, "1.15")
    row("  API floor, " .. N .. " at once (ref.)", "API floor, one alone (curl)", f_alone, f_all, "-")
    row(N .. " provisions, one serve (ref.)", N .. " cpdocker processes", t_procs, t_last, "-")
    row("status+health p99 meanwhile", "target 50 ms", 0.05, pct(lat_all, 0.99), "1")
    row("status+health p99 meanwhile", "same API calls raw, p99", pct(lat_raw, 0.99), pct(lat_all, 0.99),
      "1.15")
    row("  same probes, idle serve p99 (ref.)", "target 50 ms", 0.05, pct(lat_idle, 0.99), "-")
    row("largest log subscription gap", "target 200 ms", 0.2, worst_gap, "1")
    row("largest log subscription gap", "same logs followed raw", raw_gap, worst_gap, "1.15")
    row("serve peak RSS (MB in the time columns)", "target 64 MB", 64, max_rss, "1")
    out:close()
  end
end)
cleanup()
if not ok then
  io.stderr:write("serve bench failed: ", tostring(err), "\n")
  os.exit(1)
end
