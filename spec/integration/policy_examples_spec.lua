-- The operator guide's worked examples (examples/policies/), for real.
local helper = require("support.helper")
local projects = require("support.projects")

describe("worked policy examples", function()
  local session = projects.session()
  local p
  local new_id = session.new_id

  setup(function()
    p = session.start()
  end)

  teardown(session.finish)

  it("degraded-sidecar: a failed sidecar leaves the instance running and ready, marked degraded", function()
    local id = new_id("degraded")
    local res = assert(p:provision(projects.three(id)))
    helper.sh("docker update --restart=no " .. res.service_refs.side .. " >/dev/null")
    helper.sh("docker kill -s KILL " .. res.service_refs.side .. " >/dev/null")
    assert.are.equal("failed", assert(p:status(id)).state) -- the bundled policy
    local custom = projects.provider({policy_dir = "examples/policies/degraded-sidecar"})
    local st = assert(custom:status(id))
    assert.are.equal("running", st.state)
    assert.is_true(st.ready)
    assert.are.equal("degraded: side failed", st.message)
    assert.are.equal("failed", st.services.side.state)
  end)

  it("canary: deploys one service, pauses for a check, then continues", function()
    local id = new_id("canary")
    assert(p:provision(projects.three(id)))
    local custom = projects.provider({policy_dir = "examples/policies/canary"})
    local order, t_first = {}, nil
    local t0 = helper.clock()
    local res, err = custom:deploy({instance_id = id, release_id = "canary-2", services = {
      {name = "side", env = {MODE = "new"}}, {name = "web", image = helper.IMAGE2}}},
      {on_event = function(ev)
        if ev.type == "service" and ev.action == "started" then
          order[#order + 1] = ev.service
          t_first = t_first or helper.clock()
        end
      end})
    assert(res, err)
    assert.are.same({"web", "side"}, order) -- main first, one at a time
    assert.is_true(helper.clock() - t0 >= 1.0) -- the canary pause
    local st = assert(p:status(id))
    assert.are.equal("canary-2", st.metadata.release)
    assert.are.equal("running", st.state)
  end)

  it("canary: a failed check stops the deploy and puts the first service back", function()
    local id = new_id("canaryfail")
    local first = assert(p:provision(projects.three(id)))
    helper.sh("docker stop -t 10 " .. first.service_refs.side .. " >/dev/null") -- the check will fail
    local custom = projects.provider({policy_dir = "examples/policies/canary"})
    local res, err, code = custom:deploy({instance_id = id, release_id = "canary-bad", services = {
      {name = "web", image = helper.IMAGE2}, {name = "side", env = {MODE = "new"}}}})
    assert.is_nil(res)
    assert.are.equal("rollout_aborted", code)
    assert.matches("canary check failed after web", err)
    assert.matches("previous containers restored", err)
    local st = assert(p:status(id))
    assert.are.equal(first.service_refs.web, st.services.web.provider_ref)
    assert.are.equal("running", st.services.web.state)
    assert.are.equal(helper.IMAGE1, projects.inspect(first.service_refs.web).Config.Image)
  end)
end)
