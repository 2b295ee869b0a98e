-- The command line and the RPC server against hostile input (issue #12
-- item 5): values that overflow, duplicate keys, a missing policy directory
-- and a directory as the request file are clear errors (no traceback, no
-- daemon parse error), and nothing reaches the engine. Needs the daemon
-- for the running instance the overflowing values are aimed at.
local helper = require("support.helper")
local projects = require("support.projects")

local function no_traceback(out)
  assert.is_nil(out:find("traceback", 1, true), out)
  assert.is_nil(out:find("internal error", 1, true), out)
  assert.is_nil(out:find("strconv", 1, true), out)
end

describe("cpdocker against hostile input", function()
  local session = projects.session()
  local p, id

  setup(function()
    p = session.start()
    id = session.new_id("clihost")
    assert(p:provision({instance_id = id, services = {{name = "web", image = helper.IMAGE1,
      command = projects.IDLE_CMD}}}))
  end)
  teardown(session.finish)

  it("refuses --since values that overflow", function()
    for _, v in ipairs({"99999999999999999999", "1e20", "inf", "1e400", "nan", "9999999999h"}) do
      local out, rc = helper.cpdocker("logs " .. id .. " --since " .. v)
      assert.are_not.equal(0, rc, v)
      no_traceback(out)
      assert.matches("since:", out, 1, true)
    end
  end)

  it("refuses --timeout values that overflow, before stopping anything", function()
    for _, v in ipairs({"1e400", "inf", "nan", "-1", "86401"}) do
      local out, rc = helper.cpdocker("stop " .. id .. " --timeout " .. v)
      assert.are.equal(2, rc, out)
      no_traceback(out)
      assert.matches("--timeout", out, 1, true)
      out, rc = helper.cpdocker("exec " .. id .. " --timeout " .. v .. " -- true")
      assert.are.equal(2, rc, out)
      no_traceback(out)
    end
    assert.are.equal("running", assert(p:status(id)).state)
  end)

  it("refuses a --policy directory that does not exist", function()
    local out, rc = helper.cpdocker("--policy /nonexistent/cp-policy status " .. id)
    assert.are.equal(1, rc)
    assert.matches("--policy: /nonexistent/cp-policy is not a directory", out, 1, true) -- the flag set
  end)

  it("refuses a directory given as the request file", function()
    local out, rc = helper.cpdocker("provision /tmp")
    assert.are.equal(1, rc)
    assert.matches("cannot read /tmp: Is a directory", out, 1, true)
  end)

  it("refuses duplicate keys in a request file, naming the key, and creates nothing", function()
    local other = session.new_id("dupkey")
    local path = os.tmpname()
    finally(function() os.remove(path) end)
    local f = assert(io.open(path, "w"))
    f:write(string.format('{"instance_id":"%s","services":[{"name":"web","image":"%s",'
      .. '"env":{"A":"1","A":"2"}}]}', other, helper.IMAGE1))
    f:close()
    local out, rc = helper.cpdocker("provision " .. path)
    assert.are.equal(1, rc)
    assert.matches("duplicate key: services[0].env.A is given twice", out, 1, true)
    assert.are.same({}, projects.leftovers(other))
  end)

  it("publishes a host port below 1024 only with CP_DOCKER_ALLOW_PRIVILEGED_PORTS=1", function()
    local other = session.new_id("privport")
    local port = 900 + math.random(0, 120)
    local path = os.tmpname()
    finally(function() os.remove(path) end)
    local f = assert(io.open(path, "w"))
    f:write(string.format('{"instance_id":"%s","services":[{"name":"web","image":"%s",'
      .. '"command":["sh","-c","trap \'exit 0\' TERM; httpd -f -p 8080 -h /www & wait"],'
      .. '"ports":[{"container":8080,"host":%d}]}]}', other, helper.IMAGE1, port))
    f:close()
    local out, rc = helper.cpdocker("provision " .. path)
    assert.are.equal(1, rc, out)
    assert.matches("services[0].ports[0].host: host port " .. port .. " is privileged", out, 1, true)
    assert.are.same({}, projects.leftovers(other))
    out, rc = helper.sh("CP_DOCKER_ALLOW_PRIVILEGED_PORTS=1 ./cpdocker --json provision " .. path .. " 2>&1")
    assert.are.equal(0, rc, out)
    local c = projects.inspect("cp-" .. other .. "-web")
    assert.are.equal(tostring(port), c.HostConfig.PortBindings["8080/tcp"][1].HostPort)
    assert.are.equal("127.0.0.1", c.HostConfig.PortBindings["8080/tcp"][1].HostIp)
  end)

  it("refuses duplicate keys in RPC params", function()
    local out = helper.sh("printf '%s\\n' '{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"status\","
      .. "\"params\":{\"instance_id\":\"" .. id .. "\",\"instance_id\":\"inst_other\"}}' | ./cpdocker serve")
    assert.matches("duplicate key: params.instance_id is given twice", out, 1, true)
    assert.matches('"code":-32700', out, 1, true)
  end)
end)
