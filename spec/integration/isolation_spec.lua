-- Tenant isolation against the real daemon (issue #12 items 1-3, #11 item 8):
-- two instances whose names used to collide get separate containers and
-- volumes; an object that is not labelled for the instance is never used,
-- adopted or reported, and the error names no other tenant's ids; hostile
-- image references and host limits are field errors before the engine is
-- touched.
local helper = require("support.helper")
local projects = require("support.projects")
local json = require("ctrlplane.docker.json")

local function one(id, svc, volume)
  return {instance_id = id, tenant_id = "ten_iso", services = {
    {name = svc, role = "main", image = helper.IMAGE1, command = projects.IDLE_CMD,
      volumes = {{name = volume, mount_path = "/data"}}}}}
end

local function volume_of(container)
  for _, m in ipairs(container.Mounts or {}) do
    if m.Destination == "/data" then return m.Name end
  end
end

local function daemon_info()
  local c = helper.client()
  local res = assert(c:request("GET", "/info"))
  c:close()
  return json.decode(res.body)
end

describe("tenant isolation", function()
  local session = projects.session()
  local p
  local extra = {} -- ids with '-' that session.new_id cannot make
  local squatters = {}

  setup(function() p = session.start() end)
  teardown(function()
    for _, name in ipairs(squatters) do helper.sh("docker rm -f " .. name .. " >/dev/null 2>&1") end
    for _, id in ipairs(extra) do p:deprovision(id) end
    session.finish()
  end)

  it("gives S-y/data and S/y-data, S-y/web and S/y-web different Docker objects", function()
    local s = session.new_id("iso")
    local sy = s .. "-y"
    extra[#extra + 1] = sy
    local a = assert(p:provision(one(sy, "web", "data")))
    local b = assert(p:provision(one(s, "y-web", "y-data")))
    local ca, cb = projects.inspect(a.service_refs.web), projects.inspect(b.service_refs["y-web"])
    assert.are_not.equal(ca.Id, cb.Id)
    assert.are_not.equal(ca.Name, cb.Name)
    local va, vb = volume_of(ca), volume_of(cb)
    assert.is_string(va)
    assert.is_string(vb)
    assert.are_not.equal(va, vb)
    assert.are.equal(sy, ca.Config.Labels["ctrlplane.instance"])
    assert.are.equal(s, cb.Config.Labels["ctrlplane.instance"])
    -- one tenant's write is not the other's data
    helper.sh(string.format("docker exec %s sh -c 'echo mine > /data/f'", ca.Id))
    local seen = helper.sh(string.format("docker exec %s sh -c 'cat /data/f 2>&1 || true'", cb.Id))
    assert.is_nil(seen:find("mine", 1, true))
    -- each status reports only its own containers
    local sta, stb = assert(p:status(sy)), assert(p:status(s))
    assert.are.same({"web"}, (function() local k = {} for n in pairs(sta.services) do k[#k + 1] = n end return k end)())
    assert.is_nil(stb.services.web)
    assert(p:deprovision(s))
    assert.is_table(projects.inspect(ca.Id), "deprovisioning S removed S-y's container")
  end)

  it("refuses a container name held by a container of no instance, naming no ids", function()
    local id = session.new_id("squat")
    local name = "cp-" .. id .. "-web"
    squatters[#squatters + 1] = name
    local out, rc = helper.sh(string.format("docker create --name %s --label ctrlplane.instance=inst_other "
      .. "%s true", name, helper.IMAGE1))
    assert.are.equal(0, rc)
    local squatter_id = out:match("(%x+)%s*$")
    assert.is_string(squatter_id)
    local res, err = p:provision(one(id, "web", "data"))
    assert.is_nil(res)
    assert.matches("the container name " .. name .. " is taken by a container that does not belong "
      .. "to instance " .. id, err, 1, true)
    assert.is_nil(err:find(squatter_id:sub(1, 12), 1, true), err)
    assert.is_nil(err:find("inst_other", 1, true), err)
    -- the squatter is untouched, nothing of the failed provision is left
    assert.are.equal(squatter_id, projects.inspect(name).Id)
    assert.are.same({}, projects.leftovers(id))
    local st = assert(p:status(id))
    assert.are.equal("destroyed", st.state)
  end)

  it("refuses a volume of the same name that is not labelled for the instance", function()
    local id = session.new_id("volsq")
    local vname = "cp-" .. id .. "-data"
    finally(function()
      p:deprovision(id)
      helper.sh("docker volume rm -f " .. vname .. " >/dev/null 2>&1")
    end)
    local _, rc = helper.sh("docker volume create --label ctrlplane.instance=inst_other " .. vname
      .. " >/dev/null")
    assert.are.equal(0, rc)
    local res, err = p:provision(one(id, "web", "data"))
    assert.is_nil(res)
    assert.matches("volume " .. vname .. " exists and does not belong to instance " .. id, err, 1, true)
    assert.is_nil(err:find("inst_other", 1, true), err)
    assert.are.same({}, projects.leftovers(id))
    local _, still = helper.sh("docker volume inspect " .. vname .. " >/dev/null 2>&1")
    assert.are.equal(0, still)
  end)

  it("refuses a network of the same name labelled for another instance", function()
    local id = session.new_id("netsq")
    local nname = "cp-" .. id .. "-net"
    finally(function()
      p:deprovision(id)
      helper.sh("docker network rm " .. nname .. " >/dev/null 2>&1")
    end)
    local _, rc = helper.sh(string.format("docker network create --label ctrlplane.project=cp-%s "
      .. "--label ctrlplane.instance=inst_other %s >/dev/null", id, nname))
    assert.are.equal(0, rc)
    local res, err = p:provision(one(id, "web", "data"))
    assert.is_nil(res)
    assert.matches("network " .. nname .. " exists and does not belong to instance " .. id, err, 1, true)
    assert.is_nil(err:find("inst_other", 1, true), err)
    local _, still = helper.sh("docker network inspect " .. nname .. " >/dev/null 2>&1")
    assert.are.equal(0, still)
  end)

  it("stops an image reference that walks out of /images before the engine", function()
    local id = session.new_id("dotdot")
    local victim = "cp-" .. id .. "-victim"
    squatters[#squatters + 1] = victim
    local _, rc = helper.sh(string.format("docker create --name %s %s true >/dev/null", victim, helper.IMAGE1))
    assert.are.equal(0, rc)
    local req = one(id, "web", "data")
    req.services[1].image = "a/../../containers/" .. victim
    local res, err, code = p:provision(req)
    assert.is_nil(res)
    assert.are.equal("invalid", code)
    assert.matches("services[0].image:", err, 1, true)
    assert.are.same({}, projects.leftovers(id))
    -- and the engine refuses such a path even when handed one directly
    local eng = p.engine
    local engine = require("ctrlplane.docker.engine")
    local none, perr, pcode = eng:get("/images/" .. engine.segment("a/../../containers/" .. victim) .. "/json")
    assert.is_nil(none)
    assert.are.equal("bad_request", pcode, perr)
    none, perr, pcode = eng:get("/images/a/../../containers/" .. victim .. "/json")
    assert.is_nil(none)
    assert.are.equal("bad_request", pcode, perr)
    -- an ordinary image with a registry path still resolves through the encoded segment
    local img = assert(eng:get("/images/" .. engine.segment(helper.IMAGE1) .. "/json"))
    assert.is_string(img.Id)
  end)

  it("bounds cpu_millis and memory_mb by the host and rejects unenforceable disk_mb", function()
    local info = daemon_info()
    local id = session.new_id("hostlim")
    local req = one(id, "web", "data")
    req.services[1].resources = {cpu_millis = info.NCPU * 1000 + 1,
      memory_mb = info.MemTotal // 1048576 + 1}
    local res, err, code = p:provision(req)
    assert.is_nil(res)
    assert.are.equal("invalid", code)
    assert.matches("services[0].resources.cpu_millis: at most " .. info.NCPU * 1000, err, 1, true)
    assert.matches("services[0].resources.memory_mb: at most", err, 1, true)
    assert.are.same({}, projects.leftovers(id))
    req.services[1].resources = {disk_mb = 100}
    res, err = p:provision(req)
    local backing
    for _, kv in ipairs(info.DriverStatus or {}) do
      if kv[1] == "Backing Filesystem" then backing = kv[2] end
    end
    if info.Driver == "overlay2" and backing ~= "xfs" then
      assert.is_nil(res)
      assert.matches("services[0].resources.disk_mb: cannot be enforced: the daemon's storage "
        .. "driver is overlay2", err, 1, true)
      assert.are.same({}, projects.leftovers(id))
    else -- a driver that can: the limit is on the container
      assert.is_table(res, err)
      local c = projects.inspect(res.service_refs.web)
      assert.are.equal("100M", c.HostConfig.StorageOpt.size)
    end
  end)
end)
