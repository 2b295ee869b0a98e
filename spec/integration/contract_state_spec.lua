-- What an instance keeps (issue #11 items 4, 7, 9) on the real daemon: a
-- scale sticks across deploy, rollback, restart and re-provision;
-- stateful_set replicas keep their own volumes; releases pin the image ID.
local json = require("ctrlplane.docker.json")
local helper = require("support.helper")
local projects = require("support.projects")

local function limits(name)
  local c = assert(projects.inspect(name))
  return {c.HostConfig.NanoCpus, c.HostConfig.Memory}
end

local function image_id(ref)
  local c = helper.client()
  local res = assert(c:request("GET", "/images/" .. ref .. "/json"))
  c:close()
  return json.decode(res.body).Id
end

local function sh_ok(cmd)
  local out, rc = helper.sh(cmd .. " 2>&1")
  assert.are.equal(0, rc, cmd .. ": " .. out)
  return out
end

describe("contract state", function()
  local session = projects.session()
  local p
  setup(function() p = session.start() end)
  teardown(session.finish)

  it("a scale sticks across deploy, rollback, restart, scale up and re-provision", function()
    local id = session.new_id("stick")
    local req = projects.three(id) -- web: cpu 250, memory 32
    assert(p:provision(req))
    assert(p:scale(id, {cpu_millis = 750, memory_mb = 48, replicas = 2}))
    local want = {750000000, 48 * 1048576}
    local web, web2 = "cp-" .. id .. "-web", "cp-" .. id .. "-web_2"
    assert.are.same(want, limits(web))
    assert.are.same(want, limits(web2))

    assert(p:deploy({instance_id = id, release_id = "s-2", services = {{name = "web",
      image = helper.IMAGE2}}}))
    assert.are.same(want, limits(web))
    assert.are.same(want, limits(web2))
    assert.are.equal(2, assert(p:status(id)).services.web.replicas)

    assert(p:rollback(id, "initial"))
    assert.are.same(want, limits(web))
    assert.are.same(want, limits(web2))
    assert.are.equal(helper.IMAGE1, projects.inspect(web).Config.Image)

    assert(p:restart(id))
    assert.are.same(want, limits(web))

    assert(p:scale(id, {replicas = 3}))
    assert.are.same(want, limits("cp-" .. id .. "-web_3"))

    -- the unchanged request again: kept as scaled
    local before = projects.inspect(web).Id
    assert(p:provision(projects.three(id)))
    assert.are.equal(before, projects.inspect(web).Id)
    assert.are.same(want, limits(web))
    assert.are.equal(3, assert(p:status(id)).services.web.replicas)

    -- a request changing something else of web (env) replaces it, keeping the scale
    local changed = projects.three(id)
    changed.services[2].env = {GREETING = "changed"}
    assert(p:provision(changed))
    assert.are_not.equal(before, projects.inspect(web).Id)
    assert.are.same(want, limits(web))
    assert.are.equal(3, assert(p:status(id)).services.web.replicas)

    -- a request that changes the resources themselves wins
    changed.services[2].resources = {cpu_millis = 500, memory_mb = 64}
    assert(p:provision(changed))
    assert.are.same({500000000, 64 * 1048576}, limits(web))
    assert.are.equal(1, assert(p:status(id)).services.web.replicas)
  end)

  it("a re-provision repairing a hole repairs to the scaled count, with the scaled limits", function()
    local id = session.new_id("stickhole")
    assert(p:provision(projects.three(id))) -- web: 1 replica, cpu 250, memory 32
    assert(p:scale(id, {cpu_millis = 750, memory_mb = 48, replicas = 3}))
    local want = {750000000, 48 * 1048576}
    local web, web3 = "cp-" .. id .. "-web", "cp-" .. id .. "-web_3"
    local kept = projects.inspect(web).Id
    sh_ok("docker rm -f " .. web3)
    assert.are.equal("degraded", assert(p:status(id)).state)

    -- the unchanged request: the hole is filled, the scale is not cut back to 1
    local res = assert(p:provision(projects.three(id)))
    assert.matches("^started: had 2 of 3 replicas", res.changes.web)
    assert.are.equal(kept, projects.inspect(web).Id)
    assert.are.same(want, limits(web3))
    local st = assert(p:status(id))
    assert.are.equal("running", st.state)
    assert.is_true(st.ready)
    assert.are.equal(3, st.services.web.replicas)
  end)

  describe("kind stateful_set", function()
    local function stateful(id, kind)
      return {instance_id = id, kind = kind, services = {{
        name = "db", image = helper.IMAGE1, command = projects.IDLE_CMD,
        resources = {replicas = 2},
        volumes = {{name = "data", mount_path = "/data"}, {name = "data-2", mount_path = "/data2"}},
      }}}
    end

    local function mounts(name)
      local out = {}
      for _, m in ipairs(assert(projects.inspect(name)).Mounts) do out[m.Destination] = m.Name end
      return out
    end

    it("gives each replica its own volumes, stable across scale down/up and deploys", function()
      local id = session.new_id("sts")
      assert(p:provision(stateful(id, "stateful_set")))
      local r1, r2 = "cp-" .. id .. "-db", "cp-" .. id .. "-db_2"
      local pre = "cp-" .. id .. "-"
      assert.are.same({["/data"] = pre .. "data.R1", ["/data2"] = pre .. "data-2.R1"}, mounts(r1))
      assert.are.same({["/data"] = pre .. "data.R2", ["/data2"] = pre .. "data-2.R2"}, mounts(r2))
      sh_ok("docker exec " .. r2 .. " sh -c 'echo two > /data/mark'")
      sh_ok("docker exec " .. r1 .. " sh -c 'echo one > /data/mark'")

      assert(p:scale(id, {replicas = 1}))
      assert.is_nil(projects.inspect(r2))
      assert(p:scale(id, {replicas = 3}))
      assert.are.equal("two\n", sh_ok("docker exec " .. r2 .. " cat /data/mark"))
      local _, rc = helper.sh("docker exec cp-" .. id .. "-db_3 cat /data/mark 2>/dev/null")
      assert.are_not.equal(0, rc, "replica 3 starts with an empty volume")

      assert(p:deploy({instance_id = id, release_id = "d2", services = {{name = "db",
        image = helper.IMAGE2}}}))
      assert.are.equal(helper.IMAGE2, projects.inspect(r2).Config.Image)
      assert.are.equal("two\n", sh_ok("docker exec " .. r2 .. " cat /data/mark"))
      assert.are.equal("one\n", sh_ok("docker exec " .. r1 .. " cat /data/mark"))

      assert(p:deprovision(id))
      assert.are.same({}, projects.leftovers(id))
    end)

    it("kind deployment shares the volume between replicas", function()
      local id = session.new_id("dep")
      assert(p:provision(stateful(id, "deployment")))
      local pre = "cp-" .. id .. "-"
      assert.are.same({["/data"] = pre .. "data", ["/data2"] = pre .. "data-2"},
        mounts("cp-" .. id .. "-db"))
      assert.are.same({["/data"] = pre .. "data", ["/data2"] = pre .. "data-2"},
        mounts("cp-" .. id .. "-db_2"))
    end)
  end)

  describe("releases pin what ran", function()
    local tags = {}
    teardown(function()
      for _, t in ipairs(tags) do helper.sh("docker rmi -f " .. t .. " >/dev/null 2>&1") end
    end)

    -- a tag of its own, so moving or removing it touches nothing shared
    local function own_tag(from, label)
      local tag = string.format("cpdocker-test/contract-%s:%x%d", label, os.time(),
        math.random(0, 0xffffff))
      tags[#tags + 1] = tag
      sh_ok(string.format("printf 'FROM %s\\nLABEL contract.spec=%s\\n' | docker build -q -t %s -",
        from, tag, tag))
      return tag
    end

    local function web(id, image)
      return {instance_id = id, services = {{name = "web", image = image,
        command = projects.IDLE_CMD}}}
    end

    it("records image IDs and restores exactly that image after the tag moved", function()
      local id = session.new_id("pin")
      local tag = own_tag(helper.IMAGE1, "pin")
      local first = image_id(tag)
      assert(p:provision(web(id, tag)))
      assert(p:deploy({instance_id = id, release_id = "r2", services = {{name = "web",
        image = helper.IMAGE2}}}))
      -- the tag now names other content
      sh_ok("docker tag " .. helper.IMAGE2 .. " " .. tag)
      assert.are_not.equal(first, image_id(tag))
      local labels = assert(projects.inspect("cp-" .. id .. "-web")).Config.Labels
      local history = json.decode(labels["ctrlplane.releases"])
      assert.are.equal("initial", history[1].id)
      assert.are.equal(first, history[1].services.web.image_id)
      assert.are.equal(tag, history[1].services.web.image)

      assert(p:rollback(id, "initial"))
      local c = assert(projects.inspect("cp-" .. id .. "-web"))
      assert.are.equal(first, c.Image)
      assert.is_true(c.State.Running)
    end)

    it("records the repo digest and pulls that image by digest when it is gone locally", function()
      local id = session.new_id("pindig")
      local built = own_tag(helper.IMAGE1, "dig")
      local tag = "127.0.0.1:5000/" .. built
      tags[#tags + 1] = tag
      sh_ok(string.format("docker tag %s %s && docker push %s >/dev/null && docker rmi %s %s",
        built, tag, tag, tag, built))
      assert(p:provision(web(id, tag))) -- pulled from the registry
      local want = image_id(tag)
      assert(p:deploy({instance_id = id, release_id = "r2", services = {{name = "web",
        image = helper.IMAGE2}}}))
      local labels = assert(projects.inspect("cp-" .. id .. "-web")).Config.Labels
      local snap = json.decode(labels["ctrlplane.releases"])[1].services.web
      assert.are.equal(want, snap.image_id)
      assert.matches("^127%.0%.0%.1:5000/cpdocker%-test/contract%-dig@sha256:%x+$", snap.repo_digest)
      sh_ok("docker rmi " .. tag) -- gone from the host: only the registry has it
      assert(p:rollback(id, "initial"))
      local c = assert(projects.inspect("cp-" .. id .. "-web"))
      assert.are.equal(want, c.Image)
      assert.is_true(c.State.Running)
      assert(p:deprovision(id))
      sh_ok("docker rmi " .. snap.repo_digest) -- leave no pulled image behind
    end)

    it("fails clearly, changing nothing, when that image is gone from the host", function()
      local id = session.new_id("pingone")
      local tag = own_tag(helper.IMAGE1, "gone")
      local gone = image_id(tag)
      assert(p:provision(web(id, tag)))
      assert(p:deploy({instance_id = id, release_id = "r2", services = {{name = "web",
        image = helper.IMAGE2}}}))
      sh_ok("docker rmi " .. tag)
      local before = assert(projects.inspect("cp-" .. id .. "-web")).Id
      local ok, err, code = p:rollback(id, "initial")
      assert.is_nil(ok)
      assert.are.equal("image_missing", code)
      assert.truthy(err:find("service web ran image " .. tag .. " as " .. gone
        .. ", which is no longer on this host", 1, true), err)
      local c = assert(projects.inspect("cp-" .. id .. "-web"))
      assert.are.equal(before, c.Id)
      assert.are.equal(helper.IMAGE2, c.Config.Image)
    end)
  end)
end)
