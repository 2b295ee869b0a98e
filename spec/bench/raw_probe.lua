-- The latency floor of bench_serve's probes (issue 14): the Docker API
-- calls a status and a health_check make, sent straight from a process of
-- its own (the C core's client, no runtime around it), every 50 ms while
-- the provisions run:
--   status:  the manifest lookup (GET /volumes, label-filtered), then the
--            members' inspects by name, all at once
--   health:  GET /_ping
--   lua5.4 spec/bench/raw_probe.lua STOPFILE OUTFILE INSTANCE...
-- Runs until STOPFILE exists; writes "kind seconds" lines to OUTFILE.
package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
package.cpath = "build/?.so;" .. package.cpath
local core = require("ctrlplane.docker.core")
local docker = require("ctrlplane.docker")
local json = require("ctrlplane.docker.json")

local stop, outfile = assert(arg[1]), assert(arg[2])
local ids = {}
for i = 3, #arg do ids[#ids + 1] = arg[i] end
assert(#ids > 0, "usage: raw_probe.lua STOPFILE OUTFILE INSTANCE...")
local client = assert(docker.new({})).engine.client
local out = assert(io.open(outfile, "w"))
local function exists(path)
  local f = io.open(path)
  if f then f:close() end
  return f ~= nil
end
local turn = 0
while not exists(stop) do
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
