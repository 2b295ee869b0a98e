-- A scripted JSON-RPC session against `cpdocker serve`.
local json = require("ctrlplane.docker.json")
local helper = require("support.helper")
local projects = require("support.projects")
local rpc_session = require("support.rpc_session")

describe("cpdocker serve", function()
  local s

  setup(function()
    helper.daemon()
    s = rpc_session.start()
  end)

  teardown(function()
    if s then assert.is_true(s:close(), "the server did not exit when stdin closed") end
  end)

  it("answers info, capabilities and health_check", function()
    local info = s:call("info")
    assert.are.equal("2.0", info.jsonrpc)
    assert.are.equal("docker", info.result.name)
    local caps = s:call("capabilities")
    assert.is_table(caps.result)
    local found = false
    for _, c in ipairs(caps.result) do if c == "provision" then found = true end end
    assert.is_true(found)
    assert.is_true(s:call("health_check").result.healthy)
  end)

  it("answers malformed input with errors and keeps serving", function()
    s:raw("this is not json")
    local m = s:expect(function(x) return x.error and x.error.code == -32700 end, 5)
    assert.are.equal(json.null, m.id)
    -- a batch of three invalid requests: an array of three -32600 errors (JSON-RPC 2.0 §6)
    s:raw("[1, 2, 3]")
    local arr = s:expect(function(x) return x[1] ~= nil end, 5)
    assert.are.equal(3, #arr)
    for _, e in ipairs(arr) do
      assert.are.equal(-32600, e.error.code)
      assert.are.equal(json.null, e.id)
    end
    s:raw('{"jsonrpc":"2.0","id":"x1","method":42}')
    assert.are.equal(-32600, s:reply("x1", 5).error.code)
    local unknown = s:call("frobnicate")
    assert.are.equal(-32601, unknown.error.code)
    assert.are.equal("method_not_found", unknown.error.data.code)
    local wrong = s:call("status", {instance_id = 42})
    assert.are.equal(-32602, wrong.error.code)
    assert.are.equal("instance_id", wrong.error.data.errors[1].field)
    -- a 10 MB line
    s.w:write(string.rep("x", 10 * 1024 * 1024), "\n")
    s.w:flush()
    local big = s:expect(function(x) return x.error and x.error.data and x.error.data.code == "too_large" end, 20)
    assert.are.equal(-32600, big.error.code)
    assert.are.equal("docker", s:call("info").result.name)
  end)

  it("names the invalid field with the stable code in data", function()
    local req = projects.three(helper.instance_id("rpcbad"))
    req.services[2].ports = {{container = 0}}
    local m = s:call("provision", req)
    assert.are.equal(-32602, m.error.code)
    assert.are.equal("invalid", m.error.data.code)
    assert.are.equal("services[1].ports[0].container", m.error.data.errors[1].field)
  end)

  it("provisions, reports status and deprovisions with the contract's shapes", function()
    local id = helper.instance_id("rpc")
    local prov = s:call("provision", projects.three(id), 120)
    assert.is_nil(prov.error)
    assert.are.equal("docker:cp-" .. id, prov.result.provider_ref)
    local st = s:call("status", {instance_id = id})
    assert.are.equal("running", st.result.state)
    assert.is_true(st.result.ready)

    -- logs without follow: a subscription whose events arrive as
    -- notifications, then logs.end at the end of the log (never one big reply)
    local past = s:call("logs", {instance_id = id, opts = {service_name = "setup"}})
    assert.is_nil(past.error)
    local psid = past.result.subscription
    assert.is_string(psid)
    local first = s:expect(function(m)
      return m.method == "logs.event" and m.params.subscription == psid
    end, 10)
    assert.are.equal("init done", first.params.event.line)
    assert.are.equal("stdout", first.params.event.stream)
    local fin = s:expect(function(m) return m.method == "logs.end" and m.params.subscription == psid end, 10)
    assert.are.equal("end of stream", fin.params.reason)

    -- logs with follow: a subscription whose events arrive as notifications
    local sub = s:call("logs", {instance_id = id, opts = {service_name = "web", follow = true, tail = 0}})
    assert.is_nil(sub.error)
    local sid = sub.result.subscription
    assert.is_string(sid)
    -- while the follow is open, other requests are answered
    assert.are.equal("running", s:call("status", {instance_id = id}, 10).result.state)
    local _, rc = helper.sh("docker exec cp-" .. id .. "-web sh -c 'echo from-exec-1 > /proc/1/fd/1'")
    assert.are.equal(0, rc)
    local ev = s:expect(function(m)
      return m.method == "logs.event" and m.params.subscription == sid
        and m.params.event.line == "from-exec-1"
    end, 15)
    assert.are.equal("stdout", ev.params.event.stream)
    assert.is_nil(ev.id)
    assert.is_true(s:call("logs.cancel", {subscription = sid}, 10).result.cancelled)
    s:expect(function(m) return m.method == "logs.end" and m.params.subscription == sid end, 5)
    -- after the cancel, nothing more arrives for it
    helper.sh("docker exec cp-" .. id .. "-web sh -c 'echo from-exec-2 > /proc/1/fd/1'")
    assert.are.equal("docker", s:call("info").result.name)
    for _, m in ipairs(s.msgs) do
      assert.is_false(m.method == "logs.event" and m.params.subscription == sid)
    end
    local none = s:call("logs.cancel", {subscription = sid})
    assert.are.equal(-32602, none.error.code)

    -- exec: bytes as base64 both ways
    local util = require("ctrlplane.docker.util")
    local ex = s:call("exec", {instance_id = id, request = {command = {"sh", "-c", "cat; printf '\\377' >&2; exit 4"},
      stdin = util.base64("in\0put")}}, 30)
    assert.is_nil(ex.error)
    assert.are.equal(4, ex.result.exit_code)
    assert.are.equal("in\0put", util.unbase64(ex.result.stdout))
    assert.are.equal("\255", util.unbase64(ex.result.stderr))

    local gone = s:call("deprovision", {instance_id = id}, 60)
    assert.is_nil(gone.error)
    assert.are.equal(json.null, gone.result)
    assert.are.equal("destroyed", s:call("status", {id}).result.state)
    local missing = s:call("stop", {instance_id = id})
    assert.are.equal(-32000, missing.error.code)
    assert.are.equal("not_found", missing.error.data.code)
  end)
end)
