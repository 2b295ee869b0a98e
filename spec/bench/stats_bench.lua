-- Stats benchmark (issue 5), run by bench_stats.sh from the repository root:
--   lua5.4 spec/bench/stats_bench.lua INSTANCE_ID [REPS]
-- One project grows from 1 to 10 to 30 idle containers. At each size it times
--   * the resources operation, cold (all containers at once, stream=false)
--   * the same containers sampled one after another (stream=false each): the
--     way the reference provider samples
--   * `docker stats --no-stream` on the same containers
-- and at 30, one-shot mode and a warm persistent monitor's answer.
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
    local cold = {}
    for _ = 1, REPS do
      local fresh = assert(docker.new({}))
      cold[#cold + 1] = time(function()
        local u = assert(fresh:resources(ID))
        assert(u.running == n, "expected " .. n .. " running, got " .. u.running)
      end)
      fresh:close()
    end
    r.cold = median(cold)
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
    oneshot[#oneshot + 1] = time(function() assert(fresh:resources(ID, {one_shot = true})) end)
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
local function s(x) return x and string.format("%.2f s", x) or "-" end
local function ms(x) return string.format("%.2f ms", x * 1000) end
print(string.format("%-12s %14s %16s %22s", "containers", "resources", "one by one",
  "docker stats --no-stream"))
for _, r in ipairs(results) do
  print(string.format("%-12d %14s %16s %22s", r.n, s(r.cold), s(r.seq), s(r.cli)))
end
local r1, r10, r30 = results[1], results[2], results[3]
print(string.format("one-shot resources, 30 containers (no CPU delta): %s", s(results.oneshot)))
print(string.format("persistent monitor, 30 containers: warm-up %s; answer median %s, p95 %s, max %s",
  s(results.warmup), ms(results.warm_median), ms(results.warm_p95), ms(results.warm_max)))
print("")
local failed = 0
local function ratio(label, value, target, cmp)
  local pass = cmp == "<=" and value <= target
  if not pass then failed = failed + 1 end
  print(string.format("%-58s %8.3f  (target %s %.3g)  %s", label, value, cmp, target,
    pass and "PASS" or "MISS"))
end
ratio("resources 30 / resources 1", r30.cold / r1.cold, 1.5, "<=")
if r30.seq then ratio("resources 30 / one by one 30", r30.cold / r30.seq, 0.15, "<=") end
ratio("resources 10 / one by one 10", r10.cold / r10.seq, 0.15, "<=")
print(string.format("%-58s %8.3f", "resources 30 / docker stats --no-stream 30", r30.cold / r30.cli))
print(string.format("%-58s %8.3f", "resources 10 / docker stats --no-stream 10", r10.cold / r10.cli))
ratio("warm monitor answer, 30 containers (ms)", results.warm_median * 1000, 5, "<=")
print(string.format("stats bench: %d of %d targets missed", failed, r30.seq and 4 or 3))
os.exit(failed == 0 and 0 or 1)
