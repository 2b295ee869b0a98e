-- config_files and secrets (issue #11 items 5 and 6) on the real daemon:
-- files in place before the process starts, read-only; secrets resolved by
-- scripts/secrets.lua from CP_DOCKER_SECRETS_DIR, as env or /run/secrets
-- files; failures are field errors with the engine untouched; values never
-- in labels, errors, status or the release history.
local json = require("ctrlplane.docker.json")
local helper = require("support.helper")
local projects = require("support.projects")

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

local SECRET_DB = "db-S3cr3t-value-7f3a"
local SECRET_TLS = "-----BEGIN KEY-----\nabc123-file-secret\n-----END KEY-----\n"

describe("config_files and secrets", function()
  local dir = tmpdir()
  write(dir .. "/db-password", SECRET_DB .. "\n")
  write(dir .. "/tls.key", SECRET_TLS .. "\n")
  local session = projects.session({secrets_dir = dir})
  local p
  setup(function() p = session.start() end)
  teardown(function()
    session.finish()
    os.execute("rm -rf " .. dir)
  end)

  local function request(id)
    return {
      instance_id = id, tenant_id = "ten_cs", kind = "deployment",
      services = {{
        name = "web", image = helper.IMAGE1,
        -- the process records what it found when it started
        command = {"sh", "-c", "cat /etc/app/app.json > /tmp/seen-at-start; "
          .. "echo \"db=$DB_PASSWORD\" >> /tmp/seen-at-start; exec " .. table.concat({
            "sh", "-c", "'trap \"exit 0\" TERM; while true; do sleep 1 & wait $!; done'"}, " ")},
        config_files = {
          {name = "app", path = "/etc/app/app.json", format = "json", content = "{\"mode\": \"blue\"}"},
          {name = "motd", path = "/srv/motd.txt", format = "text", content = "hello\n"},
        },
        secrets = {{key = "db-password", type = "env"}, {key = "tls.key", type = "file"}},
      }},
    }
  end

  local function exec(id, cmd)
    local r = assert(p:exec(id, {command = {"sh", "-c", cmd}}))
    return r.stdout, r.exit_code
  end

  it("writes config files before the process starts and resolves env and file secrets", function()
    local id = session.new_id("cfgsec")
    assert(p:provision(request(id)))
    local seen = exec(id, "cat /tmp/seen-at-start")
    assert.are.equal("{\"mode\": \"blue\"}db=" .. SECRET_DB .. "\n", seen)
    assert.are.equal("hello\n", (exec(id, "cat /srv/motd.txt")))
    -- read-only files: mode 0444 for config files, 0400 root for secrets
    assert.are.equal("444 0 0\n", (exec(id, "stat -c '%a %u %g' /etc/app/app.json")))
    assert.are.equal("400 0 0\n", (exec(id, "stat -c '%a %u %g' /run/secrets/tls.key")))
    assert.are.equal(SECRET_TLS, (exec(id, "cat /run/secrets/tls.key")))

    -- no value in labels, status or the release history
    local st = assert(p:status(id))
    local c = projects.inspect(st.services.web.provider_ref)
    local labels = json.encode(c.Config.Labels)
    local status_text = json.encode(st)
    for _, v in ipairs({SECRET_DB, "abc123-file-secret"}) do
      assert.is_nil(labels:find(v, 1, true), "secret value in labels")
      assert.is_nil(status_text:find(v, 1, true), "secret value in status")
    end
    assert.truthy(labels:find("db-password", 1, true), "the reference is recorded")
  end)

  it("a changed config file or secret value redeploys the service; unchanged keeps it", function()
    local id = session.new_id("cfghash")
    assert(p:provision(request(id)))
    local first = assert(p:status(id)).services.web.provider_ref
    assert(p:provision(request(id)))
    assert.are.equal(first, assert(p:status(id)).services.web.provider_ref)

    local req = request(id)
    req.services[1].config_files[1].content = "{\"mode\": \"green\"}"
    assert(p:provision(req))
    local second = assert(p:status(id)).services.web.provider_ref
    assert.are_not.equal(first, second)
    assert.are.equal("{\"mode\": \"green\"}", (exec(id, "cat /etc/app/app.json")))

    write(dir .. "/db-password", "rotated-value\n")
    finally(function() write(dir .. "/db-password", SECRET_DB .. "\n") end)
    assert(p:provision(req))
    local third = assert(p:status(id)).services.web.provider_ref
    assert.are_not.equal(second, third)
    assert.are.equal("rotated-value", (exec(id, "printf %s \"$DB_PASSWORD\"")))
  end)

  it("deploy and rollback keep the files and secrets of the service", function()
    local id = session.new_id("cfgdeploy")
    assert(p:provision(request(id)))
    assert(p:deploy({instance_id = id, release_id = "r2", strategy = "rolling",
      services = {{name = "web", image = helper.IMAGE2}}}))
    assert.are.equal("{\"mode\": \"blue\"}db=" .. SECRET_DB .. "\n",
      (exec(id, "cat /tmp/seen-at-start")))
    assert.are.equal(SECRET_TLS, (exec(id, "cat /run/secrets/tls.key")))
    local st = assert(p:status(id))
    assert.is_nil(json.encode(st):find(SECRET_DB, 1, true))
    local labels = json.encode(projects.inspect(st.services.web.provider_ref).Config.Labels)
    assert.is_nil(labels:find(SECRET_DB, 1, true), "secret value in the release history label")
  end)

  local failures = {
    {"an unknown key", function(r) r.services[1].secrets[1].key = "no-such-secret" end,
      "services[0].secrets[0] (key \"no-such-secret\", type env): cannot resolve the secret: "
        .. "secret no-such-secret not found in"},
    {"an unknown type", function(r) r.services[1].secrets[2].type = "vault" end,
      "services[0].secrets[1].type: must be env or file (got \"vault\")"},
    {"a bad config path", function(r) r.services[1].config_files[1].path = "/proc/x" end,
      "services[0].config_files[0].path: must not be under /proc"},
  }
  for _, case in ipairs(failures) do
    it("fails with a field error before touching the engine: " .. case[1], function()
      local id = session.new_id("cfgbad")
      local req = request(id)
      case[2](req)
      local ok, err, code = p:provision(req)
      assert.is_nil(ok)
      assert.are.equal("invalid", code)
      assert.truthy(err:find(case[3], 1, true), err)
      assert.is_nil(err:find(SECRET_DB, 1, true))
      assert.are.same({}, projects.leftovers(id))
    end)
  end

  it("the swarm backend refuses config_files and secrets with field errors, never drops them",
    function()
    local docker = require("ctrlplane.docker")
    local sw = assert(docker.new({backend = "swarm", secrets_dir = dir}))
    finally(function() sw:close() end)
    local id = session.new_id("cfgswarm")
    local ok, err, code, errors = sw:provision(request(id))
    assert.is_nil(ok)
    assert.are.equal("invalid", code)
    assert.truthy(err:find("services[0].config_files: config_files are not supported by the swarm "
      .. "backend", 1, true), err)
    local fields = {}
    for _, e in ipairs(errors) do fields[#fields + 1] = e.field end
    assert.are.same({"services[0].config_files", "services[0].secrets"}, fields)
    assert.are.same({}, projects.leftovers(id))
  end)

  it("fails with a field error when no resolver is configured", function()
    local bare = projects.provider({secrets_dir = false})
    finally(function() bare:close() end)
    local id = session.new_id("cfgnores")
    local ok, err, code = bare:provision(request(id))
    assert.is_nil(ok)
    assert.are.equal("invalid", code)
    assert.truthy(err:find("services[0].secrets[0] (key \"db-password\", type env): cannot "
      .. "resolve the secret: no secrets resolver configured", 1, true), err)
    assert.are.same({}, projects.leftovers(id))
  end)
end)
