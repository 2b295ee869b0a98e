-- The scheduler (sched.lua) over the C core's cooperative waits, without a
-- daemon: core.sleep and core.wait_fd yield inside tasks.
local core = require("ctrlplane.docker.core")
local sched = require("ctrlplane.docker.sched")
local locking = require("ctrlplane.docker.locking")

local function run(s, timeout)
  local deadline = core.clock() + (timeout or 10)
  assert(s:run(function() return s:idle() or core.clock() > deadline end, 0.05))
  assert.is_true(s:idle(), "tasks still running at the bound")
end

describe("sched", function()
  it("interleaves tasks that sleep: both start before either ends", function()
    local s = sched.new()
    local log = {}
    for i = 1, 2 do
      s:spawn(function()
        log[#log + 1] = "start" .. i
        assert.is_true(core.in_task())
        core.sleep(0.3)
        log[#log + 1] = "end" .. i
      end, {})
    end
    run(s)
    assert.are.same({"start1", "start2", "end1", "end2"}, log)
    assert.is_false(core.in_task())
  end)

  it("runs tasks with the same key one after another in arrival order", function()
    local s = sched.new()
    local log = {}
    for i = 1, 3 do
      s:spawn(function()
        log[#log + 1] = "a" .. i .. "+"
        core.sleep(0.05)
        log[#log + 1] = "a" .. i .. "-"
      end, {key = "A"})
    end
    s:spawn(function() log[#log + 1] = "b" end, {key = "B"})
    run(s)
    assert.are.same({"a1+", "b", "a1-", "a2+", "a2-", "a3+", "a3-"}, log)
  end)

  it("queues beyond max_inflight and answers busy beyond max_queued", function()
    local s = sched.new({max_inflight = 1, max_queued = 1})
    local order = {}
    local function op(name) return function() core.sleep(0.05); order[#order + 1] = name end end
    assert.is_table(s:spawn(op("x"), {key = "x"}))
    assert.is_table(s:spawn(op("y"), {key = "y"}))
    local t, err, code = s:spawn(op("z"), {key = "z"})
    assert.is_nil(t)
    assert.are.equal("busy", code)
    assert.matches("busy", err)
    -- unlimited tasks are not held back
    assert.is_table(s:spawn(op("free"), {limited = false}))
    run(s)
    assert.are.same({"x", "free", "y"}, {order[1], order[2], order[3]})
  end)

  it("cancels: a queued task at once, a running one at its wait", function()
    local s = sched.new({max_inflight = 1})
    local results = {}
    local function done(name) return function(_, ok, a, b) results[name] = {ok, a, b} end end
    local slept
    local running = s:spawn(function()
      slept = core.sleep(5)
      return "after"
    end, {key = "r", on_done = done("running")})
    local queued = s:spawn(function() return "never" end, {key = "q", on_done = done("queued")})
    s:step(0)
    assert.is_true(s:cancel(queued, "cancelled", "stop"))
    assert.are.same({false, "stop", "cancelled"}, results.queued)
    assert.is_true(s:cancel(running, "cancelled", "stop"))
    run(s, 4) -- a sleep of 5 s not cut short would pass this bound
    assert.is_false(slept) -- the sleep was cut short, as an interrupt would
    assert.are.same({true, "after"}, {results.running[1], results.running[2]})
    assert.is_false(s:cancel(running))
  end)

  it("cancels at the deadline", function()
    local s = sched.new()
    local res
    s:spawn(function()
      local ok = core.sleep(5)
      if not ok then return nil, "stopped" end
      return true
    end, {deadline = 0.2, on_done = function(t, ok, a, b) res = {t.cancel and t.cancel.code, ok, a, b} end})
    run(s, 4)
    assert.are.same({"deadline", true, nil, "stopped"}, res)
  end)

  it("a task that raises takes no other with it and leaves no lock held", function()
    local dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir -p " .. dir))
    local cfg = {lock_dir = dir, lock_timeout = 5}
    local s = sched.new()
    local res = {}
    s:spawn(function()
      local guard <close> = assert(locking.acquire(cfg, "inst_crash"))
      assert.is_true(guard ~= nil and locking.holds(cfg, "inst_crash"))
      core.sleep(0.05)
      error("boom")
    end, {key = "inst_crash", on_done = function(_, ok, err, code) res.crash = {ok, err, code} end})
    s:spawn(function()
      core.sleep(0.1)
      return "fine"
    end, {key = "other", on_done = function(_, ok, v) res.other = {ok, v} end})
    s:spawn(function()
      local guard <close>, err = locking.acquire(cfg, "inst_crash", false, 1)
      return guard ~= nil, err
    end, {key = "inst_crash", on_done = function(_, ok, got, err) res.after = {ok, got, err} end})
    run(s)
    assert.is_false(res.crash[1])
    assert.matches("boom", res.crash[2])
    assert.are.equal("internal", res.crash[3])
    assert.are.same({true, "fine"}, res.other)
    assert.are.same({true, true}, {res.after[1], res.after[2]})
    os.execute("rm -rf " .. dir)
  end)

  it("waits for a descriptor (core.wait_fd) without blocking the others", function()
    local stat = assert(io.open("/proc/self/stat"))
    local pid = stat:read("a"):match("^(%d+)")
    stat:close()
    local function fds() -- this process's pipe descriptors
      local out = {}
      -- (leaving out the pipe of this very listing: the shell's stdout)
      local l = assert(io.popen("o=$(readlink /proc/$$/fd/1); cd /proc/" .. pid .. "/fd && for f in *; do "
        .. "l=$(readlink $f); case $l in pipe:*) [ \"$l\" = \"$o\" ] || echo $f;; esac; done"))
      for n in l:read("a"):gmatch("%d+") do out[tonumber(n)] = true end
      l:close()
      return out
    end
    local before = fds()
    local t0 = core.clock() -- before the child starts its 0.3 s sleep
    local f = assert(io.popen("sleep 0.3; echo hi", "r"))
    local fd
    for n in pairs(fds()) do
      if not before[n] then fd = n end
    end
    assert.is_number(fd)
    local s = sched.new()
    local ready_at, ticks = nil, 0
    s:spawn(function()
      assert.is_false(core.wait_fd(fd, "r", 0.05)) -- nothing yet: the timeout
      assert.is_true(core.wait_fd(fd, "r"))
      ready_at = core.clock() - t0
    end, {on_done = function(_, ok, err) assert(ok, err) end})
    s:spawn(function()
      for _ = 1, 4 do core.sleep(0.05); ticks = ticks + 1 end
    end, {})
    run(s)
    assert.are.equal("hi", f:read("l"))
    f:close()
    assert.are.equal(4, ticks) -- the other task ran while the first one waited
    assert.is_true(ready_at >= 0.25, "ready after " .. tostring(ready_at))
  end)
end)
