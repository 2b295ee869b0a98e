-- What only a multi-node swarm shows, on a real 3-node lab
-- (spec/support/swarm_lab.sh): replicas on distinct nodes, siblings reaching
-- the main service by name across nodes, a failed init job undone, a deploy
-- whose new tasks never become healthy ending with the old spec serving, a
-- node stopped mid-life (degraded, rescheduled, recovered; logs reported
-- incomplete meanwhile), deprovision leaving nothing on any node.
local helper = require("support.helper")
local json = require("ctrlplane.docker.json")
local projects = require("support.projects")
local swarm = require("support.swarm")

local function web_request(id, replicas)
  return {
    instance_id = id, tenant_id = "ten_swarm", name = "swarm spec",
    services = {
      {name = "web", role = "main", image = helper.IMAGE1,
        command = {"sh", "-c", "trap 'exit 0' TERM; echo web on $(hostname); httpd -f -p 8080 -h /www & wait"},
        ports = {{container = 8080}}, resources = {replicas = replicas or 3},
        health_check = {path = "/index.html", port = 8080, interval = "500ms", retries = 3}},
      {name = "side", role = "sidecar", image = helper.IMAGE1, depends_on = {"web"},
        command = projects.IDLE_CMD},
    },
  }
end

local function get(url)
  local out, rc = helper.sh("curl -s --max-time 3 " .. url .. "/index.html")
  return rc == 0 and out or nil
end

-- What carries the instance's project label on node i: containers, volumes, networks
local function on_node(l, i, id)
  local filter = json.encode({label = {"ctrlplane.project=cp-" .. id}})
  local out = {}
  for _, what in ipairs({"/containers/json", "/volumes", "/networks"}) do
    local v = swarm.get(l.socks[i], what, {filters = filter, all = "true"})
    if what == "/volumes" then v = v.Volumes or {} end
    for _, item in ipairs(v) do out[#out + 1] = what .. ":" .. (item.Names and item.Names[1] or item.Name) end
  end
  return out
end

describe("swarm backend #swarm", function()
  local l, p
  local ids = {}
  local function new_id(tag)
    local id = helper.instance_id(tag)
    ids[#ids + 1] = id
    return id
  end

  setup(function()
    l = swarm.up(3)
    p = projects.provider({backend = "swarm", host = l.manager, nodes = l.nodes})
  end)

  teardown(function()
    if p then
      for _, id in ipairs(ids) do p:deprovision(id) end
      p:close()
    end
    swarm.down()
  end)

  it("reports the swarm in health and info; warns when a mode needs IPVS", function()
    local h = p:health_check()
    assert.is_true(h.healthy, h.message)
    assert.matches("nodes ready 3/3", h.message)
    assert.equal("swarm", p:info().backend)
    local vip = projects.provider({backend = "swarm", host = l.manager, endpoint_mode = "vip"})
    assert.matches("IPVS", vip:health_check().message)
    vip:close()
    -- a worker is not a manager
    local w = projects.provider({backend = "swarm", host = l.socks[2]})
    local wh = w:health_check()
    w:close()
    assert.is_false(wh.healthy)
    assert.matches("not a swarm manager", wh.message)
  end)

  describe("a 3-replica web service and a sidecar", function()
    local id, res

    setup(function()
      id = new_id("swrep")
      local err
      res, err = p:provision(web_request(id, 3))
      assert(res, err)
    end)

    it("spreads the replicas over distinct nodes, each serving on its node's address", function()
      local nodes, urls = {}, {}
      for _, e in ipairs(res.endpoints) do
        if e.public then
          nodes[e.node] = true
          urls[#urls + 1] = e.url
        end
      end
      assert.same({["swarm-node1"] = true, ["swarm-node2"] = true, ["swarm-node3"] = true}, nodes)
      assert.equal(3, #urls)
      for _, u in ipairs(urls) do
        assert.matches("^http://10%.231%.0%.1%d:%d+$", u)
        assert.matches("version 1", get(u) or "", nil, false, "GET " .. u)
      end
      local st = assert(p:status(id))
      assert.equal(3, st.services.web.replicas)
      assert.equal(3, st.services.web.running)
    end)

    it("lets the sidecar reach the main service by its plain name across nodes", function()
      local r = assert(p:exec(id, {service = "side",
        command = {"sh", "-c", "for i in 1 2 3; do timeout 3 wget -q -O - http://web:8080/index.html; done"}}))
      assert.equal(0, r.exit_code, r.stderr)
      local _, n = r.stdout:gsub("version 1", "")
      assert.equal(3, n)
    end)

    it("runs exec in a chosen task (slot), on its node", function()
      local r = assert(p:exec(id, {command = {"cat", "/VERSION"}, task = 2}))
      assert.equal("1\n", r.stdout)
      assert.matches("^swarm%-node%d$", r.node)
    end)

    it("ends a deploy whose new tasks never become healthy with the old spec serving", function()
      local out, err, code = p:deploy({instance_id = id, release_id = "broken",
        services = {{name = "web", image = helper.IMAGE2,
          health_check = {path = "/missing.html", port = 8080, interval = "500ms", retries = 2}}}})
      assert.is_nil(out)
      assert.equal("deploy_failed", code)
      assert.matches("previous spec is serving", err)
      local st = assert(p:status(id))
      assert.equal("running", st.state)
      assert.is_true(st.ready)
      assert.equal("initial", st.metadata.release)
      assert.same({"initial"}, st.releases)
      assert.same({"initial"}, st.metadata.releases)
      assert.equal("1\n", assert(p:exec(id, {command = {"cat", "/VERSION"}})).stdout)
      for _, e in ipairs(st.endpoints) do
        if e.public then assert.matches("version 1", get(e.url) or "") end
      end
    end)

    it("a node stopped mid-life: degraded, tasks rescheduled, logs incomplete, then recovered", function()
      local out, rc = swarm.lab("stop-node 3")
      assert.equal(0, rc, out)
      -- the manager marks the node down (~12-16 s), the status turns not ready
      local degraded, t = swarm.wait_for(60, function()
        local st = assert(p:status(id))
        if not st.ready then return st end
      end)
      assert.truthy(degraded, "status never degraded (" .. t .. " s)")
      assert.equal("degraded", degraded.state)
      assert.equal("degraded", degraded.services.web.state)
      assert.matches("web: 2/3 replicas running", degraded.message)
      -- Swarm reschedules the lost tasks on the other nodes
      local again
      again, t = swarm.wait_for(60, function()
        local st = assert(p:status(id))
        if st.ready and st.services.web.running == 3 then return st end
      end)
      assert.truthy(again, "not rescheduled after " .. t .. " s")
      local nodes = {}
      for _, e in ipairs(again.endpoints) do
        if e.public then nodes[#nodes + 1] = e.node end
      end
      assert.equal(3, #nodes)
      for _, n in ipairs(nodes) do assert.are_not.equal("swarm-node3", n) end
      -- the logs of the tasks that ran on the lost node cannot be read: said so
      local s = assert(p:logs(id, {}))
      local evs = assert(s:collect(20))
      s:close()
      assert.matches("incomplete log stream", s:incomplete() or "")
      assert.is_true(evs[#evs].incomplete)
      -- resources and exec skip the lost node
      local u = assert(p:resources(id))
      assert.equal(3, u.services.web.running)
      out, rc = swarm.lab("start-node 3")
      assert.equal(0, rc, out)
      local ready
      ready, t = swarm.wait_for(60, function()
        return swarm.node_states(l)["swarm-node3"] == "ready"
      end)
      assert.truthy(ready, "node 3 not ready after " .. t .. " s")
      local st = assert(p:status(id))
      assert.equal("running", st.state)
      assert.is_true(st.ready)
    end)

    it("deprovision leaves nothing on any node", function()
      assert(p:deprovision(id))
      assert.same({}, swarm.get(l.manager, "/services",
        {filters = json.encode({label = {"ctrlplane.project=cp-" .. id}})}))
      for i = 1, 3 do
        assert.same({}, on_node(l, i, id), "node " .. i)
      end
    end)
  end)

  it("undoes a provision whose init job fails, naming its exit code and last log lines", function()
    local id = new_id("swinit")
    local req = web_request(id, 1)
    table.insert(req.services, 1, {name = "migrate", role = "init", image = helper.IMAGE1,
      command = {"sh", "-c", "echo migrating; echo cannot reach database >&2; exit 7"},
      volumes = {{name = "data", mount_path = "/data"}}})
    local res, err, code = p:provision(req)
    assert.is_nil(res)
    assert.equal("init_failed", code)
    assert.matches("init service migrate exited with code 7", err)
    assert.matches("cannot reach database", err)
    assert.equal("destroyed", assert(p:status(id)).state)
    for i = 1, 3 do
      assert.same({}, on_node(l, i, id), "node " .. i)
    end
  end)

  it("refuses a disk limit (Swarm has none per task), naming the field, creating nothing", function()
    local id = new_id("swdisk")
    local req = web_request(id, 1)
    req.services[1].resources.disk_mb = 100
    local res, err, code, errors = p:provision(req)
    assert.is_nil(res)
    assert.equal("invalid", code)
    assert.matches("services%[0%]%.resources%.disk_mb: Swarm services have no per%-task disk limit", err)
    assert.equal("services[0].resources.disk_mb", errors[1].field)
    assert.equal("destroyed", assert(p:status(id)).state)
    local _, serr, scode = p:scale(id, {replicas = 1, disk_mb = 10})
    assert.equal("invalid", scode)
    assert.matches("spec%.disk_mb", serr)
  end)

  it("puts back the services a deploy already updated when a later one fails", function()
    local id = new_id("swatom")
    assert(p:provision(web_request(id, 1)))
    local out, err, code = p:deploy({instance_id = id, release_id = "half", services = {
      {name = "web", image = helper.IMAGE2},
      {name = "side", image = "cpdocker-test/no-such-image:9"}}})
    assert.is_nil(out)
    assert.equal("deploy_failed", code)
    assert.matches("service side", err)
    assert.matches("No such image", err)
    local st = assert(p:status(id))
    assert.is_true(st.ready)
    assert.equal("initial", st.metadata.release)
    -- web was updated first (rollout order), and is back on the old image
    assert.equal("1\n", assert(p:exec(id, {command = {"cat", "/VERSION"}})).stdout)
    assert(p:deprovision(id))
  end)

  it("re-provisions as scripts/reprovision.lua decides: keep, start, replace, remove", function()
    local id = new_id("swrepro")
    local first = assert(p:provision(web_request(id, 1)))
    -- the same request again: every service kept (same service ids)
    local again = assert(p:provision(web_request(id, 1)))
    assert.same(first.service_refs, again.service_refs)
    -- stopped, then provisioned again: started
    assert(p:stop(id))
    assert.equal("stopped", assert(p:status(id)).state)
    assert(p:provision(web_request(id, 1)))
    assert.equal("running", assert(p:status(id)).state)
    -- web changed, side no longer listed: web replaced in place, side removed
    local req = web_request(id, 1)
    req.services[1].env = {GREETING = "changed"}
    table.remove(req.services, 2)
    local third = assert(p:provision(req))
    assert.equal(first.service_refs.web, third.service_refs.web)
    local st = assert(p:status(id))
    assert.is_nil(st.services.side)
    assert.is_true(st.ready)
    assert.equal("changed\n", assert(p:exec(id, {command = {"sh", "-c", "echo $GREETING"}})).stdout)
    -- an annotation only: the service's labels change, no task is replaced
    req.services[1].annotations = {["example.com/owner"] = "team-b"}
    local fourth = assert(p:provision(req))
    assert.equal("replaced", fourth.changes.web:match("^%a+"))
    local svc = swarm.get(l.manager, "/services/cp-" .. id .. "-web")
    assert.equal("team-b", svc.Spec.Labels["example.com/owner"])
    assert.is_true(assert(p:status(id)).ready)
    assert(p:deprovision(id))
  end)

  it("is selected by cpdocker --backend swarm", function()
    local out, rc = helper.cpdocker("--backend swarm --host " .. l.manager .. " --json health")
    assert.equal(0, rc, out)
    local h = json.decode(out)
    assert.is_true(h.healthy)
    assert.equal(3, h.nodes_ready)
    -- the JSON-RPC server, configured from the environment
    out, rc = helper.sh("printf '%s\\n' '{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"health_check\"}' | "
      .. "CP_DOCKER_BACKEND=swarm CP_DOCKER_HOST=" .. l.manager .. " ./cpdocker serve")
    assert.equal(0, rc, out)
    local reply = json.decode(out)
    assert.is_true(reply.result.healthy, out)
    assert.matches("nodes ready 3/3", reply.result.message)
    out, rc = helper.cpdocker("--backend nomad health")
    assert.equal(1, rc)
    assert.matches("backend: must be engine or swarm", out)
  end)

  it("fails resources and exec with how to configure when node daemons are not given", function()
    local id = new_id("swnon")
    assert(p:provision(web_request(id, 1)))
    local bare = projects.provider({backend = "swarm", host = l.manager, nodes = ""})
    local u, err, code = bare:resources(id)
    assert.is_nil(u)
    assert.equal("not_configured", code)
    assert.matches("CP_DOCKER_NODES", err)
    local x, xerr = bare:exec(id, {command = {"true"}})
    assert.is_nil(x)
    assert.matches("CP_DOCKER_NODES", xerr)
    -- status and logs need only the manager
    assert.equal("running", assert(bare:status(id)).state)
    bare:close()
    assert(p:deprovision(id))
  end)
end)
