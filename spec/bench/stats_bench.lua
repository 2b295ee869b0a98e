-- Stats benchmark (issues 5 and 15), run by bench_stats.sh from the repository root:
--   lua5.4 spec/bench/stats_bench.lua INSTANCE_ID [REPS]
-- One project grows from 1 to 10 to 30 idle containers. At each size it times
--   * the resources operation, cold (a fresh provider each time), both ways:
--     from the kernel (cgroup files, two readings 0.1 s apart: the default
--     for a local daemon) and from the daemon's stats API (stream=false);
--   * the same containers sampled one after another (stream=false each): the
--     way the reference provider samples
--   * `docker stats --no-stream` on the same containers
-- and at 30, one-shot mode and a warm persistent monitor's answer.
-- Rows for the summary table go to $BENCH_ROWS (bench/lib.sh's format).
-- Containers are removed at the end (bench_stats.sh also cleans up on exit).
local core = require("ctrlplane.docker.core")
local docker = require("ctrlplane.docker")
local json = require("ctrlplane.docker.json")

local ID = assert(arg[1], "usage: stats_bench.lua INSTANCE_ID [REPS]")
local REPS = tonumber(arg[2] or "3")
local IMAGE = "cpdocker-test/busybox:1"
local SIZES = {1, 10, 30}
local SEQ_SIZES = {[1] = true, [10] = true, [30] = true}
if os.getenv("CP_BENCH_QUICK") then SEQ_SIZES = {[1] = true, [10] = true} end

local c = assert(core.client({host = os.getenv("CP_DOCKER_HOST") or "unix:///var/run/docker.sock"}))
local p = assert(docker.new({}))
local ids, names = {}, {}

local function log(fmt, ...) io.stderr:write(string.format(fmt, ...), "\n") end

local function grow(n)
  for i = #ids + 1, n do
    local name = string.format("cp-%s-svc%02d", ID, i)
    local res = assert(c:request("POST", "/containers/create", {query = {name = name},
      body = json.encode({Image = IMAGE, Cmd = {"sleep", "3600"}, Labels = {
        ["ctrlplane.project"] = "cp-" .. ID, ["ctrlplane.instance"] = ID,
        ["ctrlplane.service"] = string.format("svc%02d", i), ["ctrlplane.role"] = "main"}})}))
    local id = json.decode(res.body).Id
    ids[#ids + 1] = id
    names[#names + 1] = name
    assert(c:request("POST", "/containers/" .. id .. "/start"))
  end
end

local function cleanup()
  for _, id in ipairs(ids) do c:request("DELETE", "/containers/" .. id, {query = {force = true}}) end
end

local function median(xs)
  local t = {}
  for i, x in ipairs(xs) do t[i] = x end
  table.sort(t)
  local n = #t
  if n % 2 == 1 then return t[(n + 1) // 2] end
  return (t[n // 2] + t[n // 2 + 1]) / 2
end

local function time(fn)
  local t0 = core.clock()
  fn()
  return core.clock() - t0
end

local results = {}
local ok, err = pcall(function()
  for _, n in ipairs(SIZES) do
    grow(n)
    log("stats bench: %d containers running", n)
    local r = {n = n}
    -- the operation, cold: a fresh provider each time (nothing remembered)
    local function cold_median(source)
      local cold = {}
      for _ = 1, REPS do
        local fresh = assert(docker.new({stats_source = source}))
        cold[#cold + 1] = time(function()
          local u = assert(fresh:resources(ID))
          assert(u.running == n, "expected " .. n .. " running, got " .. u.running)
          local want = source == "api" and "api" or "cgroup"
          assert(u.metadata.source == want, "answered by " .. u.metadata.source)
        end)
        fresh:close()
      end
      return median(cold)
    end
    r.cold = cold_median("auto")
    r.api = cold_median("api")
    -- one after another, each stream=false (the reference provider's way)
    if SEQ_SIZES[n] then
      r.seq = time(function()
        for _, id in ipairs(ids) do
          local res = assert(c:request("GET", "/containers/" .. id .. "/stats",
            {query = {stream = false}}))
          assert(core.stats_compute(res.body))
        end
      end)
    end
    -- docker stats --no-stream on the same containers
    local cli = {}
    for _ = 1, REPS do
      cli[#cli + 1] = time(function()
        local f = assert(io.popen("docker stats --no-stream " .. table.concat(names, " ")
          .. " > /dev/null 2>&1; echo $?"))
        local rc = f:read("a")
        f:close()
        assert(rc:match("^0"), "docker stats failed")
      end)
    end
    r.cli = median(cli)
    results[#results + 1] = r
  end
  -- at 30: one-shot mode (no waiting for the daemon's second reading)
  local oneshot = {}
  for _ = 1, REPS do
    local fresh = assert(docker.new({}))
    oneshot[#oneshot + 1] = time(function()
      assert(fresh:resources(ID, {one_shot = true, source = "api"}))
    end)
    fresh:close()
  end
  results.oneshot = median(oneshot)
  -- a warm persistent monitor
  local mon = assert(p:resource_monitor(ID))
  results.warmup = time(function() assert(mon:warm(2, 10)) end)
  local answers = {}
  for _ = 1, 200 do
    answers[#answers + 1] = time(function()
      local u = assert(mon:usage())
      assert(u.running == #ids)
    end)
  end
  table.sort(answers)
  results.warm_median = median(answers)
  results.warm_p95 = answers[190]
  results.warm_max = answers[#answers]
  mon:close()
end)
cleanup()
p:close()
if not ok then
  io.stderr:write("stats bench failed: ", tostring(err), "\n")
  os.exit(1)
end

-- ---- report ---------------------------------------------------------------------
local function s(x) return x and string.format("%.3f s", x) or "-" end
local function ms(x) return string.format("%.2f ms", x * 1000) end
print(string.format("%-11s %16s %16s %14s %26s", "containers", "kernel (default)", "stats API",
  "one by one", "docker stats --no-stream"))
for _, r in ipairs(results) do
  print(string.format("%-11d %16s %16s %14s %26s", r.n, s(r.cold), s(r.api), s(r.seq), s(r.cli)))
end
local r1, r10, r30 = results[1], results[2], results[3]
print(string.format("one-shot resources (API), 30 containers (no CPU delta): %s", s(results.oneshot)))
print(string.format("persistent monitor, 30 containers: warm-up %s; answer median %s, p95 %s, max %s",
  s(results.warmup), ms(results.warm_median), ms(results.warm_p95), ms(results.warm_max)))

local rows = os.getenv("BENCH_ROWS")
local out = rows and assert(io.open(rows, "a")) or io.stdout
local function row(work, anchor_name, anchor, ours, target)
  out:write(string.format("%s\t%s\t%.6f\t%.6f\t%s\n", work, anchor_name, anchor, ours, target))
end
row("resources cold, 30 containers", "absolute target 0.3 s", 0.3, r30.cold, "1.00")
row("resources cold, 30 containers", "docker stats --no-stream", r30.cli, r30.cold, "0.15")
row("resources cold, 30 containers", "the stats API path (ours)", r30.api, r30.cold, "0.15")
row("resources cold, 30 vs 1 container", "resources cold, 1 container", r1.cold, r30.cold, "1.50")
if r30.seq then row("resources, API path, 30", "stream=false one by one", r30.seq, r30.api, "0.15") end
row("resources, API path, 10", "stream=false one by one", r10.seq, r10.api, "0.15")
row("warm monitor answer, 30 containers", "absolute target 5 ms", 0.005, results.warm_median, "1.00")
if rows then out:close() end
