-- core.lock (runtime/lock.c, llock.c) and the per-instance serialization
-- of locking.lua, with real second processes holding locks. No daemon.
local core = require("ctrlplane.docker.core")
local docker = require("ctrlplane.docker")
local locking = require("ctrlplane.docker.locking")

local DIR = string.format("/tmp/cpdocker-lockspec-%d-%d", os.time(), math.random(1, 1e6))

-- Starts `lua5.4` holding DIR/name.lock (exclusive unless shared) for
-- `hold` seconds; returns its pid once it holds the lock.
local function holder(name, hold, shared)
  local code = string.format(
    "package.cpath = 'build/?.so;' .. package.cpath; local c = require('ctrlplane.docker.core'); "
      .. "local l = assert(c.lock(%q, %q, {shared = %s})); print('held'); io.stdout:flush(); "
      .. "c.sleep(%g); l:release()", DIR, name, tostring(shared == true), hold)
  local f = assert(io.popen("sh -c 'echo $$; exec env -u LD_PRELOAD lua5.4 -e \"$0\"' "
    .. string.format("%q", code) .. " &"))
  local pid = tonumber(f:read("l"))
  local line = f:read("l")
  assert.are.equal("held", line)
  return pid, f
end

local function reap(f) f:close() end

describe("core.lock", function()
  teardown(function() os.execute("rm -rf " .. DIR) end)

  it("creates its directory and excludes a second exclusive holder", function()
    local a = assert(core.lock(DIR, "inst_a"))
    assert.is_true(a:held())
    assert.are.equal(DIR .. "/inst_a.lock", a:path())
    local none, err, code = core.lock(DIR, "inst_a", {timeout = 0})
    assert.is_nil(none)
    assert.are.equal("busy", code)
    assert.matches("inst_a is busy", err)
    a:release()
    a:release() -- twice is fine
    assert.is_false(a:held())
    assert(core.lock(DIR, "inst_a", {timeout = 0})):release()
  end)

  it("lets shared holders in together and keeps an exclusive one out", function()
    local s1 = assert(core.lock(DIR, "inst_s", {shared = true}))
    local s2 = assert(core.lock(DIR, "inst_s", {shared = true, timeout = 0}))
    local _, _, code = core.lock(DIR, "inst_s", {timeout = 0.05})
    assert.are.equal("busy", code)
    s1:release()
    s2:release()
    assert(core.lock(DIR, "inst_s", {timeout = 0})):release()
  end)

  it("is released by <close> and by garbage collection", function()
    do
      local l <close> = assert(core.lock(DIR, "inst_c"))
      assert.is_true(l:held())
    end
    assert(core.lock(DIR, "inst_c", {timeout = 0})):release()
    local _ = core.lock(DIR, "inst_g")
    _ = nil
    collectgarbage()
    collectgarbage()
    assert(core.lock(DIR, "inst_g", {timeout = 0})):release()
  end)

  it("rejects bad names and directories with code 'lock'", function()
    for _, case in ipairs({{DIR, "../escape"}, {DIR, ""}, {DIR, ".hidden"}, {DIR, "a/b"},
        {"/proc/no-such-dir", "x"}}) do
      local l, err, code = core.lock(case[1], case[2], {timeout = 0})
      assert.is_nil(l)
      assert.are.equal("lock", code, err)
      assert.is_string(err)
    end
    assert.has_error(function() core.lock(DIR, "x", {timeout = -1}) end)
    assert.has_error(function() core.lock(DIR, "x", {timeout = "5s"}) end)
    assert.has_error(function() core.lock(DIR) end)
  end)

  it("excludes another process, names it, and waits for it to let go", function()
    local pid, f = holder("inst_p", 0.6)
    local l, err, code = core.lock(DIR, "inst_p", {timeout = 0.1})
    assert.is_nil(l)
    assert.are.equal("busy", code)
    assert.matches("held by pid " .. pid, err, 1, true)
    local t0 = core.clock()
    l = assert(core.lock(DIR, "inst_p", {timeout = 5}))
    local waited = core.clock() - t0
    assert.is_true(waited > 0.2 and waited < 3, "waited " .. waited)
    l:release()
    reap(f)
  end)

  it("removes its file when released, exclusive or by the last shared holder", function()
    local path = DIR .. "/inst_rm.lock"
    local l = assert(core.lock(DIR, "inst_rm"))
    assert.is_truthy(io.open(path))
    l:release()
    assert.is_nil(io.open(path))
    local s1 = assert(core.lock(DIR, "inst_rm", {shared = true}))
    local s2 = assert(core.lock(DIR, "inst_rm", {shared = true, timeout = 0}))
    s1:release()
    assert.is_truthy(io.open(path), "the file stays while a shared holder is in")
    assert.are.equal("busy", select(3, core.lock(DIR, "inst_rm", {timeout = 0})))
    s2:release()
    assert.is_nil(io.open(path))
  end)

  it("stays exclusive across processes while files are removed and re-created", function()
    -- 4 processes x 40 rounds of read-increment-write under the lock: a lost
    -- update would show that two holders were in at once (the file a waiter
    -- locked had been unlinked and another process held the new one)
    local counter = DIR .. "/counter"
    local f = assert(io.open(counter, "w"))
    f:write("0")
    f:close()
    local code = string.format(
      "package.cpath = 'build/?.so;' .. package.cpath; local c = require('ctrlplane.docker.core'); "
        .. "for _ = 1, 40 do local l = assert(c.lock(%q, 'inst_race', {timeout = 60})); "
        .. "local f = io.open(%q); local n = tonumber(f:read('a')); f:close(); "
        .. "f = io.open(%q, 'w'); f:write(tostring(n + 1)); f:close(); l:release() end",
      DIR, counter, counter)
    local procs = {}
    for i = 1, 4 do
      procs[i] = assert(io.popen("env -u LD_PRELOAD lua5.4 -e " .. string.format("%q", code)
        .. " 2>&1; echo rc=$?"))
    end
    for i = 1, 4 do
      local out = procs[i]:read("a")
      procs[i]:close()
      assert.matches("rc=0", out)
    end
    f = assert(io.open(counter))
    assert.are.equal("160", f:read("a"))
    f:close()
    assert.is_nil(io.open(DIR .. "/inst_race.lock"))
  end)

  it("is dropped by the kernel when its holder is killed", function()
    local pid, f = holder("inst_k", 30)
    assert.are.equal("busy", select(3, core.lock(DIR, "inst_k", {timeout = 0})))
    os.execute("kill -9 " .. pid)
    local l = assert(core.lock(DIR, "inst_k", {timeout = 5}))
    l:release()
    reap(f)
  end)
end)

describe("locking (per-instance serialization of provider operations)", function()
  local p
  setup(function()
    p = assert(docker.new({host = "unix:///nonexistent/docker.sock", lock_dir = DIR,
      lock_timeout = 0.2, connect_timeout = 0.5}))
  end)
  teardown(function() p:close() end)

  it("wraps every mutating operation and status", function()
    for name in pairs(locking.MODES) do
      if docker.Provider[name] then
        local info = debug.getinfo(docker.Provider[name], "S")
        assert.matches("locking%.lua$", info.source, 1, false)
      end
    end
  end)

  it("fails 'busy', before touching the daemon, while another process holds the instance", function()
    local _, f = holder("inst_busy", 1.5)
    local calls = {
      function() return p:deprovision("inst_busy") end,
      function() return p:stop("inst_busy") end,
      function() return p:provision({instance_id = "inst_busy", services = {}}) end,
      function() return p:deploy({instance_id = "inst_busy", services = {}}) end,
      function() return p:status("inst_busy") end,
    }
    for _, call in ipairs(calls) do
      local ok, err, code = call()
      assert.is_nil(ok)
      assert.are.equal("busy", code, err)
      assert.matches("instance inst_busy is busy", err, 1, true)
    end
    -- another instance is not held up: it reaches the (absent) daemon
    local _, err, code = p:deprovision("inst_other")
    assert.are.equal("unreachable", code, err)
    reap(f)
  end)

  it("lets status in beside another status (shared) but not beside a mutation", function()
    local _, f = holder("inst_shared", 1.0, true)
    local _, err, code = p:status("inst_shared")
    assert.are.equal("unreachable", code, err)
    assert.are.equal("busy", select(3, p:stop("inst_shared")))
    reap(f)
  end)

  it("leaves nothing on disk after status or an operation on an unknown instance", function()
    local path = DIR .. "/inst_unknown_zz.lock"
    local _, err, code = p:status("inst_unknown_zz")
    assert.are.equal("unreachable", code, err)
    assert.is_nil(io.open(path))
    _, err, code = p:deprovision("inst_unknown_zz")
    assert.are.equal("unreachable", code, err)
    assert.is_nil(io.open(path))
  end)

  it("is re-entrant within one Lua state and released after an error", function()
    local cfg = {lock_dir = DIR, lock_timeout = 0.2}
    do
      local g <close> = assert(locking.acquire(cfg, "inst_r")) -- luacheck: ignore 211
      assert.is_true(locking.holds(cfg, "inst_r"))
      local inner <close> = assert(locking.acquire(cfg, "inst_r")) -- luacheck: ignore 211
      assert.is_true(locking.holds(cfg, "inst_r"))
    end
    assert.is_false(locking.holds(cfg, "inst_r"))
    assert.has_error(function()
      local g <close> = assert(locking.acquire(cfg, "inst_r")) -- luacheck: ignore 211
      error("boom")
    end)
    assert.is_false(locking.holds(cfg, "inst_r"))
    assert(core.lock(DIR, "inst_r", {timeout = 0})):release()
  end)

  it("passes invalid ids through to the operation's own validation", function()
    local _, err, code = p:deprovision("../etc")
    assert.are_not.equal("busy", code)
    assert.matches("instance_id", err)
  end)

  it("can be turned off", function()
    local q = assert(docker.new({host = "unix:///nonexistent/docker.sock", lock_dir = "off",
      connect_timeout = 0.5}))
    local l = assert(core.lock(DIR, "inst_off"))
    local _, err, code = q:deprovision("inst_off")
    assert.are.equal("unreachable", code, err)
    l:release()
    q:close()
  end)
end)
