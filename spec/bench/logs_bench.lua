-- Helper of bench_logs.sh: times the Lua side of the log path.
--   lua5.4 spec/bench/logs_bench.lua offline FILE tables|json
--       core.demux over a captured stream in 64 KiB chunks
--   lua5.4 spec/bench/logs_bench.lua api INSTANCE_ID
--       provider:logs(id):next() until the end, events as Lua tables
-- Prints: bytes events seconds
local core = require("ctrlplane.docker.core")

local mode, arg1, arg2 = ...

if mode == "offline" then
  local f = assert(io.open(arg1, "rb"))
  local data = f:read("a")
  f:close()
  local CHUNK = 65536
  -- warm the allocator up: the first pass over fresh memory pays page
  -- faults that have nothing to do with the demultiplexer
  for i = 1, #data, CHUNK do local _ = data:sub(i, i + CHUNK - 1) end
  local d = core.demux({timestamps = true})
  local events, t0 = 0, core.clock()
  if arg2 == "json" then
    local sink = assert(io.open("/dev/null", "wb"))
    for i = 1, #data, CHUNK do
      local out = assert(d:render(data:sub(i, i + CHUNK - 1), {json = true}))
      sink:write(out)
    end
    sink:write((assert(d:render_finish({json = true}))))
    sink:close()
    events = d:stats().events
  else
    for i = 1, #data, CHUNK do
      local list = assert(d:feed(data:sub(i, i + CHUNK - 1)))
      events = events + #list
    end
    events = events + #assert(d:finish())
  end
  print(#data, events, string.format("%.3f", core.clock() - t0))
elseif mode == "api" then
  local docker = require("ctrlplane.docker")
  local p = assert(docker.new({}))
  local t0 = core.clock()
  local logs = assert(p:logs(arg1))
  local events, bytes = 0, 0
  while true do
    local ev, err = logs:next()
    if not ev then
      assert(not err, err)
      break
    end
    events = events + 1
    bytes = bytes + #ev.line + 1
  end
  print(bytes, events, string.format("%.3f", core.clock() - t0))
  p:close()
else
  error("usage: logs_bench.lua offline FILE tables|json | api ID")
end
