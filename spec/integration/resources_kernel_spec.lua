-- The two paths of a cold `resources` on the same containers: the kernel's
-- (cgroup files and /proc, read by runtime/cgroup.c) and the daemon's stats
-- API. They must agree: memory within a few %, pids and limits exactly, a
-- container burning one core at 90-110 % both ways, network counters alike.
-- Containers are created directly with the project labels and removed after.
local core = require("ctrlplane.docker.core")
local docker = require("ctrlplane.docker")
local json = require("ctrlplane.docker.json")
local helper = require("support.helper")

local ONE_CORE = "yes > /dev/null" -- one process: at most one CPU
local MEM48 = "dd if=/dev/zero bs=48M count=1 2>/dev/null | sleep 600"
local WEB = "httpd -f -p 8080 -h /"

local c
local created = {}

local function run(id, service, cmd, host_config)
  local hc = host_config or {NetworkMode = "none"}
  local res = assert(c:request("POST", "/containers/create", {
    query = {name = "cp-" .. id .. "-" .. service},
    body = json.encode({Image = helper.IMAGE1, Cmd = {"sh", "-c", cmd},
      ExposedPorts = hc.PortBindings and {["8080/tcp"] = json.object({})} or nil,
      Labels = {["ctrlplane.project"] = "cp-" .. id, ["ctrlplane.instance"] = id,
        ["ctrlplane.service"] = service, ["ctrlplane.role"] = "main"},
      HostConfig = hc})}))
  local cid = json.decode(res.body).Id
  created[#created + 1] = cid
  assert(c:request("POST", "/containers/" .. cid .. "/start"))
  return cid
end

local function within(a, b, rel, abs)
  return math.abs(a - b) <= math.max(abs, rel * math.max(a, b))
end

describe("resources from the kernel", function()
  local id, p, info
  setup(function()
    c = helper.daemon()
    info = json.decode(assert(c:request("GET", "/info")).body)
    id = helper.instance_id("kern")
    local db = run(id, "db", MEM48)
    -- wait for dd to hold its buffer before comparing memory
    local s = core.sampler(c)
    local deadline = core.clock() + 15
    repeat
      local r = s:fetch({db}, {one_shot = true})
      local used = r and r[db].memory_used or 0
    until used >= 48 * 1024 * 1024 or core.clock() > deadline
    s:close()
    -- a large CPU weight lets the one busy process have its core on a shared host
    run(id, "burn", ONE_CORE, {NetworkMode = "none", CpuShares = 65536})
    run(id, "limited", "sleep 600", {NetworkMode = "none", Memory = 32 * 1024 * 1024})
    p = assert(docker.new({host = helper.SOCKET}))
  end)
  teardown(function()
    if p then p:close() end
    for _, cid in ipairs(created) do
      c:request("DELETE", "/containers/" .. cid, {query = {force = true}})
    end
    c:close()
    -- the custom parent the daemon made (empty now)
    os.execute("rmdir /sys/fs/cgroup/*/cpperf-parent /sys/fs/cgroup/cpperf-parent 2>/dev/null")
  end)

  it("probes the host's hierarchy", function()
    local pr = assert(core.cgroup_probe())
    local want = tostring(info.CgroupVersion or "1")
    assert.are.equal(want, tostring(pr.version))
    assert.is_true(pr.mem_total > 0)
    assert.is_true(math.abs(pr.mem_total - info.MemTotal) < 64 * 1024 * 1024)
  end)

  it("answers from the kernel in a fraction of the API's time, figures agreeing", function()
    local t0 = core.clock()
    local kernel = assert(p:resources(id))
    local kt = core.clock() - t0
    t0 = core.clock()
    local api = assert(p:resources(id, {source = "api"}))
    local at = core.clock() - t0
    assert.are.equal("cgroup", kernel.metadata.source)
    assert.are.equal(100, kernel.metadata.interval_ms)
    assert.are.equal("api", api.metadata.source)
    -- (not a timing test: the kernel path's wait is its own 0.1 s setting,
    -- the API's the daemon's one-second tick)
    assert.is_true(kt < at, string.format("kernel %.3f s, api %.3f s", kt, at))
    for _, u in ipairs({kernel, api}) do
      assert.are.equal(3, u.containers)
      assert.are.equal(3, u.running)
    end
    -- (a loaded host may give the burning container little of a core for 0.1 s)
    assert.is_true(kernel.services.burn.cpu_percent > kernel.services.limited.cpu_percent,
      "burn " .. kernel.services.burn.cpu_percent)
    assert.is_true(kernel.services.limited.cpu_percent < 5)
    for _, svc in ipairs({"db", "burn", "limited"}) do
      local k, a = kernel.services[svc], api.services[svc]
      assert.is_true(within(k.memory_used_mb, a.memory_used_mb, 0.05, 1),
        svc .. " memory: kernel " .. k.memory_used_mb .. " MB, api " .. a.memory_used_mb .. " MB")
      assert.are.equal(a.memory_limit_mb, k.memory_limit_mb, svc .. " memory limit")
      assert.are.equal(a.pids, k.pids, svc .. " pids")
    end
    assert.is_true(kernel.services.db.memory_used_mb >= 46, "db " .. kernel.services.db.memory_used_mb)
    assert.are.equal(32, kernel.services.limited.memory_limit_mb)
    assert.are.equal(api.memory_limit_mb, kernel.memory_limit_mb)
    assert.are.equal("integer", math.type(kernel.memory_used_mb))
  end)

  it("reads a container burning one core at 90-110 % both ways (over the same window)", function()
    -- The kernel reader's first reading, then the API's sample (the daemon
    -- takes 1-2 s), then the kernel's second reading: both measure the same
    -- stretch of time, so a host too busy to give the container a whole
    -- core shows in both alike.
    local burn
    for _, ct in ipairs(json.decode(assert(c:request("GET", "/containers/json", {query = {
      filters = json.encode({label = {"ctrlplane.project=cp-" .. id}})}})).body)) do
      if ct.Labels["ctrlplane.service"] == "burn" then burn = ct.Id end
    end
    -- success: a window in which both read 90-110 %. A host too busy to
    -- give the container a whole core in any window must still show it in
    -- both alike (most pairs within 15 points or 20 %).
    local seen, agreed, both = {}, 0, nil
    for _ = 1, 8 do
      local reader = core.cgroup_open({burn})
      local api = assert(p:resources(id, {source = "api"}))
      local k = assert(reader:sample()[burn]).cpu_percent
      local a = api.services.burn.cpu_percent
      seen[#seen + 1] = string.format("kernel %.1f / api %.1f", k, a)
      local function full(x) return x >= 90 and x <= 110 end
      if full(k) and full(a) then
        both = seen[#seen]
        break
      end
      if math.abs(k - a) <= math.max(15, 0.2 * math.max(k, a)) then agreed = agreed + 1 end
    end
    local all = table.concat(seen, ", ")
    if not both then
      assert.is_true(agreed * 2 > #seen, "the paths disagree: " .. all)
      io.stderr:write("\n  (host too busy for a whole core: paired readings " .. all .. ")\n")
    end
  end)

  it("counts network bytes as the daemon does", function()
    local nid = helper.instance_id("knet")
    run(nid, "web", WEB, {PortBindings = {["8080/tcp"] = {{HostIp = "127.0.0.1", HostPort = ""}}}})
    local cid = created[#created]
    local ins = json.decode(assert(c:request("GET", "/containers/" .. cid .. "/json")).body)
    local port = ins.NetworkSettings.Ports["8080/tcp"][1].HostPort
    -- a few hundred KiB out of the container, over loopback
    local out = helper.sh("for i in 1 2 3; do curl -sf --max-time 10 -o /dev/null http://127.0.0.1:"
      .. port .. "/bin/busybox; done; echo done")
    assert.matches("done", out)
    local k = assert(p:resources(nid))
    local a = assert(p:resources(nid, {source = "api"}))
    assert.are.equal("cgroup", k.metadata.source)
    assert.is_true(k.network_out_mb > 0.1, "kernel out " .. k.network_out_mb)
    assert.is_true(within(k.network_out_mb, a.network_out_mb, 0.05, 0.01),
      "out: kernel " .. k.network_out_mb .. ", api " .. a.network_out_mb)
    assert.is_true(within(k.network_in_mb, a.network_in_mb, 0.05, 0.01),
      "in: kernel " .. k.network_in_mb .. ", api " .. a.network_in_mb)
  end)

  it("finds a container under a custom cgroup parent through its init pid", function()
    local pid = helper.instance_id("kpar")
    local parent = info.CgroupDriver == "systemd" and "cpperf.slice" or "/cpperf-parent"
    local cid = run(pid, "app", "sleep 600", {NetworkMode = "none", CgroupParent = parent})
    -- not in the default places: the reader alone cannot find it ...
    local r = core.cgroup_open({cid})
    assert.are.equal("not_found", r:failures()[cid].code)
    -- ... the operation asks the daemon for the pid and reads it all the same
    local u = assert(p:resources(pid))
    assert.are.equal("cgroup", u.metadata.source)
    assert.are.equal(1, u.running)
    assert.is_true(u.pids >= 1)
  end)

  it("falls back to the API for a remote daemon, and when told to", function()
    local tcp = assert(docker.new({host = "tcp://127.0.0.1:1"}))
    assert.is_false(tcp:_kernel())
    tcp:close()
    local forced = assert(docker.new({host = helper.SOCKET, stats_source = "api"}))
    local u = assert(forced:resources(id, {one_shot = true}))
    assert.are.equal("api", u.metadata.source)
    forced:close()
  end)

  it("reports stopped containers as gaps and raises on misuse", function()
    local r = core.cgroup_open({string.rep("0", 64)})
    assert.are.equal("not_found", r:failures()[string.rep("0", 64)].code)
    local s = r:sample()
    assert.are.equal("not_found", s[string.rep("0", 64)].code)
    assert.has_error(function() core.cgroup_open("x") end)
    assert.has_error(function() core.cgroup_open({42}) end)
    assert.has_error(function() core.cgroup_open({{id = "abc", pid = "x"}}) end)
    assert.has_error(function() core.cgroup_open({}, {root = 5}) end)
  end)
end)
