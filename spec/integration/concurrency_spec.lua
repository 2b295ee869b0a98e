-- Concurrent callers (issue 8): real cpdocker processes started at the
-- same time on the same instance are serialized by the instance's lock and
-- leave a consistent project; different instances run in parallel.
local core = require("ctrlplane.docker.core")
local json = require("ctrlplane.docker.json")
local helper = require("support.helper")
local projects = require("support.projects")

local function write_json(value)
  local path = os.tmpname()
  local f = assert(io.open(path, "w"))
  f:write(json.encode(value))
  f:close()
  return path
end

-- Runs the commands at once (each after its own delay in seconds) as
-- separate cpdocker processes; returns per command {rc, out, t0, t1}
-- (monotonic-ish wall times from date +%s.%N). Bounded by `timeout`.
local function run_together(cmds, env)
  local dir = os.tmpname()
  os.remove(dir)
  assert(os.execute("mkdir -p " .. dir))
  local parts = {}
  for i, c in ipairs(cmds) do
    parts[#parts + 1] = string.format(
      "( sleep %g; date +%%s.%%N > %s/t0.%d; %s timeout 120 ./cpdocker %s > %s/out.%d 2>&1;"
        .. " echo $? > %s/rc.%d; date +%%s.%%N > %s/t1.%d ) &",
      c.delay or 0, dir, i, env or "", c.args, dir, i, dir, i, dir, i)
  end
  helper.sh(table.concat(parts, " ") .. " wait")
  local function slurp(p)
    local f = io.open(p)
    if not f then return nil end
    local s = f:read("a")
    f:close()
    return s
  end
  local res = {}
  for i = 1, #cmds do
    res[i] = {rc = tonumber(slurp(dir .. "/rc." .. i)), out = slurp(dir .. "/out." .. i) or "",
      t0 = tonumber(slurp(dir .. "/t0." .. i)), t1 = tonumber(slurp(dir .. "/t1." .. i))}
  end
  os.execute("rm -rf " .. dir)
  return res
end

local function count(list, prefix)
  local n = 0
  for _, item in ipairs(list) do
    if item:sub(1, #prefix) == prefix then n = n + 1 end
  end
  return n
end

describe("concurrent callers", function()
  local ids, files = {}, {}

  setup(function() helper.daemon() end)

  teardown(function()
    for _, id in ipairs(ids) do helper.cpdocker("deprovision " .. id) end
    for _, f in ipairs(files) do os.remove(f) end
  end)

  local function new_instance(tag)
    local id = helper.instance_id(tag)
    ids[#ids + 1] = id
    local file = write_json(projects.three(id))
    files[#files + 1] = file
    return id, file
  end

  it("two provisions of one instance: both succeed, one project, same containers", function()
    local id, file = new_instance("cc2p")
    local r = run_together({{args = "--json provision " .. file},
      {args = "--json provision " .. file}})
    assert.are.equal(0, r[1].rc, r[1].out)
    assert.are.equal(0, r[2].rc, r[2].out)
    local a, b = json.decode(r[1].out), json.decode(r[2].out)
    -- the later one found the project complete and kept every container
    assert.are.same(a.service_refs, b.service_refs)
    local left = projects.leftovers(id)
    assert.are.equal(3, count(left, "/containers/json:"), table.concat(left, " "))
    assert.are.equal(1, count(left, "/networks:"), table.concat(left, " "))
    -- its data volume, and one generation of the manifest (manifest.lua)
    assert.are.equal(1, count(left, "/volumes:cp-" .. id .. "-data"), table.concat(left, " "))
    assert.are.equal(1, count(left, "/volumes:cp-" .. id .. "-Manifest."), table.concat(left, " "))
    assert.are.equal(2, count(left, "/volumes:"), table.concat(left, " "))
    local st = json.decode((helper.cpdocker("--json status " .. id)))
    assert.are.equal("running", st.state)
    assert.is_true(st.ready)
  end)

  it("provision and deprovision at once: the deprovision waits, nothing is left", function()
    local id, file = new_instance("ccpd")
    local r = run_together({{args = "provision " .. file},
      {args = "deprovision " .. id, delay = 0.3}})
    assert.are.equal(0, r[1].rc, r[1].out)
    assert.are.equal(0, r[2].rc, r[2].out)
    -- serialized: the deprovision ended after the provision had finished
    assert.is_true(r[2].t1 >= r[1].t1, string.format("deprovision ended %.3f, provision %.3f",
      r[2].t1, r[1].t1))
    assert.are.same({}, projects.leftovers(id))
  end)

  it("deploy and status at once: status waits and sees the new release, running", function()
    local id, file = new_instance("ccds")
    local out, rc = helper.cpdocker("provision " .. file)
    assert.are.equal(0, rc, out)
    local dep = write_json({instance_id = id, release_id = "cc-2",
      services = {{name = "web", image = helper.IMAGE2, env = {GREETING = "again"}}}})
    files[#files + 1] = dep
    local r = run_together({{args = "--json deploy " .. dep},
      {args = "--json status " .. id, delay = 0.3}, {args = "--json status " .. id, delay = 0.4}})
    for i = 1, 3 do assert.are.equal(0, r[i].rc, r[i].out) end
    assert.are.equal("running", json.decode(r[1].out).status)
    for i = 2, 3 do
      local st = json.decode(r[i].out)
      assert.are.equal("running", st.state)
      assert.is_true(st.ready)
      assert.are.equal("cc-2", st.metadata.release)
    end
    local left = projects.leftovers(id) -- the old web container is gone, no renamed copy left
    assert.are.equal(3, count(left, "/containers/json:"), table.concat(left, " "))
  end)

  it("a held instance does not hold up another; a waiter gives up with 'busy'", function()
    local a, afile = new_instance("ccla")
    local _, bfile = new_instance("cclb")
    local dir = os.getenv("CP_DOCKER_LOCK_DIR") or require("ctrlplane.docker.config").DEFAULT_LOCK_DIR
    local lock = assert(core.lock(dir, a))
    local r = run_together({{args = "provision " .. afile}, {args = "provision " .. bfile}},
      "CP_DOCKER_LOCK_TIMEOUT=2s")
    lock:release()
    assert.are.equal(1, r[1].rc, r[1].out)
    assert.matches("is busy", r[1].out)
    assert.matches("%[busy%]", r[1].out)
    assert.are.equal(0, r[2].rc, r[2].out)
    assert.are.same({}, projects.leftovers(a))
  end)

  it("different instances provision in parallel", function()
    local _, f1 = new_instance("ccpa")
    local _, f2 = new_instance("ccpb")
    local r = run_together({{args = "provision " .. f1}, {args = "provision " .. f2}})
    assert.are.equal(0, r[1].rc, r[1].out)
    assert.are.equal(0, r[2].rc, r[2].out)
    -- the two runs overlapped in time: neither waited for the other
    local overlap = math.min(r[1].t1, r[2].t1) - math.max(r[1].t0, r[2].t0)
    local shorter = math.min(r[1].t1 - r[1].t0, r[2].t1 - r[2].t0)
    assert.is_true(overlap > 0.5 * shorter, string.format("overlap %.3fs of %.3fs", overlap, shorter))
  end)
end)
