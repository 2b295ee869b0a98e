-- cpdocker ps: every instance with its state from one listing, and the
-- status of several ids at once.
local json = require("ctrlplane.docker.json")
local helper = require("support.helper")
local projects = require("support.projects")

describe("cpdocker ps", function()
  local a, b
  local p

  setup(function()
    helper.daemon()
    p = projects.provider()
    a, b = helper.instance_id("psa"), helper.instance_id("psb")
    assert(p:provision(projects.three(a)))
    local req = projects.three(b)
    req.tenant_id = "ten_ps_b"
    assert(p:provision(req))
    assert(p:stop(b))
  end)

  teardown(function()
    p:deprovision(a)
    p:deprovision(b)
  end)

  it("lists every instance with the state the status policy gives it", function()
    local out, rc = helper.cpdocker("--json ps")
    assert.are.equal(0, rc, out)
    local rows = assert(json.decode(out))
    local by = {}
    for _, r in ipairs(rows) do by[r.instance_id] = r end
    assert.is_table(by[a], out)
    assert.are.equal("running", by[a].state)
    assert.is_true(by[a].ready)
    assert.are.equal(3, by[a].services)
    assert.are.equal("ten_spec", by[a].tenant_id)
    assert.are.equal("stopped", by[b].state)
    assert.is_false(by[b].ready)
    assert.are.equal("ten_ps_b", by[b].tenant_id)
    -- the same verdict as status for each
    for _, id in ipairs({a, b}) do
      local st = assert(p:status(id))
      assert.are.equal(st.state, by[id].state)
      assert.are.equal(st.ready, by[id].ready)
    end
    local text = helper.cpdocker("ps")
    assert.matches("INSTANCE", text)
    assert.matches(a .. "%s+ten_spec%s+running %(ready%)", text)
  end)

  it("gives the status of several ids at once, failing on a bad one", function()
    local gone = helper.instance_id("psgone")
    local out, rc = helper.cpdocker("--json ps " .. a .. " " .. gone .. " " .. b)
    assert.are.equal(0, rc, out)
    local res = assert(json.decode(out))
    assert.are.equal(a, res[1].instance_id)
    assert.are.equal("running", res[1].status.state)
    assert.are.equal("destroyed", res[2].status.state)
    assert.are.equal("stopped", res[3].status.state)
    local bad, brc = helper.cpdocker("ps " .. a .. " 'no/such'")
    assert.are.equal(1, brc)
    assert.matches("no/such%s+error", bad)
  end)
end)
