-- Request paths and daemon messages at the engine boundary (engine.lua):
-- no dot segment reaches the wire, every name in a path is one encoded
-- segment, and a name conflict does not pass on another owner's id. No
-- daemon: a refused path fails before any connection is tried.
local engine = require("ctrlplane.docker.engine")

describe("engine.check_path", function()
  local refused = {"/images/a/../../containers/x/json", "/images/a%2F..%2F..%2Fcontainers%2Fx/json",
    "/containers/%2e%2e/json", "/containers/./json", "/..", "relative/path", "/images/" ..
    engine.segment("a/../../containers/x") .. "/json"}
  for _, path in ipairs(refused) do
    it("refuses " .. path, function()
      local ok, err, code = engine.check_path(path)
      assert.is_nil(ok)
      assert.are.equal("bad_request", code)
      assert.is_string(err)
    end)
  end
  it("accepts ordinary paths and encoded image names", function()
    for _, path in ipairs({"/containers/json", "/images/" .. engine.segment("reg.local:5000/a/b:1.2") .. "/json",
        "/containers/cp-x--y-web_2/json", "/volumes/cp-a-data.R2", "/_ping"}) do
      assert.is_true(engine.check_path(path), path)
    end
    assert.are.equal("reg.local%3A5000%2Fa%2Fb%3A1.2", engine.segment("reg.local:5000/a/b:1.2"))
  end)
  it("refuses before connecting", function()
    local eng = assert(engine.new({host = "unix:///nonexistent/docker.sock", connect_timeout = 0.5,
      timeout = 1}))
    local none, err, code = eng:get("/images/a/../../containers/x/json")
    assert.is_nil(none)
    assert.are.equal("bad_request", code, err)
    local r = eng:batch({{path = "/containers/../json"}, {path = "/_ping"}})
    assert.are.equal("bad_request", r[1].code)
    assert.are.equal("unreachable", r[2].code)
    none, err, code = eng:stream("GET", "/x/../y")
    assert.is_nil(none)
    assert.are.equal("bad_request", code, err)
    eng:close()
  end)
end)

describe("engine.scrub", function()
  it("drops the holder's id from a daemon name conflict, and nothing else", function()
    local id = string.rep("ab", 32)
    local msg = 'Conflict. The container name "/cp-x-web" is already in use by container "' .. id
      .. '". You have to remove (or rename) that container to be able to reuse that name.'
    local out = engine.scrub(msg, "conflict")
    assert.is_nil(out:find(id, 1, true))
    assert.is_nil(out:find("abab", 1, true))
    assert.matches('"/cp-x-web" is already in use by another container', out, 1, true)
    assert.are.equal(msg, engine.scrub(msg, "server_error"))
  end)
end)
