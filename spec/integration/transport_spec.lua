-- The C transport against the real daemon.
local core = require("ctrlplane.docker.core")
local json = require("ctrlplane.docker.json")
local helper = require("support.helper")

describe("transport", function()
  local c
  before_each(function()
    c = helper.daemon()
  end)
  after_each(function()
    if c then c:close() end
  end)

  it("pings the daemon without a version prefix", function()
    local res = assert(c:request("GET", "/_ping", {raw = true}))
    assert.are.equal(200, res.status)
    assert.are.equal("OK", res.body)
    assert.is_string(res.headers["api-version"])
  end)

  it("negotiates the API version once and prefixes every path with it", function()
    local v = assert(c:api_version())
    local res = assert(c:request("GET", "/_ping", {raw = true}))
    local daemon = res.headers["api-version"]
    local function num(s) local a, b = s:match("^(%d+)%.(%d+)$"); return a * 1000 + b end
    assert.are.equal(math.min(num(daemon), num(core.api_max)), num(v))
    assert.is_true(num(v) >= num("1.41"))
    local ver = assert(c:request("GET", "/version"))
    assert.are.equal(200, ver.status)
    assert.is_string(json.decode(ver.body).ApiVersion)
    assert.are.equal(v, c:stats().api_version)
  end)

  it("uses a forced API version in the path (the daemon rejects one it does not know)", function()
    local forced = helper.client({api_version = "9.99"})
    local res, err, code, status = forced:request("GET", "/version")
    assert.is_nil(res)
    assert.are.equal("bad_request", code)
    assert.are.equal(400, status)
    assert.matches("9.99", err, 1, true)
    forced:close()
  end)

  it("maps a 404 to not_found with the daemon's message", function()
    local res, err, code, status = c:request("GET", "/containers/cp-no-such-container-x/json")
    assert.is_nil(res)
    assert.are.equal("not_found", code)
    assert.are.equal(404, status)
    assert.matches("No such container: cp-no-such-container-x", err, 1, true)
  end)

  it("maps a name clash to conflict", function()
    local name = "cp-transport-conflict-" .. helper.instance_id()
    local body = json.encode({Image = helper.IMAGE1, Cmd = {"true"}})
    assert(c:request("POST", "/containers/create", {query = {name = name}, body = body}))
    local res, err, code = c:request("POST", "/containers/create", {query = {name = name}, body = body})
    assert(c:request("DELETE", "/containers/" .. name, {query = {force = true}}))
    assert.is_nil(res)
    assert.are.equal("conflict", code)
    assert.matches("already in use", err, 1, true)
  end)

  it("reports a missing socket as unreachable, quickly", function()
    local bad = helper.client({host = "unix:///nonexistent/docker.sock"})
    local t0 = core.clock()
    local res, err, code = bad:request("GET", "/_ping", {raw = true})
    assert.is_nil(res)
    assert.are.equal("unreachable", code)
    assert.matches("/nonexistent/docker.sock", err, 1, true)
    assert.is_true(core.clock() - t0 < 1)
    -- a versioned call fails the same way at negotiation
    local r2, _, code2 = bad:request("GET", "/version")
    assert.is_nil(r2)
    assert.are.equal("unreachable", code2)
    bad:close()
  end)

  it("reuses one connection for several requests (keep-alive)", function()
    assert(c:request("GET", "/_ping", {raw = true}))
    assert(c:request("GET", "/version"))
    assert(c:request("GET", "/containers/json", {query = {all = true}}))
    local s = c:stats()
    assert.are.equal(1, s.connections)
    assert.is_true(s.transfers >= 3)
  end)

  it("streams /events and returns promptly when the caller closes it", function()
    -- filtered on a label nothing carries, so other work on the daemon stays out
    local stream = assert(c:stream("GET", "/events", {query = {
      filters = json.encode({label = {"ctrlplane.spec.never=1"}})}}))
    assert.are.equal(200, stream:status())
    -- no events arrive: a bounded read returns false (timed out, not ended)
    assert.is_false(stream:read(0.2))
    local t0 = core.clock()
    stream:close()
    assert.is_true(core.clock() - t0 < 0.5)
    assert.is_true(stream:closed())
    assert.has_error(function() stream:read() end)
    -- the client still works after an early close
    assert(c:request("GET", "/_ping", {raw = true}))
  end)

  it("delivers streamed data as it arrives", function()
    local since = os.time() - 1
    local stream = assert(c:stream("GET", "/events", {query = {
      since = since, filters = json.encode({type = {"container"}, event = {"create"}}),
    }}))
    local name = "cp-transport-events-" .. helper.instance_id()
    local other = helper.client()
    assert(other:request("POST", "/containers/create", {query = {name = name},
      body = json.encode({Image = helper.IMAGE1, Cmd = {"true"}})}))
    local got = ""
    local deadline = core.clock() + 5
    while not got:find(name, 1, true) and core.clock() < deadline do
      local chunk = stream:read(0.5)
      if chunk then got = got .. chunk end
    end
    stream:close()
    assert(other:request("DELETE", "/containers/" .. name, {query = {force = true}}))
    other:close()
    assert.matches(name, got, 1, true)
    local ev = json.decode(got:match("[^\n]+"))
    assert.are.equal("create", ev.Action)
  end)

  it("ends a finite stream with nil", function()
    local stream = assert(c:stream("GET", "/events", {query = {
      since = os.time() - 3600, ["until"] = os.time() - 3599}}))
    local chunks, eof = 0, false
    for _ = 1, 100 do
      local chunk, err = stream:read(5)
      assert.is_nil(err)
      if chunk == nil then eof = true break end
      chunks = chunks + 1
    end
    assert.is_true(eof)
    stream:close()
  end)

  it("times out a request that takes too long", function()
    local t0 = core.clock()
    local res, err, code = c:request("GET", "/events", {timeout = 0.3})
    assert.is_nil(res)
    assert.are.equal("timeout", code)
    assert.matches("timed out", err)
    assert.is_true(core.clock() - t0 < 2)
  end)

  it("runs several transfers at once and waits on all of them", function()
    local results = c:batch({
      {path = "/version"},
      {path = "/_ping", raw = true},
      {path = "/containers/cp-no-such-container-y/json"},
      {method = "GET", path = "/info"},
    })
    assert.are.equal(4, #results)
    assert.are.equal(200, results[1].status)
    assert.are.equal("OK", results[2].body)
    assert.are.equal("not_found", results[3].code)
    assert.matches("No such container", results[3].error)
    assert.are.equal(404, results[3].status)
    assert.is_string(json.decode(results[4].body).ID)
  end)

  it("runs a batch concurrently (three 0.5 s waits take about 0.5 s)", function()
    -- /events with until in the future holds each response open until then
    local reqs = {}
    for i = 1, 3 do
      reqs[i] = {path = "/events", query = {since = os.time(), ["until"] = core.walltime() + 1.0}}
    end
    local t0 = core.clock()
    local results = c:batch(reqs)
    local elapsed = core.clock() - t0
    for i = 1, 3 do assert.are.equal(200, results[i].status) end
    assert.is_true(elapsed < 1.9, "batch took " .. elapsed .. " s")
  end)

  it("waits on several streams and reports the ones with data", function()
    local idle = assert(c:stream("GET", "/events", {query = {
      filters = json.encode({label = {"ctrlplane.spec.never=1"}})}}))
    local finite = assert(c:stream("GET", "/events", {query = {
      since = os.time() - 3600, ["until"] = os.time() - 3599}}))
    local ready = assert(c:wait({idle, finite}, 5))
    assert.are.same({2}, ready)
    idle:close()
    finite:close()
  end)

  it("percent-encodes odd characters in query values", function()
    -- Docker echoes an invalid container name in its error: the value must
    -- arrive exactly as given
    local odd = "a b&c=d+e%f#g/h?i\"j'k\195\169"
    local res, err, code = c:request("POST", "/containers/create", {
      query = {name = odd}, body = json.encode({Image = helper.IMAGE1}),
    })
    assert.is_nil(res)
    assert.are.equal("bad_request", code)
    assert.matches("(" .. odd .. ")", err, 1, true)
  end)

  it("encodes list query values as repeated keys and booleans as true/false", function()
    local res = assert(c:request("GET", "/containers/json", {query = {all = true, limit = 1}}))
    assert.are.equal(200, res.status)
    assert.is_true(#json.decode(res.body) <= 1)
  end)

  it("raises on wrong argument types", function()
    assert.has_error(function() c:request(42, "/x") end)
    assert.has_error(function() c:request("GET", 42) end)
    assert.has_error(function() c:request("BREW", "/x") end)
    assert.has_error(function() c:request("GET", "no-slash") end)
    assert.has_error(function() c:request("GET", "/x", {query = {f = function() end}}) end)
    assert.has_error(function() c:request("GET", "/x", {body = {}}) end)
    assert.has_error(function() c:request("GET", "/x", {timeout = "soon"}) end)
    assert.has_error(function() core.client("unix:///x") end)
    local closed = helper.client()
    closed:close()
    assert.has_error(function() closed:request("GET", "/_ping") end)
  end)

  it("rejects a malformed host with a clear error", function()
    local cl, err, code = core.client({host = "ftp://example"})
    assert.is_nil(cl)
    assert.are.equal("bad_request", code)
    assert.matches("invalid Docker host", err)
  end)
end)
