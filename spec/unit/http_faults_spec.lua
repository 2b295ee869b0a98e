-- The transport against a server that misbehaves on purpose
-- (spec/support/http_faultd.c on a unix socket): every fault ends in a
-- clear error with a stable code, within its time bound, and the client
-- stays usable. `make asan` runs this spec against an ASan + UBSan core
-- (leaks included). No Docker daemon involved.
local core = require("ctrlplane.docker.core")
local engine = require("ctrlplane.docker.engine")

local SOCK = string.format("/tmp/cpdocker-faultd-%d-%d.sock", os.time(), math.random(1, 1e6))
local HOST = "unix://" .. SOCK
local TIMEOUT = 1.5

-- {fault, expected code, message pattern (plain)}; nil code: success
local PLAIN = {
  {"ok", nil},
  {"chunked-ok", nil},
  {"truncated", "unreachable", "the connection closed in the middle of a response"},
  {"bad-chunk", "protocol", "chunked-encoding"},
  {"chunk-cut", "unreachable", "the connection closed in the middle of a response"},
  {"garbage", "protocol", "HTTP/0.9"},
  {"bad-status", "protocol", "Unsupported HTTP version"},
  {"huge-header", "protocol", "response head too large"},
  {"bad-length", "protocol", "Content-Length"},
  {"close", "unreachable", "Empty reply from server"},
  {"error-text", "server_error", "Docker daemon: something broke inside"},
  {"no-answer", "timeout", "timed out"},
  {"head-only", "timeout", "timed out"},
  {"stall-body", "timeout", "timed out"},
  {"trickle", "timeout", "timed out"},
  {"endless", "timeout", "timed out"},
  {"flood", "too_large", "larger than 1048576 bytes"},
}

local server

local function start_server()
  if not io.open("build/http_faultd") then
    assert(os.execute("make -s build/http_faultd >/dev/null"))
  end
  server = assert(io.popen("env -u LD_PRELOAD build/http_faultd " .. SOCK .. " 300 & echo $!"))
  local pid = server:read("l")
  for _ = 1, 100 do -- bounded: 5 s
    if os.execute("test -S " .. SOCK) then return pid end
    core.sleep(0.05)
  end
  error("http_faultd did not start")
end

local function client(opts)
  opts = opts or {}
  opts.host = HOST
  opts.timeout = opts.timeout or TIMEOUT
  opts.connect_timeout = 1
  opts.max_body = opts.max_body or 1048576
  return assert(core.client(opts))
end

describe("transport under HTTP faults", function()
  local pid

  setup(function() pid = start_server() end)
  teardown(function()
    os.execute("kill " .. pid .. " 2>/dev/null")
    server:close()
    os.remove(SOCK)
  end)

  for _, row in ipairs(PLAIN) do
    local fault, code, pattern = row[1], row[2], row[3]
    it(fault .. " -> " .. (code or "success"), function()
      local c = client()
      local t0 = core.clock()
      local res, err, ecode = c:request("GET", "/fault/" .. fault, {raw = true})
      local took = core.clock() - t0
      assert.is_true(took < TIMEOUT + 1.0, fault .. " took " .. took .. " s")
      if code == nil then
        assert.is_table(res, err)
        assert.are.equal(200, res.status)
        assert.are.equal('{"ok":true}', res.body)
      else
        assert.is_nil(res)
        assert.are.equal(code, ecode, err)
        assert.matches(pattern, err, 1, true)
      end
      -- the client is still usable afterwards
      local ok = assert(c:request("GET", "/fault/ok", {raw = true}))
      assert.are.equal(200, ok.status)
      c:close()
    end)
  end

  it("runs every fault at once in one batch, each with its own result", function()
    local c = client({api_version = "1.41"}) -- a batch negotiates first; the server has no /_ping
    local reqs = {}
    for i, row in ipairs(PLAIN) do reqs[i] = {path = "/fault/" .. row[1], raw = true} end
    local t0 = core.clock()
    local results = c:batch(reqs)
    assert.is_true(core.clock() - t0 < TIMEOUT + 1.0)
    for i, row in ipairs(PLAIN) do
      if row[2] == nil then
        assert.are.equal(200, results[i].status, row[1])
      else
        assert.are.equal(row[2], results[i].code, row[1] .. ": " .. tostring(results[i].error))
      end
    end
    c:close()
  end)

  it("decodes nothing from a body that is not JSON: protocol", function()
    local eng = assert(engine.new({host = HOST, timeout = TIMEOUT, connect_timeout = 1,
      api_version = "1.41"}))
    local v, err, code = eng:get("/fault/bad-json")
    assert.is_nil(v)
    assert.are.equal("protocol", code)
    assert.matches("invalid JSON", err, 1, true)
    eng:close()
  end)

  it("streams: a silent head times out; an idle body ends with timeout; close stops an endless one",
    function()
      local c = client()
      local s, err, code = c:stream("GET", "/fault/no-answer", {raw = true})
      assert.is_nil(s)
      assert.are.equal("timeout", code, err)

      s = assert(c:stream("GET", "/fault/stall-body", {raw = true, idle_timeout = 1}))
      assert.are.equal('{"first":1}\n', s:read(1))
      assert.is_false(s:read(0.2)) -- nothing yet, no end either
      local t0, last, ecode = core.clock(), nil, nil
      while core.clock() - t0 < 15 do -- curl's speed check averages over ~5 s
        local chunk, _, c3 = s:read(0.5)
        if chunk == nil then last, ecode = chunk, c3 break end
      end
      assert.is_nil(last)
      assert.are.equal("timeout", ecode)
      s:close()

      s = assert(c:stream("GET", "/fault/endless", {raw = true}))
      local got = 0
      t0 = core.clock()
      while got < 200 and core.clock() - t0 < 5 do
        local chunk = s:read(0.5)
        if chunk then got = got + #chunk end
      end
      assert.is_true(got >= 200)
      s:close()
      assert.is_true(s:closed())

      -- a flood is read at the reader's pace; memory stays at the high-water mark
      s = assert(c:stream("GET", "/fault/flood", {raw = true}))
      local total = 0
      for _ = 1, 200 do
        local chunk = s:read(1)
        if chunk then total = total + #chunk end
        assert.is_true(not chunk or #chunk <= 4 * 1024 * 1024)
      end
      assert.is_true(total > 0)
      s:close()

      s, err, code = c:stream("GET", "/fault/bad-chunk", {raw = true})
      if s then -- the head was fine; the error comes with the body
        local chunk, e2, c2 = s:read(2)
        while chunk do chunk, e2, c2 = s:read(2) end
        assert.are.equal("protocol", c2, e2)
        s:close()
      else
        assert.are.equal("protocol", code, err)
      end
      c:close()
    end)

  it("a socket nobody listens on is unreachable, at once", function()
    local c = assert(core.client({host = "unix://" .. SOCK .. ".absent", timeout = TIMEOUT}))
    local t0 = core.clock()
    local res, err, code = c:request("GET", "/_ping", {raw = true})
    assert.is_nil(res)
    assert.are.equal("unreachable", code)
    assert.matches("No such file or directory", err, 1, true)
    assert.is_true(core.clock() - t0 < 1)
    c:close()
  end)

  it("rejects a bad max_body option", function()
    assert.has_error(function() core.client({host = HOST, max_body = 0}) end)
    assert.has_error(function() core.client({host = HOST, max_body = "1MB"}) end)
  end)
end)
