-- The kernel reader (runtime/cgroup.c) on fake cgroup v1 and v2 trees and a
-- fake /proc, made in a temporary directory: no daemon needed. Each row
-- lays out the files of one container as the kernel would, and what the
-- reader must make of them.
local core = require("ctrlplane.docker.core")

local ID = string.rep("ab12", 16) -- a full 64-hex container id
local MB = 1024 * 1024

local tmp

local function write(path, text)
  os.execute("mkdir -p '" .. path:match("^(.*)/[^/]+$") .. "'")
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
end

local NETDEV = table.concat({
  "Inter-|   Receive                                                |  Transmit",
  " face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo"
    .. " colls carrier compressed",
  "    lo:  999999      10    0    0    0     0          0         0   999999      10    0    0    0"
    .. "     0       0          0",
  "  eth0: %d     100    0    0    0     0          0         0  %d      50    0    0    0     0"
    .. "       0          0",
  "  eth1: 1000     1    0    0    0     0          0         0  2000      1    0    0    0     0"
    .. "       0          0",
  ""}, "\n")

-- v1: one directory per controller; cpu in ns
local function v1_tree(root, proc, rel, cpu_ns, opts)
  opts = opts or {}
  write(root .. "/memory/" .. rel .. "/memory.usage_in_bytes", tostring(100 * MB))
  write(root .. "/memory/" .. rel .. "/memory.limit_in_bytes", tostring(opts.limit or 9223372036854771712))
  write(root .. "/memory/" .. rel .. "/memory.stat",
    "cache 0\ninactive_file 5\ntotal_cache 0\ntotal_inactive_file " .. 30 * MB .. "\n")
  write(root .. "/cpuacct/" .. rel .. "/cpuacct.usage", tostring(cpu_ns))
  write(root .. "/pids/" .. rel .. "/pids.current", "7\n")
  write(root .. "/pids/" .. rel .. "/cgroup.procs", "4242\n4243\n")
  write(root .. "/blkio/" .. rel .. "/blkio.throttle.io_service_bytes_recursive",
    "8:0 Read 4096\n8:0 Write 8192\n8:0 Total 12288\n8:16 Read 4096\nTotal 16384\n")
  write(proc .. "/4242/net/dev", NETDEV:format(3 * MB, MB))
end

-- v2: one directory; cpu in usec; "max" for no limit
local function v2_tree(root, proc, rel, cpu_us, opts)
  opts = opts or {}
  write(root .. "/cgroup.controllers", "cpu io memory pids\n")
  write(root .. "/memory", "not a directory in v2\n")
  write(root .. rel .. "/memory.current", tostring(50 * MB))
  write(root .. rel .. "/memory.max", opts.limit and tostring(opts.limit) or "max\n")
  write(root .. rel .. "/memory.stat", "anon 1\nfile 2\ninactive_file " .. 10 * MB .. "\n")
  write(root .. rel .. "/cpu.stat", "usage_usec " .. cpu_us .. "\nuser_usec 1\nsystem_usec 1\n")
  write(root .. rel .. "/pids.current", "3\n")
  write(root .. rel .. "/cgroup.procs", "777\n")
  write(root .. rel .. "/io.stat", "8:0 rbytes=100 wbytes=200 rios=1 wios=2\n8:16 rbytes=1 wbytes=2\n")
  write(proc .. "/777/net/dev", NETDEV:format(2 * MB, 5 * MB))
end

local function dirs()
  local n = tostring(math.random(1, 1e9))
  return tmp .. "/" .. n .. "/cg", tmp .. "/" .. n .. "/proc"
end

describe("cgroup reader", function()
  setup(function()
    tmp = os.tmpname()
    os.remove(tmp)
    assert(os.execute("mkdir -p '" .. tmp .. "'"))
    write(tmp .. "/proc/meminfo", "MemTotal:        8000000 kB\nMemFree: 1 kB\n")
  end)
  teardown(function()
    os.execute("rm -rf '" .. tmp .. "'")
  end)

  -- {description, layout, version, expected usage fields}
  local ROWS = {
    {"v1, cgroupfs driver (docker/<id>)", function(root, proc)
      v1_tree(root, proc, "docker/" .. ID, 1000000000)
    end, 1, {memory_used = 70 * MB, memory_limit = 9223372036854771712, pids = 7,
      network_rx = 3 * MB + 1000, network_tx = MB + 2000, block_read = 8192, block_write = 8192}},
    {"v1, systemd driver (system.slice/docker-<id>.scope)", function(root, proc)
      v1_tree(root, proc, "system.slice/docker-" .. ID .. ".scope", 5, {limit = 64 * MB})
    end, 1, {memory_used = 70 * MB, memory_limit = 64 * MB, pids = 7}},
    {"v2, cgroupfs driver", function(root, proc)
      v2_tree(root, proc, "/docker/" .. ID, 10)
    end, 2, {memory_used = 40 * MB, memory_limit = math.maxinteger, pids = 3,
      network_rx = 2 * MB + 1000, network_tx = 5 * MB + 2000, block_read = 101, block_write = 202}},
    {"v2, systemd driver", function(root, proc)
      v2_tree(root, proc, "/system.slice/docker-" .. ID .. ".scope", 10, {limit = 32 * MB})
    end, 2, {memory_used = 40 * MB, memory_limit = 32 * MB}},
  }
  for _, row in ipairs(ROWS) do
    local desc, layout, version, want = row[1], row[2], row[3], row[4]
    it(desc, function()
      local root, proc = dirs()
      layout(root, proc)
      write(proc .. "/meminfo", "MemTotal:        8000000 kB\n")
      local pr = assert(core.cgroup_probe({root = root, proc = proc}))
      assert.are.equal(version, pr.version)
      assert.are.equal(8000000 * 1024, pr.mem_total)
      local r = core.cgroup_open({ID}, {root = root, proc = proc})
      assert.are.same({}, r:failures())
      local u = assert(r:sample()[ID])
      assert.is_nil(u.error)
      assert.is_true(u.running)
      assert.are.equal("cgroup", u.cpu_source)
      assert.are.equal(version, u.cgroup_version)
      assert.are.equal(0, u.cpu_percent) -- the files did not change between the readings
      for k, v in pairs(want) do assert.are.equal(v, u[k], k) end
    end)
  end

  it("reads CPU % from the change between the two readings", function()
    local root, proc = dirs()
    v2_tree(root, proc, "/docker/" .. ID, 1000000)
    local r = core.cgroup_open({ID}, {root = root, proc = proc})
    local t0 = core.clock()
    core.sleep(0.2)
    -- the container used 0.1 s of CPU meanwhile
    write(root .. "/docker/" .. ID .. "/cpu.stat", "usage_usec 1100000\n")
    local u = r:sample()[ID]
    local wall = core.clock() - t0
    assert.is_true(u.cpu_interval >= 0.2 and u.cpu_interval <= wall + 0.01, "interval " .. u.cpu_interval)
    local want = 0.1 / u.cpu_interval * 100
    assert.is_true(math.abs(u.cpu_percent - want) < 0.01, u.cpu_percent .. " vs " .. want)
  end)

  it("finds a custom parent through the pid's cgroup file, and refuses a pid of another cgroup", function()
    local root, proc = dirs()
    local rel = "custom/parent/" .. ID
    v1_tree(root, proc, rel, 1)
    write(proc .. "/4242/cgroup", table.concat({
      "12:pids:/" .. rel, "11:memory:/" .. rel, "4:cpu,cpuacct:/" .. rel, "3:blkio:/" .. rel,
      "1:name=systemd:/" .. rel, "0::/" .. rel, ""}, "\n"))
    write(proc .. "/5555/cgroup", "11:memory:/other\n4:cpu,cpuacct:/other\n")
    -- not in the default places without a pid
    local r0 = core.cgroup_open({ID}, {root = root, proc = proc})
    assert.are.equal("not_found", r0:failures()[ID].code)
    local r = core.cgroup_open({{id = ID, pid = 4242}}, {root = root, proc = proc})
    assert.are.same({}, r:failures())
    assert.are.equal(70 * MB, r:sample()[ID].memory_used)
    -- a reused pid now in another container's cgroup
    local bad = core.cgroup_open({{id = ID, pid = 5555}}, {root = root, proc = proc})
    assert.are.equal("not_found", bad:failures()[ID].code)
    local gone = core.cgroup_open({{id = ID, pid = 6666}}, {root = root, proc = proc})
    assert.are.equal("no_process", gone:failures()[ID].code)
  end)

  it("a container that stops between the readings is a failure, not a sample", function()
    local root, proc = dirs()
    v1_tree(root, proc, "docker/" .. ID, 1)
    local r = core.cgroup_open({ID}, {root = root, proc = proc})
    os.execute("rm -rf '" .. root .. "/cpuacct/docker/" .. ID .. "'")
    local u = r:sample()[ID]
    assert.are.equal("no_process", u.code)
    assert.matches(ID, u.error)
  end)

  it("reports a tree with no hierarchy and ids that are not container ids", function()
    local root, proc = dirs()
    os.execute("mkdir -p '" .. root .. "'")
    local none, err, code = core.cgroup_probe({root = root, proc = proc})
    assert.is_nil(none)
    assert.are.equal("unreadable", code)
    assert.matches(root, err, 1, true)
    local r = core.cgroup_open({ID, "../../etc"}, {root = root, proc = proc})
    local f = r:failures()
    assert.are.equal("unreadable", f[ID].code)
    assert.are.equal("bad_request", f["../../etc"].code)
  end)
end)
