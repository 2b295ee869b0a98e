-- Checks JSON text the runtime sends against the Go types of DESIGN §2, the
-- way Go's encoding/json would decode it: an `int` field must be an integer
-- literal (1.0 or 1e3 fail in Go), times are RFC 3339 UTC, []byte is
-- standard base64, maps have string keys and typed values, enums are the
-- contract's. The JSON text is parsed here, keeping each number's literal,
-- because lua-cjson would turn 1.0 into 1 and hide exactly what Go rejects.
--
--   local types = require("support.contract_types")
--   local errs = types.check_json(text, "InstanceStatus")  -- {} when it decodes
--   types.assert_json(text, "InstanceStatus")               -- raises listing every error
--   types.check_value(types.parse(line).result, "ExecResult")
--
-- Extra fields are allowed (Go ignores them); a field the type has must be
-- of its type; a field marked optional may be absent or null.
local types = {}

-- ---- a JSON parser that keeps number literals ---------------------------------

local NUM_MT = {}   -- {lit = "1.0"}
local NULL = setmetatable({}, {__tostring = function() return "null" end})
types.NULL = NULL

local function parse(text)
  local pos = 1
  local function fail(msg) error(string.format("invalid JSON at byte %d: %s", pos, msg), 0) end
  local function ws() pos = text:find("[^ \t\r\n]", pos) or #text + 1 end
  local value
  local function str()
    local out = {}
    pos = pos + 1
    while true do
      local c = text:sub(pos, pos)
      if c == "" then fail("unterminated string") end
      if c == '"' then pos = pos + 1 break end
      if c == "\\" then
        local e = text:sub(pos + 1, pos + 1)
        local map = {['"'] = '"', ["\\"] = "\\", ["/"] = "/", b = "\b", f = "\f", n = "\n",
          r = "\r", t = "\t"}
        if map[e] then
          out[#out + 1] = map[e]
          pos = pos + 2
        elseif e == "u" then
          local hex = text:sub(pos + 2, pos + 5)
          if not hex:match("^%x%x%x%x$") then fail("bad \\u escape") end
          local cp = tonumber(hex, 16)
          pos = pos + 6
          if cp >= 0xD800 and cp <= 0xDBFF and text:sub(pos, pos + 1) == "\\u" then
            local lo = tonumber(text:sub(pos + 2, pos + 5), 16)
            if lo and lo >= 0xDC00 and lo <= 0xDFFF then
              cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00)
              pos = pos + 6
            end
          end
          out[#out + 1] = utf8.char(cp)
        else
          fail("bad escape")
        end
      else
        if c:byte() < 0x20 then fail("control character in string") end
        out[#out + 1] = c
        pos = pos + 1
      end
    end
    return table.concat(out)
  end
  function value()
    ws()
    local c = text:sub(pos, pos)
    if c == "{" then
      pos = pos + 1
      local obj, keys = {}, {}
      ws()
      if text:sub(pos, pos) == "}" then pos = pos + 1 return obj end
      while true do
        ws()
        if text:sub(pos, pos) ~= '"' then fail("object key must be a string") end
        local k = str()
        if keys[k] then fail("duplicate key " .. k) end
        keys[k] = true
        ws()
        if text:sub(pos, pos) ~= ":" then fail("expected ':'") end
        pos = pos + 1
        obj[k] = value()
        ws()
        local d = text:sub(pos, pos)
        pos = pos + 1
        if d == "}" then return obj end
        if d ~= "," then fail("expected ',' or '}'") end
      end
    elseif c == "[" then
      pos = pos + 1
      local arr = {n = 0, is_array = true}
      ws()
      if text:sub(pos, pos) == "]" then pos = pos + 1 return arr end
      while true do
        arr.n = arr.n + 1
        arr[arr.n] = value()
        ws()
        local d = text:sub(pos, pos)
        pos = pos + 1
        if d == "]" then return arr end
        if d ~= "," then fail("expected ',' or ']'") end
      end
    elseif c == '"' then
      return str()
    elseif text:sub(pos, pos + 3) == "true" then
      pos = pos + 4
      return true
    elseif text:sub(pos, pos + 4) == "false" then
      pos = pos + 5
      return false
    elseif text:sub(pos, pos + 3) == "null" then
      pos = pos + 4
      return NULL
    else
      local lit = text:match("^-?%d+%.?%d*[eE]?[-+]?%d*", pos)
      if not lit or lit == "" or lit == "-" then fail("unexpected character " .. c) end
      if not lit:match("^-?0$") and not lit:match("^-?[1-9]") and not lit:match("^-?0[%.eE]") then
        fail("leading zero in number " .. lit)
      end
      pos = pos + #lit
      return setmetatable({lit = lit}, NUM_MT)
    end
  end
  local v = value()
  ws()
  if pos <= #text then fail("trailing text") end
  return v
end

types.parse = parse

-- ---- the types --------------------------------------------------------------------

local function opt(t) return {optional = true, type = t} end
local function list(t) return {list = t} end
local function map(t) return {map = t} end
local function enum(...) return {enum = {...}} end

types.STATES = {"provisioning", "starting", "running", "degraded", "stopping", "stopped", "failed",
  "destroying", "destroyed"}

types.schemas = {
  Info = {name = "string", version = "string", region = "string",
    location = {object = {country = "string", city = "string"}}},
  Capabilities = list("string"),
  HealthStatus = {healthy = "bool", message = "string", latency = "int", checked_at = "time"},
  Endpoint = {service_name = opt("string"), url = "string", port = "int", protocol = "string",
    public = "bool"},
  ProvisionResult = {provider_ref = "provider_ref", service_refs = opt(map("string")),
    endpoints = list("Endpoint"), metadata = opt(map("string"))},
  DeployResult = {provider_ref = "provider_ref", status = {enum = types.STATES}},
  ServiceStatus = {state = {enum = types.STATES}, ready = "bool", restarts = "int",
    provider_ref = opt("string"), message = opt("string")},
  InstanceStatus = {state = {enum = types.STATES}, ready = "bool", restarts = "int",
    started_at = opt("time"), message = opt("string"), endpoints = list("Endpoint"),
    services = opt(map("ServiceStatus")), metadata = opt(map("any"))},
  ResourceUsage = {cpu_percent = "number", memory_used_mb = "int", memory_limit_mb = "int",
    disk_used_mb = opt("int"), network_in_mb = "number", network_out_mb = "number"},
  ExecResult = {exit_code = "int", stdout = "bytes", stderr = "bytes"},
  LogEvent = {ts = "time", stream = enum("stdout", "stderr"), line = "string"},
}
for name, s in pairs(types.schemas) do
  if not s.list and not s.map and not s.enum then types.schemas[name] = {object = s} end
end

local RFC3339 = "^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.?%d*Z$"

local function kind_of(v)
  if v == NULL then return "null" end
  if getmetatable(v) == NUM_MT then return "number " .. v.lit end
  if type(v) == "table" then return v.is_array and "array" or "object" end
  return type(v)
end

local check

local scalars = {
  string = function(v) return type(v) == "string" end,
  bool = function(v) return type(v) == "boolean" end,
  -- Go's int: an integer literal (no fraction, no exponent), in int64
  int = function(v)
    return getmetatable(v) == NUM_MT and v.lit:match("^-?%d+$") ~= nil and #v.lit <= 19
  end,
  number = function(v) return getmetatable(v) == NUM_MT end,
  time = function(v) return type(v) == "string" and v:match(RFC3339) ~= nil end,
  bytes = function(v)
    return type(v) == "string" and #v % 4 == 0 and v:match("^[A-Za-z0-9+/]*=?=?$") ~= nil
  end,
  -- a value DESIGN §2 leaves untyped (InstanceStatus.metadata: releases is a list)
  any = function(v) return v ~= nil end,
  provider_ref = function(v) return type(v) == "string" and v:match("^docker:cp%-.") ~= nil end,
}

function check(v, t, path, errs)
  if type(t) == "table" and t.optional then
    if v == nil or v == NULL then return end
    return check(v, t.type, path, errs)
  end
  if v == nil then
    errs[#errs + 1] = path .. ": missing"
    return
  end
  if type(t) == "string" then
    if scalars[t] then
      if not scalars[t](v) then
        errs[#errs + 1] = string.format("%s: expected %s, got %s%s", path, t, kind_of(v),
          type(v) == "string" and (" " .. string.format("%q", v)) or "")
      end
      return
    end
    return check(v, types.schemas[t] or error("no type " .. t), path, errs)
  end
  if t.enum then
    for _, e in ipairs(t.enum) do if v == e then return end end
    errs[#errs + 1] = string.format("%s: %s is not one of %s", path,
      type(v) == "string" and string.format("%q", v) or kind_of(v), table.concat(t.enum, ", "))
  elseif t.list then
    if type(v) ~= "table" or not v.is_array then
      errs[#errs + 1] = path .. ": expected a list, got " .. kind_of(v)
      return
    end
    for i = 1, v.n do check(v[i], t.list, string.format("%s[%d]", path, i - 1), errs) end
  elseif t.map then
    if type(v) ~= "table" or v.is_array or getmetatable(v) == NUM_MT or v == NULL then
      errs[#errs + 1] = path .. ": expected an object (map), got " .. kind_of(v)
      return
    end
    for k, x in pairs(v) do check(x, t.map, path .. "." .. k, errs) end
  elseif t.object then
    if type(v) ~= "table" or v.is_array or getmetatable(v) == NUM_MT or v == NULL then
      errs[#errs + 1] = path .. ": expected an object, got " .. kind_of(v)
      return
    end
    local keys = {}
    for k in pairs(t.object) do keys[#keys + 1] = k end
    table.sort(keys)
    for _, k in ipairs(keys) do check(v[k], t.object[k], path .. "." .. k, errs) end
  end
end

-- Returns the list of errors (empty when Go would decode text into the type).
function types.check_json(text, type_name)
  local ok, v = pcall(parse, text)
  if not ok then return {v} end
  local errs = {}
  check(v, type_name, type_name, errs)
  return errs
end

-- The same for a value types.parse returned (e.g. the "result" of a
-- JSON-RPC reply line).
function types.check_value(v, type_name)
  local errs = {}
  check(v, type_name, type_name, errs)
  return errs
end

function types.assert_json(text, type_name)
  local errs = types.check_json(text, type_name)
  if #errs > 0 then
    error(string.format("%s does not decode as Go's %s:\n  %s\n%s", type_name, type_name,
      table.concat(errs, "\n  "), text:sub(1, 2000)), 2)
  end
  return parse(text)
end

return types
