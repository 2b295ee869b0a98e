-- The C embedding API with many calls at once (issue 14): cpd_submit /
-- cpd_poll through build/embed-example, and the runner behind it
-- (rpc.embed) from Lua for cancel, busy and the blocking call.
local core = require("ctrlplane.docker.core")
local json = require("ctrlplane.docker.json")
local rpc = require("ctrlplane.docker.rpc")
local helper = require("support.helper")
local projects = require("support.projects")

local function slow(id, init_sleep)
  return {
    instance_id = id, tenant_id = "ten_embed", name = "embed",
    services = {
      {name = "prep", role = "init", image = helper.IMAGE1,
        command = {"sh", "-c", string.format("sleep %g; echo prepared", init_sleep)}},
      {name = "web", role = "main", image = helper.IMAGE1, depends_on = {"prep"},
        command = projects.IDLE_CMD},
    },
  }
end

local function shq(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

-- Polls the runner until call id finishes (bounded); returns ok, decoded
-- result, and the results seen so far (kept per runner for later calls).
local stash = setmetatable({}, {__mode = "k"})
local function wait_for(e, id, timeout)
  local deadline = core.clock() + timeout
  local seen = stash[e] or {}
  stash[e] = seen
  while core.clock() < deadline do
    if seen[id] then return seen[id][1], seen[id][2], seen end
    local got, ok, text = e:poll(0.5)
    if got then seen[got] = {ok, json.decode(text), order = core.clock()} end
  end
  error("call " .. id .. " did not finish in " .. timeout .. " s")
end

describe("embedding API, many calls at once", function()
  setup(function() helper.daemon() end)

  it("cpd_submit/cpd_poll: status and health_check of others finish while a provision waits", function()
    local a = helper.instance_id("ema")
    local ok, err = pcall(function()
      local out, rc = helper.sh("CP_DOCKER_HOME=. timeout 120 build/embed-example --submit provision "
        .. shq(json.encode(slow(a, 3))) .. " status " .. shq(json.encode({instance_id = helper.instance_id("emb")}))
        .. " health_check '' 2>&1")
      assert.are.equal(0, rc, out)
      local order, times = {}, {}
      for n, t, method, res in out:gmatch("#(%d+) ([%d%.]+) (%S+) (%S+)") do
        order[#order + 1] = tonumber(n)
        times[tonumber(n)] = tonumber(t)
        assert.are.equal("ok", res, out)
        assert.is_string(method)
      end
      assert.are.equal(3, #order, out)
      assert.are.equal(1, order[3], "the provision did not finish last:\n" .. out)
      assert.is_true(times[2] < 2 and times[3] < 2, out)
      assert.is_true(times[1] >= 3, out)
    end)
    helper.cpdocker("deprovision " .. a)
    assert(ok, err)
  end)

  it("cancels a submitted call; the blocking call runs while others are in flight", function()
    local p, e = rpc.open_json(json.encode({stop_timeout = 2}))
    assert.is_table(e, tostring(e))
    local c = helper.instance_id("emc")
    finally(function() helper.cpdocker("deprovision " .. c) end)
    local t0 = core.clock()
    local id = assert(e:submit("provision", json.encode(slow(c, 30))))
    assert.is_nil(e:poll(1)) -- still running after a second
    assert.are.equal(1, e:pending())
    -- the blocking call meanwhile
    local ok, text = e:call("status", json.encode({instance_id = helper.instance_id("emd")}))
    assert.is_true(ok)
    assert.are.equal("destroyed", json.decode(text).state)
    assert.is_true(e:cancel(id))
    local rok, res = wait_for(e, id, 30)
    assert.is_false(rok)
    assert.are.equal("cancelled", res.data.code)
    assert.is_true(core.clock() - t0 < 20)
    assert.are.same({}, projects.leftovers(c))
    assert.is_false(e:cancel(id))
    assert.are.equal(0, e:pending())
    p:close()
  end)

  it("an operation that raises mid-way takes no other with it", function()
    local p, e = rpc.open_json(json.encode({stop_timeout = 2}))
    assert.is_table(e, tostring(e))
    local boom = helper.instance_id("emboom")
    local status = p.status
    p.status = function(self, id)
      if id == boom then
        assert(self.engine:get("/containers/json")) -- a real wait first: other tasks run
        error("boom in the middle of an operation")
      end
      return status(self, id)
    end
    local a = helper.instance_id("emok")
    finally(function() helper.cpdocker("deprovision " .. a) end)
    local prov = assert(e:submit("provision", json.encode(slow(a, 1))))
    local crash = assert(e:submit("status", json.encode({instance_id = boom})))
    local other = assert(e:submit("status", json.encode({instance_id = boom})))
    local ok1, res1 = wait_for(e, crash, 30)
    assert.is_false(ok1)
    assert.are.equal(-32603, res1.code)
    assert.matches("boom", res1.message)
    local ok2, res2 = wait_for(e, prov, 60)
    assert.is_true(ok2, json.encode(res2))
    assert.are.equal(-32603, select(2, wait_for(e, other, 30)).code) -- the same instance goes on
    local ok3, text = e:call("status", json.encode({instance_id = a}))
    assert.is_true(ok3)
    assert.are.equal("running", json.decode(text).state)
    assert.is_true(e:call("deprovision", json.encode({instance_id = a})))
    p:close()
  end)

  it("answers busy when the configured queue is full", function()
    local p, e = rpc.open_json(json.encode({max_inflight = 1, max_queued = 1}))
    assert.is_table(e, tostring(e))
    local a = helper.instance_id("eme")
    finally(function() helper.cpdocker("deprovision " .. a) end)
    local first = assert(e:submit("provision", json.encode(slow(a, 1))))
    local second = assert(e:submit("status", json.encode({instance_id = helper.instance_id("emf")})))
    local third, err = e:submit("status", json.encode({instance_id = helper.instance_id("emg")}))
    assert.is_nil(third)
    assert.are.equal("busy", json.decode(err).data.code)
    local ok1, _, seen = wait_for(e, first, 60)
    assert.is_true(ok1)
    assert.is_true(seen[second] == nil or seen[second].order > seen[first].order,
      "the queued call finished before the running one")
    assert.is_true((wait_for(e, second, 10)))
    assert.is_true(e:call("deprovision", json.encode({instance_id = a})))
    local bad = rpc.open_json(json.encode({max_inflight = 0}))
    assert.is_nil(bad)
    p:close()
  end)
end)
