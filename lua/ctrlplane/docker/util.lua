-- Small helpers shared by the provider modules.
local core = require("ctrlplane.docker.core")

local util = {}

-- RFC 3339 UTC timestamp with nanoseconds trimmed to what is known.
function util.rfc3339(t)
  t = t or core.walltime()
  local secs = math.floor(t)
  local frac = t - secs
  local s = os.date("!%Y-%m-%dT%H:%M:%S", secs)
  if frac > 0 then
    s = s .. string.format(".%09d", math.floor(frac * 1e9)):gsub("0+$", "")
  end
  return s .. "Z"
end

-- Go duration on the wire: integer nanoseconds.
function util.nanos(seconds)
  return math.floor(seconds * 1e9 + 0.5)
end

-- Human duration: 850µs, 12.3ms, 1.52s
function util.human_duration(seconds)
  if seconds < 1e-3 then return string.format("%.0fµs", seconds * 1e6) end
  if seconds < 1 then return string.format("%.1fms", seconds * 1e3) end
  return string.format("%.2fs", seconds)
end

function util.copy(t)
  local out = {}
  for k, v in pairs(t) do out[k] = v end
  return out
end

function util.sorted_keys(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
  return keys
end

return util
