-- Soak: one runtime process runs CYCLES cycles of provision / deploy /
-- status / resources / logs / deprovision on a 2-service project, and
-- samples its own RSS. Prints ops/s, per-operation medians and the RSS
-- curve; exits 1 on any failed operation or leftover.
--   lua5.4 spec/bench/soak.lua [CYCLES] [MAX_SECONDS]
package.path = "lua/?.lua;lua/?/init.lua;spec/?.lua;" .. package.path
package.cpath = (os.getenv("CP_CORE_CPATH") or "build/?.so") .. ";" .. package.cpath
local core = require("ctrlplane.docker.core")
local docker = require("ctrlplane.docker")

local CYCLES = tonumber(arg[1]) or 200
local MAX_SECONDS = tonumber(arg[2]) or 1800
local IMAGE = "cpdocker-test/busybox:1"
local IDLE = {"sh", "-c", "trap 'exit 0' TERM; echo up; while true; do sleep 1 & wait $!; done"}

local function rss_kb()
  local f = io.open("/proc/self/status")
  local s = f:read("a")
  f:close()
  return tonumber(s:match("VmRSS:%s*(%d+)"))
end

local p = assert(docker.new({stop_timeout = 2, ready_timeout = 20}))
local base = string.format("inst_soak%x", os.time())
local times = {provision = {}, deploy = {}, status = {}, resources = {}, logs = {}, deprovision = {}}
local samples = {}
local ops, t_start = 0, core.clock()

local function timed(name, fn)
  local t0 = core.clock()
  local res, err, code = fn()
  local dt = core.clock() - t0
  if res == nil then
    error(string.format("%s failed: %s (%s)", name, tostring(err), tostring(code)), 0)
  end
  local t = times[name]
  t[#t + 1] = dt
  ops = ops + 1
  return res
end

local done = 0
local ok, failure = pcall(function()
  for cycle = 1, CYCLES do
    if core.clock() - t_start > MAX_SECONDS then break end
    local id = base .. "_" .. cycle
    timed("provision", function()
      return p:provision({instance_id = id, tenant_id = "ten_soak", services = {
        {name = "web", role = "main", image = IMAGE, command = IDLE, env = {V = "1"}},
        {name = "side", role = "sidecar", image = IMAGE, command = IDLE, depends_on = {"web"}}}})
    end)
    timed("deploy", function()
      return p:deploy({instance_id = id, release_id = "r2", services = {{name = "web", env = {V = "2"}}}})
    end)
    local st = timed("status", function() return p:status(id) end)
    assert(st.state == "running", "status after deploy: " .. tostring(st.state))
    timed("resources", function() return p:resources(id) end)
    timed("logs", function()
      local s, err, code = p:logs(id, {all = true, tail = 5})
      if not s then return nil, err, code end
      local evs, e2, c2 = s:collect(10)
      s:close()
      return evs, e2, c2
    end)
    timed("deprovision", function() return p:deprovision(id) end)
    done = cycle
    if cycle == 1 or cycle % 10 == 0 then
      collectgarbage()
      samples[#samples + 1] = {cycle, rss_kb(), collectgarbage("count")}
    end
  end
end)
if not ok then p:deprovision(base .. "_" .. (done + 1)) end
local elapsed = core.clock() - t_start

local function median(t)
  if #t == 0 then return 0 end
  local c = {}
  for i, v in ipairs(t) do c[i] = v end
  table.sort(c)
  return c[(#c + 1) // 2]
end

print(string.format("soak: %d cycles (%d operations) in %.1f s: %.2f ops/s, %.2f cycles/min",
  done, ops, elapsed, ops / elapsed, done / elapsed * 60))
local names = {"provision", "deploy", "status", "resources", "logs", "deprovision"}
local row = {}
for _, n in ipairs(names) do row[#row + 1] = string.format("%s %.3f", n, median(times[n])) end
print("  median seconds: " .. table.concat(row, ", "))
print("  RSS (KiB) by cycle, Lua heap (KiB):")
for _, s in ipairs(samples) do print(string.format("    %5d %8d %8.0f", s[1], s[2], s[3])) end
if #samples >= 3 then
  local warm = samples[2][2] -- after cycle 10: libraries and caches are in
  local last = samples[#samples][2]
  print(string.format("  RSS growth after warm-up (cycle %d -> %d): %d KiB (%.1f%%)",
    samples[2][1], samples[#samples][1], last - warm, (last - warm) * 100 / warm))
  local rows = os.getenv("BENCH_ROWS")
  if rows then -- the summary table's row (bench/lib.sh): KiB, not seconds
    local f = assert(io.open(rows, "a"))
    f:write(string.format("soak: RSS KiB at cycle %d of %d\tRSS KiB after warm-up (cycle %d)\t%d\t%d\t1.10\n",
      samples[#samples][1], done, samples[2][1], warm, last))
    f:close()
  end
end
p:close()
if not ok then
  print("soak: FAILED: " .. tostring(failure))
  os.exit(1)
end
