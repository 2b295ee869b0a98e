-- Many tenants through one `cpdocker serve` (issue 14): operations on
-- different instances interleave, one instance's operations keep their
-- arrival order, cancel and deadlines stop an operation and clean up, a full
-- queue answers "busy", and a crashing operation takes no other with it.
local json = require("ctrlplane.docker.json")
local helper = require("support.helper")
local projects = require("support.projects")
local rpc_session = require("support.rpc_session")

-- A 2-service instance whose init sleeps `init_sleep` seconds first.
local function slow(id, init_sleep)
  return {
    instance_id = id, tenant_id = "ten_conc", name = "conc",
    services = {
      {name = "prep", role = "init", image = helper.IMAGE1,
        command = {"sh", "-c", string.format("sleep %g; echo prepared", init_sleep)}},
      {name = "web", role = "main", image = helper.IMAGE1, depends_on = {"prep"},
        command = projects.IDLE_CMD},
    },
  }
end

-- Index of the first message matching pred in s.msgs (after polling until
-- the given reply ids have all arrived), to compare arrival order.
local function arrival(s, ids, timeout)
  local deadline = helper.clock() + timeout
  local pos = {}
  while true do
    s:poll()
    for i, m in ipairs(s.msgs) do
      for _, id in ipairs(ids) do
        if m.id == id and not pos[id] then pos[id] = i end
      end
    end
    local all = true
    for _, id in ipairs(ids) do all = all and pos[id] ~= nil end
    if all then return pos end
    assert(helper.clock() < deadline, "replies did not all arrive in time")
    helper.sleep(0.02)
  end
end

-- When each of the given replies arrived (helper.clock()).
local function arrived_at(s, ids, timeout)
  local deadline = helper.clock() + timeout
  local at, want = {}, {}
  for _, id in ipairs(ids) do want[id] = true end
  while true do
    s:poll()
    local now = helper.clock()
    local all = true
    for _, m in ipairs(s.msgs) do
      if m.id and want[m.id] and not at[m.id] then at[m.id] = now end
    end
    for _, id in ipairs(ids) do all = all and at[id] ~= nil end
    if all then return at end
    assert(now < deadline, "replies did not all arrive in time")
    helper.sleep(0.01)
  end
end

local function by_id(s, id)
  for _, m in ipairs(s.msgs) do
    if m.id == id then return m end
  end
end

describe("cpdocker serve, many instances at once", function()
  local s
  local ids = {}
  local function new_id(tag)
    local id = helper.instance_id(tag)
    ids[#ids + 1] = id
    return id
  end

  setup(function()
    helper.daemon()
    s = rpc_session.start()
  end)

  teardown(function()
    if s then
      for _, id in ipairs(ids) do s:call("deprovision", {instance_id = id}, 60) end
      assert.is_true(s:close(), "the server did not exit when stdin closed")
    end
  end)

  it("answers status and health_check of others while a slow provision runs", function()
    local a, b = new_id("cva"), new_id("cvb")
    assert.is_nil(s:call("provision", slow(b, 0), 60).error)
    local t0 = helper.clock()
    local pa = s:send("provision", slow(a, 5))
    helper.sleep(0.3) -- A is now waiting on its init
    local sb = s:send("status", {instance_id = b})
    local hc = s:send("health_check")
    local pos = arrival(s, {pa, sb, hc}, 90)
    -- B's status and the health check were answered before A's provision,
    -- while A's init (5 s) was still sleeping
    assert.is_true(pos[sb] < pos[pa] and pos[hc] < pos[pa], "answered behind A's provision")
    assert.are.equal("running", s:reply(sb, 1).result.state)
    assert.is_true(s:reply(hc, 1).result.healthy)
    assert.is_nil(s:reply(pa, 1).error)
    assert.is_true(helper.clock() - t0 >= 5)
  end)

  it("runs one instance's operations in arrival order, replies out of order across instances", function()
    local a, b = new_id("coa"), new_id("cob")
    local p1 = s:send("provision", slow(a, 1.5))
    local s1 = s:send("status", {instance_id = a})   -- waits for the provision
    local d1 = s:send("deprovision", {instance_id = a})
    local s2 = s:send("status", {instance_id = a})   -- after the deprovision
    local i1 = s:send("status", {instance_id = b})   -- another instance: at once
    local pos = arrival(s, {p1, s1, d1, s2, i1}, 90)
    assert.is_true(pos[p1] < pos[s1] and pos[s1] < pos[d1] and pos[d1] < pos[s2])
    assert.is_true(pos[i1] < pos[p1], "the other instance's status waited behind A")
    assert.is_nil(by_id(s, p1).error)
    local st1 = by_id(s, s1).result
    assert.are.equal("running", st1.state)
    assert.is_true(st1.ready)
    assert.are.equal("destroyed", by_id(s, s2).result.state)
    assert.are.equal("destroyed", by_id(s, i1).result.state)
    for _, id in ipairs({p1, s1, d1, s2, i1}) do s:reply(id, 1) end
  end)

  it("cancels an operation in flight at its next wait and cleans up as a failure would", function()
    local c = new_id("ccx")
    local t0 = helper.clock()
    local pc = s:send("provision", slow(c, 30))
    helper.sleep(1.5) -- inside the init's wait
    local cr = s:call("cancel", {id = pc}, 10)
    assert.is_nil(cr.error)
    assert.is_true(cr.result.cancelled)
    local r = s:reply(pc, 30)
    assert.are.equal(-32000, r.error.code)
    assert.are.equal("cancelled", r.error.data.code)
    assert.is_true(helper.clock() - t0 < 20, "the cancel did not stop the 30 s init")
    assert.are.same({}, projects.leftovers(c))
    -- nothing left to cancel under that id
    local again = s:call("cancel", {id = pc}, 10)
    assert.are.equal("not_found", again.error.data.code)
    local bad = s:call("cancel", {id = {1}}, 10)
    assert.are.equal(-32602, bad.error.code)
  end)

  it("honours a per-request deadline", function()
    local d = new_id("cdl")
    local t0 = helper.clock()
    s.next_id = s.next_id + 1
    local rid = s.next_id
    s:raw(json.encode({jsonrpc = "2.0", id = rid, method = "provision", params = slow(d, 30),
      deadline_ms = 2000}))
    local r = s:reply(rid, 30)
    local took = helper.clock() - t0
    assert.are.equal(-32000, r.error.code)
    assert.are.equal("deadline", r.error.data.code)
    assert.is_true(took >= 2 and took < 20, "took " .. took .. " s")
    assert.are.same({}, projects.leftovers(d))
    -- the same in params (for clients that cannot add members), and a bad one
    local st = s:call("status", {instance_id = d, deadline_ms = 5000}, 10)
    assert.are.equal("destroyed", st.result.state)
    local bad = s:call("status", {instance_id = d, deadline_ms = -5}, 10)
    assert.are.equal(-32602, bad.error.code)
    assert.are.equal("deadline_ms", bad.error.data.errors[1].field)
  end)
end)

-- One operation of instance A that waits long inside the C core (send(s,
-- a) sends it and returns its request id), then, while it waits, status of
-- B and a health check: both must be answered within 0.4 s, A's only after
-- at least min_s. Returns the three replies.
-- A server (settings env) with two running instances, A and B, removed
-- when the test ends. Returns the session and the two ids.
local function two_running(env)
  helper.daemon()
  local s = rpc_session.start(nil, env)
  local a, b = helper.instance_id("cla"), helper.instance_id("clb")
  finally(function()
    for _, id in ipairs({a, b}) do s:call("deprovision", {instance_id = id}, 60) end
    s:close()
  end)
  assert.is_nil(s:call("provision", slow(a, 0), 60).error)
  assert.is_nil(s:call("provision", slow(b, 0), 60).error)
  return s, a, b
end

local function answered_meanwhile(env, send, min_s, what)
  local s, a, b = two_running(env)
  local long = send(s, a)
  local t_long = helper.clock()
  helper.sleep(0.3) -- A is waiting now
  local st = s:send("status", {instance_id = b})
  local hc = s:send("health_check")
  local t_sent = helper.clock()
  local at = arrived_at(s, {long, st, hc}, 60)
  assert.is_true(at[long] - t_long >= min_s, what .. " answered at once: nothing was measured")
  assert.is_true(at[st] - t_sent < 0.4 and at[hc] - t_sent < 0.4,
    string.format("answered %.2f s / %.2f s after they were sent, behind %s (%.2f s)",
      at[st] - t_sent, at[hc] - t_sent, what, at[long] - t_long))
  local replies = {s:reply(long, 1), s:reply(st, 1), s:reply(hc, 1)}
  assert.is_nil(replies[1].error, json.encode(replies[1].error))
  assert.are.equal("running", replies[2].result.state)
  assert.is_true(replies[3].result.healthy)
  return replies
end

describe("cpdocker serve, a long wait inside one operation", function()
  it("answers others while a resources call waits for the daemon's stats API (about a second)",
    function()
      -- the stats API answers after the daemon's collector ticks
      local r = answered_meanwhile({CP_DOCKER_STATS_SOURCE = "api"}, function(s, a)
        return s:send("resources", {instance_id = a})
      end, 0.8, "the stats fetch")
      assert.are.equal("api", r[1].result.metadata.source)
    end)

  it("cancels one resources call without touching another's stats fetched at the same time", function()
    local s, a, b = two_running({CP_DOCKER_STATS_SOURCE = "api"})
    local ra = s:send("resources", {instance_id = a})
    local rb = s:send("resources", {instance_id = b})
    helper.sleep(0.3) -- both are waiting for the daemon's stats now
    assert.is_true(s:call("cancel", {id = ra}, 10).result.cancelled)
    local got_a, got_b = s:reply(ra, 30), s:reply(rb, 30)
    assert.are.equal("cancelled", got_a.error and got_a.error.data.code)
    assert.is_nil(got_b.error, json.encode(got_b.error))
    assert.are.equal("api", got_b.result.metadata.source)
  end)

  it("answers others while an exec's command runs in one instance's container", function()
    local r = answered_meanwhile(nil, function(s, a)
      return s:send("exec", {instance_id = a, request = {command = {"sh", "-c", "sleep 2; echo slept"}}})
    end, 2, "the exec")
    assert.are.equal(0, r[1].result.exit_code)
    assert.are.equal("slept\n", require("ctrlplane.docker.util").unbase64(r[1].result.stdout))
  end)
end)

describe("cpdocker serve with a small limit", function()
  it("queues beyond max_inflight and answers busy when the queue is full", function()
    helper.daemon()
    local s = rpc_session.start(nil, {CP_DOCKER_MAX_INFLIGHT = 1, CP_DOCKER_MAX_QUEUED = 1})
    local a = helper.instance_id("cqa")
    finally(function() helper.cpdocker("deprovision " .. a) end)
    local ok, err = pcall(function()
      local pa = s:send("provision", slow(a, 2))
      local q = s:send("status", {instance_id = helper.instance_id("cqb")}) -- queued
      local full = s:send("status", {instance_id = helper.instance_id("cqc")}) -- no room
      local busy = s:reply(full, 5)
      assert.are.equal(-32000, busy.error.code)
      assert.are.equal("busy", busy.error.data.code)
      -- health_check is no instance operation: answered at once all the same
      assert.is_true(s:call("health_check", nil, 5).result.healthy)
      local pos = arrival(s, {pa, q}, 60)
      assert.is_true(pos[pa] < pos[q], "the queued status ran before the slot was free")
      assert.is_nil(by_id(s, pa).error)
      assert.are.equal("destroyed", by_id(s, q).result.state)
      s:reply(pa, 1)
      s:reply(q, 1)
      assert.is_nil(s:call("deprovision", {instance_id = a}, 60).error)
    end)
    assert.is_true(s:close())
    assert(ok, err)
  end)
end)

describe("cpdocker serve, hostile input", function()
  local s
  setup(function()
    helper.daemon()
    s = rpc_session.start()
  end)
  teardown(function() assert.is_true(s:close()) end)

  -- {description, params, field}
  local cases = {
    {"opts not an object", {instance_id = "inst_x", opts = "x"}, "opts"},
    {"since far in the future", {instance_id = "inst_x", opts = {since = 1e20}}, "opts.since"},
    {"since digits beyond range", {instance_id = "inst_x", opts = {since = "99999999999999999999"}},
      "opts.since"},
    {"max_line a string", {instance_id = "inst_x", opts = {max_line = "9"}}, "opts.max_line"},
    {"tail a fraction", {instance_id = "inst_x", opts = {tail = 1.5}}, "opts.tail"},
    {"follow a string", {instance_id = "inst_x", opts = {follow = "yes"}}, "opts.follow"},
    {"no instance id", {opts = {}}, "instance_id"},
  }
  for _, c in ipairs(cases) do
    it("answers bad logs params (" .. c[1] .. ") with -32602 and keeps serving", function()
      local r = s:call("logs", c[2], 10)
      assert.are.equal(-32602, r.error.code)
      assert.are.equal(c[3], r.error.data.errors[1].field)
      assert.are.equal("docker", s:call("info", nil, 10).result.name)
    end)
  end

  it("answers batches as JSON-RPC 2.0 says", function()
    s:raw(json.encode(json.array({
      {jsonrpc = "2.0", id = "b1", method = "info"},
      {jsonrpc = "2.0", method = "health_check"},              -- a notification: no entry
      {jsonrpc = "2.0", id = "b3", method = "nope"},
      {jsonrpc = "2.0", id = "b4", method = "status", params = {instance_id = 7}},
    })))
    local arr = s:expect(function(m) return m[1] ~= nil end, 10)
    assert.are.equal(3, #arr)
    local got = {}
    for _, m in ipairs(arr) do got[m.id] = m end
    assert.are.equal("docker", got.b1.result.name)
    assert.are.equal(-32601, got.b3.error.code)
    assert.are.equal(-32602, got.b4.error.code)
    -- an empty batch is one invalid-request error
    s:raw("[]")
    local e = s:expect(function(m) return m.error and m.error.message:find("empty batch", 1, true) end, 5)
    assert.are.equal(-32600, e.error.code)
    -- a batch of notifications only gets no answer at all
    s:raw(json.encode(json.array({{jsonrpc = "2.0", method = "info"}})))
    local after = s:call("info", nil, 5)
    assert.are.equal("docker", after.result.name)
    for _, m in ipairs(s.msgs) do assert.is_nil(m[1]) end
  end)

  it("rejects ids that are not a string, number or null", function()
    for _, id in ipairs({"{}", "[1]", "true"}) do
      s:raw('{"jsonrpc":"2.0","id":' .. id .. ',"method":"info"}')
      local m = s:expect(function(x) return x.error and x.error.code == -32600 end, 5)
      assert.are.equal(json.null, m.id)
    end
    s:raw('{"jsonrpc":"2.0","id":null,"method":"info"}')
    local m = s:expect(function(x) return x.id == json.null and x.result end, 5)
    assert.are.equal("docker", m.result.name)
  end)
end)

describe("cpdocker serve, an over-size line ended by end of input", function()
  it("is answered before the server exits", function()
    helper.daemon()
    local out = os.tmpname()
    local body, rc = helper.sh(string.format(
      "head -c 5000000 /dev/zero | tr '\\0' x | timeout 30 ./cpdocker serve > %s; echo rc=$?", out))
    assert.are.equal(0, rc, body)
    local f = assert(io.open(out))
    local line = f:read("l")
    f:close()
    os.remove(out)
    assert.is_truthy(body:find("rc=0", 1, true))
    local m = assert(json.decode(line))
    assert.are.equal(-32600, m.error.code)
    assert.are.equal("too_large", m.error.data.code)
  end)
end)
