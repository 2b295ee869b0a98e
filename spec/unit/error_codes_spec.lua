-- One list of error codes (#13.5): every stable code the C core hands to Lua
-- is in README.md's "Error codes" table, so a new code cannot ship
-- undocumented. The scan reads runtime/*.c for the places a code is made:
--   cp_lua_fail(L, msg, CODE, status)        smp_fail(e, CODE, msg, status)
--   failf(t, CODE, fmt, ...)                  batch_results(L, n, xs, msg, CODE)
--   set_str(L, "code", CODE)                  [const char *]code = CODE-expr;
--   return "CODE"; inside a function whose name ends in _code
--   lua_pushstring(L, CODE); lua_setfield(L, -2, "code");
-- where CODE is any expression: every snake_case string literal in it counts.
local sources = require("support.sources")
local read, c_files = sources.read, sources.c_files

-- the top-level comma-separated arguments of the call whose "(" is at open
local function call_args(src, open)
  local args, depth, start, i, n = {}, 0, open + 1, open, #src
  while i <= n do
    local c = src:sub(i, i)
    if c == '"' then
      i = i + 1
      while i <= n and src:sub(i, i) ~= '"' do
        if src:sub(i, i) == "\\" then i = i + 1 end
        i = i + 1
      end
    elseif c == "(" then
      depth = depth + 1
    elseif c == ")" then
      depth = depth - 1
      if depth == 0 then
        args[#args + 1] = src:sub(start, i - 1)
        return args
      end
    elseif c == "," and depth == 1 then
      args[#args + 1] = src:sub(start, i - 1)
      start = i + 1
    end
    i = i + 1
  end
  return args
end

local function literals(expr, into, where)
  for lit in (expr or ""):gmatch('"([^"]*)"') do
    if lit:match("^[a-z][a-z_]*$") then into[lit] = into[lit] or where end
  end
end

-- code -> first "file" it was seen in
local function codes_in(path, src, into)
  local calls = {cp_lua_fail = 3, smp_fail = 2, failf = 2, batch_results = 5}
  for name, pos in pairs(calls) do
    for open in src:gmatch("%f[%w_]" .. name .. "%s*()%(") do
      local args = call_args(src, open)
      -- skip the definitions (their arguments are declarations, not literals)
      if args[pos] and not args[pos]:match("const%s+char") then literals(args[pos], into, path) end
    end
  end
  for expr in src:gmatch('set_str%(L,%s*"code",%s*([^;]-)%);') do literals(expr, into, path) end
  for expr in src:gmatch("%f[%w_]code%s*=%s*([^;=][^;]*);") do literals(expr, into, path) end
  for lit in src:gmatch('lua_pushstring%(L,%s*"([%w_]+)"%);%s*lua_setfield%(L,%s*%-2,%s*"code"%)') do
    literals('"' .. lit .. '"', into, path)
  end
  for body in src:gmatch("[%w_]+_code%s*%b()%s*(%b{})") do
    for lit in body:gmatch('return%s+"([%w_]+)"%s*;') do literals('"' .. lit .. '"', into, path) end
    for expr in body:gmatch("return%s+([^;]-%?[^;]-);") do literals(expr, into, path) end
  end
end

-- the codes in README.md's "Error codes" table (first column, in backquotes)
local function documented()
  local readme = read("README.md")
  local section = readme:match("\n#+%s*Error codes%s*\n(.-)\n#") or readme:match("\n#+%s*Error codes%s*\n(.*)$")
  assert(section, "README.md has no \"Error codes\" section")
  local codes = {}
  for code in section:gmatch("\n|%s*`([%w_]+)`%s*|") do codes[code] = true end
  return codes
end

describe("error codes", function()
  it("documents in README.md every code the C core returns", function()
    local found = {}
    for _, path in ipairs(c_files()) do codes_in(path, read(path), found) end
    local n = 0
    for _ in pairs(found) do n = n + 1 end
    -- the scan itself must see the codes it is meant to guard
    for _, code in ipairs({"unreachable", "timeout", "protocol", "tls", "out_of_memory",
                           "not_found", "conflict", "interrupted", "no_process"}) do
      assert.is_truthy(found[code], "the scan missed " .. code)
    end
    assert.is_true(n >= 15, "found only " .. n .. " codes")
    local doc, missing = documented(), {}
    for code, where in pairs(found) do
      if not doc[code] then missing[#missing + 1] = code .. " (" .. where .. ")" end
    end
    table.sort(missing)
    assert.are.same({}, missing)
  end)

  it("uses out_of_memory, never nomem", function()
    for _, path in ipairs(c_files()) do
      assert.is_nil(read(path):find('"nomem"', 1, true), path .. " returns \"nomem\"")
    end
  end)

  it("the README table lists each code once", function()
    local section = read("README.md"):match("\n#+%s*Error codes%s*\n(.-)\n#")
      or read("README.md"):match("\n#+%s*Error codes%s*\n(.*)$")
    local seen, dup = {}, {}
    for code in section:gmatch("\n|%s*`([%w_]+)`%s*|") do
      if seen[code] then dup[#dup + 1] = code end
      seen[code] = true
    end
    assert.are.same({}, dup)
  end)
end)
