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

local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

-- Standard base64 with padding, as Go's encoding/json writes []byte.
function util.base64(s)
  local out = {}
  for i = 1, #s, 3 do
    local a, b, c = s:byte(i, i + 2)
    local n = (a << 16) | ((b or 0) << 8) | (c or 0)
    local k = #out
    out[k + 1] = B64:sub((n >> 18) + 1, (n >> 18) + 1)
    out[k + 2] = B64:sub(((n >> 12) & 63) + 1, ((n >> 12) & 63) + 1)
    out[k + 3] = b and B64:sub(((n >> 6) & 63) + 1, ((n >> 6) & 63) + 1) or "="
    out[k + 4] = c and B64:sub((n & 63) + 1, (n & 63) + 1) or "="
  end
  return table.concat(out)
end

function util.unbase64(s)
  local map = {}
  for i = 1, 64 do map[B64:byte(i)] = i - 1 end
  s = s:gsub("[^%w%+/=]", "")
  local out = {}
  for i = 1, #s, 4 do
    local c1, c2, c3, c4 = s:byte(i, i + 3)
    local n = ((map[c1] or 0) << 18) | ((map[c2] or 0) << 12)
      | ((c3 and map[c3] or 0) << 6) | (c4 and map[c4] or 0)
    out[#out + 1] = string.char((n >> 16) & 255)
    if c3 and c3 ~= 61 then out[#out + 1] = string.char((n >> 8) & 255) end
    if c4 and c4 ~= 61 then out[#out + 1] = string.char(n & 255) end
  end
  return table.concat(out)
end

return util
