-- The policy gate: every script output checked, every error with file:line.
local gate = require("ctrlplane.docker.gate")
local policy = require("ctrlplane.docker.policy")

local function tmpdir()
  local d = os.tmpname()
  os.remove(d)
  assert(os.execute("mkdir -p " .. d))
  return d
end

local function with_script(name, text, fn)
  local dir = tmpdir()
  local f = assert(io.open(dir .. "/" .. name .. ".lua", "w"))
  f:write(text)
  f:close()
  local ok, err = pcall(fn, assert(policy.load({scripts_dir = "scripts", policy_dir = dir}, name)),
    dir .. "/" .. name .. ".lua")
  os.execute("rm -rf " .. dir)
  assert(ok, err)
end

local bundled = {}
for _, n in ipairs({"rollout", "status", "reprovision"}) do
  bundled[n] = assert(policy.load({scripts_dir = "scripts"}, n))
end

describe("gate.strategy", function()
  local svc = {name = "web", role = "main", ports = {}, health_check = nil}

  it("reports a raising strategy() with its file and line, never a silent recreate", function()
    with_script("rollout", "return {\n  plan = function() return {} end,\n"
      .. "  strategy = function()\n    error('boom')\n  end,\n}\n", function(p, path)
      local r, err, code = gate.strategy(p, svc, {})
      assert.is_nil(r)
      assert.are.equal("policy", code)
      assert.truthy(err:find(path .. ":4:", 1, true), err)
    end)
  end)

  it("rejects an unknown kind naming the script, the line that defines it and the kinds", function()
    with_script("rollout", "return {\n  plan = function() return {} end,\n"
      .. "  strategy = function() return 'sideways' end,\n}\n", function(p, path)
      local r, err, code = gate.strategy(p, svc, {})
      assert.is_nil(r)
      assert.are.equal("policy", code)
      assert.truthy(err:find(path .. ":3 (strategy)", 1, true), err)
      assert.matches("unknown strategy \"sideways\" for service web", err)
      assert.matches("recreate", err)
    end)
  end)

  it("fills grace, drain and ready_timeout from defaults and keeps what the script sets", function()
    with_script("rollout", "return {plan = function() return {} end, strategy = function()"
      .. " return {kind = 'rolling', grace = 3, observe = 10} end}", function(p)
      local r = assert(gate.strategy(p, svc, {}, {grace = 1, drain = 2, ready_timeout = 60}))
      assert.are.same({kind = "start-first", grace = 3, drain = 2, ready_timeout = 60,
        observe = 10}, r)
    end)
  end)

  it("rejects a negative or non-number duration", function()
    with_script("rollout", "return {plan = function() return {} end, strategy = function()"
      .. " return {kind = 'recreate', drain = -1} end}", function(p)
      local r, err = gate.strategy(p, svc, {})
      assert.is_nil(r)
      assert.matches("drain must be a number of seconds", err)
    end)
  end)

  -- the bundled strategy(), as a table: service, request -> kind
  local rows = {
    {"main without ports", {name = "web", role = "main"}, {}, "start-first"},
    {"fixed host port", {name = "web", role = "main", ports = {{container = 80, host = 8080}}}, {},
      "recreate"},
    {"random host port", {name = "web", role = "main", ports = {{container = 80}}}, {},
      "start-first"},
    {"init", {name = "m", role = "init"}, {}, "recreate"},
    {"request says recreate", {name = "web", role = "main"}, {strategy = "recreate"}, "recreate"},
    {"request says rolling", {name = "web", role = "main"}, {strategy = "rolling"}, "start-first"},
    {"sidecar", {name = "log", role = "sidecar"}, {}, "start-first"},
  }
  for _, row in ipairs(rows) do
    it("bundled: " .. row[1] .. " -> " .. row[4], function()
      local r = assert(gate.strategy(bundled.rollout, row[2], row[3]))
      assert.are.equal(row[4], r.kind)
    end)
  end
end)

describe("gate.decide", function()
  local desired = {{name = "a", role = "main", hash = "h1"}}
  local existing = {a = {role = "main", hash = "h1", running = true}}

  it("rejects a misspelled action instead of treating it as keep", function()
    with_script("reprovision", "return {decide = function(d)\n  return {[d[1].name] = 'kep'}\nend}",
      function(p, path)
        local r, err, code = gate.decide(p, desired, existing)
        assert.is_nil(r)
        assert.are.equal("policy", code)
        assert.truthy(err:find(path .. ":1 (decide)", 1, true), err)
        assert.matches("unknown action \"kep\" for service a", err)
      end)
  end)

  it("rejects a missing action, an action for an unknown service, and start without a container",
    function()
      with_script("reprovision", "return {decide = function() return {} end}", function(p)
        local _, err = gate.decide(p, desired, existing)
        assert.matches("gives no action for service a", err)
      end)
      with_script("reprovision", "return {decide = function() return {a = 'keep', zz = 'remove'} end}",
        function(p)
          local _, err = gate.decide(p, desired, existing)
          assert.matches("unknown service zz", err)
        end)
      with_script("reprovision", "return {decide = function() return {a = 'start'} end}", function(p)
        local _, err = gate.decide(p, desired, {})
        assert.matches("has no container yet", err)
      end)
    end)

  -- the bundled decide(), as a table: desired entry, existing entry -> action
  local rows = {
    {"new service", {name = "s", role = "main", hash = "h"}, nil, "create"},
    {"unchanged, running", {name = "s", role = "main", hash = "h"},
      {role = "main", hash = "h", running = true, docker_state = "running"}, "keep"},
    {"unchanged, stopped", {name = "s", role = "main", hash = "h"},
      {role = "main", hash = "h", running = false, docker_state = "exited", exit_code = 0}, "start"},
    {"changed hash", {name = "s", role = "main", hash = "h2"},
      {role = "main", hash = "h", running = true}, "replace"},
    {"changed role", {name = "s", role = "sidecar", hash = "h"},
      {role = "main", hash = "h", running = true}, "replace"},
    {"init done", {name = "s", role = "init", hash = "h"},
      {role = "init", hash = "h", docker_state = "exited", exit_code = 0}, "keep"},
    {"init failed", {name = "s", role = "init", hash = "h"},
      {role = "init", hash = "h", docker_state = "exited", exit_code = 3}, "replace"},
    {"init never ran", {name = "s", role = "init", hash = "h"},
      {role = "init", hash = "h", docker_state = "created"}, "replace"},
  }
  for _, row in ipairs(rows) do
    it("bundled: " .. row[1] .. " -> " .. row[4], function()
      local r = assert(gate.decide(bundled.reprovision, {row[2]}, {s = row[3]}))
      assert.are.equal(row[4], r.s)
    end)
  end

  it("bundled: a service no longer listed is removed", function()
    local r = assert(gate.decide(bundled.reprovision, {}, {old = {role = "main", hash = "h"}}))
    assert.are.same({old = "remove"}, r)
  end)
end)

describe("gate.service and gate.aggregate", function()
  it("reports a custom state from service() with file:line instead of crashing aggregate()",
    function()
      with_script("status", "return {\n  service = function() return {state = 'meh'} end,\n"
        .. "  aggregate = function() return {state = 'running'} end,\n}\n", function(p, path)
          local r, err, code = gate.service(p, {name = "web"})
          assert.is_nil(r)
          assert.are.equal("policy", code)
          assert.truthy(err:find(path .. ":2 (service)", 1, true), err)
          assert.matches("unknown state \"meh\"", err)
        end)
    end)

  it("rejects a non-table and a non-string message", function()
    with_script("status", "return {service = function() return 'running' end,"
      .. " aggregate = function() return {state = 'running', message = 7} end}", function(p)
        local _, err = gate.service(p, {})
        assert.matches("must return a table", err)
        _, err = gate.aggregate(p, {})
        assert.matches("message must be a string", err)
      end)
  end)

  it("uses the status script's severity table", function()
    assert.are.equal(bundled.status.fns.severity, gate.severity(bundled.status))
    assert.is_true(gate.severity(bundled.status).failed < gate.severity(bundled.status).running)
  end)

  -- the bundled service(): docker state x exit code x health x restart policy x role
  -- (x gating) -> state, ready
  local function c(t)
    local base = {name = "web", role = "main", docker_state = "running", exit_code = 0,
      oom_killed = false, error = "", has_health_check = false, restart_policy = "unless-stopped",
      restarts = 0}
    for k, v in pairs(t) do base[k] = v end
    return base
  end
  local rows = {
    {"running, no health check", c{}, "running", true},
    {"running, healthy", c{has_health_check = true, health = "healthy"}, "running", true},
    {"running, health starting", c{has_health_check = true, health = "starting"}, "starting", false},
    {"running, unhealthy", c{has_health_check = true, health = "unhealthy"}, "failed", false},
    {"created", c{docker_state = "created"}, "provisioning", false},
    {"restarting", c{docker_state = "restarting", exit_code = 1}, "starting", false},
    {"paused", c{docker_state = "paused"}, "stopped", false},
    {"removing", c{docker_state = "removing"}, "destroying", false},
    {"dead", c{docker_state = "dead", error = "driver failed"}, "failed", false},
    {"exited 0, unless-stopped", c{docker_state = "exited"}, "stopped", false},
    {"exited 1, unless-stopped", c{docker_state = "exited", exit_code = 1}, "stopped", false},
    {"exited 1, restart no", c{docker_state = "exited", exit_code = 1, restart_policy = "no"},
      "failed", false},
    {"exited, oom killed", c{docker_state = "exited", exit_code = 137, oom_killed = true}, "failed",
      false},
    {"init exited 0", c{role = "init", docker_state = "exited", restart_policy = "no"}, "stopped",
      true},
    {"init exited 2", c{role = "init", docker_state = "exited", exit_code = 2,
      restart_policy = "no"}, "failed", false},
    -- while the runtime waits for a new container
    {"gating: inside the grace period", c{gating = true, running_for = 0.2, grace = 1.5},
      "starting", false},
    {"gating: past the grace period", c{gating = true, running_for = 2, grace = 1.5}, "running",
      true},
    {"gating: restarted once", c{gating = true, running_for = 2, grace = 1.5, restarts = 1},
      "failed", false},
    {"gating: restarting", c{gating = true, docker_state = "restarting", exit_code = 1}, "failed",
      false},
    {"gating: exited", c{gating = true, docker_state = "exited", exit_code = 3}, "failed", false},
    {"gating: health check passes at once", c{gating = true, running_for = 0, grace = 1.5,
      has_health_check = true, health = "healthy"}, "running", true},
    {"gating: health starting", c{gating = true, running_for = 5, grace = 1.5,
      has_health_check = true, health = "starting"}, "starting", false},
    {"gating: created", c{gating = true, docker_state = "created"}, "provisioning", false},
  }
  for _, row in ipairs(rows) do
    it("bundled service: " .. row[1] .. " -> " .. row[3], function()
      local r = assert(gate.service(bundled.status, row[2]))
      assert.are.equal(row[3], r.state)
      assert.are.equal(row[4], r.ready)
    end)
  end
end)

describe("gate.plan", function()
  it("names the script and line when plan leaves a service out", function()
    with_script("rollout", "return {\n  plan = function() return {{'a'}} end,\n"
      .. "  strategy = function() return 'recreate' end}", function(p, path)
        local r, err = gate.plan(p, {{name = "a", role = "main"}, {name = "b", role = "sidecar"}})
        assert.is_nil(r)
        assert.truthy(err:find(path .. ":2 (plan)", 1, true), err)
        assert.matches("leaves out service \"b\"", err)
      end)
  end)

  -- the bundled plan(), as a table: services -> waves
  local rows = {
    {"one main", {{name = "web", role = "main"}}, {{"web"}}},
    {"main and sidecar together", {{name = "log", role = "sidecar"}, {name = "web", role = "main"}},
      {{"web", "log"}}},
    {"inits one at a time in dependency order", {{name = "b", role = "init", depends_on = {"a"}},
      {name = "a", role = "init"}, {name = "web", role = "main", depends_on = {"b"}}},
      {{"a"}, {"b"}, {"web"}}},
    {"a dependency makes a later wave", {{name = "proxy", role = "sidecar", depends_on = {"web"}},
      {name = "web", role = "main"}}, {{"web"}, {"proxy"}}},
  }
  for _, row in ipairs(rows) do
    it("bundled: " .. row[1], function()
      assert.are.same(row[3], assert(gate.plan(bundled.rollout, row[2])))
    end)
  end
end)

describe("gate.decide reasons (bundled)", function()
  local function decide(new, old)
    local _, why = assert(gate.decide(bundled.reprovision, {{name = "s", role = "main",
      hash = "new", spec = new}}, {s = {role = "main", hash = "old", spec = old, running = true}}))
    return why.s
  end
  it("names what changed", function()
    assert.are.equal("image changed", decide({image = "a:2", env = {}}, {image = "a:1", env = {}}))
    assert.are.equal("env FOO changed", decide({image = "a", env = {FOO = "2"}},
      {image = "a", env = {FOO = "1"}}))
    assert.are.equal("env BAR added", decide({image = "a", env = {BAR = "x"}}, {image = "a"}))
    assert.are.equal("env OLD removed", decide({image = "a", env = {}}, {image = "a",
      env = {OLD = "1"}}))
    assert.are.equal("ports changed", decide({image = "a", ports = {{container = 80}}},
      {image = "a", ports = {{container = 81}}}))
    assert.are.equal("health check changed", decide({image = "a", health_check = {port = 1}},
      {image = "a"}))
  end)
end)

describe("gate.release_id and gate.history_max", function()
  it("bundled: the first provision is 'initial', later ids are unique", function()
    assert.are.equal("initial", gate.release_id(bundled.rollout, {instance_id = "i",
      kind = "provision", first = true}, {}))
    local seen = {}
    for _ = 1, 200 do
      local id = assert(gate.release_id(bundled.rollout, {instance_id = "i", kind = "deploy"}, {}))
      assert.matches("^deploy%-%d+T%d+%-%x+$", id)
      assert.is_nil(seen[id], "release id repeated: " .. id)
      seen[id] = true
    end
  end)

  it("refuses an id the history already holds, and a non-string", function()
    with_script("rollout", "return {plan = function() return {} end,\n"
      .. "  release_id = function() return 'same' end}", function(p, path)
        local id, err = gate.release_id(p, {instance_id = "i", kind = "deploy"}, {"a", "same"})
        assert.is_nil(id)
        assert.truthy(err:find(path .. ":2 (release_id)", 1, true), err)
        assert.matches("already has", err)
      end)
    with_script("rollout", "return {plan = function() return {} end,"
      .. " release_id = function() return 7 end}", function(p)
        local _, err = gate.release_id(p, {instance_id = "i", kind = "deploy"}, {})
        assert.matches("non%-empty string", err)
      end)
  end)

  it("reads the history length from the rollout script", function()
    assert.are.equal(10, gate.history_max(bundled.rollout))
    with_script("rollout", "return {plan = function() return {} end, history = 3}", function(p)
      assert.are.equal(3, gate.history_max(p))
    end)
    with_script("rollout", "return {plan = function() return {} end, history = 0.5}", function(p)
      local n, err = gate.history_max(p)
      assert.is_nil(n)
      assert.matches("whole number from 1 to 100", err)
    end)
  end)
end)

describe("gate.scale_target and gate.retire", function()
  local scale = assert(policy.load({scripts_dir = "scripts"}, "scale"))
  local cur = {inst = {instance_id = "i"}, all = {{name = "log", role = "sidecar"},
    {name = "web", role = "main"}, {name = "m", role = "init"}},
    specs = {log = {name = "log", role = "sidecar"}, web = {name = "web", role = "main"},
      m = {name = "m", role = "init"}}, reps = {}}

  it("bundled: the main service, and the newest replicas go first", function()
    assert.are.equal("web", assert(gate.scale_target(scale, cur, {})).name)
    local reps = {{Id = "c1", replica = 1}, {Id = "c2", replica = 2}, {Id = "c3", replica = 3}}
    assert.are.same({"c3", "c2"}, assert(gate.retire(scale, reps, 1)))
  end)

  it("refuses a target that is an init or unknown, and a wrong retire list", function()
    with_script("scale", "return {target = function() return 'm' end,"
      .. " retire = function() return {1} end}", function(p)
        local _, err = gate.scale_target(p, cur, {})
        assert.matches("not a main or sidecar service", err)
        local reps = {{Id = "c1", replica = 1}, {Id = "c2", replica = 2}, {Id = "c3", replica = 3}}
        _, err = gate.retire(p, reps, 1)
        assert.matches("must name 2 replicas", err)
      end)
    with_script("scale", "return {target = function() return 'web' end,"
      .. " retire = function() return {9} end}", function(p)
        local _, err = gate.retire(p, {{Id = "c1", replica = 1}, {Id = "c2", replica = 2}}, 1)
        assert.matches("replica 9, which is not", err)
      end)
  end)
end)
