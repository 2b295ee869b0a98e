-- Flat as the daemon fills (issue 15.3), run by bench_scale.sh:
--   lua5.4 spec/bench/scale_bench.lua RUN_TAG [ROUNDS]
-- Times provision, status, resources, deploy and deprovision of one
-- 3-service instance (median of ROUNDS rounds) on the daemon as it is, then
-- with 100 other instances on it (300 containers, each instance with its own
-- network; most created only, 10 instances running `sleep`), then as it was
-- again. Baseline: the median of the two quiet phases. Target: <= 1.2x.
-- Rows for the summary table go to $BENCH_ROWS (bench/lib.sh's format).
package.path = "lua/?.lua;lua/?/init.lua;spec/?.lua;" .. package.path
package.cpath = "build/?.so;" .. package.cpath
local core = require("ctrlplane.docker.core")
local docker = require("ctrlplane.docker")
local json = require("ctrlplane.docker.json")

local TAG = assert(arg[1], "usage: scale_bench.lua RUN_TAG [ROUNDS]")
local ROUNDS = tonumber(arg[2] or "5")
local FILL_INSTANCES, FILL_RUNNING = 100, 10
local IMAGE1, IMAGE2 = "cpdocker-test/busybox:1", "cpdocker-test/busybox:2"
local IDLE = {"sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1 & wait $!; done"}
local ID = "inst_bscale_" .. TAG

local p = assert(docker.new({stop_timeout = 2, drain = 0, start_grace = 0}))
local eng = p.engine

local function log(fmt, ...) io.stderr:write(string.format(fmt, ...), "\n") end

local function request(image)
  return {instance_id = ID, tenant_id = "ten_bench", services = {
    {name = "init", role = "init", image = IMAGE1, command = {"true"}},
    {name = "web", role = "main", image = image, command = IDLE, depends_on = {"init"},
      ports = {{container = 8080}}},
    {name = "side", role = "sidecar", image = IMAGE1, command = IDLE, depends_on = {"web"}}}}
end

local OPS = {"provision", "status", "resources", "deploy", "deprovision"}

local function timed(t, name, fn)
  local t0 = core.clock()
  local res, err, code = fn()
  if res == nil then error(string.format("%s failed: %s (%s)", name, tostring(err), tostring(code)), 0) end
  t[name] = t[name] or {}
  t[name][#t[name] + 1] = core.clock() - t0
end

-- the daemon's own cost of finding a project: its label-filtered listing
-- (the one call every operation starts with; it scans every container)
local function daemon_list(t)
  local q = {all = true, filters = json.encode({label = {"ctrlplane.project=cp-" .. ID}})}
  for _ = 1, 5 do
    timed(t, "daemon list", function() return p.engine.client:request("GET", "/containers/json", {query = q}) end)
  end
end

local function phase(t)
  for round = 1, ROUNDS do
    daemon_list(t)
    timed(t, "provision", function() return p:provision(request(IMAGE1)) end)
    -- status is a few ms: ten a round, for a median that is not noise
    for _ = 1, 10 do timed(t, "status", function() return p:status(ID) end) end
    timed(t, "resources", function() return p:resources(ID) end)
    timed(t, "deploy", function()
      return p:deploy({instance_id = ID, release_id = "r" .. round, strategy = "rolling",
        services = {{name = "web", image = IMAGE2}}})
    end)
    timed(t, "deprovision", function() return p:deprovision(ID) end)
  end
end

local fill_ids, fill_nets = {}, {}

local function fill()
  local nets = {}
  for i = 1, FILL_INSTANCES do
    local id = string.format("bfill_%s_%03d", TAG, i)
    nets[i] = {method = "POST", path = "/networks/create", body = {
      Name = "cp-" .. id .. "-net", Driver = "bridge", CheckDuplicate = true,
      IPAM = {Driver = "default", Config = {{Subnet = string.format("10.251.%d.0/24", i)}}},
      Labels = {["ctrlplane.project"] = "cp-" .. id, ["ctrlplane.instance"] = id,
        ["ctrlplane.bench-fill"] = TAG}}}
  end
  for i = 1, #nets, 10 do
    local part = {}
    for k = i, math.min(i + 9, #nets) do part[#part + 1] = nets[k] end
    for _, r in ipairs(eng:batch(part)) do
      if r.error then error("creating a filler network: " .. r.error, 0) end
      fill_nets[#fill_nets + 1] = r.value.Id
    end
  end
  local creates = {}
  for i = 1, FILL_INSTANCES do
    local id = string.format("bfill_%s_%03d", TAG, i)
    for _, svc in ipairs({"init", "web", "side"}) do
      creates[#creates + 1] = {method = "POST", path = "/containers/create",
        query = {name = "cp-" .. id .. "-" .. svc}, body = {Image = IMAGE1, Cmd = {"sleep", "3600"},
          Labels = {["ctrlplane.project"] = "cp-" .. id, ["ctrlplane.instance"] = id,
            ["ctrlplane.service"] = svc, ["ctrlplane.role"] = svc == "init" and "init" or "main",
            ["ctrlplane.bench-fill"] = TAG},
          HostConfig = {NetworkMode = "cp-" .. id .. "-net"}}, running = i <= FILL_RUNNING}
    end
  end
  for i = 1, #creates, 20 do
    local part = {}
    for k = i, math.min(i + 19, #creates) do part[#part + 1] = creates[k] end
    local starts = {}
    for k, r in ipairs(eng:batch(part)) do
      if r.error then error("creating a filler container: " .. r.error, 0) end
      fill_ids[#fill_ids + 1] = r.value.Id
      if part[k].running then
        starts[#starts + 1] = {method = "POST", path = "/containers/" .. r.value.Id .. "/start"}
      end
    end
    for _, r in ipairs(eng:batch(starts)) do
      if r.error then error("starting a filler container: " .. r.error, 0) end
    end
  end
end

local function unfill()
  for i = 1, #fill_ids, 20 do
    local part = {}
    for k = i, math.min(i + 19, #fill_ids) do
      part[#part + 1] = {method = "DELETE", path = "/containers/" .. fill_ids[k], query = {force = true}}
    end
    eng:batch(part)
  end
  for i = 1, #fill_nets, 10 do
    local part = {}
    for k = i, math.min(i + 9, #fill_nets) do
      part[#part + 1] = {method = "DELETE", path = "/networks/" .. fill_nets[k]}
    end
    eng:batch(part)
  end
  fill_ids, fill_nets = {}, {}
end

local function median(xs)
  local t = {}
  for i, x in ipairs(xs) do t[i] = x end
  table.sort(t)
  local n = #t
  if n % 2 == 1 then return t[(n + 1) // 2] end
  return (t[n // 2] + t[n // 2 + 1]) / 2
end

-- development: `scale_bench.lua TAG fill` leaves the filler on the daemon
-- (for tracing an operation by hand); bench_scale.sh's cleanup removes it
if arg[2] == "fill" then
  fill()
  p:close()
  os.exit(0)
end

local quiet, full = {}, {}
local ok, err = pcall(function()
  local before = #(eng:get("/containers/json", {all = true}) or {})
  log("scale bench: %d rounds on the daemon as it is (%d containers)", ROUNDS, before)
  phase(quiet)
  local t0 = core.clock()
  fill()
  local n = #(eng:get("/containers/json", {all = true}) or {})
  log("scale bench: %d containers after adding %d instances (%.1f s); %d rounds", n,
    FILL_INSTANCES, core.clock() - t0, ROUNDS)
  phase(full)
  unfill()
  log("scale bench: %d rounds on the daemon as it was", ROUNDS)
  phase(quiet)
end)
if not ok then
  p:deprovision(ID)
  unfill()
  p:close()
  io.stderr:write("scale bench failed: ", tostring(err), "\n")
  os.exit(1)
end
p:close()

print(string.format("%-12s %12s %12s %8s", "operation", "quiet (s)", "+300 (s)", "ratio"))
local rows = os.getenv("BENCH_ROWS")
local out = rows and assert(io.open(rows, "a")) or nil
OPS[#OPS + 1] = "daemon list"
for _, op in ipairs(OPS) do
  local q, f = median(quiet[op]), median(full[op])
  print(string.format("%-12s %12.4f %12.4f %8.2f", op, q, f, f / q))
  if out then
    local work = op == "daemon list" and "daemon label-filtered list (ref.)" or op
    out:write(string.format("%s, +300 containers\t%s, quieter daemon\t%.6f\t%.6f\t%s\n",
      work, op, q, f, op == "daemon list" and "-" or "1.20"))
  end
end
if out then out:close() end
