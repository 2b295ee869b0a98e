-- API-version negotiation lives in C (cp_client_negotiate in http.c, #13.5):
-- client:api_version() and the stats sampler both use it, so a daemon that
-- cannot be reached fails both the same way, with the socket named.
local core = require("ctrlplane.docker.core")

describe("API-version negotiation", function()
  local base = os.tmpname()
  os.remove(base)
  local path = base .. ".missing.sock"

  it("fails client:api_version() with unreachable, naming the socket", function()
    local c = core.client({host = "unix://" .. path, timeout = 5})
    local v, msg, code = c:api_version()
    c:close()
    assert.is_nil(v)
    assert.are.equal("unreachable", code, msg)
    assert.matches(path, msg, 1, true)
  end)

  it("fails a sampler's first fetch and watch the same way (no Lua call from C)", function()
    local c = core.client({host = "unix://" .. path, timeout = 5})
    local s = core.sampler(c)
    local r, msg, code = s:fetch({"0123456789ab"}, {timeout = 2})
    assert.is_nil(r)
    assert.are.equal("unreachable", code, msg)
    assert.matches(path, msg, 1, true)
    r, msg, code = s:watch({"0123456789ab"})
    assert.is_nil(r)
    assert.are.equal("unreachable", code, msg)
    s:close()
    c:close()
  end)

  it("does not ask the daemon when the version is given", function()
    local c = core.client({host = "unix://" .. path, api_version = "1.41"})
    assert.are.equal("1.41", c:api_version())
    assert.are.equal("1.41", c:stats().api_version)
    c:close()
  end)
end)
