-- What a re-provision or deploy did to each service, and why (#13.3), and
-- release ids that stay unique within one second.
local helper = require("support.helper")
local projects = require("support.projects")

describe("what and why", function()
  local session = projects.session()
  local p

  setup(function() p = session.start() end)
  teardown(session.finish)

  it("a re-provision reports kept, replaced with the changed field, started, removed", function()
    local id = session.new_id("why")
    local req = projects.three(id)
    local first = assert(p:provision(req))
    assert.are.same({setup = "created", web = "created", side = "created"}, first.changes)
    -- web: env changed; side: stopped behind the runtime's back; a new service
    req.services[2].env = {GREETING = "changed"}
    local side = projects.inspect("cp-" .. id .. "-side")
    helper.client():request("POST", "/containers/" .. side.Id .. "/stop", {query = {t = 1}})
    local again = assert(p:provision(req))
    assert.are.equal("replaced: env GREETING changed", again.changes.web)
    assert.matches("^started: was exited", again.changes.side)
    assert.are.equal("kept: completed", again.changes.setup)
    -- nothing changed: everything kept; a service dropped: removed
    table.remove(req.services, 3)
    local third = assert(p:provision(req))
    assert.are.equal("kept: unchanged", third.changes.web)
    assert.are.equal("removed: no longer requested", third.changes.side)
  end)

  it("a deploy reports what each listed service changed; two deploys in a second differ",
    function()
      local id = session.new_id("whyd")
      assert(p:provision(projects.three(id)))
      local a = assert(p:deploy({instance_id = id, services = {{name = "web",
        image = helper.IMAGE2, env = {GREETING = "hello", EXTRA = "1"}}}}))
      assert.are.equal("replaced: image changed, env EXTRA changed", a.metadata.changes.web)
      assert.are.equal("kept: not in the release", a.metadata.changes.side)
      local b = assert(p:deploy({instance_id = id, services = {{name = "web",
        image = helper.IMAGE1}}}))
      assert.is_string(a.release_id)
      assert.are_not.equal(a.release_id, b.release_id)
      local st = assert(p:status(id))
      -- metadata.releases is a list, oldest first
      local n = #st.releases
      assert.are.same({a.release_id, b.release_id},
        {st.releases[n - 1], st.releases[n]})
    end)

  it("the CLI shows what and why", function()
    local id = session.new_id("whycli")
    local req = projects.three(id)
    assert(p:provision(req))
    req.services[2].env = {GREETING = "cli"}
    local file = os.tmpname()
    local f = assert(io.open(file, "w"))
    f:write(require("ctrlplane.docker.json").encode(req))
    f:close()
    local out, rc = helper.cpdocker("provision " .. file)
    assert.are.equal(0, rc, out)
    os.remove(file)
    assert.matches("WHAT AND WHY", out)
    assert.matches("web%s+%x+%s+replaced: env GREETING changed", out)
    assert.matches("side%s+%x+%s+kept: unchanged", out)
  end)
end)
