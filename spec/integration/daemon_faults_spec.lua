-- Daemon faults (issue 8), on a PRIVATE dockerd that this spec starts and
-- stops itself (spec/support/fault_daemon.sh); the shared daemon is never
-- touched. The daemon is stopped in the middle of a provision: the call
-- fails "unreachable" within its timeout, health and status report the
-- outage, and once the daemon is back, retrying the same provision
-- converges to the full project with nothing duplicated or left over.
local json = require("ctrlplane.docker.json")
local helper = require("support.helper")
local projects = require("support.projects")

local SCRIPT = "bash spec/support/fault_daemon.sh "
local HOST -- set in setup

local function fault(cmd)
  local out, rc = helper.sh(SCRIPT .. cmd .. " 2>&1")
  assert.are.equal(0, rc, "fault_daemon.sh " .. cmd .. ": " .. tostring(out))
  return (out:gsub("%s+$", ""))
end

local function request(id)
  return {
    instance_id = id, tenant_id = "ten_fault", name = "fault project",
    services = {
      {name = "setup", role = "init", image = helper.IMAGE1,
        command = {"sh", "-c", "trap 'exit 1' TERM; sleep 3 & wait $!; echo ok > /data/done"},
        volumes = {{name = "data", mount_path = "/data"}}},
      {name = "web", role = "main", image = helper.IMAGE1, depends_on = {"setup"},
        command = projects.IDLE_CMD, volumes = {{name = "data", mount_path = "/data"}}},
      {name = "side", role = "sidecar", image = helper.IMAGE1, depends_on = {"web"},
        command = projects.IDLE_CMD},
    },
  }
end

-- What carries the project label on the private daemon: counts by kind.
local function inventory(id)
  local c = helper.client({host = HOST})
  local filter = json.encode({label = {"ctrlplane.project=cp-" .. id}})
  local out = {containers = {}, networks = 0, volumes = 0, manifests = 0}
  local res = assert(c:request("GET", "/containers/json", {query = {all = true, filters = filter}}))
  for _, ct in ipairs(json.decode(res.body)) do
    local svc = ct.Labels["ctrlplane.service"]
    out.containers[svc] = (out.containers[svc] or 0) + 1
  end
  res = assert(c:request("GET", "/networks", {query = {filters = filter}}))
  out.networks = #json.decode(res.body)
  res = assert(c:request("GET", "/volumes", {query = {filters = filter}}))
  for _, v in ipairs(json.decode(res.body).Volumes or {}) do
    -- the project's manifest (manifest.lua) is counted apart from its data volumes
    if v.Labels and v.Labels["ctrlplane.manifest"] then
      out.manifests = out.manifests + 1
    else
      out.volumes = out.volumes + 1
    end
  end
  c:close()
  return out
end

-- Waits (bounded) until fn() is true.
local function wait_for(what, seconds, fn)
  local deadline = helper.clock() + seconds
  while helper.clock() < deadline do
    if fn() then return true end
    helper.sleep(0.1)
  end
  error("timed out waiting for " .. what)
end

describe("daemon faults (private dockerd)", function()
  local p, id, file

  setup(function()
    helper.daemon() -- the shared daemon holds the test image we copy in
    HOST = fault("start")
    p = projects.provider({host = HOST, connect_timeout = 1, timeout = 15})
    id = helper.instance_id("fault")
    file = os.tmpname()
    local f = assert(io.open(file, "w"))
    f:write(json.encode(request(id)))
    f:close()
  end)

  before_each(function() -- whatever a failed test left: the daemon up, the project gone
    fault("start")
    assert(p:deprovision(id))
  end)

  teardown(function()
    if HOST then
      helper.sh(SCRIPT .. "start >/dev/null 2>&1")
      if p then p:deprovision(id) end
      helper.sh(SCRIPT .. "destroy >/dev/null 2>&1")
    end
    if p then p:close() end
    if file then os.remove(file) end
  end)

  -- Runs a provision in its own cpdocker process, applies `how` to the
  -- daemon once the init container runs; returns rc, output, and how long
  -- the provision went on after the fault.
  local function provision_through(how)
    local dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir -p " .. dir))
    helper.sh(string.format("(CP_DOCKER_CONNECT_TIMEOUT=1 CP_DOCKER_TIMEOUT=15 timeout 120 "
      .. "./cpdocker --host %s provision %s > %s/out 2>&1; echo $? > %s/rc) >/dev/null 2>&1 &",
      HOST, file, dir, dir) .. " :")
    wait_for("the init container to run", 30, function()
      local out = helper.sh("docker -H " .. HOST .. " ps -q --filter label=ctrlplane.project=cp-"
        .. id .. " --filter label=ctrlplane.service=setup 2>/dev/null")
      return out:match("%x") ~= nil
    end)
    local t0 = helper.clock()
    fault(how)
    wait_for("the provision to end", 30, function() return io.open(dir .. "/rc") ~= nil end)
    local after = helper.clock() - t0
    local rc = tonumber(assert(io.open(dir .. "/rc")):read("a"))
    local out = assert(io.open(dir .. "/out")):read("a")
    os.execute("rm -rf " .. dir)
    return rc, out, after
  end

  -- The daemon is back: the same provision converges, twice over, and a
  -- deprovision leaves nothing.
  local function converges()
    fault("start")
    local res, err = p:provision(request(id))
    assert.is_table(res, err)
    local inv = inventory(id)
    assert.are.same({setup = 1, web = 1, side = 1}, inv.containers)
    assert.are.equal(1, inv.networks)
    assert.are.equal(1, inv.volumes)
    assert.are.equal(1, inv.manifests)
    local st = assert(p:status(id))
    assert.are.equal("running", st.state)
    assert.is_true(st.ready)
    local again = assert(p:provision(request(id)))
    assert.are.same(res.service_refs, again.service_refs)
    assert.are.same(inv, inventory(id))
    assert(p:deprovision(id))
    inv = inventory(id)
    assert.are.same({}, inv.containers)
    assert.are.equal(0, inv.networks)
    assert.are.equal(0, inv.volumes)
    assert.are.equal(0, inv.manifests)
  end

  it("dockerd killed during a provision: 'unreachable' within the timeout; outage reported; retry converges",
    function()
      local rc, out, after = provision_through("crash")
      assert.are.equal(1, rc, out)
      assert.matches("cannot reach the Docker daemon", out, 1, true)
      assert.matches("[unreachable]", out, 1, true)
      assert.is_true(after < 15, "the provision ended " .. after .. " s after the crash")

      -- during the outage: clean reports, quickly, and nothing raises
      local t0 = helper.clock()
      local h = p:health_check()
      assert.is_false(h.healthy)
      assert.matches("cannot reach the Docker daemon", h.message, 1, true)
      local st, err, code = p:status(id)
      assert.is_nil(st)
      assert.are.equal("unreachable", code, err)
      local ok
      ok, err, code = p:provision(request(id))
      assert.is_nil(ok)
      assert.are.equal("unreachable", code, err)
      ok, err, code = p:deprovision(id)
      assert.is_nil(ok)
      assert.are.equal("unreachable", code, err)
      assert.is_true(helper.clock() - t0 < 5, "outage answers took " .. (helper.clock() - t0) .. " s")
      local hout, hrc = helper.cpdocker("--host " .. HOST .. " health")
      assert.are.equal(1, hrc)
      assert.matches("healthy:%s+false", hout)
      local sout, src = helper.cpdocker("--host " .. HOST .. " status " .. id)
      assert.are.equal(1, src)
      assert.matches("[unreachable]", sout, 1, true)

      converges()
    end)

  it("dockerd stopped (gracefully) during a provision: a clear error, then a retry converges", function()
    local rc, out, after = provision_through("stop")
    assert.are.equal(1, rc, out)
    -- dockerd stops its containers before it goes: the init's exit may be
    -- seen first ("init service setup exited"), or the daemon's absence
    local clear = out:find("[unreachable]", 1, true) or out:find("[init_failed]", 1, true)
    assert.is_truthy(clear, out)
    assert.is_true(after < 20, "the provision ended " .. after .. " s after the stop")
    converges()
  end)

  it("a daemon that is gone before the call: every operation answers at once", function()
    fault("stop")
    local t0 = helper.clock()
    for _, call in ipairs({
      function() return p:status(id) end,
      function() return p:start(id) end,
      function() return p:deploy({instance_id = id, services = {{name = "web", image = helper.IMAGE1}}}) end,
      function() return p:logs(id, {}) end,
    }) do
      local ok, err, code = call()
      assert.is_nil(ok)
      assert.are.equal("unreachable", code, err)
    end
    assert.is_false(p:health_check().healthy)
    assert.is_true(helper.clock() - t0 < 3)
    fault("start")
    assert.is_true(p:health_check().healthy)
  end)
end)
