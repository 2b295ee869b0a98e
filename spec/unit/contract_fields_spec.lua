-- Issue #11 pieces that need no daemon: validation of config_files and
-- secrets, the ustar writer, the secrets policy, the rollout strategy
-- definitions and the gate's checks on canary() and judge_canary().
local validate = require("ctrlplane.docker.validate")
local policy = require("ctrlplane.docker.policy")
local tar = require("ctrlplane.docker.tar")

local function base()
  return {
    instance_id = "inst_contract01",
    services = {
      {name = "web", image = "busybox:1", env = {A = "1"},
        config_files = {{name = "app", path = "/etc/app/app.json", format = "json",
          content = "{\"a\": 1}"}},
        secrets = {{key = "db-password", type = "env"}, {key = "tls.key", type = "file"}}},
    },
  }
end

local function with(mutate)
  local r = base()
  mutate(r.services[1])
  return r
end

describe("validate: config_files and secrets", function()
  it("normalizes them into the service", function()
    local r = assert(validate.provision(base()))
    local s = r.services[1]
    assert.are.same({{name = "app", path = "/etc/app/app.json", format = "json",
      content = "{\"a\": 1}"}}, s.config_files)
    assert.are.same({{key = "db-password", type = "env"}, {key = "tls.key", type = "file"}},
      s.secrets)
  end)

  it("takes empty format as text and missing lists as none", function()
    local r = assert(validate.provision(with(function(s)
      s.config_files[1].format = ""
      s.config_files[1].content = "not json"
      s.secrets = nil
    end)))
    assert.are.equal("text", r.services[1].config_files[1].format)
    assert.is_nil(r.services[1].secrets) -- none: not part of the stored spec
  end)

  local bad = {
    {"relative path", function(s) s.config_files[1].path = "etc/app" end,
      "services[0].config_files[0].path: must be an absolute path"},
    {"root", function(s) s.config_files[1].path = "/" end,
      "services[0].config_files[0].path: must name a file, not a directory"},
    {"under /proc", function(s) s.config_files[1].path = "/proc/self/x" end,
      "services[0].config_files[0].path: must not be under /proc"},
    {"/sys itself", function(s) s.config_files[1].path = "/sys" end,
      "services[0].config_files[0].path: must not be under /sys"},
    {"under /dev", function(s) s.config_files[1].path = "/dev/shm/x" end,
      "services[0].config_files[0].path: must not be under /dev"},
    {"dot-dot escape", function(s) s.config_files[1].path = "/etc/../proc/x" end,
      "services[0].config_files[0].path: must be normalized"},
    {"into /run/secrets", function(s) s.config_files[1].path = "/run/secrets/x" end,
      "services[0].config_files[0].path: /run/secrets is reserved for secrets"},
    {"two files at one path", function(s)
      s.config_files[2] = {name = "b", path = "/etc/app/app.json", content = ""}
    end, "services[0].config_files[1].path: \"/etc/app/app.json\" is also written by"},
    {"unknown format", function(s) s.config_files[1].format = "toml" end,
      "services[0].config_files[0].format: must be json, yaml, env or text"},
    {"json that does not parse", function(s) s.config_files[1].content = "{a:" end,
      "services[0].config_files[0].content: format is json but invalid JSON"},
    {"too large", function(s)
      s.config_files[1].format = "text"
      s.config_files[1].content = string.rep("x", validate.CONFIG_FILE_MAX + 1)
    end, "services[0].config_files[0].content: at most 65536 bytes"},
    {"missing name", function(s) s.config_files[1].name = "" end,
      "services[0].config_files[0].name: is required"},
    {"secret without key", function(s) s.secrets[1].key = "" end,
      "services[0].secrets[0].key: is required"},
    {"secret key with a slash", function(s) s.secrets[2].key = "../etc/passwd" end,
      "services[0].secrets[1].key: \"../etc/passwd\" is not a valid secret key"},
    {"unknown secret type", function(s) s.secrets[1].type = "vault" end,
      "services[0].secrets[0].type: must be env or file (got \"vault\")"},
    {"empty secret type", function(s) s.secrets[1].type = "" end,
      "services[0].secrets[0].type: must be env or file (got \"\")"},
    {"registry secrets", function(s) s.secrets[1].type = "registry" end,
      "services[0].secrets[0].type: secret type \"registry\" is not supported"},
    {"tls secrets", function(s) s.secrets[1].type = "tls" end,
      "services[0].secrets[0].type: secret type \"tls\" is not supported"},
    {"env secret clashing with env", function(s) s.env.DB_PASSWORD = "x" end,
      "services[0].secrets[0].key: \"db-password\" becomes env DB_PASSWORD, which services[0].env"},
    {"two secrets, one env name", function(s)
      s.secrets[3] = {key = "db.password", type = "env"}
    end, "services[0].secrets[2].key: \"db.password\" becomes DB_PASSWORD, as services[0].secrets[0]"},
  }
  for _, case in ipairs(bad) do
    it("rejects: " .. case[1], function()
      local r, msg, code = validate.provision(with(case[2]))
      assert.is_nil(r)
      assert.are.equal("invalid", code)
      assert.truthy(msg:find(case[3], 1, true), "expected " .. case[3] .. "\n got " .. msg)
    end)
  end

  it("maps secret keys to upper snake case env names", function()
    for key, want in pairs({["db-password"] = "DB_PASSWORD", ["api.key"] = "API_KEY",
        token = "TOKEN", ["A_b-c.9"] = "A_B_C_9"}) do
      assert.are.equal(want, validate.secret_env_name(key))
    end
  end)

  it("accepts canary and blue-green deploys", function()
    for _, st in ipairs({"canary", "blue-green", "rolling", "recreate", ""}) do
      assert.truthy(validate.deploy({instance_id = "i1", strategy = st,
        services = {{name = "web", image = "busybox:2"}}}))
    end
  end)
end)

describe("tar.archive", function()
  local function tmp()
    local d = os.tmpname()
    os.remove(d)
    assert(os.execute("mkdir -p " .. d))
    return d
  end

  it("writes an archive GNU tar lists and extracts byte for byte", function()
    local long = string.rep("d", 90) .. "/" .. string.rep("e", 90) .. "/f.bin"
    local binary = {}
    for i = 0, 1000 do binary[#binary + 1] = string.char(i % 256) end
    binary = table.concat(binary)
    local files = {
      {path = "/etc/app/app.json", content = "{\"a\":1}\n", mode = tonumber("444", 8)},
      {path = "/run/secrets/k", content = "", mode = tonumber("400", 8)},
      {path = "/" .. long, content = binary},
    }
    local d = tmp()
    local f = assert(io.open(d .. "/a.tar", "wb"))
    local bytes = assert(tar.archive(files))
    f:write(bytes)
    f:close()
    local p = assert(io.popen("tar -tvf " .. d .. "/a.tar"))
    local listing = p:read("a")
    p:close()
    assert.matches("%-r%-%-r%-%-r%-%- root/root +8 [^\n]* etc/app/app%.json", listing)
    assert.matches("%-r%-%-%-%-%-%-%-%- root/root +0 [^\n]* run/secrets/k", listing)
    assert(os.execute("mkdir -p " .. d .. "/x && tar -xf " .. d .. "/a.tar -C " .. d .. "/x"))
    assert.are.equal(binary, assert(io.open(d .. "/x/" .. long, "rb")):read("a"))
    assert.are.equal("{\"a\":1}\n", assert(io.open(d .. "/x/etc/app/app.json")):read("a"))
    os.execute("rm -rf " .. d)
  end)

  it("pads to 512-byte blocks and ends with two zero blocks", function()
    local a = assert(tar.archive({{path = "x", content = "abc"}}))
    assert.are.equal(512 * 4, #a)
    assert.are.equal(string.rep("\0", 1024), a:sub(-1024))
  end)

  it("refuses a path no ustar header can hold", function()
    local a, err = tar.archive({{path = "/" .. string.rep("x", 300), content = ""}})
    assert.is_nil(a)
    assert.matches("path too long", err)
  end)
end)

describe("scripts/secrets.lua", function()
  local cfg = {scripts_dir = "scripts"}

  it("reads <secrets_dir>/<key>, dropping one trailing newline", function()
    local d = os.tmpname()
    os.remove(d)
    assert(os.execute("mkdir -p " .. d))
    local f = assert(io.open(d .. "/db-password", "w"))
    f:write("s3cr3t\n")
    f:close()
    local p = assert(policy.load_secrets(cfg))
    local ctx = {instance_id = "i", tenant_id = "t", service = "web", secrets_dir = d}
    assert.are.equal("s3cr3t", policy.call(p, "resolve", {key = "db-password", type = "env"}, ctx))
    local v, why = policy.call(p, "resolve", {key = "missing", type = "file"}, ctx)
    assert.is_nil(v)
    assert.matches("secret missing not found in", why)
    os.execute("rm -rf " .. d)
  end)

  it("says no resolver is configured without a secrets directory", function()
    local p = assert(policy.load_secrets(cfg))
    local v, why = policy.call(p, "resolve", {key = "x", type = "env"}, {service = "web"})
    assert.is_nil(v)
    assert.matches("no secrets resolver configured", why)
  end)

  it("gives read_file to secrets.lua only", function()
    local d = os.tmpname()
    os.remove(d)
    assert(os.execute("mkdir -p " .. d))
    local f = assert(io.open(d .. "/status.lua", "w"))
    f:write("return {service = function() return read_file('/etc/hostname') end,"
      .. " aggregate = function() end}")
    f:close()
    local s = assert(policy.load({scripts_dir = "scripts", policy_dir = d}, "status"))
    local ok, err = policy.call(s, "service", {})
    assert.is_nil(ok)
    assert.matches("read_file", err)
    os.execute("rm -rf " .. d)
  end)
end)

describe("scripts/rollout.lua strategies", function()
  local p = assert(policy.load({scripts_dir = "scripts"}, "rollout", {"plan", "strategy",
    "canary", "judge_canary"}))
  local web = {name = "web", role = "main", ports = {{container = 80}}}

  local rows = {
    {"rolling", "start-first"}, {"", "start-first"}, {"recreate", "recreate"},
    {"blue-green", "blue-green"}, {"canary", "canary"},
  }
  for _, row in ipairs(rows) do
    it("maps " .. (row[1] == "" and "no strategy" or row[1]) .. " to " .. row[2], function()
      assert.are.equal(row[2], policy.call(p, "strategy", web, {strategy = row[1]}))
    end)
  end

  it("recreates a service with a fixed host port, whatever was asked", function()
    local fixed = {name = "web", role = "main", ports = {{container = 80, host = 8080}}}
    for _, st in ipairs({"rolling", "blue-green", "canary"}) do
      assert.are.equal("recreate", policy.call(p, "strategy", fixed, {strategy = st}))
    end
  end)

  it("judges a canary: ready and no restarts promotes it", function()
    local obs = {service = "web", window = 5, samples = 5, ready = true, not_ready = 0,
      restarts = 0, state = "running"}
    assert.is_true(policy.call(p, "judge_canary", obs))
    obs.restarts = 1
    local ok, why = policy.call(p, "judge_canary", obs)
    assert.is_false(ok)
    assert.matches("restarted 1 time", why)
    obs.restarts, obs.ready, obs.not_ready, obs.health = 0, false, 2, "unhealthy"
    ok, why = policy.call(p, "judge_canary", obs)
    assert.is_false(ok)
    assert.matches("not ready at 2 of 5 samples %(last state running, unhealthy%)", why)
  end)
end)

describe("gate.canary and gate.judge_canary", function()
  local gate = require("ctrlplane.docker.gate")

  local function rollout_with(body)
    local d = os.tmpname()
    os.remove(d)
    assert(os.execute("mkdir -p " .. d))
    local f = assert(io.open(d .. "/rollout.lua", "w"))
    f:write("return {plan = function() return {} end, strategy = function() return 'canary' end,\n"
      .. body .. "}\n")
    f:close()
    local p = assert(policy.load({scripts_dir = "scripts", policy_dir = d}, "rollout"))
    os.execute("rm -rf " .. d)
    return p
  end

  local svc, req = {name = "web", role = "main"}, {strategy = "canary"}

  it("uses the bundled window, and defaults when a script defines no canary()", function()
    local bundled = assert(policy.load({scripts_dir = "scripts"}, "rollout"))
    assert.are.same({window = 30, interval = 1}, gate.canary(bundled, svc, req))
    assert.are.same(gate.CANARY_DEFAULT, gate.canary(rollout_with(""), svc, req))
  end)

  local bad = {
    {"canary = function() return 5 end,", "must return {window, interval}"},
    {"canary = function() return {window = -1} end,", "window must be a number of seconds"},
    {"canary = function() return {window = 10, interval = 0} end,", "interval must be a number"},
    {"canary = function() error('nope') end,", "nope"},
  }
  for _, row in ipairs(bad) do
    it("refuses a canary() that " .. row[2], function()
      local w, err, code = gate.canary(rollout_with(row[1]), svc, req)
      assert.is_nil(w)
      assert.are.equal("policy", code)
      assert.truthy(err:find(row[2], 1, true), err)
      assert.truthy(err:find("rollout.lua", 1, true), err)
    end)
  end

  it("caps the interval at the window", function()
    local w = gate.canary(rollout_with("canary = function() return {window = 2, interval = 9} end,"),
      svc, req)
    assert.are.same({window = 2, interval = 2}, w)
  end)

  local obs = {service = "web", window = 1, samples = 3, ready = true, not_ready = 0, restarts = 0}

  it("judges by the default without judge_canary()", function()
    local p = rollout_with("")
    assert.is_true(gate.judge_canary(p, obs))
    local bad_obs = {service = "web", window = 1, samples = 3, ready = false, not_ready = 1, restarts = 0}
    local go, why = gate.judge_canary(p, bad_obs)
    assert.is_false(go)
    assert.matches("not ready at 1 of 3 samples", why)
  end)

  it("refuses a verdict that is not a boolean, naming the script", function()
    local go, err, code = gate.judge_canary(rollout_with("judge_canary = function() return 'yes' end,"), obs)
    assert.is_nil(go)
    assert.are.equal("policy", code)
    assert.matches("judge_canary.*must return true, or false and a reason", err)
  end)
end)
