-- Where an operation's time goes: with CP_DOCKER_TRACE=1 in the environment,
-- every Docker API call (method, path, duration) and every phase an
-- operation marks is written to stderr, each line stamped with the time since
-- the first trace line of the process:
--   trace  +12.3ms   api   POST /containers/create 4.1ms
--   trace  +40.2ms   phase provision: network (9.8ms)
-- Off (the default) it costs one table lookup per call.
local core = require("ctrlplane.docker.core")

local M = {}

M.on = (os.getenv("CP_DOCKER_TRACE") or "") ~= "" and os.getenv("CP_DOCKER_TRACE") ~= "0"

local t0, last
if M.on then t0 = core.clock() end -- times are from the module's loading

local function stamp()
  local now = core.clock()
  t0 = t0 or now
  last = last or now
  return now
end

local function write(kind, text)
  io.stderr:write(string.format("trace %+9.1fms  %-5s %s\n", (core.clock() - t0) * 1000, kind, text))
end

-- Marks the end of a phase: its name and the time since the previous mark.
function M.mark(name)
  if not M.on then return end
  local now = stamp()
  write("phase", string.format("%s (%.1fms)", name, (now - last) * 1000))
  last = now
end

-- Records one API call that started at `started` (core.clock()).
function M.api(method, path, started, note)
  if not M.on then return end
  stamp()
  write("api", string.format("%s %s %.1fms%s", method, path, (core.clock() - started) * 1000,
    note and (" " .. note) or ""))
end

-- Starts the clock (first call wins): operations call it on entry.
function M.start()
  if M.on then stamp() end
end

return M
