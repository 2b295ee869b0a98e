-- JSON for the runtime: decoding through lua-cjson (fast, C), encoding here
-- so the output is deterministic (sorted keys), integers keep every digit,
-- and empty lists can be told from empty objects.
--
--   json.decode(text)        -> value | nil, message
--   json.decode_request(text) -> value | nil, message   (also refuses an object
--                               with the same key twice, naming where)
--   json.encode(value)       -> text
--   json.array(t)            -> t, marked to encode as a list even when empty
--   json.object(t)           -> t, marked to encode as an object even when empty
--   json.null                -> the decoded JSON null (cjson.null)
local cjson = require("cjson")

local json = {null = cjson.null}

local array_mt = {__name = "json.array"}
local object_mt = {__name = "json.object"}

function json.array(t)
  return setmetatable(t or {}, array_mt)
end

function json.object(t)
  return setmetatable(t or {}, object_mt)
end

function json.is_array(t)
  return getmetatable(t) == array_mt
end

local decoder = cjson.new()
decoder.decode_max_depth(256)

-- lua-cjson reads every number as a float; whole numbers become integers
-- so counts, ports and exit codes behave as such (and print without ".0").
local function integers(v)
  for k, x in pairs(v) do
    local t = type(x)
    if t == "number" then
      local i = math.tointeger(x)
      if i then v[k] = i end
    elseif t == "table" then
      integers(x)
    end
  end
  return v
end

function json.decode(text)
  if type(text) ~= "string" then
    error("json.decode expects a string, got " .. type(text), 2)
  end
  local ok, value = pcall(decoder.decode, text)
  if not ok then
    return nil, "invalid JSON: " .. tostring(value):gsub("^.-: ", "")
  end
  if type(value) == "table" then return integers(value) end
  return math.tointeger(value) or value
end

-- The first key that appears twice in one object of (valid) JSON text, as
-- a path: services[1].env.A. lua-cjson keeps the last of two equal keys
-- silently, and Go's encoding/json does the same: a request that says two
-- things about one field is refused instead. Strings are skipped with
-- find, so long values (base64 stdin) cost little.
local function duplicate_key(text)
  local stack = {} -- {keys = set} for objects, {index = n} for arrays
  local function path(last)
    local out = {}
    for _, f in ipairs(stack) do
      if f.keys then
        if f.key then out[#out + 1] = (#out > 0 and "." or "") .. f.key end
      else
        out[#out + 1] = "[" .. f.index .. "]"
      end
    end
    out[#out] = nil -- the innermost frame is the object that has the key twice
    out[#out + 1] = (#out > 0 and "." or "") .. last
    return table.concat(out)
  end
  local i = 1
  while true do
    local at = text:find('[{}%[%]",]', i)
    if not at then return nil end
    local ch = text:sub(at, at)
    if ch == '"' then
      local j = at + 1
      while true do
        local q = text:find('["\\]', j)
        if not q then return nil end
        if text:sub(q, q) == "\\" then j = q + 2 else j = q break end
      end
      local top = stack[#stack]
      local nxt = text:find("%S", j + 1)
      if top and top.keys and nxt and text:sub(nxt, nxt) == ":" then
        local key = text:sub(at + 1, j - 1)
        if key:find("\\", 1, true) then
          local ok, v = pcall(decoder.decode, '"' .. key .. '"')
          if ok then key = v end
        end
        if top.keys[key] then return path(key) end
        top.keys[key] = true
        top.key = key
      end
      i = j + 1
    else
      if ch == "{" then
        stack[#stack + 1] = {keys = {}}
      elseif ch == "[" then
        stack[#stack + 1] = {index = 0}
      elseif ch == "," then
        local top = stack[#stack]
        if top and top.index then top.index = top.index + 1 end
      else
        stack[#stack] = nil
      end
      i = at + 1
    end
  end
end

function json.decode_request(text)
  local value, err = json.decode(text)
  if value == nil then return nil, err end
  if type(value) == "table" then
    local dup = duplicate_key(text)
    if dup then return nil, "duplicate key: " .. dup .. " is given twice" end
  end
  return value
end

local escapes = {
  ['"'] = '\\"', ["\\"] = "\\\\", ["\b"] = "\\b", ["\f"] = "\\f",
  ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t",
}
local function escape_char(c)
  return escapes[c] or string.format("\\u%04x", c:byte())
end

local function encode_string(s)
  -- bytes that are not UTF-8 become U+FFFD so the output is always valid JSON
  if not utf8.len(s) then
    local out, i, n = {}, 1, #s
    while i <= n do
      local ok_len = utf8.len(s, i)
      if ok_len then
        out[#out + 1] = s:sub(i)
        break
      end
      local _, bad = utf8.len(s, i)
      out[#out + 1] = s:sub(i, bad - 1)
      out[#out + 1] = "\u{FFFD}"
      i = bad + 1
    end
    s = table.concat(out)
  end
  return '"' .. s:gsub('[%c"\\]', escape_char) .. '"'
end

local function is_list(t)
  local mt = getmetatable(t)
  if mt == array_mt then return true end
  if mt == object_mt then return false end
  local n = #t
  if n == 0 then return false end
  local count = 0
  for _ in pairs(t) do count = count + 1 end
  return count == n
end

local encode_value

local function encode_table(t, out, depth)
  if depth > 200 then error("json.encode: nesting too deep (cycle?)", 0) end
  if is_list(t) then
    out[#out + 1] = "["
    for i = 1, #t do
      if i > 1 then out[#out + 1] = "," end
      encode_value(t[i], out, depth + 1)
    end
    out[#out + 1] = "]"
    return
  end
  local keys = {}
  for k in pairs(t) do
    if type(k) ~= "string" then
      if type(k) == "number" then k = tostring(k) else
        error("json.encode: object keys must be strings, got " .. type(k), 0)
      end
    end
    keys[#keys + 1] = k
  end
  table.sort(keys)
  out[#out + 1] = "{"
  for i, k in ipairs(keys) do
    if i > 1 then out[#out + 1] = "," end
    out[#out + 1] = encode_string(k)
    out[#out + 1] = ":"
    local v = t[k]
    if v == nil then v = t[tonumber(k)] end
    encode_value(v, out, depth + 1)
  end
  out[#out + 1] = "}"
end

function encode_value(v, out, depth)
  local ty = type(v)
  if ty == "string" then
    out[#out + 1] = encode_string(v)
  elseif ty == "number" then
    if math.type(v) == "integer" then
      out[#out + 1] = string.format("%d", v)
    elseif v ~= v or v == math.huge or v == -math.huge then
      out[#out + 1] = "null"
    elseif v == math.floor(v) and math.abs(v) < 2^63 then
      out[#out + 1] = string.format("%d", math.tointeger(v))
    else
      local text -- the shortest form that reads back as the same number
      for digits = 15, 17 do
        text = string.format("%." .. digits .. "g", v)
        if tonumber(text) == v then break end
      end
      out[#out + 1] = text
    end
  elseif ty == "boolean" then
    out[#out + 1] = v and "true" or "false"
  elseif v == nil or v == cjson.null then
    out[#out + 1] = "null"
  elseif ty == "table" then
    encode_table(v, out, depth)
  else
    error("json.encode: cannot encode a " .. ty, 0)
  end
end

function json.encode(v)
  local out = {}
  encode_value(v, out, 0)
  return table.concat(out)
end

return json
