-- A ProvisionRequest exactly as Go's encoding/json marshals ctrlplane's
-- types (every field, zero values and nulls included) provisions through
-- the CLI and `cpdocker serve` (issue #11 item 1): zero replicas are one,
-- zero cpu/memory no limit, a zero health check field the runtime's own
-- default (not Docker's 30 s), an all-zero health check none at all.
local helper = require("support.helper")
local json = require("ctrlplane.docker.json")
local projects = require("support.projects")

local function go_request(id)
  return string.format([[
{"instance_id":"%s","tenant_id":"","name":"","kind":"deployment","labels":null,
 "services":[
  {"name":"setup","image":"%s","role":"init","depends_on":null,
   "resources":{"cpu_millis":0,"memory_mb":0,"disk_mb":0,"replicas":0,"gpu":""},
   "env":null,"ports":null,"volumes":null,
   "health_check":{"path":"","port":0,"interval":0,"timeout":0,"retries":0},
   "secrets":null,"config_files":null,"annotations":null,"command":["true"],"args":null},
  {"name":"web","image":"%s","role":"","depends_on":["setup"],
   "resources":{"cpu_millis":0,"memory_mb":0,"disk_mb":0,"replicas":0,"gpu":""},
   "env":null,"ports":[{"container":8080,"host":0,"protocol":""}],"volumes":null,
   "health_check":{"path":"","port":8080,"interval":0,"timeout":0,"retries":0},
   "secrets":null,"config_files":null,"annotations":null,
   "command":["sh","-c","trap 'exit 0' TERM; httpd -f -p 8080 -h /www & wait"],"args":null}
 ]}]], id, helper.IMAGE1, helper.IMAGE1)
end

local function check(id, result)
  assert.are.equal("docker:cp-" .. id, result.provider_ref)
  local web = projects.inspect("cp-" .. id .. "-web")
  assert.is_table(web)
  assert.are.equal(0, web.HostConfig.NanoCpus)
  assert.are.equal(0, web.HostConfig.Memory)
  -- the runtime's health check defaults (1 s interval, 3 s timeout, 3 retries)
  assert.are.equal(1000000000, web.Config.Healthcheck.Interval)
  assert.are.equal(3000000000, web.Config.Healthcheck.Timeout)
  assert.are.equal(3, web.Config.Healthcheck.Retries)
  assert.is_nil(projects.inspect("cp-" .. id .. "-web_2"))
  -- endpoints: web's two, none for the init service
  for _, e in ipairs(result.endpoints) do assert.are.equal("web", e.service_name) end
  assert.are.equal(2, #result.endpoints)
end

describe("a Go-marshalled ProvisionRequest", function()
  local session = projects.session()
  local p
  setup(function() p = session.start() end)
  teardown(session.finish)

  it("scales with a Go ResourceSpec: replicas 0 leaves the count alone", function()
    local id = session.new_id("goscale")
    assert(p:provision(assert(json.decode(go_request(id)))))
    assert(p:scale(id, {replicas = 2}))
    local spec = assert(json.decode('{"cpu_millis":500,"memory_mb":64,"disk_mb":0,"replicas":0,"gpu":""}'))
    local ok, err = p:scale(id, spec)
    assert.is_true(ok, err)
    local st = assert(p:status(id))
    assert.are.equal(2, st.services.web.replicas)
    for _, name in ipairs({"cp-" .. id .. "-web", "cp-" .. id .. "-web_2"}) do
      local c = projects.inspect(name)
      assert.is_table(c, name)
      assert.are.equal(500000000, c.HostConfig.NanoCpus)
      assert.are.equal(64 * 1048576, c.HostConfig.Memory)
    end
  end)

  it("provisions through the CLI", function()
    local id = session.new_id("gocli")
    local path = os.tmpname()
    finally(function() os.remove(path) end)
    local f = assert(io.open(path, "w"))
    f:write(go_request(id))
    f:close()
    local out, rc = helper.cpdocker("--json provision " .. path)
    assert.are.equal(0, rc, out)
    check(id, assert(json.decode(out:match("(%b{})%s*$"))))
  end)

  it("provisions through cpdocker serve", function()
    local id = session.new_id("gorpc")
    local path = os.tmpname()
    finally(function() os.remove(path) end)
    local f = assert(io.open(path, "w"))
    f:write(string.format('{"jsonrpc":"2.0","id":7,"method":"provision","params":%s}\n',
      go_request(id):gsub("\n", "")))
    f:close()
    local out = helper.sh("./cpdocker serve < " .. path)
    local reply
    for line in out:gmatch("[^\n]+") do
      local msg = json.decode(line)
      if type(msg) == "table" and msg.id == 7 then reply = msg end
    end
    assert.is_table(reply, out)
    assert.is_table(reply.result, out)
    check(id, reply.result)
  end)
end)
