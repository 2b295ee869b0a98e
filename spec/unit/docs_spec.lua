-- Documentation gates (#13.6): every function a C file registers for Lua
-- (its luaL_Reg tables) is documented in that file's header comment, and
-- every setting config.lua reads from the environment is in the README.
local sources = require("support.sources")
local read, c_files = sources.read, sources.c_files

-- names registered in the file's luaL_Reg tables
local function registered(src)
  local names = {}
  for body in src:gmatch("luaL_Reg%s+[%w_]+%[%]%s*=%s*(%b{})") do
    for name in body:gmatch('{%s*"([%w_]+)"%s*,') do names[#names + 1] = name end
  end
  return names
end

describe("documentation", function()
  it("documents every function registered from C in its file's header", function()
    local missing, seen = {}, 0
    for _, path in ipairs(c_files()) do
      local src = read(path)
      local names = registered(src)
      if #names > 0 then
        local header = src:match("^%s*/%*(.-)%*/") or ""
        for _, name in ipairs(names) do
          seen = seen + 1
          -- "name(" as a function or method, or "__gc"-style metamethods
          local documented = header:find("[%.:]" .. name .. "%(") or header:find("%f[%w_]"
            .. name .. "%(") or name:match("^__")
          if not documented then missing[#missing + 1] = path .. ": " .. name end
        end
      end
    end
    assert.is_true(seen > 20, "found only " .. seen .. " registered functions")
    assert.are.same({}, missing)
  end)

  it("lists every environment setting of config.lua in the README", function()
    local src = read("lua/ctrlplane/docker/config.lua")
    local readme = read("README.md")
    local missing, seen = {}, 0
    for name in src:gmatch('"([A-Z][A-Z0-9_]+)"') do
      if name:match("^CP_") or name:match("^DOCKER_") then
        seen = seen + 1
        if not readme:find(name, 1, true) then missing[#missing + 1] = name end
      end
    end
    assert.is_true(seen > 10, "found only " .. seen .. " settings")
    table.sort(missing)
    assert.are.same({}, missing)
  end)
end)
