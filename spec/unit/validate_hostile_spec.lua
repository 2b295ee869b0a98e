-- Validation against hostile and Go-shaped input (issues #12 items 2, 3, 5
-- and #11 items 1, 8): every row is a field error before the engine is
-- touched, and a request exactly as Go's encoding/json writes it is accepted.
-- No daemon.
local json = require("ctrlplane.docker.json")
local validate = require("ctrlplane.docker.validate")

local function base()
  return {
    instance_id = "inst_hostile01",
    services = {
      {name = "setup", role = "init", image = "busybox:1"},
      {name = "web", role = "main", image = "busybox:1", ports = {{container = 8080}},
        env = {A = "1"}},
      {name = "side", role = "sidecar", image = "busybox:1"},
    },
  }
end

local function with(mutate)
  local r = base()
  mutate(r)
  return r
end

local function web(r) return r.services[2] end

local bad = {
  {"image path escaping to /containers", function(r) web(r).image = "a/../../containers/cp-x-web" end,
    "services[1].image: \"a/../../containers/cp-x-web\" is not a valid image reference"},
  {"image with capitals", function(r) web(r).image = "BusyBox:1" end, "must be lowercase"},
  {"image with a query", function(r) web(r).image = "busybox?x=1" end,
    "services[1].image: \"busybox?x=1\" is not a valid image reference"},
  {"image with an encoded slash", function(r) web(r).image = "a%2F..%2Fb" end,
    "is not a valid image reference"},
  {"image with a short digest", function(r) web(r).image = "busybox@sha256:abc" end,
    "invalid digest"},
  {"image with a bad tag", function(r) web(r).image = "busybox:-1" end, "invalid tag"},
  {"image with a bad registry host", function(r) web(r).image = "-reg.local:5000/x:1" end,
    "invalid registry host"},
  {"image with a double separator", function(r) web(r).image = "a..b/c" end,
    "is not a valid image reference"},
  {"deploy-free image empty path", function(r) web(r).image = "reg.local//x" end,
    "invalid path component"},
  {"reserved label", function(r) r.labels = {["ctrlplane.instance"] = "inst_other"} end,
    "labels[\"ctrlplane.instance\"]: keys starting with \"ctrlplane.\" are reserved"},
  {"reserved annotation, any case", function(r) web(r).annotations = {["CtrlPlane.tenant"] = "x"} end,
    "services[1].annotations[\"CtrlPlane.tenant\"]: keys starting with \"ctrlplane.\" are reserved"},
  {"privileged host port", function(r) web(r).ports = {{container = 8080, host = 80}} end,
    "services[1].ports[0].host: host port 80 is privileged (below 1024)"},
  {"too many replicas", function(r) web(r).resources = {replicas = 51} end,
    "services[1].resources.replicas: at most 50 replicas (got 51"},
  {"10^12 replicas", function(r) web(r).resources = {replicas = 1000000000000} end,
    "services[1].resources.replicas: at most 50 replicas"},
  {"negative replicas", function(r) web(r).resources = {replicas = -1} end,
    "services[1].resources.replicas: must be an integer from 0"},
  {"fractional replicas", function(r) web(r).resources = {replicas = 1.5} end,
    "services[1].resources.replicas: expected an integer, got 1.5"},
  {"fractional memory", function(r) web(r).resources = {memory_mb = 64.5} end,
    "services[1].resources.memory_mb: expected an integer"},
  {"memory below Docker's minimum", function(r) web(r).resources = {memory_mb = 5} end,
    "services[1].resources.memory_mb: Docker's minimum memory limit is 6 MB"},
  {"gpu asked for", function(r) web(r).resources = {gpu = "nvidia-tesla-t4"} end,
    "services[1].resources.gpu: GPUs are not supported by this provider (got \"nvidia-tesla-t4\")"},
  {"gpu count", function(r) web(r).resources = {gpu = 1} end,
    "services[1].resources.gpu: GPUs are not supported"},
  {"health interval 0.9 ms in nanoseconds", function(r)
    web(r).health_check = {port = 8080, interval = 900000}
  end, "services[1].health_check.interval: 900000 is below Docker's minimum of 1ms"},
  {"health interval as fractional seconds", function(r)
    web(r).health_check = {port = 8080, interval = 0.5}
  end, "services[1].health_check.interval: expected integer nanoseconds"},
  {"health timeout over a day", function(r)
    web(r).health_check = {port = 8080, timeout = "25h"}
  end, "services[1].health_check.timeout: \"25h\" is more than 24h"},
  {"health timeout in ns over a day", function(r)
    web(r).health_check = {port = 8080, timeout = 86401 * 1000000000}
  end, "services[1].health_check.timeout: 86401000000000 is more than 24h"},
  {"health interval negative", function(r)
    web(r).health_check = {port = 8080, interval = -1}
  end, "services[1].health_check.interval: must not be negative"},
  {"health duration string without unit", function(r)
    web(r).health_check = {port = 8080, interval = "5"}
  end, "services[1].health_check.interval: \"5\" has no unit"},
  {"health check with a path but no port", function(r)
    web(r).health_check = {path = "/health", port = 0, interval = 0, timeout = 0, retries = 0}
  end, "services[1].health_check.port: is required"},
  {"env value with NUL", function(r) web(r).env = {A = "x\0y"} end,
    "services[1].env.A: must not contain a NUL byte"},
  {"env value over 128 KiB", function(r) web(r).env = {BIG = string.rep("x", 131072)} end,
    "services[1].env.BIG: BIG=value is 131077 bytes; at most 131072"},
  {"command with NUL", function(r) web(r).command = {"sh", "-c\0"} end,
    "services[1].command[1]: must not contain a NUL byte"},
  {"mount at /", function(r) web(r).volumes = {{name = "d", mount_path = "/"}} end,
    "services[1].volumes[0].mount_path: must not be /"},
  {"mount at //", function(r) web(r).volumes = {{name = "d", mount_path = "//"}} end,
    "services[1].volumes[0].mount_path: must not be /"},
  {"mount on /proc", function(r) web(r).volumes = {{name = "d", mount_path = "/proc"}} end,
    "services[1].volumes[0].mount_path: must not be /proc or under it"},
  {"mount under /sys", function(r) web(r).volumes = {{name = "d", mount_path = "/sys/fs/cgroup"}} end,
    "services[1].volumes[0].mount_path: must not be /sys or under it"},
  {"mount under //dev", function(r) web(r).volumes = {{name = "d", mount_path = "//dev//shm"}} end,
    "services[1].volumes[0].mount_path: must not be /dev or under it"},
  {"mount via ..", function(r) web(r).volumes = {{name = "d", mount_path = "/a/../proc"}} end,
    "services[1].volumes[0].mount_path: must not contain '.' or '..'"},
  {"init with ports", function(r) r.services[1].ports = {{container = 80}} end,
    "services[0].ports: an init service runs once and exits: it cannot publish ports"},
}

describe("validate.provision rejects hostile input naming the field", function()
  assert(#bad >= 30)
  for _, row in ipairs(bad) do
    it(row[1], function()
      local r, err, code, errors = validate.provision(with(row[2]))
      assert.is_nil(r, "accepted")
      assert.are.equal("invalid", code)
      assert.is_table(errors)
      assert.truthy(err:find(row[3], 1, true), "expected «" .. row[3] .. "» in «" .. err .. "»")
    end)
  end
end)

describe("operator limits", function()
  it("allow privileged host ports when the operator says so", function()
    local req = with(function(r) web(r).ports = {{container = 8080, host = 80}} end)
    local r = assert(validate.provision(req, {allow_privileged_ports = true}))
    assert.are.equal(80, r.services[2].ports[1].host)
  end)

  it("take the replica maximum from the settings", function()
    local req = with(function(r) web(r).resources = {replicas = 60} end)
    assert.is_nil(validate.provision(req))
    local r = assert(validate.provision(req, {max_replicas = 100}))
    assert.are.equal(60, r.services[2].resources.replicas)
    local _, err = validate.provision(req, {max_replicas = 10})
    assert.matches("at most 10 replicas", err)
    _, err = validate.resources({replicas = 11}, {max_replicas = 10})
    assert.matches("spec.replicas: at most 10 replicas", err)
  end)
end)

describe("image references (Docker's grammar)", function()
  local good = {"busybox", "busybox:1", "cpdocker-test/busybox:1", "127.0.0.1:5000/cpdocker-test/busybox:1",
    "localhost/x", "localhost:5000/x:latest", "registry.example.com/a/b__c/d-e:v1.2_3", "a.b_c--d",
    "x@sha256:" .. string.rep("0f", 32), "reg.local:5000/x:1@sha256:" .. string.rep("a", 64),
    "Registry.Example.com/lower/path:Tag_1"}
  for _, ref in ipairs(good) do
    it("accepts " .. ref, function()
      assert.is_true(validate.image_reference(ref))
    end)
  end
  local worse = {"", "a/../../containers/x", "../x", "./x", "x/./y", "UPPER", "a b", "a\0b", "a/",
    "/a", "a//b", "a:", "a@", "a:1:2", "a#b", "a;b", "a__-b", "a-", "-a", "a.", "_a", "x:" .. string.rep("t", 129),
    string.rep("a", 256)}
  for _, ref in ipairs(worse) do
    it("rejects " .. string.format("%q", ref), function()
      local ok, why = validate.image_reference(ref)
      assert.is_nil(ok)
      assert.is_string(why)
    end)
  end
end)

-- As Go's encoding/json marshals a ProvisionRequest from ctrlplane's types:
-- every field without omitempty, zero values and nulls included.
local GO_REQUEST = [[
{"instance_id":"inst_01h455vb4pex5vsknk084sn02q","tenant_id":"","name":"","kind":"deployment",
 "labels":null,
 "services":[
  {"name":"web","image":"busybox:1","role":"","depends_on":null,
   "resources":{"cpu_millis":0,"memory_mb":0,"disk_mb":0,"replicas":0,"gpu":""},
   "env":null,"ports":[{"container":8080,"host":0,"protocol":""}],"volumes":null,
   "health_check":{"path":"","port":8080,"interval":0,"timeout":0,"retries":0},
   "secrets":null,"config_files":null,"annotations":null,"command":null,"args":null},
  {"name":"side","image":"busybox:1","role":"sidecar","depends_on":["web"],
   "resources":{"cpu_millis":250,"memory_mb":64,"disk_mb":0,"replicas":0,"gpu":""},
   "env":{"A":"1"},"ports":null,"volumes":[{"name":"data","mount_path":"/data","size_mb":0,"type":""}],
   "health_check":{"path":"","port":0,"interval":0,"timeout":0,"retries":0},
   "secrets":null,"config_files":null,"annotations":null,"command":null,"args":null}
 ]}]]

describe("Go zero values mean unset (#11.1)", function()
  it("accepts a ProvisionRequest exactly as Go marshals it", function()
    local req = assert(json.decode(GO_REQUEST))
    local r, err = validate.provision(req)
    assert.is_table(r, err)
    local w, s = r.services[1], r.services[2]
    assert.are.equal("main", w.role)
    assert.is_nil(w.resources.replicas) -- 1 replica
    assert.is_nil(w.resources.cpu_millis) -- no limit
    assert.is_nil(w.resources.memory_mb)
    assert.is_nil(w.resources.disk_mb)
    assert.are.same({port = 8080}, w.health_check) -- the runtime's defaults for the rest
    assert.is_nil(w.ports[1].host)
    assert.are.equal("tcp", w.ports[1].protocol)
    assert.are.same({}, w.depends_on)
    assert.is_nil(w.env)
    assert.is_nil(w.command)
    assert.are.equal(250, s.resources.cpu_millis)
    assert.is_nil(s.health_check) -- an all-zero HealthCheckSpec is no health check
    assert.are.equal("persistent", s.volumes[1].type)
    assert.is_nil(r.labels)
  end)

  it("reads integer durations as nanoseconds and strings with units", function()
    for _, case in ipairs({{3000000000, 3}, {1000000, 0.001}, {"3s", 3}, {"250ms", 0.25},
        {86400000000000, 86400}}) do
      local req = with(function(r) web(r).health_check = {port = 8080, interval = case[1]} end)
      local r = assert(validate.provision(req))
      assert.are.equal(case[2], r.services[2].health_check.interval)
    end
  end)

  it("a scale ResourceSpec with replicas 0 leaves the replica count alone", function()
    local rs = assert(validate.resources({cpu_millis = 500, memory_mb = 0, replicas = 0, disk_mb = 0,
      gpu = ""}))
    assert.is_nil(rs.replicas)
    assert.are.equal(500, rs.cpu_millis)
    assert.are.equal(0, rs.memory_mb) -- scale: 0 removes the limit
  end)

  it("a deploy with Go's zero health check and null env", function()
    local r = assert(validate.deploy(assert(json.decode([[{"instance_id":"inst_x","release_id":"r2",
      "strategy":"rolling","services":[{"name":"web","image":"busybox:2","env":null,
      "health_check":{"path":"","port":0,"interval":0,"timeout":0,"retries":0}}]}]]))))
    assert.are.equal("busybox:2", r.services[1].image)
    assert.is_nil(r.services[1].health_check)
    assert.is_nil(r.services[1].env)
  end)
end)

describe("validate.against_host (limits from the daemon's /info)", function()
  local info = {NCPU = 2, MemTotal = 4 * 1024 * 1048576, Driver = "overlay2",
    DriverStatus = {{"Backing Filesystem", "extfs"}, {"Supports d_type", "true"}}}

  it("bounds cpu_millis by the host's CPUs and memory_mb by its memory", function()
    local r = assert(validate.provision(with(function(x)
      web(x).resources = {cpu_millis = 2001, memory_mb = 4097}
    end)))
    local ok, err, code, errors = validate.against_host(r, info)
    assert.is_nil(ok)
    assert.are.equal("invalid", code)
    assert.are.equal(2, #errors)
    assert.matches("services[1].resources.cpu_millis: at most 2000 (the host has 2 CPUs", err, 1, true)
    assert.matches("services[1].resources.memory_mb: at most 4096 MB", err, 1, true)
    r = assert(validate.provision(with(function(x)
      web(x).resources = {cpu_millis = 2000, memory_mb = 4096}
    end)))
    assert.are.equal(r, validate.against_host(r, info))
  end)

  it("rejects disk_mb where the storage driver cannot enforce it, naming field and driver", function()
    local r = assert(validate.provision(with(function(x) web(x).resources = {disk_mb = 100} end)))
    local ok, err = validate.against_host(r, info)
    assert.is_nil(ok)
    assert.matches("services[1].resources.disk_mb: cannot be enforced: the daemon's storage driver "
      .. "is overlay2 on extfs", err, 1, true)
    local xfs = {NCPU = 2, MemTotal = info.MemTotal, Driver = "overlay2",
      DriverStatus = {{"Backing Filesystem", "xfs"}}}
    assert.are.equal(r, validate.against_host(r, xfs))
    assert.are.equal(r, validate.against_host(r, {NCPU = 2, Driver = "btrfs"}))
  end)

  it("checks a scale ResourceSpec the same way", function()
    local rs = assert(validate.resources({cpu_millis = 4000}))
    local _, err = validate.against_host(rs, info)
    assert.matches("spec.cpu_millis: at most 2000", err, 1, true)
  end)
end)
