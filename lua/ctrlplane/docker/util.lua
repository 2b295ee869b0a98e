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

-- 12 bits -> two base64 characters, built once.
local B64_PAIRS
local function b64_pairs()
  if not B64_PAIRS then
    B64_PAIRS = {}
    for n = 0, 4095 do
      B64_PAIRS[n] = B64:sub((n >> 6) + 1, (n >> 6) + 1) .. B64:sub((n & 63) + 1, (n & 63) + 1)
    end
  end
  return B64_PAIRS
end

-- Standard base64 with padding, as Go's encoding/json writes []byte.
-- Works in blocks so the transient memory stays near the output's size
-- (a table of one string per character cost ~30 bytes per byte encoded).
function util.base64(s)
  local pairs12 = b64_pairs()
  local blocks = {}
  local whole = #s - #s % 3
  local BLOCK = 3 * 4096
  for start = 1, whole, BLOCK do
    local out = {}
    for i = start, math.min(start + BLOCK - 1, whole), 3 do
      local a, b, c = s:byte(i, i + 2)
      local n = (a << 16) | (b << 8) | c
      out[#out + 1] = pairs12[n >> 12] .. pairs12[n & 4095]
    end
    blocks[#blocks + 1] = table.concat(out)
  end
  local a, b = s:byte(whole + 1, whole + 2)
  if a then
    local n = (a << 16) | ((b or 0) << 8)
    blocks[#blocks + 1] = pairs12[n >> 12]
      .. (b and B64:sub(((n >> 6) & 63) + 1, ((n >> 6) & 63) + 1) or "=") .. "="
  end
  return table.concat(blocks)
end

function util.unbase64(s)
  local map = {}
  for i = 1, 64 do map[B64:byte(i)] = i - 1 end
  s = s:gsub("[^%w%+/=]", "")
  local blocks = {}
  local BLOCK = 4 * 4096
  for start = 1, #s, BLOCK do
    local out = {}
    for i = start, math.min(start + BLOCK - 1, #s), 4 do
      local c1, c2, c3, c4 = s:byte(i, i + 3)
      local n = ((map[c1] or 0) << 18) | ((map[c2] or 0) << 12)
        | ((c3 and map[c3] or 0) << 6) | (c4 and map[c4] or 0)
      if c4 and c4 ~= 61 then
        out[#out + 1] = string.char((n >> 16) & 255, (n >> 8) & 255, n & 255)
      elseif c3 and c3 ~= 61 then
        out[#out + 1] = string.char((n >> 16) & 255, (n >> 8) & 255)
      else
        out[#out + 1] = string.char((n >> 16) & 255)
      end
    end
    blocks[#blocks + 1] = table.concat(out)
  end
  return table.concat(blocks)
end

return util
