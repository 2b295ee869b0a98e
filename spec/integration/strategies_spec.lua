-- Deploy strategies (issue #11 item 3) on the real daemon: blue-green
-- (every new container ready before any old one leaves; any failure puts
-- every old one back) and canary (joins the alias beside the old one for
-- the policy's window, judged, then promoted or removed).
local json = require("ctrlplane.docker.json")
local helper = require("support.helper")
local projects = require("support.projects")

-- A process that stops at once on SIGTERM, and exits 3 after 3 s when its
-- env says CRASH=1 (ready first, past the start grace, then failing: what a
-- canary catches).
local CMD = {"sh", "-c", "trap 'exit 0' TERM; if [ \"$CRASH\" = 1 ]; then sleep 3; exit 3; fi; "
  .. "if [ \"$FAIL\" = 1 ]; then exit 4; fi; while true; do sleep 1 & wait $!; done"}

local function request(id)
  return {instance_id = id, tenant_id = "ten_strat", services = {
    {name = "web", image = helper.IMAGE1, command = CMD, env = {V = "1"}},
    {name = "api", role = "sidecar", image = helper.IMAGE1, command = CMD, env = {V = "1"}},
  }}
end

-- a policy directory whose rollout.lua is the bundled one with a short canary window
local function short_canary_policy()
  local d = os.tmpname()
  os.remove(d)
  assert(os.execute("mkdir -p " .. d))
  local src = assert(io.open("scripts/rollout.lua")):read("a")
  local text, n = src:gsub("local CANARY_WINDOW = %d+", "local CANARY_WINDOW = 4")
  assert.are.equal(1, n, "scripts/rollout.lua defines CANARY_WINDOW")
  local f = assert(io.open(d .. "/rollout.lua", "w"))
  f:write(text)
  f:close()
  return d
end

local function running_ids(p, id)
  local st = assert(p:status(id))
  local out = {}
  for name, s in pairs(st.services) do
    local c = projects.inspect(s.provider_ref)
    out[name] = {id = c.Id, started = c.State.StartedAt, running = c.State.Running,
      env = table.concat(c.Config.Env, " ")}
  end
  return out
end

local function aliases(c, id)
  local n = c.NetworkSettings.Networks["cp-" .. id .. "-net"]
  return n and n.Aliases or {}
end

-- the project's container names, sorted
local function names_of(id)
  local c = helper.client()
  local res = assert(c:request("GET", "/containers/json", {query = {all = true,
    filters = json.encode({label = {"ctrlplane.project=cp-" .. id}})}}))
  c:close()
  local names = {}
  for _, x in ipairs(json.decode(res.body)) do names[#names + 1] = x.Names[1] end
  table.sort(names)
  return names
end

local function has(list, v)
  for _, x in ipairs(list or {}) do if x == v then return true end end
  return false
end

describe("deploy strategies", function()
  local dir = short_canary_policy()
  local session = projects.session({policy_dir = dir})
  local p
  setup(function() p = session.start() end)
  teardown(function()
    session.finish()
    os.execute("rm -rf " .. dir)
  end)

  it("blue-green: all new containers are ready before any old one leaves, then all switch", function()
    local id = session.new_id("bg")
    assert(p:provision(request(id)))
    local before = running_ids(p, id)
    local events = {}
    local res, err = p:deploy({instance_id = id, release_id = "bg-2", strategy = "blue-green",
      services = {{name = "web", image = helper.IMAGE2, env = {V = "2"}},
        {name = "api", env = {V = "2"}}}},
      {on_event = function(ev)
        if ev.type == "service" then events[#events + 1] = ev.service .. ":" .. ev.action end
      end})
    assert(res, err)
    -- both new containers started (and were awaited together) before the first stop
    local first_stop
    for i, e in ipairs(events) do
      if e:match(":stopped$") and not first_stop then first_stop = i end
    end
    assert.truthy(first_stop, table.concat(events, " "))
    local started = {}
    for i = 1, first_stop - 1 do
      local svc = events[i]:match("^(.-):started$")
      if svc then started[svc] = true end
    end
    assert.are.same({web = true, api = true}, started, table.concat(events, " "))
    local after = running_ids(p, id)
    assert.are_not.equal(before.web.id, after.web.id)
    assert.are_not.equal(before.api.id, after.api.id)
    assert.truthy(after.web.env:find("V=2", 1, true))
    assert.truthy(after.api.env:find("V=2", 1, true))
    assert.is_nil(projects.inspect(before.web.id), "old web removed")
    local st = assert(p:status(id))
    assert.are.equal("bg-2", st.metadata.release)
    assert.is_true(st.ready)
  end)

  it("blue-green: one new service failing leaves every old one untouched", function()
    local id = session.new_id("bgfail")
    assert(p:provision(request(id)))
    local before = running_ids(p, id)
    local res, err, code = p:deploy({instance_id = id, release_id = "bg-bad", strategy = "blue-green",
      services = {{name = "web", env = {V = "2"}}, {name = "api", env = {FAIL = "1"}}}})
    assert.is_nil(res)
    assert.are.equal("service_failed", code, err)
    -- the new api exits 4 at once (how the readiness policy words it depends
    -- on when it looked: stopped, or restarted while starting)
    assert.matches("deploy of service web, api failed: service api [%w ]+ %(exit code %d%)", err)
    local after = running_ids(p, id)
    -- the same containers, never stopped, still holding their aliases
    assert.are.same(before, after)
    for _, name in ipairs({"web", "api"}) do
      assert.is_true(has(aliases(projects.inspect(after[name].id), id), name))
    end
    assert.are.same({"/cp-" .. id .. "-api", "/cp-" .. id .. "-web"}, names_of(id))
  end)

  it("canary: joins the alias beside the old one, then is promoted", function()
    local id = session.new_id("canary")
    assert(p:provision(request(id)))
    local before = running_ids(p, id)
    local seen
    local raw = helper.client()
    finally(function() raw:close() end)
    local res, err = p:deploy({instance_id = id, release_id = "c-2", strategy = "canary",
      services = {{name = "web", image = helper.IMAGE2}}},
      {on_event = function(ev)
        if ev.type == "service" and ev.action == "canary" then
          -- during the window: old and new both running, both under the alias
          local old = json.decode(assert(raw:request("GET", "/containers/" .. before.web.id
            .. "/json")).body)
          local new = json.decode(assert(raw:request("GET", "/containers/" .. ev.container
            .. "/json")).body)
          seen = {old = old.State.Running and has(aliases(old, id), "web"),
            new = new.State.Running and has(aliases(new, id), "web")}
        end
      end})
    assert(res, err)
    assert.are.same({old = true, new = true}, seen)
    local after = running_ids(p, id)
    assert.are_not.equal(before.web.id, after.web.id)
    assert.are.equal(before.api.id, after.api.id) -- unlisted: untouched
    assert.is_nil(projects.inspect(before.web.id))
    assert.are.equal(helper.IMAGE2, projects.inspect(after.web.id).Config.Image)
    assert.are.equal("cp-" .. id .. "-web", projects.inspect(after.web.id).Name:sub(2))
  end)

  it("canary: one that restarts during the window is removed and the old one keeps serving",
    function()
    local id = session.new_id("canfail")
    assert(p:provision(request(id)))
    local before = running_ids(p, id)
    local t0 = helper.clock()
    local res, err, code = p:deploy({instance_id = id, release_id = "c-bad", strategy = "canary",
      services = {{name = "web", env = {CRASH = "1"}}}})
    assert.is_nil(res)
    assert.are.equal("canary_failed", code, err)
    assert.matches("canary of service web was not promoted: canary of web", err)
    assert.is_true(helper.clock() - t0 >= 3.5, "judged only after the window")
    local after = running_ids(p, id)
    assert.are.same(before, after)
    assert.is_true(has(aliases(projects.inspect(after.web.id), id), "web"))
    -- the canary container is gone
    assert.are.same({"/cp-" .. id .. "-api", "/cp-" .. id .. "-web"}, names_of(id))
    local st = assert(p:status(id))
    assert.are_not.equal("c-bad", st.metadata.release)
  end)
end)
