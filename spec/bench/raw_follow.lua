-- The floor of bench_serve's followed-log figure (issue 14): followed log
-- streams of the tickers read straight from a process of their own (the C
-- core's client: the daemon's frames as they come, no runtime around
-- them), while the provisions run. The largest gap between two arrivals on
-- any stream is what the daemon's own log pipeline delivers meanwhile.
--   lua5.4 spec/bench/raw_follow.lua STOPFILE OUTFILE INSTANCE...
-- Follows INSTANCE's "tick" container until STOPFILE exists; writes the
-- largest arrival gap in seconds to OUTFILE.
package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
package.cpath = "build/?.so;" .. package.cpath
local core = require("ctrlplane.docker.core")
local docker = require("ctrlplane.docker")

local stop, outfile = assert(arg[1]), assert(arg[2])
local client = assert(docker.new({})).engine.client
local streams, last = {}, {}
for i = 3, #arg do
  streams[#streams + 1] = assert(client:stream("GET", "/containers/cp-" .. arg[i] .. "-tick/logs",
    {query = {follow = "1", stdout = "1", stderr = "1", tail = "0"}}))
end
assert(#streams > 0, "usage: raw_follow.lua STOPFILE OUTFILE INSTANCE...")
local function exists(path)
  local f = io.open(path)
  if f then f:close() end
  return f ~= nil
end
local worst = 0
while not exists(stop) do
  local ready = client:wait(streams, 0.1) or {}
  local now = core.clock()
  for _, i in ipairs(ready) do
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
