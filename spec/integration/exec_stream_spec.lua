-- exec moves input and output at the same time, keeps memory bounded, caps
-- what a result holds, and a timeout (or an interrupt) ends the command in
-- the container too. Issue #12 item 6 and the exec part of item 4.
local json = require("ctrlplane.docker.json")
local util = require("ctrlplane.docker.util")
local helper = require("support.helper")
local projects = require("support.projects")
local rpc_session = require("support.rpc_session")

-- The peak RSS (VmHWM, KiB) of a process, sampled until it ends.
local function watch_peak(pidfile, limit_s)
  local pid
  for _ = 1, 200 do
    local f = io.open(pidfile)
    pid = f and f:read("l")
    if f then f:close() end
    if pid and pid ~= "" then break end
    helper.sleep(0.02)
  end
  assert(pid and pid ~= "", "the process did not start")
  local peak, deadline = 0, helper.clock() + limit_s
  while helper.clock() < deadline do
    local f = io.open("/proc/" .. pid .. "/status")
    if not f then break end
    local text = f:read("a") or ""
    f:close()
    local hwm = tonumber(text:match("VmHWM:%s*(%d+)"))
    if not hwm then break end -- a zombie: it has ended
    peak = math.max(peak, hwm)
    helper.sleep(0.05)
  end
  return peak
end

-- The bound for cpdocker's peak RSS while 100 MB stream through it. Under
-- ASan (make asan-all swaps in an instrumented cpdocker) the allocator's
-- quarantine is held small so the bound still means something.
local RSS_LIMIT_KB = os.getenv("ASAN_OPTIONS") and 96 * 1024 or 64 * 1024
local ASAN_ENV = os.getenv("ASAN_OPTIONS")
  and ("ASAN_OPTIONS='" .. os.getenv("ASAN_OPTIONS") .. ":quarantine_size_mb=4'") or ""

-- The processes of the instance's main container whose command line has text.
local function processes(p, id, text)
  local res = assert(p:exec(id, {command = {"ps", "-o", "pid,args"}}))
  local found = {}
  for line in res.stdout:gmatch("[^\n]+") do
    if line:find(text, 1, true) and not line:find("ps -o", 1, true) then found[#found + 1] = line end
  end
  return found
end

describe("exec streaming", function()
  local s = projects.session()
  local p, id
  local tmp = os.tmpname()

  setup(function()
    p = s.start()
    id = s.new_id("exst")
    assert(p:provision({instance_id = id, tenant_id = "ten_exec", name = "exec streams",
      services = {{name = "app", image = helper.IMAGE1, command = projects.IDLE_CMD}}}))
  end)

  teardown(function()
    os.remove(tmp)
    os.remove(tmp .. ".sum")
    os.remove(tmp .. ".pid")
    os.remove(tmp .. ".err")
    s.finish()
  end)

  it("streams 100 MB through `cpdocker exec -i -- cat` intact, in bounded memory", function()
    assert(os.execute("head -c 100000000 /dev/urandom > " .. tmp))
    local want = helper.sh("sha256sum < " .. tmp):match("^(%x+)")
    os.remove(tmp .. ".pid")
    -- in the background, so the peak RSS can be sampled while it runs
    -- (sh execs cpdocker through env: the pid written is cpdocker's)
    assert(os.execute(string.format("(timeout 180 sh -c 'echo $$ > %s.pid; exec env %s ./cpdocker exec %s -i"
      .. " -- cat' < %s | sha256sum > %s.sum) &", tmp, ASAN_ENV, id, tmp, tmp)))
    local peak = watch_peak(tmp .. ".pid", 200)
    local got
    for _ = 1, 100 do
      local f = io.open(tmp .. ".sum")
      got = f and f:read("a"):match("^(%x+)")
      if f then f:close() end
      if got then break end
      helper.sleep(0.05)
    end
    assert.are.equal(want, got)
    assert.is_true(peak > 0 and peak < RSS_LIMIT_KB,
      string.format("peak RSS %d KiB (limit %d KiB)", peak, RSS_LIMIT_KB))
    print(string.format("\n  100 MB through exec -i cat: peak RSS %.1f MiB", peak / 1024))
  end)

  it("moves input and output at once through the provider (8 MB, more than the pipes hold)", function()
    local input = string.rep("0123456789abcdef", 512 * 1024) -- 8 MiB
    local res = assert(p:exec(id, {command = {"cat"}, stdin = input}, {max_output = 16 * 1024 * 1024}))
    assert.are.equal(0, res.exit_code)
    assert.are.equal(#input, #res.stdout)
    assert.is_true(res.stdout == input)
    assert.is_false(res.stdout_truncated)
  end)

  it("keeps at most max_output bytes of each stream and says it dropped the rest", function()
    local res = assert(p:exec(id, {command = {"sh", "-c",
      "head -c 300000 /dev/zero | tr '\\0' a; printf err >&2; exit 6"}}, {max_output = 1000}))
    assert.are.equal(6, res.exit_code) -- the command still ran to its end
    assert.are.equal(string.rep("a", 1000), res.stdout)
    assert.is_true(res.stdout_truncated)
    assert.are.equal("err", res.stderr)
    assert.is_false(res.stderr_truncated)
  end)

  it("caps `cpdocker --json exec` at CP_DOCKER_EXEC_OUTPUT_MAX, in bounded memory", function()
    os.remove(tmp .. ".pid")
    assert(os.execute(string.format("(timeout 180 sh -c 'echo $$ > %s.pid; exec env CP_DOCKER_EXEC_OUTPUT_MAX=100000 "
      .. "%s ./cpdocker --json exec %s -- sh -c \"head -c 100000000 /dev/zero\"' > %s) &",
      tmp, ASAN_ENV, id, tmp)))
    local peak = watch_peak(tmp .. ".pid", 200)
    local out
    for _ = 1, 100 do
      out = assert(io.open(tmp)):read("a")
      if out:find("\n$") then break end
      helper.sleep(0.05)
    end
    local r = assert(json.decode(out))
    assert.are.equal(0, r.exit_code)
    assert.are.equal(string.rep("\0", 100000), util.unbase64(r.stdout))
    assert.is_true(r.stdout_truncated)
    assert.is_false(r.stderr_truncated)
    assert.is_true(peak > 0 and peak < RSS_LIMIT_KB,
      string.format("peak RSS %d KiB (limit %d KiB)", peak, RSS_LIMIT_KB))
    print(string.format("\n  100 MB of output, --json: peak RSS %.1f MiB", peak / 1024))
  end)

  it("ends a timed-out command inside the container, children too", function()
    local t0 = helper.clock()
    local res, err, code = p:exec(id, {command = {"sh", "-c", "sleep 1001 & sleep 1002; wait"}},
      {timeout = 1})
    local took = helper.clock() - t0
    assert.is_nil(res)
    assert.are.equal("timeout", code)
    assert.matches("timed out after 1 s %(the command was killed%)", err)
    assert.is_true(took >= 1 and took < 15, "took " .. took .. " s")
    assert.are.same({}, processes(p, id, "sleep 100"))
  end)

  it("bounds the whole exec with --timeout, also while stdin stays open", function()
    -- a fifo opened read-write as stdin: open, idle, never at its end
    assert(os.execute("rm -f " .. tmp .. ".fifo && mkfifo " .. tmp .. ".fifo"))
    local t0 = helper.clock()
    local out, rc = helper.sh("./cpdocker exec " .. id .. " -i --timeout 1 -- sh -c 'cat; sleep 1003'"
      .. " 0<>" .. tmp .. ".fifo 2>&1")
    local took = helper.clock() - t0
    os.remove(tmp .. ".fifo")
    assert.are.equal(1, rc)
    assert.matches("timed out after 1 s %(the command was killed%) %[timeout%]", out)
    assert.is_true(took >= 1 and took < 15, "took " .. took .. " s")
    assert.are.same({}, processes(p, id, "cat"))
    assert.are.same({}, processes(p, id, "sleep 1003"))
  end)

  for _, sig in ipairs({"INT", "TERM", "HUP"}) do
    it("kills the command when cpdocker exec gets SIG" .. sig, function()
      local cmd = "sleep 100" .. ({INT = 4, TERM = 7, HUP = 8})[sig]
      os.remove(tmp .. ".pid")
      os.remove(tmp .. ".err")
      assert(os.execute(string.format("(sh -c 'echo $$ > %s.pid; exec ./cpdocker exec %s -- %s'"
        .. " > /dev/null 2> %s.err; echo $? >> %s.err) &", tmp, id, cmd, tmp, tmp)))
      local pid
      for _ = 1, 200 do
        local f = io.open(tmp .. ".pid")
        pid = f and f:read("l")
        if f then f:close() end
        if pid and #processes(p, id, cmd) > 0 then break end
        helper.sleep(0.05)
      end
      assert.are.equal(1, #processes(p, id, cmd))
      assert(os.execute("kill -" .. sig .. " " .. pid))
      local text
      for _ = 1, 300 do
        local f = io.open(tmp .. ".err")
        text = f and f:read("a") or ""
        if f then f:close() end
        if text:find("%d+\n$") then break end
        helper.sleep(0.05)
      end
      assert.matches("interrupted %(the command was killed%) %[interrupted%]\n1\n$", text)
      assert.are.same({}, processes(p, id, cmd))
    end)
  end

  it("kills the command when the reader of its output goes away (| head -1)", function()
    local out, rc = helper.sh("{ ./cpdocker exec " .. id .. " -- sh -c 'yes | head -c 50000000; sleep 1009';"
      .. " echo $? > " .. tmp .. ".st; } | head -1")
    assert.are.equal(0, rc)
    assert.are.equal("y\n", out)
    local st = assert(io.open(tmp .. ".st")):read("a")
    os.remove(tmp .. ".st")
    assert.are.equal("141\n", st) -- as for a program killed by SIGPIPE, and no message
    assert.are.same({}, processes(p, id, "sleep 1009"))
    assert.are.same({}, processes(p, id, "yes"))
  end)

  it("rejects a bad --timeout before touching the engine", function()
    for _, v in ipairs({"0", "-1", "abc", "1e999", "nan"}) do
      local out, rc = helper.sh("./cpdocker exec " .. id .. " --timeout " .. v .. " -- true 2>&1")
      assert.are.equal(2, rc, v)
      assert.matches("%-%-timeout", out)
    end
  end)

  describe("over JSON-RPC", function()
    local srv
    before_each(function()
      srv = rpc_session.start("", {CP_DOCKER_EXEC_TIMEOUT = "1s", CP_DOCKER_EXEC_OUTPUT_MAX = 1000})
    end)
    after_each(function() srv:close() end)

    it("a command that never ends times out (the default), is killed, and the server serves on", function()
      local t0 = helper.clock()
      local r = srv:call("exec", {instance_id = id, request = {command = {"sleep", "1005"}}}, 30)
      assert.are.equal(-32000, r.error.code)
      assert.are.equal("timeout", r.error.data.code)
      assert.matches("the command was killed", r.error.message)
      assert.is_true(helper.clock() - t0 < 20)
      assert.are.same({}, processes(p, id, "sleep 1005"))
      local info = srv:call("info", nil, 10)
      assert.are.equal("docker", info.result.name)
    end)

    it("params.timeout overrides the default; a bad one is a -32602 naming it", function()
      -- longer than the 1 s default; 30 s of room on a busy machine
      local r = srv:call("exec", {instance_id = id, timeout = "30s",
        request = {command = {"sh", "-c", "sleep 1.5; echo late"}}}, 60)
      assert.is_nil(r.error)
      assert.are.equal("late\n", util.unbase64(r.result.stdout))
      local bad = srv:call("exec", {instance_id = id, timeout = "soon",
        request = {command = {"true"}}}, 10)
      assert.are.equal(-32602, bad.error.code)
      assert.matches("params.timeout", bad.error.message)
    end)

    it("caps the output at CP_DOCKER_EXEC_OUTPUT_MAX and marks the truncation", function()
      local r = srv:call("exec", {instance_id = id, timeout = "30s", request = {command = {"sh", "-c",
        "head -c 50000 /dev/zero; echo e >&2"}}}, 60)
      assert.is_nil(r.error)
      assert.are.equal(1000, #util.unbase64(r.result.stdout))
      assert.is_true(r.result.stdout_truncated)
      assert.are.equal("e\n", util.unbase64(r.result.stderr))
      assert.is_false(r.result.stderr_truncated)
    end)
  end)
end)
