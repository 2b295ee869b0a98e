-- Request validation: a table of bad requests, each naming its field.
local validate = require("ctrlplane.docker.validate")

local function base()
  return {
    instance_id = "inst_valid01",
    tenant_id = "ten_1",
    services = {
      {name = "setup", role = "init", image = "busybox:1"},
      {name = "web", role = "main", image = "busybox:1", depends_on = {"setup"},
        ports = {{container = 8080}}, env = {A = "1"}},
      {name = "side", role = "sidecar", image = "busybox:1", depends_on = {"web"}},
    },
  }
end

local function with(mutate)
  local r = base()
  mutate(r)
  return r
end

local bad = {
  {"missing instance id", function(r) r.instance_id = nil end, "instance_id: expected a string"},
  {"instance id with a slash", function(r) r.instance_id = "inst/../x" end, "instance_id: \"inst/../x\""},
  {"instance id too long", function(r) r.instance_id = string.rep("a", 65) end, "instance_id: at most 64"},
  {"no services", function(r) r.services = {} end, "services: at least one service"},
  {"service name with capitals", function(r) r.services[2].name = "Web" end,
    "services[1].name: \"Web\" is not DNS-safe"},
  {"service name ending in a dash", function(r) r.services[3].name = "side-" end,
    "services[2].name: \"side-\" is not DNS-safe"},
  {"duplicate service names", function(r) r.services[3].name = "web" end,
    "services[2].name: duplicate service name \"web\""},
  {"two mains", function(r) r.services[3].role = "main" end,
    "services: exactly one service must have role main (found 2"},
  {"no main", function(r) r.services[2].role = "sidecar" end,
    "services: exactly one service must have role main (found none)"},
  {"unknown role", function(r) r.services[3].role = "daemon" end,
    "services[2].role: must be main, sidecar or init"},
  {"missing image", function(r) r.services[3].image = nil end, "services[2].image: is required"},
  {"image with spaces", function(r) r.services[3].image = "busy box" end,
    "services[2].image: \"busy box\" is not a valid image reference"},
  {"depends on an unknown service", function(r) r.services[3].depends_on = {"db"} end,
    "services[2].depends_on[0]: no service named \"db\""},
  {"depends on itself", function(r) r.services[3].depends_on = {"side"} end,
    "services[2].depends_on[0]: a service cannot depend on itself"},
  {"dependency cycle", function(r)
    r.services[2].depends_on = {"side"}
  end, "services: dependency cycle: web -> side -> web"},
  {"init depending on main", function(r) r.services[1].depends_on = {"web"} end,
    "services[0].depends_on[0]: init service \"setup\" runs before main services start"},
  {"container port out of range", function(r) r.services[2].ports[1].container = 70000 end,
    "services[1].ports[0].container: must be an integer from 1 to 65535 (got 70000)"},
  {"container port missing", function(r) r.services[2].ports[1] = {host = 8080} end,
    "services[1].ports[0].container: is required"},
  {"host port negative", function(r) r.services[2].ports[1].host = -1 end,
    "services[1].ports[0].host: must be an integer from 0 to 65535"},
  {"bad protocol", function(r) r.services[2].ports[1].protocol = "sctp" end,
    "services[1].ports[0].protocol: must be tcp or udp"},
  {"same host port twice", function(r)
    r.services[2].ports = {{container = 80, host = 9000}}
    r.services[3].ports = {{container = 81, host = 9000}}
  end, "services[2].ports[0].host: host port 9000/tcp is already used by services[1].ports[0].host"},
  {"env key with a dash", function(r) r.services[2].env = {["MY-VAR"] = "x"} end,
    "services[1].env[\"MY-VAR\"]: invalid environment variable name"},
  {"env value not a string", function(r) r.services[2].env = {A = 1} end,
    "services[1].env.A: expected a string value"},
  {"memory below Docker's minimum", function(r) r.services[2].resources = {memory_mb = 2} end,
    "services[1].resources.memory_mb: Docker's minimum memory limit is 6 MB"},
  {"negative cpu", function(r) r.services[2].resources = {cpu_millis = -5} end,
    "services[1].resources.cpu_millis: must be an integer from 0"},
  {"relative mount path", function(r)
    r.services[2].volumes = {{name = "data", mount_path = "data"}}
  end, "services[1].volumes[0].mount_path: must be an absolute path"},
  {"bad volume type", function(r)
    r.services[2].volumes = {{name = "data", mount_path = "/d", type = "nfs"}}
  end, "services[1].volumes[0].type: must be persistent or ephemeral"},
  {"health check without port", function(r) r.services[2].health_check = {path = "/"} end,
    "services[1].health_check.port: is required"},
  {"health check bad interval", function(r)
    r.services[2].health_check = {port = 8080, interval = "often"}
  end, "services[1].health_check.interval: invalid duration"},
  {"command not a list of strings", function(r) r.services[2].command = {"sh", 5} end,
    "services[1].command[1]: expected a string"},
  {"bad kind", function(r) r.kind = "daemonset" end, "kind: must be deployment or stateful_set"},
  {"label key with spaces", function(r) r.labels = {["a b"] = "x"} end, "labels[\"a b\"]: invalid label key"},
}

describe("validate.provision", function()
  it("accepts a well-formed request and normalizes it", function()
    local r = assert(validate.provision(base()))
    assert.are.equal("main", r.services[2].role)
    assert.are.equal("tcp", r.services[2].ports[1].protocol)
    assert.are.equal("deployment", r.kind)
  end)

  it("treats an empty role as main", function()
    local r = assert(validate.provision(with(function(x) x.services[2].role = "" end)))
    assert.are.equal("main", r.services[2].role)
  end)

  assert(#bad >= 15)
  for _, row in ipairs(bad) do
    it("rejects: " .. row[1], function()
      local r, err, code, errors = validate.provision(with(row[2]))
      assert.is_nil(r)
      assert.are.equal("invalid", code)
      assert.is_table(errors)
      assert.truthy(err:find(row[3], 1, true), "expected «" .. row[3] .. "» in «" .. err .. "»")
    end)
  end

  it("reports every problem at once", function()
    local _, _, _, errors = validate.provision(with(function(r)
      r.services[2].ports[1].container = 0
      r.services[3].image = ""
    end))
    assert.are.equal(2, #errors)
  end)
end)

describe("validate.deploy", function()
  local existing = {web = true, side = true}
  local rows = {
    {"unknown service", {instance_id = "i1", services = {{name = "db", image = "x:1"}}},
      "services[0].name: instance has no service \"db\" (it has: side, web)"},
    {"nothing to change", {instance_id = "i1", services = {{name = "web"}}},
      "services[0]: nothing to deploy"},
    {"no services", {instance_id = "i1", services = {}}, "services: at least one service"},
    {"bad release id", {instance_id = "i1", release_id = "a b", services = {{name = "web", image = "x"}}},
      "release_id: \"a b\" is not a valid release id"},
    {"bad strategy", {instance_id = "i1", strategy = "yolo", services = {{name = "web", image = "x"}}},
      "strategy: must be recreate"},
    {"listed twice", {instance_id = "i1", services = {{name = "web", image = "x"}, {name = "web", image = "y"}}},
      "services[1].name: service \"web\" is listed twice"},
  }
  for _, row in ipairs(rows) do
    it("rejects: " .. row[1], function()
      local r, err, code = validate.deploy(row[2], existing)
      assert.is_nil(r)
      assert.are.equal("invalid", code)
      assert.truthy(err:find(row[3], 1, true), "expected «" .. row[3] .. "» in «" .. err .. "»")
    end)
  end
  it("accepts an env-only change", function()
    local r = assert(validate.deploy({instance_id = "i1", release_id = "r2",
      services = {{name = "web", env = {A = "2"}}}}, existing))
    assert.are.same({A = "2"}, r.services[1].env)
  end)
end)
