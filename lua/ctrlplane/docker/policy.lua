-- Loads the operator-editable policy scripts. Each script is plain Lua that
-- returns a table of functions; it runs in a small sandbox (no io, no os
-- beyond time/date/clock, no require). The bundled scripts/ directory is the
-- default; a policy directory (--policy DIR, CP_POLICY_DIR) overrides it
-- file by file.
--
--   policy.load(cfg, name, required, helpers) -> table | nil, message, "policy"
--     helpers: extra globals for that script (secrets.lua gets read_file)
--   policy.call(p, fn_name, ...)     -> results | nil, message, "policy"
local graph = require("ctrlplane.docker.graph")

local policy = {}

local function sandbox(helpers)
  local env = {
    assert = assert, error = error, ipairs = ipairs, next = next, pairs = pairs,
    pcall = pcall, select = select, tonumber = tonumber, tostring = tostring,
    type = type, setmetatable = setmetatable, getmetatable = getmetatable,
    rawget = rawget, rawset = rawset, rawequal = rawequal, rawlen = rawlen,
    string = string, table = table, math = math, utf8 = utf8,
    os = {time = os.time, date = os.date, clock = os.clock},
    -- helpers the bundled scripts use; documented in each script
    graph = graph,
  }
  for k, v in pairs(helpers or {}) do env[k] = v end
  env._G = env
  return env
end

local function find(cfg, name)
  local file = name .. ".lua"
  if cfg.policy_dir then
    local path = cfg.policy_dir .. "/" .. file
    local f = io.open(path, "r")
    if f then
      f:close()
      return path
    end
  end
  return (cfg.scripts_dir or "scripts") .. "/" .. file
end

function policy.load(cfg, name, required, helpers)
  local path = find(cfg, name)
  local chunk, err = loadfile(path, "t", sandbox(helpers))
  if not chunk then
    return nil, "policy " .. err, "policy"
  end
  local ok, t = xpcall(chunk, debug.traceback)
  if not ok then
    return nil, "policy " .. path .. " failed to load: " .. tostring(t), "policy"
  end
  if type(t) ~= "table" then
    return nil, "policy " .. path .. ": must return a table of functions, returned " .. type(t),
      "policy"
  end
  for _, fn in ipairs(required or {}) do
    if type(t[fn]) ~= "function" then
      return nil, "policy " .. path .. ": must define function " .. fn, "policy"
    end
  end
  return setmetatable({path = path, fns = t}, {__index = t})
end

-- Calls a policy function; an error in it becomes nil, message, "policy"
-- with the script's file and line, and the runtime keeps going.
function policy.call(p, fn, ...)
  local results = table.pack(xpcall(p.fns[fn], function(e)
    return tostring(e)
  end, ...))
  if not results[1] then
    return nil, "policy " .. p.path .. " (" .. fn .. "): " .. results[2], "policy"
  end
  return table.unpack(results, 2, results.n)
end

policy.SECRET_FILE_MAX = 1024 * 1024

-- read_file(path) -> content | nil, reason: the one file-reading helper,
-- given to scripts/secrets.lua only. Reads at most SECRET_FILE_MAX bytes;
-- the reason never contains the file's content.
function policy.read_file(path)
  if type(path) ~= "string" then error("read_file: expected a path string", 2) end
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  local data = f:read(policy.SECRET_FILE_MAX + 1)
  f:close()
  if data == nil then data = "" end
  if #data > policy.SECRET_FILE_MAX then
    return nil, string.format("%s is larger than %d bytes", path, policy.SECRET_FILE_MAX)
  end
  return data
end

-- The secrets policy (scripts/secrets.lua), with its read_file helper.
function policy.load_secrets(cfg)
  return policy.load(cfg, "secrets", {"resolve"}, {read_file = policy.read_file})
end

-- Loads several policies at once; fails on the first broken one.
function policy.load_all(cfg, specs)
  local out = {}
  for name, required in pairs(specs) do
    local p, err, code = policy.load(cfg, name, required)
    if not p then return nil, err, code end
    out[name] = p
  end
  return out
end

return policy
