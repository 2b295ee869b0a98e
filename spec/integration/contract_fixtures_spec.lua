-- Proof of the drop-in contract (issue #11 item 10): the Go-shaped request
-- fixtures of spec/fixtures/contract/ go through the CLI (--json) and
-- `cpdocker serve`, and every result is checked field by field against the
-- Go types of DESIGN §2 (support/contract_types.lua: int vs number
-- literals, enums, RFC 3339 times, base64 bytes, map keys and values).
local json = require("ctrlplane.docker.json")
local util = require("ctrlplane.docker.util")
local helper = require("support.helper")
local projects = require("support.projects")
local rpc_session = require("support.rpc_session")
local types = require("support.contract_types")

local DIR = "spec/fixtures/contract/"
local SECRET = "go-fixture-secret-41"

local function read(name)
  return assert(io.open(DIR .. name)):read("a")
end

-- a fixture with the instance id put in
local function fixture(name, id)
  return (read(name):gsub("inst_FIXTURE", id))
end

-- What each provision fixture is run with, and what its results must say.
local TABLE = {
  {file = "provision-minimal.json", services = {"web"}, endpoints = 0, log = "minimal up",
    deploys = {}},
  {file = "provision-full.json", services = {"setup", "web", "side"}, endpoints = 2, log = "web up",
    deploys = {"deploy-rolling.json", "deploy-recreate.json", "deploy-blue-green.json",
      "deploy-empty-strategy.json"},
    scale = "scale.json", secret_env = "DB_PASSWORD", cfg_path = "/etc/app/app.json",
    file_content = '{"mode":"go"}'},
  {file = "provision-nulls.json", services = {"web"}, endpoints = 2, log = "nulls up", deploys = {}},
  {file = "provision-stateful.json", services = {"db"}, endpoints = 0, replicas = 2, deploys = {}},
}

local function check(v_or_text, type_name)
  local errs
  if type(v_or_text) == "string" then
    errs = types.check_json(v_or_text, type_name)
  else
    errs = types.check_value(v_or_text, type_name)
  end
  assert(#errs == 0, type_name .. " as Go decodes it:\n  " .. table.concat(errs, "\n  ")
    .. "\n" .. (type(v_or_text) == "string" and v_or_text:sub(1, 1500) or ""))
end

local function keys(t)
  local out = {}
  for k in pairs(t) do if k ~= "is_array" and k ~= "n" then out[#out + 1] = k end end
  table.sort(out)
  return out
end

local function sorted(list)
  local out = {}
  for i, v in ipairs(list) do out[i] = v end
  table.sort(out)
  return out
end

-- The two transports: each call returns the result as types.parse gives it
-- (number literals kept), after checking it against its Go type.
local function cli_transport(secrets_dir)
  local t = {}
  local env = "CP_DOCKER_SECRETS_DIR='" .. secrets_dir .. "' "
  local function run(args)
    local out, rc = helper.sh(env .. "./cpdocker --json " .. args .. " 2>/tmp/cpdocker-contract-err")
    assert.are.equal(0, rc, args .. ": " .. out .. (io.open("/tmp/cpdocker-contract-err"):read("a")))
    return out
  end
  local function with_file(text, args)
    local path = os.tmpname()
    local f = assert(io.open(path, "w"))
    f:write(text)
    f:close()
    local out = run(args .. " " .. path)
    os.remove(path)
    return out
  end
  function t.provision(text)
    local o = with_file(text, "provision")
    check(o, "ProvisionResult")
    return types.parse(o)
  end
  function t.deploy(text) local o = with_file(text, "deploy") check(o, "DeployResult") return types.parse(o) end
  function t.status(id) local o = run("status " .. id) check(o, "InstanceStatus") return types.parse(o) end
  function t.resources(id)
    local o = run("resources " .. id)
    check(o, "ResourceUsage")
    return types.parse(o)
  end
  function t.exec(id, cmd)
    local o = run("exec " .. id .. " -- sh -c '" .. cmd .. "'")
    check(o, "ExecResult")
    return types.parse(o)
  end
  function t.logs(id)
    local o = run("logs " .. id .. " --tail 20")
    local events = {}
    for line in o:gmatch("[^\n]+") do
      check(line, "LogEvent")
      events[#events + 1] = types.parse(line)
    end
    return events
  end
  function t.scale(id, spec)
    local args = "scale " .. id -- the CLI's flags: the fields that are set
    for _, k in ipairs({"cpu_millis", "memory_mb", "replicas"}) do
      if spec[k] and spec[k] ~= 0 then args = args .. " --" .. k:gsub("_", "-") .. " " .. spec[k] end
    end
    run(args)
  end
  function t.info() local o = run("info") check(o, "Info") return types.parse(o) end
  function t.capabilities()
    local o = run("capabilities")
    check(o, "Capabilities")
    return types.parse(o)
  end
  function t.health() local o = run("health") check(o, "HealthStatus") return types.parse(o) end
  function t.close() end
  return t
end

local function rpc_transport(secrets_dir)
  local s = rpc_session.start("", {CP_DOCKER_SECRETS_DIR = secrets_dir})
  local t = {}
  local function call(method, params, type_name)
    local msg = s:call(method, params, 120)
    local line = assert(s:raw_line(msg))
    local parsed = types.parse(line)
    assert(parsed.error == nil, method .. ": " .. line)
    if type_name then check(parsed.result, type_name) end
    return parsed.result
  end
  function t.provision(text) return call("provision", json.decode(text), "ProvisionResult") end
  function t.deploy(text) return call("deploy", json.decode(text), "DeployResult") end
  function t.status(id) return call("status", {instance_id = id}, "InstanceStatus") end
  function t.resources(id) return call("resources", {instance_id = id}, "ResourceUsage") end
  function t.exec(id, cmd)
    return call("exec", {instance_id = id, request = {command = {"sh", "-c", cmd}, tty = false}},
      "ExecResult")
  end
  -- logs over serve: {subscription}, then one logs.event notification per
  -- event (each event checked as Go's LogEvent) until logs.end
  function t.logs(id)
    local sub = call("logs", {instance_id = id, opts = {tail = 20, follow = false}})
    local sid = sub.subscription
    local out = {}
    while true do
      local m = s:expect(function(x)
        return (x.method == "logs.event" or x.method == "logs.end") and x.params.subscription == sid
      end, 30)
      if m.method == "logs.end" then
        assert.are.equal("end of stream", m.params.reason)
        break
      end
      local ev = types.parse(assert(s:raw_line(m))).params.event
      check(ev, "LogEvent")
      out[#out + 1] = ev
    end
    return out
  end
  function t.scale(id, spec) call("scale", {instance_id = id, spec = spec}) end
  function t.info() return call("info", nil, "Info") end
  function t.capabilities() return call("capabilities", nil, "Capabilities") end
  function t.health() return call("health_check", nil, "HealthStatus") end
  function t.close() assert.is_true(s:close()) end
  return t
end

describe("Go-shaped fixtures round-trip", function()
  local secrets = os.tmpname()
  os.remove(secrets)
  assert(os.execute("mkdir -p " .. secrets))
  for k, v in pairs({["db-password"] = SECRET, ["tls.key"] = "fixture tls key"}) do
    local f = assert(io.open(secrets .. "/" .. k, "w"))
    f:write(v)
    f:close()
  end
  local session = projects.session()
  setup(function() session.start() end)
  teardown(function()
    session.finish()
    os.execute("rm -rf " .. secrets)
  end)

  for _, tname in ipairs({"cli", "serve"}) do
    local function transport()
      return (tname == "cli" and cli_transport or rpc_transport)(secrets)
    end

    it(tname .. ": info, capabilities and health decode as Go's types", function()
      local t = transport()
      finally(t.close)
      assert.are.equal("docker", t.info().name)
      local caps = {}
      local list = t.capabilities()
      for i = 1, list.n do caps[list[i]] = true end
      for _, c in ipairs({"strategy:rolling", "strategy:blue-green", "strategy:canary"}) do
        assert.is_true(caps[c], c)
      end
      assert.is_true(t.health().healthy)
    end)

    for _, row in ipairs(TABLE) do
      it(tname .. ": " .. row.file .. " and every result after it", function()
        local t = transport()
        finally(t.close)
        local id = session.new_id("fx" .. tname)
        local res = t.provision(fixture(row.file, id))
        assert.are.equal("docker:cp-" .. id, res.provider_ref)
        assert.are.equal(row.endpoints, res.endpoints.n)

        local st = t.status(id)
        assert.are.equal("running", st.state)
        assert.is_true(st.ready)
        assert.are.same(sorted(row.services), keys(st.services))
        if row.replicas then
          assert.are.equal(tostring(row.replicas), st.services[row.services[1]].replicas.lit)
        end

        local usage = t.resources(id)
        assert.is_true(tonumber(usage.memory_used_mb.lit) >= 1, "a running project uses memory")

        local ex = t.exec(id, "echo out; echo err >&2; exit 3")
        assert.are.equal("3", ex.exit_code.lit)
        assert.are.equal("out\n", util.unbase64(ex.stdout))
        assert.are.equal("err\n", util.unbase64(ex.stderr))
        if row.secret_env then
          ex = t.exec(id, "printf %s \"$" .. row.secret_env .. "\"; cat " .. row.cfg_path)
          assert.are.equal(SECRET .. row.file_content, util.unbase64(ex.stdout))
        end

        if row.log then
          local found = false
          for _, ev in ipairs(t.logs(id)) do
            if ev.line == row.log then found = true end
          end
          assert.is_true(found, "log line " .. row.log)
        end

        for _, d in ipairs(row.deploys) do
          local dr = t.deploy(fixture(d, id))
          assert.are.equal("running", dr.status, d)
          local want = json.decode(read(d)).release_id
          local releases = t.status(id).metadata.releases
          assert.are.equal(want, releases[#releases], d)
        end

        if row.scale then
          t.scale(id, json.decode(read(row.scale)))
          local c = projects.inspect("cp-" .. id .. "-web")
          assert.are.equal(96 * 1048576, c.HostConfig.Memory)
          assert.are.equal(1, t.status(id).services.web.replicas.lit + 0) -- replicas 0: left alone
        end

        -- no secret value anywhere in what the status says
        local text = json.encode(assert(session.p:status(id)))
        assert.is_nil(text:find(SECRET, 1, true))
        assert(session.p:deprovision(id))
        assert.are.same({}, projects.leftovers(id))
      end)
    end
  end
end)
