-- Release history, rollback, scale and zero-downtime deploys on the real daemon.
local json = require("ctrlplane.docker.json")
local helper = require("support.helper")
local projects = require("support.projects")

local function env_of(c)
  local t = {}
  for _, kv in ipairs(c.Config.Env or {}) do
    local k, v = kv:match("^([^=]+)=(.*)$")
    t[k] = v
  end
  return t
end

describe("releases", function()
  local session = projects.session()
  local p
  local new_id = session.new_id

  setup(function()
    p = session.start()
  end)

  teardown(session.finish)

  it("rollback restores the image and env of an earlier release, from any process", function()
    local id = new_id("rollback")
    assert(p:provision(projects.three(id)))
    assert(p:deploy({instance_id = id, release_id = "rel-2",
      services = {{name = "web", image = helper.IMAGE2, env = {GREETING = "two"}}}}))
    assert(p:deploy({instance_id = id, release_id = "rel-3",
      services = {{name = "web", env = {GREETING = "three"}}, {name = "side", env = {MODE = "3"}}}}))
    local st = assert(p:status(id))
    assert.are.equal("rel-3", st.metadata.release)
    assert.are.same({"initial", "rel-2", "rel-3"}, st.releases) -- a list, oldest first
    assert.are.same({"initial", "rel-2", "rel-3"}, st.metadata.releases) -- a JSON list, in order

    -- another process, the CLI, reads the history from the engine
    local out, rc = helper.cpdocker("rollback " .. id .. " rel-2")
    assert.are.equal(0, rc, out)
    st = assert(p:status(id))
    assert.are.equal("rel-2", st.metadata.release)
    local web = projects.inspect(st.services.web.provider_ref)
    assert.are.equal(helper.IMAGE2, web.Config.Image)
    assert.are.equal("two", env_of(web).GREETING)
    assert.is_nil(env_of(projects.inspect(st.services.side.provider_ref)).MODE)

    assert(p:rollback(id, "initial"))
    st = assert(p:status(id))
    web = projects.inspect(st.services.web.provider_ref)
    assert.are.equal(helper.IMAGE1, web.Config.Image)
    assert.are.equal("hello", env_of(web).GREETING)
    local port
    for _, e in ipairs(st.endpoints) do if e.public then port = e.port end end
    assert.matches("version 1", assert(projects.fetch(port, "/")))
  end)

  it("an unknown release is an error that lists the known ones", function()
    local id = new_id("rbunknown")
    assert(p:provision(projects.three(id)))
    assert(p:deploy({instance_id = id, release_id = "r2", services = {{name = "side", env = {A = "1"}}}}))
    local res, err, code = p:rollback(id, "r9")
    assert.is_nil(res)
    assert.are.equal("not_found", code)
    assert.matches('no release "r9" %(known releases: initial, r2%)', err)
  end)

  it("keeps a bounded history", function()
    local lifecycle = require("ctrlplane.docker.lifecycle")
    local h = {}
    for i = 1, 15 do
      local _, list = lifecycle._record_release(h, "r" .. i, {})
      h = list
    end
    assert.are.equal(lifecycle.HISTORY_MAX, #h)
    assert.are.equal("r6", h[1].id)
    assert.are.equal("r15", h[#h].id)
    local _, again = lifecycle._record_release(h, "r10", {})
    assert.are.equal("r10", again[#again].id) -- a rollback target moves to the end
    assert.are.equal(lifecycle.HISTORY_MAX, #again)
  end)

  describe("scale", function()
    it("changes memory and CPU live: same container, no restart, visible in docker inspect", function()
      local id = new_id("scalelive")
      local res = assert(p:provision(projects.three(id)))
      local before = projects.inspect(res.service_refs.web)
      assert(p:scale(id, {memory_mb = 48, cpu_millis = 750}))
      local after = projects.inspect(res.service_refs.web)
      assert.are.equal(before.Id, after.Id)
      assert.are.equal(before.State.StartedAt, after.State.StartedAt)
      assert.are.equal(48 * 1048576, after.HostConfig.Memory)
      assert.are.equal(750000000, after.HostConfig.NanoCpus)
      local out = helper.sh("docker inspect -f '{{.HostConfig.Memory}} {{.HostConfig.NanoCpus}}' "
        .. res.service_refs.web)
      assert.are.equal("50331648 750000000\n", out)
    end)

    it("runs replicas of the main service under one alias, then scales back newest first", function()
      local id = new_id("replicas")
      local res = assert(p:provision(projects.three(id)))
      assert(p:scale(id, {replicas = 3}))
      local st = assert(p:status(id))
      assert.are.equal(3, st.services.web.replicas)
      assert.are.equal("running", st.state)
      assert.is_true(st.ready)
      local ports = {}
      for _, e in ipairs(st.endpoints) do
        if e.public then ports[#ports + 1] = e.port end
      end
      assert.are.equal(3, #ports)
      assert.are_not.equal(ports[1], ports[2])
      for _, port in ipairs(ports) do
        assert.matches("version 1", assert(projects.fetch(port, "/")))
      end
      -- siblings resolve the service name to every replica
      local out = helper.sh("docker exec cp-" .. id .. "-side nslookup web 2>/dev/null")
      local addrs = {}
      for a in out:gmatch("Address:%s*(%d+%.%d+%.%d+%.%d+)") do
        if not a:match("^127%.") then addrs[a] = true end
      end
      local n = 0
      for _ in pairs(addrs) do n = n + 1 end
      assert.are.equal(3, n, out)
      -- resources count every replica
      local usage = assert(p:resources(id))
      assert.are.equal(3, usage.services.web.containers)

      assert(p:scale(id, {replicas = 1}))
      st = assert(p:status(id))
      assert.are.equal(1, st.services.web.replicas)
      assert.are.equal(res.service_refs.web, st.services.web.provider_ref)
      assert.is_nil(projects.inspect("cp-" .. id .. "-web_2"))
      assert.is_nil(projects.inspect("cp-" .. id .. "-web_3"))
    end)

    it("rejects invalid specs with clear errors", function()
      local id = new_id("scalebad")
      assert(p:provision(projects.three(id)))
      local r1, e1, c1 = p:scale(id, {replicas = -1})
      assert.is_nil(r1)
      assert.are.equal("invalid", c1)
      assert.matches("spec.replicas: must be an integer from 0", e1)
      -- Go's zero value: replicas 0 leaves the count alone, so alone it changes nothing
      local r0, e0, c0 = p:scale(id, {replicas = 0})
      assert.is_nil(r0)
      assert.are.equal("invalid", c0)
      assert.matches("nothing to scale", e0)
      local r2, e2 = p:scale(id, {memory_mb = 2})
      assert.is_nil(r2)
      assert.matches("spec.memory_mb: Docker's minimum memory limit is 6 MB", e2)
      local r3, e3 = p:scale(id, {})
      assert.is_nil(r3)
      assert.matches("nothing to scale", e3)
      local out, rc = helper.cpdocker("scale " .. id .. " --replicas 0")
      assert.are.equal(1, rc)
      assert.matches("replicas", out)
    end)
  end)

  it("deploys with zero downtime: a sibling requesting the service by name sees no failure", function()
    local id = new_id("zerodt")
    local req = projects.three(id)
    req.services[2].health_check = {path = "/index.html", port = 8080, interval = "500ms",
      timeout = "10s", retries = 3}
    assert(p:provision(req))
    -- the prober lives in the project's network: traffic stays inside it
    local prober = "cp-" .. id .. "-prober"
    local loop = "i=0; while [ $i -lt 600 ]; do if timeout 5 wget -q -O /dev/null http://web:8080/index.html;"
      .. " then echo ok; else echo FAIL; fi; i=$((i+1)); sleep 0.05; done; echo finished"
    local _, rc = helper.sh(string.format("docker run -d --name %s --network cp-%s-net "
      .. "--label ctrlplane.project=cp-%s %s sh -c '%s' >/dev/null", prober, id, id, helper.IMAGE1, loop))
    assert.are.equal(0, rc)
    helper.sleep(1.0)
    local events = {}
    local res, err = p:deploy({instance_id = id, release_id = "zd-2",
      services = {{name = "web", image = helper.IMAGE2}}},
      {on_event = function(ev) if ev.type == "service" then events[#events + 1] = ev.action end end})
    assert(res, err)
    helper.sleep(1.0)
    helper.sh("docker stop -t 1 " .. prober .. " >/dev/null")
    local logs = helper.sh("docker logs " .. prober .. " 2>&1")
    helper.sh("docker rm -f " .. prober .. " >/dev/null")
    local ok_count = select(2, logs:gsub("ok\n", ""))
    local fail_count = select(2, logs:gsub("FAIL\n", ""))
    assert.are.equal(0, fail_count, logs:sub(1, 2000))
    assert.is_true(ok_count > 30, "only " .. ok_count .. " requests were made")
    -- start-first: the new container started before the old one stopped
    assert.are.same({"created", "started", "stopped"}, events)
    local st = assert(p:status(id))
    assert.are.equal(helper.IMAGE2, projects.inspect(st.services.web.provider_ref).Config.Image)
    assert.are.equal("cp-" .. id .. "-web", projects.inspect(st.services.web.provider_ref).Name:sub(2))
  end)

  it("keeps the recreate strategy available", function()
    local id = new_id("recreate")
    local first = assert(p:provision(projects.three(id)))
    local events = {}
    assert(p:deploy({instance_id = id, strategy = "recreate", services = {{name = "web", image = helper.IMAGE2}}},
      {on_event = function(ev) if ev.type == "service" then events[#events + 1] = ev.action end end}))
    assert.are.same({"stopped", "created", "started"}, events)
    local st = assert(p:status(id))
    assert.are_not.equal(first.service_refs.web, st.services.web.provider_ref)
    assert.are.equal("running", st.state)
  end)

  it("reports exactly what works in capabilities", function()
    local caps = {}
    for _, c in ipairs(p:capabilities()) do caps[c] = true end
    for _, want in ipairs({"provision", "deploy", "rollback", "scale", "exec", "logs", "volumes",
        "strategy:recreate", "strategy:rolling", "strategy:blue-green", "strategy:canary"}) do
      assert.is_true(caps[want], want)
    end
    assert.is_nil(caps["gpu"])
    assert.is_true(json.is_array(p:capabilities()))
  end)
end)
