-- Without a daemon: what the status policy makes of a hole, and how a dead
-- deploy's containers are grouped.
local policy = require("ctrlplane.docker.policy")
local recover = require("ctrlplane.docker.recover")

describe("status policy over holes", function()
  local status = assert(policy.load({scripts_dir = "scripts"}, "status", {"service", "aggregate"}))
  local base = {name = "web", role = "main", docker_state = "running", exit_code = 0,
    oom_killed = false, error = "", has_health_check = false, restart_policy = "unless-stopped",
    connected = true, aliased = true, replica = 1, replicas = 1, restarts = 0}
  local function with(t)
    local c = {}
    for k, v in pairs(base) do c[k] = v end
    for k, v in pairs(t) do c[k] = v end
    return c
  end
  -- description, input changes, state, ready, message pattern
  local rows = {
    {"running on the network under its alias", {}, "running", true, "^$"},
    {"missing (the only one)", {docker_state = "missing"}, "failed", false, "^no container"},
    {"a missing replica of several", {docker_state = "missing", replica = 2, replicas = 3},
      "degraded", false, "^no container"},
    {"off the project network", {connected = false, aliased = false}, "failed", false,
      "not on the project network"},
    {"on the network without its alias", {aliased = false}, "failed", false, "without its service alias"},
    {"one replica of several off the network", {connected = false, aliased = false, replicas = 2},
      "degraded", false, "not on the project network"},
    {"waiting for readiness (no network facts given)", {gating = true, running_for = 5, grace = 1,
      connected = nil, aliased = nil}, "running", true, "^$"},
    {"paused", {docker_state = "paused"}, "stopped", false, "paused"},
    {"stopped", {docker_state = "exited"}, "stopped", false, "stopped"},
  }
  for _, row in ipairs(rows) do
    it(row[1], function()
      local s = assert(policy.call(status, "service", with(row[2])))
      assert.are.equal(row[3], s.state)
      assert.are.equal(row[4], s.ready)
      assert.matches(row[5], s.message)
    end)
  end

  it("one failed service makes the instance not ready, naming it", function()
    local agg = assert(policy.call(status, "aggregate", {
      {name = "web", role = "main", state = "running", ready = true, message = "", restarts = 0},
      {name = "side", role = "sidecar", state = "failed", ready = false, message = "no container",
        restarts = 0}}))
    assert.are.equal("failed", agg.state)
    assert.is_false(agg.ready)
    assert.are.equal("side: no container", agg.message)
  end)
end)

describe("recover.groups", function()
  local function c(name, svc, replica, created, state)
    return {Id = name, Names = {"/" .. name}, Created = created, State = state or "running",
      Labels = {["ctrlplane.service"] = svc, ["ctrlplane.replica"] = tostring(replica)}}
  end

  it("sorts a dead deploy's containers by service and replica, newest first", function()
    local g = recover.groups({
      c("cp-i-web", "web", 1, 10),
      c("cp-i-web_next_a1", "web", 1, 20),
      c("cp-i-web_retired_a1", "web", 1, 11),
      c("cp-i-web_retired_b2", "web", 1, 30),
      c("cp-i-web_2_next_a1", "web", 2, 20),
      -- a service whose name starts like another's temporary name is its own group
      c("cp-i-web-next", "web-next", 1, 5),
    }, "i")
    assert.are.equal("cp-i-web", g["cp-i-web"].canonical.Id)
    assert.are.same({"cp-i-web_next_a1"}, {g["cp-i-web"].next[1].Id})
    assert.are.equal("cp-i-web_retired_b2", g["cp-i-web"].retired[1].Id)
    assert.are.equal(2, #g["cp-i-web"].retired)
    assert.is_nil(g["cp-i-web_2"].canonical)
    assert.are.equal("cp-i-web_2_next_a1", g["cp-i-web_2"].next[1].Id)
    assert.are.equal("cp-i-web-next", g["cp-i-web-next"].canonical.Id)
    assert.are.equal(0, #g["cp-i-web-next"].next)
  end)
end)

describe("re-provision policy over holes", function()
  local reprovision = assert(policy.load({scripts_dir = "scripts"}, "reprovision", {"decide"}))
  local desired = {{name = "web", role = "main", hash = "h", replicas = 2}}
  local function decide(e)
    local base = {role = "main", hash = "h", docker_state = "running", exit_code = 0,
      running = false}
    for k, v in pairs(e) do base[k] = v end
    local out = assert(policy.call(reprovision, "decide", desired, {web = base}))
    return out.web.action, out.web.reason
  end
  -- existing fields, action, reason
  local rows = {
    {{running = true, replicas = 2, desired_replicas = 2, connected = true}, "keep", "unchanged"},
    {{paused = true, replicas = 2, desired_replicas = 2}, "start", "was paused"},
    {{replicas = 1, desired_replicas = 2, connected = true}, "start", "had 1 of 2 replicas"},
    {{replicas = 2, desired_replicas = 2, connected = false}, "start", "was off the project network"},
    {{replicas = 2, desired_replicas = 2, connected = true}, "start", "a replica was not running"},
    -- what the swarm backend gives (no replica facts): as before
    {{docker_state = "exited", replicas = 2}, "start", "was exited"},
  }
  for _, row in ipairs(rows) do
    it(row[3], function()
      local action, reason = decide(row[1])
      assert.are.equal(row[2], action)
      assert.are.equal(row[3], reason)
    end)
  end
end)
