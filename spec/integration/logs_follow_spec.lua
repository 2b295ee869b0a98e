-- Following logs across the life of an instance (issue 8): a followed
-- stream re-attaches when its container restarts (only the new run's
-- lines, nothing twice), follows a deploy onto the new container, and ends
-- cleanly when the instance is deprovisioned.
local json = require("ctrlplane.docker.json")
local helper = require("support.helper")
local projects = require("support.projects")

local TICKER = {"sh", "-c", "trap 'exit 0' TERM; echo boot-$RUN; n=0; "
  .. "while true; do echo tick-$n; n=$((n+1)); sleep 0.2 & wait $!; done"}

local function request(id)
  return {instance_id = id, tenant_id = "ten_logs", services = {
    {name = "web", role = "main", image = helper.IMAGE1, command = TICKER, env = {RUN = "a"}}}}
end

-- Reads events until pred(events) or `seconds` pass; returns the events
-- and how the read ended ("pred", "end", "timeout" or the error).
local function read_until(logs, events, seconds, pred)
  local deadline = helper.clock() + seconds
  while helper.clock() < deadline do
    local ev, err = logs:next(0.5)
    if ev == nil then return events, err or "end" end
    if ev then
      events[#events + 1] = ev
      if pred and pred(events) then return events, "pred" end
    end
  end
  return events, "timeout"
end

local function count(events, pattern)
  local n = 0
  for _, e in ipairs(events) do
    if e.line:match(pattern) then n = n + 1 end
  end
  return n
end

describe("logs --follow across restarts, deploys and deprovision", function()
  local session = projects.session()
  local p
  local new_id = session.new_id

  setup(function()
    p = session.start()
  end)

  teardown(session.finish)

  it("re-attaches after a restart, follows a deploy, and ends when deprovisioned", function()
    local id = new_id("follow")
    assert(p:provision(request(id)))
    local logs = assert(p:logs(id, {follow = true}))
    local events, how = read_until(logs, {}, 15, function(ev) return count(ev, "^tick%-") >= 3 end)
    assert.are.equal("pred", how)
    assert.are.equal(1, count(events, "^boot%-a$"))

    assert(p:restart(id))
    events, how = read_until(logs, events, 20, function(ev)
      return count(ev, "^boot%-a$") == 2 and ev[#ev].line == "tick-2"
    end)
    assert.are.equal("pred", how, "after the restart: " .. how)
    -- the first run's lines did not come again: exactly one boot per run
    assert.are.equal(2, count(events, "^boot%-a$"))
    for i = 2, #events do
      assert.is_true(events[i].ts >= events[i - 1].ts, "out of order at " .. i)
    end

    -- a deploy replaces the container: the follow moves to the new one
    assert(p:deploy({instance_id = id, release_id = "follow-2",
      services = {{name = "web", env = {RUN = "b"}}}}))
    events, how = read_until(logs, events, 20, function(ev) return count(ev, "^boot%-b$") == 1 end)
    assert.are.equal("pred", how, "after the deploy: " .. how)

    -- deprovision: the stream ends by itself, without an error
    assert(p:deprovision(id))
    local t0 = helper.clock()
    events, how = read_until(logs, events, 15)
    assert.are.equal("end", how)
    assert.is_true(helper.clock() - t0 < 5)
    assert.are.equal(1, count(events, "^boot%-b$"))
    logs:close()
  end)

  it("cpdocker logs -f keeps printing across a restart and exits 0 on deprovision", function()
    local id = new_id("followcli")
    local file = os.tmpname()
    local f = assert(io.open(file, "w"))
    f:write(json.encode(request(id)))
    f:close()
    local out, rc = helper.cpdocker("provision " .. file)
    os.remove(file)
    assert.are.equal(0, rc, out)
    local dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir -p " .. dir))
    helper.sh(string.format("(timeout 60 ./cpdocker logs -f %s > %s/out 2>%s/err; echo $? > %s/rc)"
      .. " >/dev/null 2>&1 & :", id, dir, dir, dir))
    helper.sleep(1.0)
    out, rc = helper.cpdocker("restart " .. id)
    assert.are.equal(0, rc, out)
    local deadline = helper.clock() + 20
    local text
    repeat
      helper.sleep(0.3)
      text = assert(io.open(dir .. "/out")):read("a")
      local _, boots = text:gsub("boot%-a", "")
      if boots >= 2 then break end
    until helper.clock() > deadline
    out, rc = helper.cpdocker("deprovision " .. id)
    assert.are.equal(0, rc, out)
    deadline = helper.clock() + 15
    while not io.open(dir .. "/rc") and helper.clock() < deadline do helper.sleep(0.2) end
    local code = tonumber(assert(io.open(dir .. "/rc"), "logs -f did not end"):read("a"))
    text = assert(io.open(dir .. "/out")):read("a")
    local err = assert(io.open(dir .. "/err")):read("a")
    os.execute("rm -rf " .. dir)
    assert.are.equal(0, code, err)
    local _, boots = text:gsub("boot%-a", "")
    assert.are.equal(2, boots, text)
  end)
end)
