-- Operator experience (issue #17): endpoint URLs, host ports kept across a
-- deploy, start/restart waiting for readiness, stop timeouts longer than
-- the request timeout, the CLI's one voice (codes, JSON errors, --version,
-- --tail 0), colour and pull progress on a terminal (a pty from script(1)).
local json = require("ctrlplane.docker.json")
local helper = require("support.helper")
local projects = require("support.projects")
local rpc_session = require("support.rpc_session")

-- Writes a request to a temporary file; returns its path.
local function request_file(req)
  local path = os.tmpname()
  local f = assert(io.open(path, "w"))
  f:write(json.encode(req))
  f:close()
  return path
end

-- Runs a shell command line on a pseudo-terminal (script -q: stdin, stdout
-- and stderr are the pty unless the command redirects them).
local function on_pty(cmd, env)
  local quoted = cmd:gsub("'", "'\\''")
  return helper.sh(string.format("%s script -qfec '%s' /dev/null </dev/null", env or "", quoted))
end

local function web_port(endpoints)
  for _, e in ipairs(endpoints) do
    if e.public and e.service_name == "web" then
      return tonumber(e.url:match(":(%d+)$")), e.url
    end
  end
end

describe("operator experience", function()
  local session = projects.session()
  local p
  local new_id = session.new_id

  setup(function()
    p = session.start()
  end)

  teardown(session.finish)

  it("public endpoint URLs use the address the port is published on, and answer there", function()
    local id = new_id("opurl")
    local res = assert(p:provision(projects.three(id)))
    local port, url = web_port(res.endpoints)
    assert.matches("^http://127%.0%.0%.1:%d+$", url) -- CP_DOCKER_PUBLISH_ADDRESS, not localhost
    assert.is_string(projects.fetch(port, "/"))
    local st = assert(p:status(id))
    assert.are.equal(url, select(2, web_port(st.endpoints)))
    -- the CLI prints the same URL
    local out = helper.cpdocker("status " .. id)
    assert.matches(url:gsub("%.", "%%."), out)
  end)

  it("CP_DOCKER_KEEP_HOST_PORTS keeps a service's host port across deploys (recreate)", function()
    local id = new_id("opkeep")
    local keep = projects.provider({keep_host_ports = "web"})
    local res = assert(keep:provision(projects.three(id)))
    local port = web_port(res.endpoints)
    local started = {}
    assert(keep:deploy({instance_id = id, release_id = "keep-2",
      services = {{name = "web", image = helper.IMAGE2}}}, {on_event = function(ev)
        if ev.type == "service" then started[#started + 1] = ev.action .. " " .. ev.service end
      end}))
    local st = assert(keep:status(id))
    assert.are.equal(port, (web_port(st.endpoints)))
    assert.are.equal("keep-2", st.metadata.release)
    -- recreate: the old container was stopped before the new one was created
    local stopped_at, created_at
    for i, e in ipairs(started) do
      if e == "stopped web" then stopped_at = stopped_at or i end
      if e == "created web" then created_at = created_at or i end
    end
    assert.is_truthy(stopped_at and created_at and stopped_at < created_at, table.concat(started, ", "))
    assert.is_string(projects.fetch(port, "/"))
    -- and a rollback keeps it too
    assert(keep:rollback(id, "initial"))
    assert.are.equal(port, (web_port(assert(keep:status(id)).endpoints)))
    keep:close()
  end)

  it("start and restart wait until the instance is ready; --no-wait does not", function()
    local id = new_id("opwait")
    local req = projects.three(id)
    -- the web server answers 6 s after each start (a margin for a loaded host); its
    -- health check gates readiness
    req.services[2].command = {"sh", "-c",
      "if [ -f /data/crash ]; then echo crashing on purpose; exit 3; fi; "
      .. "trap 'exit 0' TERM; sleep 6; httpd -f -p 8080 -h /www & wait"}
    req.services[2].health_check = {path = "/", port = 8080, interval = "300ms", timeout = "1s",
      retries = 60}
    assert(p:provision(req))
    local out, rc = helper.cpdocker("restart " .. id .. " --timeout 2")
    assert.are.equal(0, rc, out)
    local st = assert(p:status(id))
    assert.are.equal("running", st.state)
    assert.is_true(st.ready, st.message)
    assert.are.equal("healthy", projects.inspect("cp-" .. id .. "-web").State.Health.Status)

    out, rc = helper.cpdocker("restart " .. id .. " --timeout 2 --no-wait")
    assert.are.equal(0, rc, out)
    -- returned before the server's 6 s: not healthy yet
    assert.are_not.equal("healthy", projects.inspect("cp-" .. id .. "-web").State.Health.Status)

    out, rc = helper.cpdocker("stop " .. id)
    assert.are.equal(0, rc, out)
    out, rc = helper.cpdocker("start " .. id)
    assert.are.equal(0, rc, out)
    assert.is_true(assert(p:status(id)).ready)

    -- a main that fails on start: start fails naming it and its exit
    assert(p:exec(id, {command = {"touch", "/data/crash"}}))
    out, rc = helper.cpdocker("restart " .. id .. " --timeout 2")
    assert.are.equal(1, rc, out)
    assert.matches("service web [%w ]+ %(exit code 3%)", out)
    assert.matches("crashing on purpose", out)
    assert.matches("%[%l[%l_]*%]\n$", out)
  end)

  it("over JSON-RPC, restart waits until ready, takes stop_timeout and no_wait, and "
    .. "rejects them where they do not apply", function()
    local id = new_id("oprpcw")
    local req = projects.three(id)
    req.services[2].command = {"sh", "-c", "trap 'exit 0' TERM; sleep 6; httpd -f -p 8080 -h /www & wait"}
    req.services[2].health_check = {path = "/", port = 8080, interval = "300ms", timeout = "1s",
      retries = 60}
    assert(p:provision(req))
    local s = rpc_session.start()
    local ok, err = pcall(function()
      local r = s:call("restart", {instance_id = id, stop_timeout = "2s"}, 120)
      assert.are.equal(json.null, r.result, json.encode(r.error or {}))
      assert.are.equal("healthy", projects.inspect("cp-" .. id .. "-web").State.Health.Status)
      r = s:call("restart", {instance_id = id, stop_timeout = 2000000000, no_wait = true}, 120)
      assert.are.equal(json.null, r.result, json.encode(r.error or {}))
      assert.are_not.equal("healthy", projects.inspect("cp-" .. id .. "-web").State.Health.Status)
      for _, bad in ipairs({{"stop", {no_wait = true}, "no_wait"},
          {"start", {stop_timeout = "2s"}, "stop_timeout"},
          {"restart", {stop_timeout = "soon"}, "stop_timeout"},
          {"start", {no_wait = "yes"}, "no_wait"}}) do
        bad[2].instance_id = id
        r = s:call(bad[1], bad[2])
        assert.are.equal(-32602, r.error.code)
        assert.are.equal(bad[3], r.error.data.errors[1].field)
      end
    end)
    s:close()
    assert(ok, err)
  end)

  it("start after deploy, rollback and scale: a container pinned to its address by a "
    .. "start-first deploy starts even when a replica took that address", function()
    local id = new_id("oppin")
    assert(p:provision({instance_id = id, tenant_id = "ten_spec", name = "pin", kind = "deployment",
      services = {{name = "web", image = helper.IMAGE1, command = projects.WEB_CMD,
        ports = {{container = 8080, protocol = "tcp"}},
        resources = {cpu_millis = 0, memory_mb = 0, replicas = 1}}}}))
    assert(p:deploy({instance_id = id, release_id = "pin-2",
      services = {{name = "web", image = helper.IMAGE2}}}))
    assert(p:rollback(id, "initial"))
    assert(p:scale(id, {replicas = 2}))
    for _ = 1, 2 do
      assert(p:stop(id))
      local ok, err = p:start(id)
      assert(ok, err)
      local st = assert(p:status(id))
      assert.are.equal("running", st.services.web.state, st.message)
      assert.are.equal(2, st.services.web.replicas)
    end
    assert(p:restart(id))
    assert.is_true(assert(p:status(id)).ready)
  end)

  it("stop --timeout longer than the request timeout waits it out", function()
    local id = new_id("opstop")
    local req = projects.three(id)
    req.services[3].command = {"sleep", "1000"} -- PID 1 ignores SIGTERM: Docker waits, then kills
    assert(p:provision(req))
    local t0 = helper.clock()
    local out, rc = helper.sh("CP_DOCKER_TIMEOUT=2 ./cpdocker stop " .. id .. " --timeout 5 2>&1")
    local took = helper.clock() - t0
    assert.are.equal(0, rc, out)
    assert.is_true(took >= 4.5, "the stop waited only " .. took .. " s")
    assert.are.equal("stopped", assert(p:status(id)).state)
  end)

  it("a request that times out names the variable to raise", function()
    local id = new_id("opto")
    local req = projects.three(id)
    req.services[3].command = {"sleep", "1000"}
    assert(p:provision(req))
    -- the wait endpoint blocks until the container stops: longer than 1 s
    local slow = projects.provider({timeout = 1})
    local _, err, code = slow.engine:post("/containers/cp-" .. id .. "-side/wait")
    slow:close()
    assert.are.equal("timeout", code)
    assert.matches("raise CP_DOCKER_TIMEOUT", err)
  end)

  it("speaks with one voice: [code] on every error, JSON errors with --json, --version", function()
    local out, rc = helper.cpdocker("stop inst_opnothere1")
    assert.are.equal(1, rc)
    assert.matches("%[not_found%]", out)
    out, rc = helper.sh("./cpdocker --json stop inst_opnothere1 2>/dev/null")
    assert.are.equal(1, rc)
    local e = assert(json.decode(out)).error
    assert.are.equal("not_found", e.code)
    assert.matches("inst_opnothere1", e.message)

    out, rc = helper.cpdocker("provision /nonexistent/req.json")
    assert.are.equal(1, rc)
    assert.matches("cannot read /nonexistent/req.json.*%[invalid%]", out)

    local bad = projects.three(helper.instance_id("opbad"))
    bad.services[2].ports = {{container = 0}}
    local f = request_file(bad)
    out, rc = helper.sh("./cpdocker provision " .. f .. " --json 2>/dev/null")
    os.remove(f)
    assert.are.equal(1, rc)
    e = assert(json.decode(out)).error
    assert.are.equal("invalid", e.code)
    assert.are.equal("services[1].ports[0].container", e.errors[1].field)

    out, rc = helper.sh("./cpdocker --json nosuchcommand 2>/dev/null")
    assert.are.equal(2, rc)
    assert.are.equal("usage", assert(json.decode(out)).error.code)
    out, rc = helper.sh("CP_DOCKER_TIMEOUT=soon ./cpdocker status inst_x 2>&1")
    assert.are.equal(1, rc)
    assert.matches("^cpdocker: CP_DOCKER_TIMEOUT: invalid duration.*%[bad_request%]", out)

    -- --version needs no daemon
    out, rc = helper.sh("./cpdocker --host unix:///nonexistent.sock --version")
    assert.are.equal(0, rc, out)
    assert.matches("^cpdocker %d+%.%d+%.%d+", out)
    out = helper.sh("./cpdocker --version --json")
    assert.matches("^%d+%.%d+%.%d+$", assert(json.decode(out)).version)
  end)

  -- {command line, expected code}: every failure ends with its [code]
  local failures = {
    {"status 'bad/id'", "invalid"},
    {"start inst_opnothere2", "not_found"},
    {"restart inst_opnothere2", "not_found"},
    {"deprovision 'bad/id'", "invalid"},
    {"scale inst_opnothere2 --replicas 2", "not_found"},
    {"rollback inst_opnothere2 initial", "not_found"},
    {"logs inst_opnothere2", "not_found"},
    {"top inst_opnothere2 --no-stream", "not_found"},
    {"exec inst_opnothere2 -- true", "not_found"},
    {"deploy /nonexistent.json", "invalid"},
    {"--host unix:///nonexistent.sock status inst_opnothere2", "unreachable"},
    {"--host ftp://x info", "bad_request"},
  }
  for _, row in ipairs(failures) do
    it("`cpdocker " .. row[1] .. "` fails with [" .. row[2] .. "], and as JSON with --json", function()
      local out, rc = helper.sh("./cpdocker " .. row[1] .. " 2>&1 >/dev/null")
      assert.are.equal(1, rc, out)
      assert.matches("^cpdocker: .*%[" .. row[2] .. "%]\n$", out)
      out, rc = helper.sh("./cpdocker --json " .. row[1] .. " 2>/dev/null")
      assert.are.equal(1, rc, out)
      assert.are.equal(row[2], assert(json.decode(out), out).error.code)
    end)
  end

  it("logs --tail 0 prints no old lines, as docker; --tail N the last N", function()
    local id = new_id("optail")
    local req = projects.three(id)
    req.services[2].command = {"sh", "-c",
      "echo one; echo two; echo three; trap 'exit 0' TERM; httpd -f -p 8080 -h /www & wait"}
    assert(p:provision(req))
    local out, rc = helper.sh("./cpdocker logs " .. id .. " --tail 0")
    assert.are.equal(0, rc)
    assert.are.equal("", out)
    out = helper.sh("./cpdocker logs " .. id .. " --tail 2")
    assert.are.equal("two\nthree\n", out)
    out = helper.sh("./cpdocker logs " .. id)
    assert.are.equal("one\ntwo\nthree\n", out)
    -- the provider's (and JSON-RPC's) tail = 0 stays ctrlplane's "not set": every line
    assert.are.equal(3, #assert(assert(p:logs(id, {tail = 0})):collect(10)))
  end)

  it("colour only on a terminal, never with NO_COLOR or TERM=dumb", function()
    local out = on_pty("./cpdocker health", "TERM=xterm")
    assert.matches("\27%[32mtrue", out)
    out = on_pty("./cpdocker health", "TERM=xterm NO_COLOR=1")
    assert.matches("healthy:%s+true", out)
    assert.is_nil(out:find("\27[", 1, true))
    out = on_pty("./cpdocker health", "TERM=dumb")
    assert.matches("healthy:%s+true", out)
    assert.is_nil(out:find("\27[", 1, true))
    out = helper.sh("TERM=xterm ./cpdocker health")
    assert.is_nil(out:find("\27[", 1, true)) -- not a terminal
  end)

  it("draws pull progress when stderr is a terminal, and only then", function()
    local function pushed_tag()
      local tag = "127.0.0.1:5000/cpdocker-test/progress:" .. helper.instance_id("pg"):lower()
      local _, rc = helper.sh(string.format("docker tag %s %s && docker push %s >/dev/null && "
        .. "docker rmi %s >/dev/null", helper.IMAGE2, tag, tag, tag))
      assert.are.equal(0, rc)
      return tag
    end
    -- stderr on the pty, stdout to a file
    local id = new_id("oppull")
    local tag = pushed_tag()
    local req = projects.three(id)
    req.services[3].image = tag
    local f = request_file(req)
    local out = on_pty("./cpdocker provision " .. f .. " >/dev/null", "TERM=xterm")
    os.remove(f)
    assert.matches("pulling " .. tag:gsub("%p", "%%%0"), out)
    assert.matches("\r\27%[K  %a+ +%[[=> ]+%] +%d+%%  [%d.]+ MB / [%d.]+ MB", out)
    assert.matches("pulled " .. tag:gsub("%p", "%%%0"), out)
    helper.sh("docker rmi -f " .. tag .. " >/dev/null 2>&1")

    -- stdout on the pty, stderr to a file: step lines only, no bar
    id = new_id("oppull2")
    tag = pushed_tag()
    req = projects.three(id)
    req.services[3].image = tag
    f = request_file(req)
    local errfile = os.tmpname()
    on_pty("./cpdocker provision " .. f .. " 2>" .. errfile, "TERM=xterm")
    os.remove(f)
    local ef = assert(io.open(errfile))
    local err = ef:read("a")
    ef:close()
    os.remove(errfile)
    assert.matches("pulling " .. tag:gsub("%p", "%%%0"), err)
    assert.matches("pulled " .. tag:gsub("%p", "%%%0"), err)
    assert.is_nil(err:find("\27[", 1, true))
    assert.is_nil(err:find("\r", 1, true))
    helper.sh("docker rmi -f " .. tag .. " >/dev/null 2>&1")

    -- a terminal that cannot move the cursor (TERM=dumb): step lines only
    id = new_id("oppull3")
    tag = pushed_tag()
    req = projects.three(id)
    req.services[3].image = tag
    f = request_file(req)
    out = on_pty("./cpdocker provision " .. f .. " >/dev/null", "TERM=dumb")
    os.remove(f)
    assert.matches("pulled " .. tag:gsub("%p", "%%%0"), out)
    assert.is_nil(out:find("\27[", 1, true))
    helper.sh("docker rmi -f " .. tag .. " >/dev/null 2>&1")
    -- nor does `top` redraw the screen there
    out = on_pty("./cpdocker top " .. id .. " --count 2 --interval 0.5", "TERM=dumb")
    assert.matches("SERVICE", out)
    assert.is_nil(out:find("\27[", 1, true))
    out = on_pty("./cpdocker top " .. id .. " --count 1", "TERM=xterm")
    assert.is_truthy(out:find("\27[H\27[2J", 1, true))
  end)
end)
