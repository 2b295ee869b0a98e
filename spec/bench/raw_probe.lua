-- The floors of bench_serve's latency and log figures (issue 14), measured
-- by a process of their own with the C core's client (no runtime around
-- it) while the provisions run:
--   calls:  every 50 ms, the Docker API calls of a status (the manifest's
--           label-filtered volume lookup, then the member's inspect by
--           name: a ticker has one) or of a health_check (GET /_ping);
--           writes "kind seconds" lines to OUTFILE
--   follow: a followed log stream of each INSTANCE's "tick" container, the
--           daemon's frames as they come; writes the largest gap between
--           two arrivals on any stream (seconds) to OUTFILE
--   lua5.4 spec/bench/raw_probe.lua calls|follow STOPFILE OUTFILE INSTANCE...
-- Runs until STOPFILE exists.
package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
package.cpath = "build/?.so;" .. package.cpath
local core = require("ctrlplane.docker.core")
local docker = require("ctrlplane.docker")
local json = require("ctrlplane.docker.json")

local mode, stop, outfile = arg[1], arg[2], arg[3]
local ids = {}
for i = 4, #arg do ids[#ids + 1] = arg[i] end
assert((mode == "calls" or mode == "follow") and stop and outfile and #ids > 0,
  "usage: raw_probe.lua calls|follow STOPFILE OUTFILE INSTANCE...")
local client = assert(docker.new({})).engine.client
local function stopped()
  local f = io.open(stop)
  if f then f:close() end
  return f ~= nil
end

local function calls()
  local out = assert(io.open(outfile, "w"))
  local turn = 0
  while not stopped() do
    turn = turn + 1
    local t0 = core.clock()
    if turn % 2 == 0 then
      assert(client:request("GET", "/_ping"))
      out:write(string.format("health %.6f\n", core.clock() - t0))
    else
      local id = ids[turn // 2 % #ids + 1]
      assert(client:request("GET", "/volumes", {query = {filters = json.encode({label = {
        "ctrlplane.project=cp-" .. id, "ctrlplane.manifest"}})}}))
      assert(client:request("GET", "/containers/cp-" .. id .. "-tick/json"))
      out:write(string.format("status %.6f\n", core.clock() - t0))
    end
    out:flush()
    core.sleep(math.max(0, 0.05 - (core.clock() - t0)))
  end
  out:close()
end

local function follow()
  local streams, last, worst = {}, {}, 0
  for i, id in ipairs(ids) do
    streams[i] = assert(client:stream("GET", "/containers/cp-" .. id .. "-tick/logs",
      {query = {follow = "1", stdout = "1", stderr = "1", tail = "0"}}))
  end
  while not stopped() do
    local now
    for _, i in ipairs(client:wait(streams, 0.1) or {}) do
      now = now or core.clock()
      local chunk = streams[i]:read(0)
      while chunk do
        if last[i] then worst = math.max(worst, now - last[i]) end
        last[i] = now
        chunk = streams[i]:read(0)
      end
    end
  end
  local out = assert(io.open(outfile, "w"))
  out:write(string.format("%.6f\n", worst))
  out:close()
end

if mode == "calls" then calls() else follow() end
