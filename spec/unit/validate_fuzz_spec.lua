-- Request validation, tried systematically: a bounded, seeded mutation loop
-- over ProvisionRequests and DeployRequests (structure mutations on the
-- tables, and byte mutations of their JSON text decoded as the RPC server
-- would). Every outcome must be "accepted" or nil, message, "invalid",
-- errors where each error names a field that the message repeats; nothing
-- may raise.
--
--   CP_FUZZ_SEED=123 CP_FUZZ_ITERS=200000 busted --lua=lua5.4 spec/unit/validate_fuzz_spec.lua
local json = require("ctrlplane.docker.json")
local validate = require("ctrlplane.docker.validate")

local SEED = tonumber(os.getenv("CP_FUZZ_SEED")) or 20261128
local ITERS = tonumber(os.getenv("CP_FUZZ_ITERS")) or 4000
local TIME_BOUND = tonumber(os.getenv("CP_FUZZ_SECONDS")) or 20

local function rich_request()
  return {
    instance_id = "inst_fuzz01", tenant_id = "ten_1", name = "fuzz", kind = "deployment",
    labels = {["example.com/a"] = "1"},
    services = {
      {name = "setup", role = "init", image = "busybox:1", command = {"sh", "-c", "true"},
        volumes = {{name = "data", mount_path = "/data", size_mb = 10, type = "persistent"}}},
      {name = "web", role = "main", image = "registry.local:5000/web@sha256:" .. string.rep("ab", 32),
        depends_on = {"setup"}, env = {A = "1", B_2 = "x"}, args = {"-v"},
        ports = {{container = 8080, host = 18080, protocol = "tcp"}, {container = 53, protocol = "udp"}},
        volumes = {{name = "data", mount_path = "/data"}},
        health_check = {path = "/health", port = 8080, interval = "5s", timeout = 2000000000,
          retries = 3},
        resources = {cpu_millis = 250, memory_mb = 64, disk_mb = 100, replicas = 1, gpu = 0},
        annotations = {["team"] = "web"}},
      {name = "side", role = "sidecar", image = "busybox:1", depends_on = {"web"}},
    },
  }
end

local function deploy_request()
  return {instance_id = "inst_fuzz01", release_id = "rel_2", strategy = "rolling",
    services = {{name = "web", image = "busybox:2", env = {A = "2"},
      health_check = {port = 8080}}, {name = "side", env = {X = ""}}}}
end

-- Problems known upstream (pattern -> note) would be listed here; there are
-- none: every problem the fuzzing finds fails the spec.
local KNOWN = {}

local rnd -- a seeded generator of our own, so runs repeat on any Lua

local function make_rng(seed)
  local state = seed % 2147483647
  if state <= 0 then state = state + 2147483646 end
  return function(n) -- 1..n (Park-Miller)
    state = state * 48271 % 2147483647
    return state % n + 1
  end
end

local STRINGS = {"", " ", "main", "init", "sidecar", "web", "setup", "side", "../../etc", "a/b",
  "UPPER", "-lead", "trail-", "x:y", "5s", "1h30m", "-5s", "abc", "0", "1e309", "\0", "\n",
  "é", "\xff\xfe", string.rep("a", 64), string.rep("b", 70), string.rep("z", 5000), "%s%d",
  "tcp", "udp", "sctp", "persistent", "ephemeral", "deployment", "stateful_set", "busybox:1",
  "http://x", "/path", "rolling", "blue-green", "inst_fuzz01", "web ", "true"}
local NUMBERS = {0, 1, -1, 6, 5, 65535, 65536, 2 ^ 53, -(2 ^ 63), math.maxinteger,
  math.mininteger, 0.5, -0.0, 1e308, 1 / 0, -1 / 0, 0 / 0, 3.0, 80, 8080, 1000000000}

local function random_value(depth)
  local k = rnd(depth > 2 and 6 or 9)
  if k == 1 then return nil end
  if k == 2 then return rnd(2) == 1 end
  if k == 3 then return NUMBERS[rnd(#NUMBERS)] end
  if k == 4 or k == 5 then return STRINGS[rnd(#STRINGS)] end
  if k == 6 then return json.null end
  if k == 7 then return {} end
  if k == 8 then -- a list
    local t = {}
    for i = 1, rnd(4) do t[i] = random_value(depth + 1) end
    return t
  end
  local t = {} -- a map, keys of any kind
  for _ = 1, rnd(4) do
    local key = ({STRINGS[rnd(#STRINGS)], rnd(5), 1.5, true})[rnd(4)]
    t[key] = random_value(depth + 1)
  end
  return t
end

-- Every (table, key) pair reachable from root, for picking a spot.
local function spots(root)
  local out, seen = {}, {}
  local function walk(t, depth)
    if seen[t] or depth > 6 then return end
    seen[t] = true
    for k, v in pairs(t) do
      out[#out + 1] = {t, k}
      if type(v) == "table" then walk(v, depth + 1) end
    end
    out[#out + 1] = {t, nil}
  end
  walk(root, 0)
  return out
end

local function deep_copy(v, seen)
  if type(v) ~= "table" then return v end
  seen = seen or {}
  if seen[v] then return seen[v] end
  local t = {}
  seen[v] = t
  for k, x in pairs(v) do t[deep_copy(k, seen)] = deep_copy(x, seen) end
  return t
end

local function mutate(req)
  for _ = 1, rnd(4) do
    local all = spots(req)
    local spot = all[rnd(#all)]
    local t, k = spot[1], spot[2]
    local op = rnd(6)
    if k == nil or op == 1 then -- add a key (sometimes an unknown one)
      local key = ({"extra", "name", "image", "role", "ports", "env", "depends_on", "services",
        1, 2, #t + 1})[rnd(11)]
      t[key] = random_value(1)
    elseif op == 2 then
      t[k] = nil
    elseif op == 3 then
      t[k] = random_value(1)
    elseif op == 4 and type(t[k]) == "table" then -- duplicate a subtree somewhere
      local other = all[rnd(#all)][1]
      other[#other + 1] = deep_copy(t[k])
    elseif op == 5 then -- depends_on a random service name: cycles, self, unknown
      local svcs = type(req.services) == "table" and req.services or {}
      local s = svcs[rnd(math.max(#svcs, 1))]
      if type(s) == "table" then
        s.depends_on = {({"web", "side", "setup", "ghost", s.name})[rnd(5)]}
      end
    else
      t[k] = STRINGS[rnd(#STRINGS)]
    end
  end
  return req
end

-- A printable form of a request for a failure report (no JSON: keys may be anything).
local function dump(v, depth)
  depth = depth or 0
  if type(v) == "string" then return string.format("%q", v) end
  if type(v) ~= "table" then return tostring(v) end
  if depth > 6 then return "{...}" end
  local parts = {}
  for k, x in pairs(v) do parts[#parts + 1] = "[" .. dump(k, 7) .. "]=" .. dump(x, depth + 1) end
  table.sort(parts)
  return "{" .. table.concat(parts, ", ") .. "}"
end

-- Checks one outcome; returns nil or a description of what is wrong.
local function check_outcome(ok, res, msg, code, errs)
  if not ok then return "raised: " .. tostring(res) end
  if res ~= nil then
    if type(res) ~= "table" then return "accepted a non-table result" end
    return nil
  end
  if code ~= "invalid" then return "code " .. tostring(code) .. " (want invalid)" end
  if type(msg) ~= "string" or msg == "" then return "no message" end
  if type(errs) ~= "table" or #errs == 0 then return "no error list" end
  for _, e in ipairs(errs) do
    if type(e.field) ~= "string" or e.field == "" then return "an error without a field" end
    if type(e.message) ~= "string" or e.message == "" then return "an error without a message" end
    if not msg:find(e.field, 1, true) then return "message does not name " .. e.field end
  end
  return nil
end

local function run(name, base, fn, byte_mutations)
  rnd = make_rng(SEED + #name)
  local t0, n, accepted, rejected = os.clock(), 0, 0, 0
  local problems = {}
  for i = 1, ITERS do
    if os.clock() - t0 > TIME_BOUND then break end
    n = i
    local req = mutate(base())
    local input = req
    if byte_mutations and i % 3 == 0 then -- through JSON text, as the RPC server sees it
      local okj, text = pcall(json.encode, req)
      if okj and type(text) == "string" and #text > 0 then
        local bytes = {text:byte(1, -1)}
        for _ = 1, rnd(3) do
          local at = rnd(#bytes)
          bytes[at] = ({34, 44, 58, 91, 93, 123, 125, 48, 110, 92, rnd(256) - 1})[rnd(11)]
        end
        input = json.decode(string.char(table.unpack(bytes)))
      end
    end
    local ok, res, msg, code, errs = pcall(fn, input)
    local problem = check_outcome(ok, res, msg, code, errs)
    local known
    for pattern, note in pairs(KNOWN) do
      if problem and problem:find(pattern) then known = note end
    end
    if known then
      problems.known = problems.known or {}
      problems.known[known] = (problems.known[known] or 0) + 1
    elseif problem then -- keep going: report each distinct problem once, with its first input
      local key = problem:gsub("%b()", ""):gsub("\n.*", "")
      if not problems[key] then
        problems[key] = true
        problems[#problems + 1] = string.format("seed %d iteration %d: %s\n    request: %s",
          SEED, i, problem, dump(input))
      end
    elseif res then
      accepted = accepted + 1
    else
      rejected = rejected + 1
    end
  end
  if #problems > 0 then
    error(string.format("%s: %d distinct problem(s):\n  %s", name, #problems,
      table.concat(problems, "\n  ")), 0)
  end
  return n, accepted, rejected, problems.known
end

describe("validation fuzzing (seeded, bounded)", function()
  it("the unmutated requests are accepted", function()
    assert.is_table(validate.provision(rich_request()))
    assert.is_table(validate.deploy(deploy_request()))
  end)

  it("validate.provision: every mutated request is accepted or a named error", function()
    local n, acc, rej, known = run("provision", rich_request, validate.provision, true)
    print(string.format("\n  provision fuzz: seed %d, %d requests, %d accepted, %d rejected",
      SEED, n, acc, rej))
    assert.is_true(n >= 100)
    assert.is_true(rej > 0)
    assert.is_nil(known)
  end)

  it("validate.deploy: every mutated request is accepted or a named error", function()
    local existing = {web = true, side = true, setup = true}
    local n, acc, rej, known = run("deploy", deploy_request, function(r)
      return validate.deploy(r, existing)
    end, true)
    print(string.format("  deploy fuzz: seed %d, %d requests, %d accepted, %d rejected",
      SEED, n, acc, rej))
    assert.is_true(n >= 100)
    assert.is_nil(known)
  end)

  it("non-table requests are named errors too", function()
    for _, v in ipairs({1, "x", true, json.null}) do
      local res, msg, code, errs = validate.provision(v)
      assert.is_nil(res)
      assert.are.equal("invalid", code)
      assert.are.equal("request", errs[1].field, msg)
    end
  end)
end)
