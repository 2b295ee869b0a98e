-- Nothing left unseen (issue #12 items 7-10), on the real daemon: status
-- never says ready over a hole, re-provisioning repairs every hole, a
-- changed service is replaced atomically, a deploy killed at any point is
-- brought back to one generation per service, and readiness without a
-- health check means "still running, no restart, after the grace period".
local json = require("ctrlplane.docker.json")
local helper = require("support.helper")
local projects = require("support.projects")

local function cname(id, svc, replica)
  if replica and replica > 1 then return string.format("cp-%s-%s_%d", id, svc, replica) end
  return string.format("cp-%s-%s", id, svc)
end

local function docker(args)
  local out, rc = helper.sh("docker " .. args .. " 2>&1")
  assert(rc == 0, "docker " .. args .. ": " .. tostring(out))
  return out
end

-- Every container of the project: {name = inspect}.
local function members(id)
  local c = helper.client()
  local res = assert(c:request("GET", "/containers/json", {query = {all = true,
    filters = json.encode({label = {"ctrlplane.project=cp-" .. id}})}}))
  c:close()
  local out = {}
  for _, m in ipairs(json.decode(res.body)) do
    out[m.Names[1]:sub(2)] = projects.inspect(m.Id)
  end
  return out
end

-- Exactly the expected containers, each running, unpaused, on the project
-- network under its service alias.
local function assert_exactly(id, expected)
  local got = members(id)
  local names = {}
  for n in pairs(got) do names[#names + 1] = n end
  table.sort(names)
  local want = {}
  for n, svc in pairs(expected) do
    want[#want + 1] = n
    local c = got[n]
    if c then
      assert.are.equal("running", c.State.Status, n .. " is " .. c.State.Status)
      local net = c.NetworkSettings.Networks["cp-" .. id .. "-net"]
      assert.is_truthy(net, n .. " is not on the project network")
      assert.matches("," .. svc .. ",", "," .. table.concat(net.Aliases or {}, ",") .. ",",
        1, true)
    end
  end
  table.sort(want)
  assert.are.same(want, names)
end

-- web (main, published port) and side (sidecar); optional web replicas.
local function request(id, replicas)
  return {
    instance_id = id, tenant_id = "ten_robust", name = "robust", kind = "deployment",
    services = {
      {name = "web", role = "main", image = helper.IMAGE1, command = projects.WEB_CMD,
        ports = {{container = 8080}}, env = {GREETING = "hello"},
        resources = {replicas = replicas or 1}},
      {name = "side", role = "sidecar", image = helper.IMAGE1, depends_on = {"web"},
        command = projects.IDLE_CMD},
    },
  }
end

local function web_and_side(id, replicas)
  local e = {[cname(id, "side")] = "side"}
  for r = 1, replicas or 1 do e[cname(id, "web", r)] = "web" end
  return e
end

local function assert_not_ready(st, svc)
  assert.is_false(st.ready, "status says ready over a hole: " .. json.encode(st))
  assert.are_not.equal("running", st.state)
  assert.matches(svc, st.message, 1, true)
  assert.is_false(st.services[svc].ready)
  assert.are_not.equal("running", st.services[svc].state)
end

describe("nothing left unseen", function()
  local session = projects.session()
  local p
  local new_id = session.new_id

  setup(function()
    p = session.start()
  end)

  teardown(session.finish)

  describe("status over holes, repaired by re-provisioning (#12.7)", function()
    -- each row: how the hole is made, the service it names, replicas of web
    local rows = {
      {"a service container removed", "side", 1, function(id) docker("rm -f " .. cname(id, "side")) end},
      {"a replica removed", "web", 3, function(id) docker("rm -f " .. cname(id, "web", 2)) end},
      {"the last replica removed", "web", 3, function(id) docker("rm -f " .. cname(id, "web", 3)) end},
      {"a replica stopped", "web", 2, function(id) docker("stop -t 1 " .. cname(id, "web", 2)) end},
      {"a container paused", "side", 1, function(id) docker("pause " .. cname(id, "side")) end},
      {"a container disconnected from the project network", "web", 1, function(id)
        docker(string.format("network disconnect -f cp-%s-net %s", id, cname(id, "web")))
      end},
    }
    for _, row in ipairs(rows) do
      local what, svc, replicas, make_hole = row[1], row[2], row[3], row[4]
      it(what .. ": status names " .. svc .. ", re-provision repairs it", function()
        local id = new_id("robust_hole")
        local req = request(id, replicas)
        assert(p:provision(req))
        local st = assert(p:status(id))
        assert.is_true(st.ready)
        make_hole(id)
        st = assert(p:status(id))
        assert_not_ready(st, svc)
        local res, err = p:provision(request(id, replicas))
        assert(res, err)
        st = assert(p:status(id))
        assert.are.equal("running", st.state, json.encode(st))
        assert.is_true(st.ready)
        assert_exactly(id, web_and_side(id, replicas))
      end)
    end

    it("a container Docker restarted once is kept by a re-provision, not failed", function()
      local id = new_id("robust_restarted")
      local first = assert(p:provision(request(id)))
      -- the sidecar ends by itself (its TERM trap exits 0): Docker restarts it
      docker("exec " .. cname(id, "side") .. " kill 1")
      local c
      for _ = 1, 100 do
        c = projects.inspect(cname(id, "side"))
        if c.RestartCount >= 1 and c.State.Status == "running" then break end
        helper.sleep(0.1)
      end
      assert.are.equal(1, c.RestartCount)
      local res, err = p:provision(request(id))
      assert(res, err)
      assert.are.same(first.service_refs, res.service_refs)
      assert.is_true(assert(p:status(id)).ready)
    end)

    it("a hole is seen from another process too (the CLI)", function()
      local id = new_id("robust_cli")
      assert(p:provision(request(id, 2)))
      docker("rm -f " .. cname(id, "web", 2))
      local out, rc = helper.cpdocker("--json status " .. id)
      assert.are.equal(0, rc, out)
      local st = json.decode(out)
      assert_not_ready(st, "web")
    end)

    it("scaling down and removing a service are not holes", function()
      local id = new_id("robust_shrink")
      assert(p:provision(request(id, 3)))
      assert(p:scale(id, {replicas = 1}))
      local st = assert(p:status(id))
      assert.is_true(st.ready, json.encode(st))
      local req = request(id, 1)
      table.remove(req.services, 2)
      assert(p:provision(req))
      st = assert(p:status(id))
      assert.is_true(st.ready, json.encode(st))
      assert.is_nil(st.services.side)
    end)
  end)

  describe("re-provision is atomic per service (#12.8)", function()
    it("a changed service that fails its gate leaves the old one serving", function()
      local id = new_id("robust_atomic")
      local first = assert(p:provision(request(id)))
      local req = request(id)
      req.services[1].image = helper.IMAGE2
      req.services[1].health_check = {port = 9, interval = "200ms", timeout = "1s", retries = 2}
      local res, err = p:provision(req)
      assert.is_nil(res)
      assert.matches("web", err)
      local st = assert(p:status(id))
      assert.are.equal("running", st.state, json.encode(st))
      assert.is_true(st.ready)
      assert.are.equal(first.service_refs.web, st.services.web.provider_ref)
      assert.matches("version 1", assert(projects.fetch(projects.public_port(first, "web"), "/")))
      assert_exactly(id, web_and_side(id))
    end)

    it("a changed service comes up before the old one goes", function()
      local id = new_id("robust_swap")
      local first = assert(p:provision(request(id)))
      local req = request(id)
      req.services[1].image = helper.IMAGE2
      local events = {}
      local res = assert(p:provision(req, {on_event = function(ev)
        if ev.type == "service" and ev.service == "web" then events[#events + 1] = ev.action end
      end}))
      assert.are_not.equal(first.service_refs.web, res.service_refs.web)
      assert.are.equal(first.service_refs.side, res.service_refs.side)
      assert.are.same({"created", "started", "stopped"}, events)
      assert.matches("version 2", assert(projects.fetch(projects.public_port(res, "web"), "/")))
      assert_exactly(id, web_and_side(id))
    end)
  end)

  describe("a deploy killed mid-way (#12.9)", function()
    -- Runs `cpdocker COMMAND FILE` (deploy by default) with the request in
    -- FILE and CP_DOCKER_TEST_PAUSE=point, waits until it reports that it
    -- paused there, and kills it with SIGKILL.
    local function killed_run(point, body, command)
      local file = os.tmpname()
      local log = os.tmpname()
      local f = assert(io.open(file, "w"))
      f:write(json.encode(body))
      f:close()
      local pid = helper.sh(string.format(
        "CP_DOCKER_TEST_PAUSE=%s CP_DOCKER_STOP_TIMEOUT=2 ./cpdocker %s %s >%s 2>&1 & echo $!",
        point, command or "deploy", file, log))
      pid = assert(tonumber(pid:match("%d+")))
      local text = ""
      local deadline = helper.clock() + 90
      while helper.clock() < deadline do
        local lf = io.open(log, "r")
        text = lf and lf:read("a") or ""
        if lf then lf:close() end
        if text:find("test pause at " .. point, 1, true) then break end
        helper.sleep(0.1)
      end
      helper.sh("kill -9 " .. pid)
      os.remove(file)
      os.remove(log)
      -- the instance lock is the kernel's: it went with the process
      assert.matches("test pause at " .. point, text, 1, true)
    end
    local function killed_deploy(id, point, deploy)
      killed_run(point, deploy)
      return id
    end

    local both = function(id, strategy)
      return {instance_id = id, release_id = "rel-killed", strategy = strategy,
        services = {{name = "web", image = helper.IMAGE2}, {name = "side", env = {MODE = "2"}}}}
    end

    -- point, strategy, whether web has a canonical running container at the
    -- pause, what brings the instance back
    local rows = {
      {"next-started", "rolling", true, "deploy"},
      {"old-draining", "rolling", true, "deploy"},
      {"old-draining", "rolling", true, "provision"},
      {"old-retired", "rolling", false, "provision"},
      {"old-retired", "rolling", false, "deploy"},
      {"old-stopped", "recreate", false, "deploy"},
      {"old-stopped", "recreate", false, "deprovision"},
      {"unit-done", "rolling", true, "provision"},
      {"new-started", "recreate", true, "provision"},
    }
    for _, row in ipairs(rows) do
      local point, strategy, web_there, recover = row[1], row[2], row[3], row[4]
      it(string.format("killed at %s (%s), then %s: one generation per service", point, strategy,
        recover), function()
        local id = new_id("robust_kill")
        assert(p:provision(request(id)))
        killed_deploy(id, point, both(id, strategy))
        local st = assert(p:status(id))
        if not web_there then assert_not_ready(st, "web") end
        if st.ready then
          -- ready means every service has its running container
          assert.are.equal("running", projects.inspect(cname(id, "web")).State.Status)
          assert.are.equal("running", projects.inspect(cname(id, "side")).State.Status)
        end
        if recover == "deprovision" then
          assert(p:deprovision(id))
          assert.are.same({}, projects.leftovers(id))
          return
        end
        if recover == "deploy" then
          local res, err = p:deploy(both(id, strategy))
          assert(res, err)
        else
          local res, err = p:provision(request(id))
          assert(res, err)
        end
        st = assert(p:status(id))
        assert.are.equal("running", st.state, json.encode(st))
        assert.is_true(st.ready)
        assert_exactly(id, web_and_side(id))
        local image = projects.inspect(cname(id, "web")).Config.Image
        assert.are.equal(recover == "deploy" and helper.IMAGE2 or helper.IMAGE1, image)
      end)
    end

    it("a re-provision killed while it replaced a service: the next one finishes the job", function()
      local id = new_id("robust_killre")
      assert(p:provision(request(id)))
      local changed = request(id)
      changed.services[1].image = helper.IMAGE2
      killed_run("old-retired", changed, "provision")
      assert_not_ready(assert(p:status(id)), "web")
      local res, err = p:provision(changed)
      assert(res, err)
      local st = assert(p:status(id))
      assert.is_true(st.ready, json.encode(st))
      assert_exactly(id, web_and_side(id))
      assert.are.equal(helper.IMAGE2, projects.inspect(cname(id, "web")).Config.Image)
    end)

    it("a scale or a rollback after a killed deploy sees one generation too", function()
      local id = new_id("robust_killscale")
      assert(p:provision(request(id)))
      killed_deploy(id, "old-retired", both(id, "rolling"))
      assert(p:scale(id, {replicas = 2}))
      local st = assert(p:status(id))
      assert.is_true(st.ready, json.encode(st))
      assert_exactly(id, web_and_side(id, 2))
      assert(p:deploy(both(id, "recreate")))
      killed_deploy(id, "new-started", {instance_id = id, release_id = "rel-3", strategy = "recreate",
        services = {{name = "side", env = {MODE = "3"}}}})
      local res, err = p:rollback(id, "initial")
      assert(res, err)
      st = assert(p:status(id))
      assert.is_true(st.ready, json.encode(st))
      assert_exactly(id, web_and_side(id, 2))
      assert.are.equal(helper.IMAGE1, projects.inspect(cname(id, "web")).Config.Image)
      local env = table.concat(projects.inspect(cname(id, "side")).Config.Env or {}, "\n")
      assert.is_nil(env:find("MODE=", 1, true), env)
    end)
  end)

  describe("readiness without a health check (#12.10)", function()
    local crash_cmd = {"sh", "-c",
      "if [ \"$CRASH\" = 1 ]; then sleep 1; exit 3; fi; trap 'exit 0' TERM; "
        .. "httpd -f -p 8080 -h /www & wait"}

    it("a main that crashes a second after it started fails the provision", function()
      local id = new_id("robust_crash")
      local req = request(id)
      req.services[1].command = crash_cmd
      req.services[1].env = {CRASH = "1"}
      local res, err, code = p:provision(req)
      assert.is_nil(res)
      assert.are.equal("service_failed", code)
      assert.matches("service web", err)
      assert.are.same({}, projects.leftovers(id))
    end)

    it("a deploy (recreate) whose new container crashes after a second is undone", function()
      local id = new_id("robust_crashdep")
      local req = request(id)
      req.services[1].command = crash_cmd
      local first = assert(p:provision(req))
      local res, err = p:deploy({instance_id = id, strategy = "recreate",
        services = {{name = "web", env = {CRASH = "1"}}}})
      assert.is_nil(res)
      assert.matches("web", err)
      local st = assert(p:status(id))
      assert.is_true(st.ready, json.encode(st))
      assert.are.equal(first.service_refs.web, st.services.web.provider_ref)
      assert_exactly(id, web_and_side(id))
    end)

    it("a re-provision whose changed service crashes after a second keeps the old one", function()
      local id = new_id("robust_crashre")
      local req = request(id)
      req.services[1].command = crash_cmd
      local first = assert(p:provision(req))
      req.services[1].env = {CRASH = "1"}
      local res, err = p:provision(req)
      assert.is_nil(res)
      assert.matches("web", err)
      local st = assert(p:status(id))
      assert.is_true(st.ready, json.encode(st))
      assert.are.equal(first.service_refs.web, st.services.web.provider_ref)
    end)
  end)
end)
