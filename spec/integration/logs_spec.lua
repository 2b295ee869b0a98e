-- The logs operation and `cpdocker logs` against the real daemon. The
-- containers are made here directly (name cp-<id>-<service>, project labels),
-- as provisioning would make them, and removed by label afterwards.
local docker = require("ctrlplane.docker")
local json = require("ctrlplane.docker.json")
local cjson = require("cjson")
local helper = require("support.helper")

local PROGRAM = [[
echo "hello stdout"; echo "hello stderr" >&2; echo;
head -c 40000 /dev/zero | tr "\000" x; echo;
printf "tab\there \"quote\"\n"; echo "err line 2" >&2; printf "no newline at end"]]

describe("logs", function()
  local c, p, id, created

  -- Creates and starts a labelled container; waits for it to exit unless
  -- keep_running.
  local function run(service, role, cmd, opts)
    opts = opts or {}
    local name = "cp-" .. id .. "-" .. service
    local body = json.encode({
      Image = helper.IMAGE1, Tty = opts.tty or false, Cmd = {"sh", "-c", cmd},
      -- no network: logs need none, and the bridge is not this spec's business
      HostConfig = {NetworkMode = "none",
        LogConfig = opts.log_driver and {Type = opts.log_driver} or nil},
      Labels = {["ctrlplane.project"] = "cp-" .. id, ["ctrlplane.instance"] = id,
        ["ctrlplane.service"] = service, ["ctrlplane.role"] = role,
        ["ctrlplane.test"] = "logs_spec"},
    })
    assert(c:request("POST", "/containers/create", {query = {name = name}, body = body}))
    created[#created + 1] = name
    assert(c:request("POST", "/containers/" .. name .. "/start"))
    if not opts.keep_running then
      assert(c:request("POST", "/containers/" .. name .. "/wait", {timeout = 30}))
    end
    return name
  end

  local function lines(events)
    local t = {}
    for i, e in ipairs(events) do t[i] = e.line end
    return t
  end

  before_each(function()
    c = helper.daemon()
    p = assert(docker.new({host = helper.SOCKET}))
    id = helper.instance_id("logs")
    created = {}
  end)

  after_each(function()
    for _, name in ipairs(created) do
      c:request("DELETE", "/containers/" .. name, {query = {force = true}})
    end
    p:close()
    c:close()
  end)

  it("is a capability", function()
    local caps = p:capabilities()
    assert.is_truthy(table.concat(caps, ","):find("logs", 1, true))
  end)

  it("gives one event per line the program wrote, long lines whole", function()
    run("web", "main", PROGRAM)
    local logs = assert(p:logs(id, {}))
    local events = assert(logs:collect(10))
    logs:close()
    local out, err = {}, {}
    for _, e in ipairs(events) do
      assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d+Z$", e.ts)
      assert.is_nil(e.service) -- one service: not merged
      table.insert(e.stream == "stdout" and out or err, e.line)
    end
    assert.are.same({"hello stdout", "", ("x"):rep(40000), "tab\there \"quote\"",
      "no newline at end"}, out)
    assert.are.same({"hello stderr", "err line 2"}, err)
  end)

  it("reads a TTY container's raw stream", function()
    run("web", "main", PROGRAM, {tty = true})
    local logs = assert(p:logs(id))
    local events = assert(logs:collect(10))
    assert.are.same({"hello stdout", "hello stderr", "", ("x"):rep(40000), "tab\there \"quote\"",
      "err line 2", "no newline at end"}, lines(events))
    for _, e in ipairs(events) do assert.are.equal("stdout", e.stream) end
  end)

  it("keeps bytes that are not UTF-8 (local driver), and JSON stays valid", function()
    run("web", "main", 'printf "bad \\377\\376 end\\n"; head -c 40000 /dev/zero | tr "\\000" y; echo',
      {log_driver = "local"})
    local events = assert(assert(p:logs(id)):collect(10))
    assert.are.same({"bad \255\254 end", ("y"):rep(40000)}, lines(events))
    local text = helper.sh("./cpdocker --json logs " .. id)
    local first = text:match("^[^\n]+")
    assert.are.equal("bad \u{FFFD}\u{FFFD} end", cjson.decode(first).line)
    local raw = helper.sh("./cpdocker logs " .. id)
    assert.are.equal("bad \255\254 end\n", raw:match("^[^\n]*\n"))
  end)

  it("cuts a line longer than the cap into partial events, and prints it whole", function()
    run("web", "main", 'head -c 1200000 /dev/zero | tr "\\000" z; echo; echo after')
    local events = assert(assert(p:logs(id)):collect(20))
    assert.are.equal(3, #events)
    assert.are.equal(1048576, #events[1].line)
    assert.is_true(events[1].partial)
    assert.are.equal(1200000 - 1048576, #events[2].line)
    assert.is_nil(events[2].partial)
    assert.are.equal(events[1].ts, events[2].ts)
    assert.are.equal("after", events[3].line)
    local out = helper.sh("./cpdocker logs " .. id)
    assert.are.equal(("z"):rep(1200000) .. "\nafter\n", out)
  end)

  it("reports a logging driver that cannot be read", function()
    run("web", "main", "echo hi", {log_driver = "none"})
    local none, err, code = p:logs(id)
    assert.is_nil(none)
    assert.is_string(code)
    assert.matches("cp%-" .. id:gsub("%-", "%%-") .. "%-web: .*does not support reading", err)
  end)

  it("reads the main service by default, one service or all of them merged", function()
    run("web", "main", "echo web-1; echo web-2")
    run("logger", "sidecar", "echo logger-1")
    run("setup", "init", "echo setup-1")
    assert.are.same({"web-1", "web-2"}, lines(assert(assert(p:logs(id)):collect(10))))
    assert.are.same({"logger-1"},
      lines(assert(assert(p:logs(id, {service_name = "logger"})):collect(10))))
    local all = assert(assert(p:logs(id, {all = true})):collect(10))
    local seen = {}
    for i, e in ipairs(all) do
      seen[#seen + 1] = e.service .. ":" .. e.line
      if i > 1 then assert.is_true(all[i - 1].ts <= e.ts) end
    end
    -- merged by time: the containers ran one after another
    assert.are.same({"web:web-1", "web:web-2", "logger:logger-1", "setup:setup-1"}, seen)
  end)

  it("honours tail and since", function()
    run("web", "main", "for i in 1 2 3 4 5; do echo line-$i; done")
    assert.are.same({"line-4", "line-5"}, lines(assert(assert(p:logs(id, {tail = 2})):collect(10))))
    assert.are.equal(5, #assert(assert(p:logs(id, {tail = 0})):collect(10)))
    assert.are.equal(5, #assert(assert(p:logs(id, {since = "1h"})):collect(10)))
    assert.are.same({}, assert(assert(p:logs(id, {since = os.time() + 3600})):collect(10)))
    local future = os.date("!%Y-%m-%dT%H:%M:%SZ", os.time() + 3600)
    assert.are.same({}, assert(assert(p:logs(id, {since = future})):collect(10)))
  end)

  it("follows new lines until closed", function()
    -- runs for 20 s or more: five lines arrive long before it ends
    run("web", "main", "i=0; while [ $i -lt 200 ]; do echo tick-$i; i=$((i+1)); sleep 0.1; done",
      {keep_running = true})
    local logs = assert(p:logs(id, {follow = true}))
    local got = {}
    local t0 = helper.clock()
    while #got < 5 and helper.clock() - t0 < 10 do
      local ev, err = logs:next(0.5)
      assert.is_nil(err)
      if ev then got[#got + 1] = ev.line end
    end
    logs:close()
    assert.are.same({"tick-0", "tick-1", "tick-2", "tick-3", "tick-4"}, got)
    -- following did not wait for the end
    assert.is_true(helper.clock() - t0 < 15)
  end)

  it("times out with false while a followed container is quiet", function()
    run("web", "main", "echo one; sleep 30", {keep_running = true})
    local logs = assert(p:logs(id, {follow = true}))
    assert.are.equal("one", assert(logs:next(5)).line)
    local t0 = helper.clock()
    assert.are.equal(false, logs:next(0.3))
    assert.is_true(helper.clock() - t0 < 2)
    logs:close()
  end)

  it("fails with a clear message and code, changing nothing", function()
    local none, err, code = p:logs(id)
    assert.is_nil(none)
    assert.are.equal("not_found", code)
    assert.matches("not found", err)
    run("web", "main", "echo x")
    local rows = {
      {id, {service_name = "nope"}, "not_found", 'no service "nope" %(services: web%)'},
      {"bad id!", {}, "bad_request", "instance_id"},
      {id, {service_name = "Bad_Name"}, "bad_request", "^service_name:"},
      {id, {since = "yesterday"}, "bad_request", "^since:"},
      {id, {tail = -1}, "bad_request", "^tail:"},
      {id, {follow = "yes"}, "bad_request", "^follow:"},
    }
    for _, r in ipairs(rows) do
      local res, e2, c2 = p:logs(r[1], r[2])
      assert.is_nil(res)
      assert.are.equal(r[3], c2)
      assert.matches(r[4], e2)
    end
  end)

  describe("cpdocker logs", function()
    it("prints text, stderr apart, and JSON lines with --json", function()
      run("web", "main", PROGRAM)
      local out, rc = helper.sh("./cpdocker logs " .. id .. " 2>/dev/null")
      assert.are.equal(0, rc)
      assert.are.equal("hello stdout\n\n" .. ("x"):rep(40000) .. "\ntab\there \"quote\"\nno newline at end\n",
        out)
      local err = helper.sh("./cpdocker logs " .. id .. " 2>&1 >/dev/null")
      assert.are.equal("hello stderr\nerr line 2\n", err)
      local text = helper.sh("./cpdocker --json logs " .. id)
      local n = 0
      for line in text:gmatch("[^\n]+") do
        local ev = cjson.decode(line)
        assert.is_string(ev.ts)
        assert.is_string(ev.line)
        assert.is_nil(ev.service)
        n = n + 1
      end
      assert.are.equal(7, n)
    end)

    it("merges services with a prefix, and 'service' in JSON", function()
      run("web", "main", "echo from-web")
      run("db", "sidecar", "echo from-db")
      local out = helper.sh("./cpdocker logs " .. id .. " --all")
      -- merged by time: web ran first
      assert.are.equal("web | from-web\ndb  | from-db\n", out)
      local text = helper.sh("./cpdocker logs " .. id .. " --all --json")
      local services = {}
      for line in text:gmatch("[^\n]+") do services[#services + 1] = cjson.decode(line).service end
      table.sort(services)
      assert.are.same({"db", "web"}, services)
    end)

    it("follows with -f until interrupted, then exits 0", function()
      run("web", "main", "i=0; while [ $i -lt 100 ]; do echo tick-$i; i=$((i+1)); sleep 0.1; done",
        {keep_running = true})
      local out, rc = helper.sh("timeout --preserve-status -s INT 3 ./cpdocker logs -f " .. id)
      assert.are.equal(0, rc)
      assert.matches("^tick%-0\n", out)
    end)

    it("exits 1 on failure and 2 on a usage error", function()
      local out, rc = helper.cpdocker("logs " .. id)
      assert.are.equal(1, rc)
      assert.matches("not found", out)
      out, rc = helper.cpdocker("logs " .. id .. " --all --service web")
      assert.are.equal(2, rc)
      assert.matches("cannot be used together", out)
      local _, rc2 = helper.cpdocker("logs " .. id .. " --tail many")
      assert.are.equal(2, rc2)
      _, rc2 = helper.cpdocker("logs")
      rc = rc2
      assert.are.equal(2, rc)
    end)
  end)
end)
