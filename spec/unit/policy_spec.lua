local policy = require("ctrlplane.docker.policy")

local function tmpdir()
  local d = os.tmpname()
  os.remove(d)
  assert(os.execute("mkdir -p " .. d))
  return d
end

local function write(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
end

describe("policy loading", function()
  local cfg = {scripts_dir = "scripts"}

  it("loads the bundled scripts, each with its documented functions", function()
    for name, fns in pairs({rollout = {"plan", "strategy"}, status = {"service", "aggregate"},
        reprovision = {"decide"}}) do
      local p = assert(policy.load(cfg, name, fns))
      assert.matches("^scripts/" .. name .. "%.lua$", p.path)
    end
  end)

  it("documents inputs and outputs at the top of each bundled script", function()
    for _, name in ipairs({"rollout", "status", "reprovision", "scale"}) do
      local head = assert(io.open("scripts/" .. name .. ".lua")):read(400)
      assert.matches("^%-%- ", head)
      assert.matches("%->", head)
    end
  end)

  it("overrides file by file from a policy directory", function()
    local dir = tmpdir()
    write(dir .. "/status.lua", "return {service = function() return {} end, aggregate = function()"
      .. " return {state = 'custom'} end}")
    local c = {scripts_dir = "scripts", policy_dir = dir}
    assert.are.equal(dir .. "/status.lua", policy.load(c, "status").path)
    assert.are.equal("scripts/rollout.lua", policy.load(c, "rollout").path)
    os.execute("rm -rf " .. dir)
  end)

  it("names file and line for a syntax error", function()
    local dir = tmpdir()
    write(dir .. "/rollout.lua", "-- broken\nreturn {\n  plan = function(s) return s end,\n  oops oops\n}\n")
    local p, err, code = policy.load({scripts_dir = "scripts", policy_dir = dir}, "rollout")
    assert.is_nil(p)
    assert.are.equal("policy", code)
    assert.truthy(err:find(dir .. "/rollout.lua:4:", 1, true), err)
    os.execute("rm -rf " .. dir)
  end)

  it("names file and line for a runtime error inside a policy function", function()
    local dir = tmpdir()
    write(dir .. "/status.lua", "return {\n  service = function(c)\n    return c.nope.field\n  end,\n"
      .. "  aggregate = function() end,\n}\n")
    local p = assert(policy.load({scripts_dir = "scripts", policy_dir = dir}, "status"))
    local r, err, code = policy.call(p, "service", {})
    assert.is_nil(r)
    assert.are.equal("policy", code)
    assert.truthy(err:find("status.lua:3:", 1, true), err)
    os.execute("rm -rf " .. dir)
  end)

  it("runs scripts in a sandbox without io or os.execute", function()
    local dir = tmpdir()
    write(dir .. "/status.lua", "return {service = function() return io ~= nil or os.execute ~= nil end,"
      .. " aggregate = function() end}")
    local p = assert(policy.load({scripts_dir = "scripts", policy_dir = dir}, "status"))
    assert.is_false(policy.call(p, "service"))
    os.execute("rm -rf " .. dir)
  end)

  it("requires the documented functions", function()
    local dir = tmpdir()
    write(dir .. "/reprovision.lua", "return {}")
    local p, err = policy.load({scripts_dir = "scripts", policy_dir = dir}, "reprovision", {"decide"})
    assert.is_nil(p)
    assert.matches("must define function decide", err)
    os.execute("rm -rf " .. dir)
  end)
end)

describe("bundled rollout plan", function()
  it("runs inits one at a time, then main before sidecars by dependency depth", function()
    local p = assert(policy.load({scripts_dir = "scripts"}, "rollout"))
    local waves = policy.call(p, "plan", {
      {name = "log", role = "sidecar", depends_on = {}},
      {name = "web", role = "main", depends_on = {"m2"}},
      {name = "m2", role = "init", depends_on = {"m1"}},
      {name = "m1", role = "init", depends_on = {}},
      {name = "proxy", role = "sidecar", depends_on = {"web"}},
    })
    assert.are.same({{"m1"}, {"m2"}, {"web", "log"}, {"proxy"}}, waves)
  end)
end)

describe("bundled reprovision policy", function()
  it("keeps, starts, replaces, creates and removes", function()
    local p = assert(policy.load({scripts_dir = "scripts"}, "reprovision"))
    local actions = require("ctrlplane.docker.gate").decide(p, {
      {name = "a", role = "main", hash = "h1"},
      {name = "b", role = "sidecar", hash = "h2"},
      {name = "c", role = "sidecar", hash = "h3"},
      {name = "d", role = "sidecar", hash = "h4"},
      {name = "i", role = "init", hash = "h5"},
    }, {
      a = {role = "main", hash = "h1", running = true},
      b = {role = "sidecar", hash = "old", running = true},
      c = {role = "sidecar", hash = "h3", running = false, docker_state = "exited", exit_code = 0},
      i = {role = "init", hash = "h5", docker_state = "exited", exit_code = 0},
      gone = {role = "sidecar", hash = "x", running = true},
    })
    assert.are.same({a = "keep", b = "replace", c = "start", d = "create", i = "keep",
      gone = "remove"}, actions)
  end)
end)
