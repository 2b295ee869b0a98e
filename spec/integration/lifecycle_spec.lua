-- The lifecycle against the real daemon: provision, status, re-provision,
-- start/stop/restart, deploy and deprovision.
local json = require("ctrlplane.docker.json")
local helper = require("support.helper")
local projects = require("support.projects")

local function names_and_ids(result)
  local out = {}
  for k, v in pairs(result.service_refs) do out[k] = v end
  return out
end

describe("lifecycle", function()
  local session = projects.session()
  local p
  local new_id = session.new_id

  setup(function()
    p = session.start()
  end)

  teardown(session.finish)

  describe("a provisioned three-service project", function()
    local id, res, events

    setup(function()
      id = new_id("three")
      events = {}
      local err
      res, err = p:provision(projects.three(id), {on_event = function(ev) events[#events + 1] = ev end})
      assert(res, err)
    end)

    it("returns the contract's ProvisionResult", function()
      assert.are.equal("docker:cp-" .. id, res.provider_ref)
      for _, svc in ipairs({"setup", "web", "side"}) do
        assert.matches("^%x+$", res.service_refs[svc])
      end
      local public, private
      for _, e in ipairs(res.endpoints) do
        if e.public then public = e else private = e end
      end
      assert.are.equal("http://cp-" .. id .. "-web:8080", private.url)
      assert.are.equal(8080, private.port)
      assert.matches("^http://127%.0%.0%.1:%d+$", public.url)
      assert.are.equal("tcp", public.protocol)
    end)

    it("serves the web endpoint on 127.0.0.1 only", function()
      local port = projects.public_port(res, "web")
      assert.matches("version 1", assert(projects.fetch(port, "/")))
      local c = projects.inspect(res.service_refs.web)
      local binding = c.NetworkSettings.Ports["8080/tcp"][1]
      assert.are.equal("127.0.0.1", binding.HostIp)
    end)

    it("ran the init to completion before main started, in dependency order", function()
      local init = projects.inspect(res.service_refs.setup)
      local web = projects.inspect(res.service_refs.web)
      local side = projects.inspect(res.service_refs.side)
      assert.are.equal("exited", init.State.Status)
      assert.are.equal(0, init.State.ExitCode)
      assert.is_true(init.State.FinishedAt <= web.State.StartedAt)
      assert.is_true(web.State.StartedAt <= side.State.StartedAt)
      local order = {}
      for _, ev in ipairs(events) do
        if ev.type == "service" and ev.action == "started" then order[#order + 1] = ev.service end
      end
      assert.are.same({"setup", "web", "side"}, order)
    end)

    it("shares the named volume: the web container sees what init wrote", function()
      local out, rc = helper.sh("docker exec cp-" .. id .. "-web cat /data/init-ran")
      assert.are.equal(0, rc)
      assert.matches("^%d+", out)
    end)

    it("labels, limits, restart policies, env, command and aliases", function()
      local web = projects.inspect(res.service_refs.web)
      local l = web.Config.Labels
      assert.are.equal(id, l["ctrlplane.instance"])
      assert.are.equal("cp-" .. id, l["ctrlplane.project"])
      assert.are.equal("ten_spec", l["ctrlplane.tenant"])
      assert.are.equal("web", l["ctrlplane.service"])
      assert.are.equal("main", l["ctrlplane.role"])
      assert.are.equal("lifecycle", l["example.com/suite"])
      assert.are.equal("web-team", l["example.com/owner"])
      assert.are.equal(250000000, web.HostConfig.NanoCpus)
      assert.are.equal(32 * 1048576, web.HostConfig.Memory)
      assert.are.equal("unless-stopped", web.HostConfig.RestartPolicy.Name)
      assert.are.equal("no", projects.inspect(res.service_refs.setup).HostConfig.RestartPolicy.Name)
      assert.are.same(projects.WEB_CMD, web.Config.Entrypoint)
      local env = table.concat(web.Config.Env, "\n")
      assert.matches("GREETING=hello", env)
      local net = web.NetworkSettings.Networks["cp-" .. id .. "-net"]
      assert.is_table(net)
      local aliases = table.concat(net.Aliases, ",")
      assert.matches("web", aliases)
    end)

    it("reports status running and ready, with every service", function()
      local st = assert(p:status(id))
      assert.are.equal("running", st.state)
      assert.is_true(st.ready)
      assert.are.equal(0, st.restarts)
      assert.matches("^%d%d%d%d%-", st.started_at)
      assert.are.equal("running", st.services.web.state)
      assert.are.equal("running", st.services.side.state)
      assert.are.equal("stopped", st.services.setup.state) -- exited 0: does not count against readiness
      assert.is_true(st.services.setup.ready)
      assert.are.equal(res.service_refs.web, st.services.web.provider_ref)
      assert.are.equal(2, #st.endpoints)
    end)

    it("re-provisions idempotently: same container ids, no duplicates", function()
      local again = assert(p:provision(projects.three(id)))
      assert.are.same(names_and_ids(res), names_and_ids(again))
      local list = assert(helper.client():request("GET", "/containers/json", {query = {all = true,
        filters = json.encode({label = {"ctrlplane.project=cp-" .. id}})}}))
      assert.are.equal(3, #json.decode(list.body))
    end)
  end)

  it("re-provision replaces a changed service, keeps the rest, removes unlisted ones", function()
    local id = new_id("repro")
    local req = projects.three(id)
    local first = assert(p:provision(req))
    req.services[3].env = {MODE = "changed"}
    local second = assert(p:provision(req))
    assert.are.equal(first.service_refs.web, second.service_refs.web)
    assert.are.equal(first.service_refs.setup, second.service_refs.setup)
    assert.are_not.equal(first.service_refs.side, second.service_refs.side)
    table.remove(req.services, 3)
    local third = assert(p:provision(req))
    assert.is_nil(third.service_refs.side)
    assert.is_nil(projects.inspect("cp-" .. id .. "-side"))
    assert.are.equal(first.service_refs.web, third.service_refs.web)
  end)

  it("a half-failed provision removes what it created (daemon error on the third service)", function()
    -- something else holds the host port the third service asks for
    local blocker = "cp-spec-blocker-" .. helper.instance_id()
    finally(function() helper.sh("docker rm -f " .. blocker .. " >/dev/null 2>&1") end)
    local port = 20000 + math.random(0, 9999)
    local _, rc = helper.sh(string.format("docker run -d --name %s -p 127.0.0.1:%d:80 %s %s >/dev/null",
      blocker, port, helper.IMAGE1, "sleep 60"))
    assert.are.equal(0, rc)
    local id = new_id("half")
    local req = projects.three(id)
    req.services[3].ports = {{container = 80, host = port}}
    local res, err = p:provision(req)
    helper.sh("docker rm -f " .. blocker .. " >/dev/null")
    assert.is_nil(res)
    assert.matches("side", err)
    assert.are.same({}, projects.leftovers(id))
  end)

  it("a missing image is an error before anything is created", function()
    local id = new_id("noimg")
    local req = projects.three(id)
    req.services[3].image = "127.0.0.1:5000/cpdocker-test/does-not-exist:1"
    local res, err, code = p:provision(req)
    assert.is_nil(res)
    assert.are.equal("image_missing", code)
    assert.matches("does%-not%-exist", err)
    assert.are.same({}, projects.leftovers(id))
  end)

  it("an init that fails reports service, exit code and last log lines, and leaves nothing", function()
    local id = new_id("initfail")
    local req = projects.three(id)
    req.services[1].command = {"sh", "-c", "echo preparing; echo 'schema is broken' >&2; exit 3"}
    local res, err, code = p:provision(req)
    assert.is_nil(res)
    assert.are.equal("init_failed", code)
    assert.matches("init service setup exited with code 3", err)
    assert.matches("schema is broken", err)
    assert.are.same({}, projects.leftovers(id))
  end)

  it("an init that runs too long times out", function()
    local slow = projects.provider({init_timeout = 1})
    local id = new_id("initslow")
    local req = projects.three(id)
    req.services[1].command = {"sleep", "30"}
    local t0 = helper.clock()
    local res, err, code = slow:provision(req)
    assert.is_nil(res)
    assert.are.equal("init_timeout", code)
    assert.matches("did not finish within", err)
    assert.is_true(helper.clock() - t0 < 10)
    assert.are.same({}, projects.leftovers(id))
  end)

  it("pulls an image that is not present from a registry, reporting progress", function()
    local tag = "127.0.0.1:5000/cpdocker-test/pull:" .. helper.instance_id("p"):lower()
    local _, rc = helper.sh(string.format("docker tag %s %s && docker push %s >/dev/null && docker rmi %s >/dev/null",
      helper.IMAGE1, tag, tag, tag))
    assert.are.equal(0, rc)
    local id = new_id("pull")
    local req = projects.three(id)
    req.services[3].image = tag
    local pulls = {}
    local res = assert(p:provision(req, {on_event = function(ev)
      if ev.type == "pull" then pulls[#pulls + 1] = ev end
    end}))
    assert.is_string(res.service_refs.side)
    assert.are.equal("Pulling", pulls[1].status)
    assert.are.equal("Pulled", pulls[#pulls].status)
    assert.is_true(#pulls > 2)
    helper.sh("docker rmi -f " .. tag .. " >/dev/null 2>&1")
  end)

  it("readiness honours a TCP health check", function()
    local id = new_id("tcphc")
    local req = projects.three(id)
    req.services[2].health_check = {port = 8080, interval = "500ms", retries = 3}
    assert(p:provision(req))
    local c = projects.inspect("cp-" .. id .. "-web")
    assert.are.equal("healthy", c.State.Health.Status)
  end)

  it("a main that never becomes healthy fails the provision and leaves nothing", function()
    local id = new_id("unhealthy")
    local req = projects.three(id)
    req.services[2].health_check = {path = "/missing.html", port = 8080, interval = "300ms", retries = 2}
    local res, err, code = p:provision(req)
    assert.is_nil(res)
    assert.are.equal("unhealthy", code)
    assert.matches("web is unhealthy", err)
    assert.are.same({}, projects.leftovers(id))
  end)

  it("stop, start and restart follow the rollout order and never re-run inits", function()
    local id = new_id("ssr")
    local res = assert(p:provision(projects.three(id)))
    local init_before = projects.inspect(res.service_refs.setup).State.FinishedAt
    assert(p:stop(id))
    local st = assert(p:status(id))
    assert.are.equal("stopped", st.state)
    assert.is_false(st.ready)
    local web = projects.inspect(res.service_refs.web)
    local side = projects.inspect(res.service_refs.side)
    assert.is_true(side.State.FinishedAt <= web.State.FinishedAt) -- reverse order
    assert(p:start(id))
    st = assert(p:status(id))
    assert.are.equal("running", st.state)
    assert.is_true(st.ready)
    assert(p:restart(id))
    assert.are.equal("running", assert(p:status(id)).state)
    assert.are.equal(init_before, projects.inspect(res.service_refs.setup).State.FinishedAt)
    assert.are.equal(res.service_refs.web, assert(p:status(id)).services.web.provider_ref)
  end)

  it("status reports an exit code and a failed state", function()
    local id = new_id("crash")
    local res = assert(p:provision(projects.three(id)))
    helper.sh("docker update --restart=no " .. res.service_refs.side .. " >/dev/null")
    helper.sh("docker kill -s KILL " .. res.service_refs.side .. " >/dev/null")
    local st = assert(p:status(id))
    assert.are.equal("failed", st.state)
    assert.is_false(st.ready)
    assert.matches("exited with code 137", st.services.side.message)
    assert.matches("side", st.message)
  end)

  it("deprovision removes containers, network and volumes, and converges", function()
    local id = new_id("deprov")
    assert(p:provision(projects.three(id)))
    assert.is_true(#projects.leftovers(id) >= 5)
    assert(p:deprovision(id))
    assert.are.same({}, projects.leftovers(id))
    assert(p:deprovision(id)) -- absent = success
    local st = assert(p:status(id))
    assert.are.equal("destroyed", st.state)
    local none, err, code = p:start(id)
    assert.is_nil(none)
    assert.are.equal("not_found", code)
    assert.matches("does not exist", err)
  end)

  it("never touches a container without the project label", function()
    local id = new_id("foreign")
    local foreign = "cp-" .. id .. "-web"
    helper.sh(string.format("docker create --name %s %s true >/dev/null", foreign, helper.IMAGE1))
    assert(p:deprovision(id))
    local still = projects.inspect(foreign)
    helper.sh("docker rm -f " .. foreign .. " >/dev/null")
    assert.is_table(still)
  end)

  it("bad input changes nothing on the engine", function()
    local id = new_id("badinput")
    local req = projects.three(id)
    req.services[2].ports = {{container = 99999}}
    local res, err, code, errors = p:provision(req)
    assert.is_nil(res)
    assert.are.equal("invalid", code)
    assert.matches("services%[1%]%.ports%[0%]%.container", err)
    assert.are.equal(1, #errors)
    assert.are.same({}, projects.leftovers(id))
  end)

  describe("deploy", function()
    it("recreates only the listed service with the new image and env, keeping the rest", function()
      local id = new_id("deploy")
      local first = assert(p:provision(projects.three(id)))
      local res = assert(p:deploy({instance_id = id, release_id = "rel-2",
        services = {{name = "web", image = helper.IMAGE2, env = {GREETING = "hi", EXTRA = "1"}}}}))
      assert.are.equal("docker:cp-" .. id, res.provider_ref)
      assert.are.equal("running", res.status)
      local st = assert(p:status(id))
      assert.are_not.equal(first.service_refs.web, st.services.web.provider_ref)
      assert.are.equal(first.service_refs.side, st.services.side.provider_ref)
      assert.are.equal(first.service_refs.setup, st.services.setup.provider_ref)
      assert.are.equal("rel-2", st.metadata.release)
      local web = projects.inspect(st.services.web.provider_ref)
      assert.are.equal(helper.IMAGE2, web.Config.Image)
      local env = table.concat(web.Config.Env, "\n")
      assert.matches("GREETING=hi", env)
      assert.matches("EXTRA=1", env)
      -- kept: command, volumes, labels, limits, alias, published port
      assert.are.same(projects.WEB_CMD, web.Config.Entrypoint)
      assert.are.equal("/data", web.Mounts[1].Destination)
      assert.are.equal("web-team", web.Config.Labels["example.com/owner"])
      assert.are.equal(32 * 1048576, web.HostConfig.Memory)
      assert.matches("web", table.concat(web.NetworkSettings.Networks["cp-" .. id .. "-net"].Aliases, ","))
      local port
      for _, e in ipairs(st.endpoints) do if e.public then port = e.port end end
      assert.matches("version 2", assert(projects.fetch(port, "/")))
      -- nothing retired is left behind
      local list = json.decode(assert(helper.client():request("GET", "/containers/json", {query = {
        all = true, filters = json.encode({label = {"ctrlplane.project=cp-" .. id}})}})).body)
      assert.are.equal(3, #list)
    end)

    it("redeploys on an env-only change", function()
      local id = new_id("envonly")
      local first = assert(p:provision(projects.three(id)))
      assert(p:deploy({instance_id = id, release_id = "r-env",
        services = {{name = "side", env = {LEVEL = "debug"}}}}))
      local st = assert(p:status(id))
      assert.are_not.equal(first.service_refs.side, st.services.side.provider_ref)
      local side = projects.inspect(st.services.side.provider_ref)
      assert.matches("LEVEL=debug", table.concat(side.Config.Env, "\n"))
    end)

    it("restores the previous container when the new one does not become healthy", function()
      local id = new_id("deployfail")
      local first = assert(p:provision(projects.three(id)))
      local res, err = p:deploy({instance_id = id, release_id = "bad",
        services = {{name = "web", image = helper.IMAGE2,
          health_check = {path = "/nope.html", port = 8080, interval = "300ms", retries = 2}}}})
      assert.is_nil(res)
      assert.matches("deploy of service web failed", err)
      assert.matches("previous containers kept running", err) -- start-first: never stopped
      local st = assert(p:status(id))
      assert.are.equal(first.service_refs.web, st.services.web.provider_ref)
      assert.are.equal("running", st.services.web.state)
      assert.are.equal("running", st.state)
      local port
      for _, e in ipairs(st.endpoints) do if e.public then port = e.port end end
      assert.matches("version 1", assert(projects.fetch(port, "/")))
      local list = json.decode(assert(helper.client():request("GET", "/containers/json", {query = {
        all = true, filters = json.encode({label = {"ctrlplane.project=cp-" .. id}})}})).body)
      assert.are.equal(3, #list)
    end)

    it("rejects an unknown service naming the field, changing nothing", function()
      local id = new_id("deploybad")
      local first = assert(p:provision(projects.three(id)))
      local res, err, code = p:deploy({instance_id = id, services = {{name = "db", image = helper.IMAGE2}}})
      assert.is_nil(res)
      assert.are.equal("invalid", code)
      assert.matches("services%[0%]%.name: instance has no service \"db\"", err)
      assert.are.equal(first.service_refs.web, assert(p:status(id)).services.web.provider_ref)
    end)

    it("fails for an instance that does not exist", function()
      local res, _, code = p:deploy({instance_id = "inst_missing_x", services = {{name = "web", image = "x"}}})
      assert.is_nil(res)
      assert.are.equal("not_found", code)
    end)
  end)

  describe("policies", function()
    local function policy_dir(files)
      local d = os.tmpname()
      os.remove(d)
      assert(os.execute("mkdir -p " .. d))
      for name, text in pairs(files) do
        local f = assert(io.open(d .. "/" .. name, "w"))
        f:write(text)
        f:close()
      end
      return d
    end

    it("a custom policy directory changes the reported state", function()
      local id = new_id("policy")
      assert(p:provision(projects.three(id)))
      helper.sh("docker stop -t 10 cp-" .. id .. "-side >/dev/null")
      assert.are.equal("stopped", assert(p:status(id)).state)
      -- this operator's policy: a stopped sidecar leaves the instance running but degraded
      local dir = policy_dir({["status.lua"] = [[
local default_service = function(c)
  if c.docker_state == "running" then return {state = "running", ready = true, message = ""} end
  return {state = "stopped", ready = c.role == "sidecar", message = "down"}
end
return {
  service = default_service,
  aggregate = function(services)
    for _, s in ipairs(services) do
      if s.role == "main" and s.state ~= "running" then
        return {state = s.state, ready = false, message = "main down"}
      end
    end
    return {state = "running", ready = true, message = "degraded: sidecar down"}
  end,
}
]]})
      local custom = projects.provider({policy_dir = dir})
      local st = assert(custom:status(id))
      os.execute("rm -rf " .. dir)
      assert.are.equal("running", st.state)
      assert.is_true(st.ready)
      assert.are.equal("degraded: sidecar down", st.message)
    end)

    it("a broken policy file names file and line, and nothing on the engine changes", function()
      local dir = policy_dir({["rollout.lua"] = "return {\n  plan = function(s)\n    return s\n  end\n  bad\n}\n"})
      local custom = projects.provider({policy_dir = dir})
      local id = new_id("brokenpolicy")
      local res, err, code = custom:provision(projects.three(id))
      os.execute("rm -rf " .. dir)
      assert.is_nil(res)
      assert.are.equal("policy", code)
      assert.truthy(err:find(dir .. "/rollout.lua:5:", 1, true), err)
      assert.are.same({}, projects.leftovers(id))
    end)

    it("a rollout plan that breaks dependency order is refused", function()
      local dir = policy_dir({["rollout.lua"] = [[
return {plan = function(services)
  local names = {}
  for i = #services, 1, -1 do names[#names + 1] = services[i].name end
  return {names}
end}
]]})
      local custom = projects.provider({policy_dir = dir})
      local id = new_id("badplan")
      local res, err, code = custom:provision(projects.three(id))
      os.execute("rm -rf " .. dir)
      assert.is_nil(res)
      assert.are.equal("policy", code)
      assert.matches("before its dependency", err)
      assert.are.same({}, projects.leftovers(id))
    end)
  end)
end)
