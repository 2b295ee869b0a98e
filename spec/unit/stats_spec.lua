-- The C stats parser and formulas over captured (cgroup v1) and documented
-- (cgroup v2) stats documents; no daemon needed.
local core = require("ctrlplane.docker.core")

local function fixture(name)
  local f = assert(io.open("spec/fixtures/stats/" .. name, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

local function near(expected, got, tol, what)
  assert(type(got) == "number", what .. ": expected a number, got " .. tostring(got))
  assert(math.abs(expected - got) <= (tol or 1e-6),
    string.format("%s: expected %.9g, got %.9g", what, expected, got))
end

-- {description, document, previous document or false, expected figures}
-- Expected numbers are worked out by hand from the raw counters in each file.
local ROWS = {
  {"cgroup v1, a busy container (daemon precpu): one CPU = 100 %", "v1-busy.json", false, {
    running = true, cpu_source = "daemon",
    -- (3854099358 - 2849048397) / (1469500000000 - 1467490000000) * 2 * 100
    cpu_percent = 1005050961 / 2010000000 * 2 * 100,
    memory_used = 2203648 - 0, memory_limit = 25276026880,
    network_rx = 736, network_tx = 0, pids = 1, block_read = 0, block_write = 0,
  }},
  {"cgroup v1 one-shot without a previous sample: CPU unknown, memory known",
    "v1-idle-oneshot.json", false, {
    running = true, cpu_source = "none", cpu_percent = 0,
    memory_used = 548864, memory_limit = 25276026880, network_rx = 516, pids = 1,
  }},
  {"cgroup v1 one-shot with the sampler's previous sample", "v1-busy-oneshot-2.json",
    "v1-busy-oneshot-1.json", {
    running = true, cpu_source = "previous",
    cpu_percent = (111651293581 - 110591436767) / (1686380000000 - 1684280000000) * 2 * 100,
    memory_used = 1814528, network_rx = 1016, rx_rate = 0, tx_rate = 0,
  }},
  {"cgroup v1 memory a process holds (64 MiB buffer)", "v1-mem64.json", false, {
    running = true, cpu_source = "daemon", cpu_percent = 0,
    memory_used = 68268032, pids = 3,
  }},
  {"cgroup v1 subtracts total_inactive_file; sums two networks", "v1-two-networks.json", false, {
    running = true, memory_used = 15712256 - 14680064, network_rx = 1698, network_tx = 0,
  }},
  {"a stopped container is a gap of zeros", "v1-stopped.json", false, {
    running = false, cpu_source = "none", cpu_percent = 0, memory_used = 0, memory_limit = 0,
    network_rx = 0, network_tx = 0, pids = 0,
  }},
  {"cgroup v2 (documented schema): online_cpus, inactive_file, lower-case block ops",
    "v2-running.json", false, {
    running = true, cpu_source = "daemon", cpu_interval = 1.0,
    cpu_percent = (2500000000 - 2000000000) / (104000000000 - 100000000000) * 4 * 100,
    memory_used = 209715200 - 52428800, memory_limit = 536870912,
    memory_percent = (209715200 - 52428800) / 536870912 * 100,
    network_rx = 1048576 + 2097152, network_tx = 524288,
    block_read = 4194304 + 1048576, block_write = 1048576, pids = 7,
  }},
  {"cgroup v2 one-shot pair: CPU and rates from the previous sample; inactive_file larger "
    .. "than usage is not subtracted", "v2-oneshot-2.json", "v2-oneshot-1.json", {
    running = true, cpu_source = "previous", cpu_interval = 2.0,
    cpu_percent = (4000000000 - 2000000000) / (108000000000 - 100000000000) * 4 * 100,
    memory_used = 4096000, memory_limit = 8589934592,
    rx_rate = (5000 - 1000) / 2, tx_rate = 0,
  }},
  {"a previous sample that is not older is ignored", "v2-oneshot-1.json", "v2-oneshot-2.json", {
    running = true, cpu_source = "none", cpu_percent = 0,
  }},
}

describe("stats formulas", function()
  for _, row in ipairs(ROWS) do
    local desc, doc, prev, want = row[1], row[2], row[3], row[4]
    it(desc, function()
      local u = assert(core.stats_compute(fixture(doc), prev and fixture(prev) or nil))
      for k, v in pairs(want) do
        if type(v) == "number" then
          near(v, u[k], math.abs(v) * 1e-9 + 1e-9, k)
        else
          assert.are.equal(v, u[k], k)
        end
      end
      if not prev then assert.is_nil(u.rx_rate) end
    end)
  end

  it("reads a stream's documents: the first has no precpu, the next ones do", function()
    local lines = {}
    for l in fixture("v1-busy-stream.ndjson"):gmatch("[^\n]+") do lines[#lines + 1] = l end
    assert.are.equal(3, #lines)
    local first = assert(core.stats_compute(lines[1]))
    assert.are.equal("none", first.cpu_source)
    -- with the sampler's own previous sample the first pair still yields CPU
    for i = 2, 3 do
      local u = assert(core.stats_compute(lines[i], lines[i - 1]))
      assert.are.equal("daemon", u.cpu_source)
      assert.is_true(u.cpu_percent > 95 and u.cpu_percent < 105, tostring(u.cpu_percent))
      near(1.0, u.cpu_interval, 0.05, "cpu_interval")
    end
  end)
end)

describe("stats parser", function()
  it("keeps the raw counters, name and id", function()
    local s = assert(core.stats_parse(fixture("v1-busy.json")))
    assert.are.equal("/cpfix-busy", s.name)
    assert.are.equal(64, #s.id)
    assert.are.equal(3854099358, s.cpu.total)
    assert.are.equal(2, s.cpu.online)
    assert.are.equal(2, s.cpu.percpu)
    assert.are.equal(1467490000000, s.precpu.system)
    assert.are.equal(0, s.total_inactive_file) -- cgroup v1 has both keys
    assert.are.equal(0, s.inactive_file)
    assert.are.equal(1, s.networks)
    near(1795901376.971575838, s.read, 1e-5, "read")
    local v2 = assert(core.stats_parse(fixture("v2-running.json")))
    assert.are.equal(0, v2.cpu.percpu)
    assert.are.equal(52428800, v2.inactive_file)
    assert.is_nil(v2.total_inactive_file)
    assert.are.equal(512, v2.pids_limit)
    assert.are.equal(2, v2.networks)
  end)

  local function doc(t) return t end
  -- {description, document, expected field checks or an error pattern}
  local CASES = {
    {"online_cpus absent: the percpu_usage length counts",
      doc [[{"read":"2024-01-01T00:00:01Z","memory_stats":{"usage":10},
        "cpu_stats":{"cpu_usage":{"total_usage":300,"percpu_usage":[1,2,3]},"system_cpu_usage":1000},
        "precpu_stats":{"cpu_usage":{"total_usage":100},"system_cpu_usage":600}}]],
      {cpu_percent = 200 / 400 * 3 * 100}},
    {"counters that went backwards give no CPU figure",
      doc [[{"read":"2024-01-01T00:00:01Z","memory_stats":{"usage":10},
        "cpu_stats":{"cpu_usage":{"total_usage":100},"system_cpu_usage":1000,"online_cpus":1},
        "precpu_stats":{"cpu_usage":{"total_usage":500},"system_cpu_usage":600}}]],
      {cpu_percent = 0, cpu_source = "none"}},
    {"escaped keys and strings, exponents, negatives, unknown nesting",
      doc [==[ {"x\"y":{"a":[[[{"b":null}]]],"c":true,"d":false},"name":"/a\"b",
        "read":"2024-01-01T01:00:00.5+01:00","memory_stats":{"usage":1.5e3,"limit":-4},
        "pids_stats":{"current":2}} ]==],
      {memory_used = 1500, memory_limit = 0, pids = 2, read = 1704067200.5, running = true}},
    {"huge counters saturate instead of wrapping",
      doc [[{"read":"2024-01-01T00:00:01Z","memory_stats":{"usage":99999999999999999999999}}]],
      {running = true}},
    {"truncated document", doc [[{"read":"2024-01-01T00:00:01Z","memory_stats":{"usage":1]],
      "unexpected end"},
    {"not an object", doc "[1,2]", "must be a JSON object"},
    {"trailing garbage", doc "{} x", "trailing bytes"},
    {"unterminated string", doc '{"read":"2024', "unterminated string"},
    {"bad literal", doc '{"a":nul}', "invalid literal"},
    {"missing colon", doc '{"a" 1}', "expected ':'"},
    {"raw control character in a string", doc '{"a":"x\1"}', "control character"},
    {"nesting too deep", doc(string.rep('{"a":', 40) .. "1" .. string.rep("}", 40)),
      "nested too deeply"},
    {"empty input", doc "", "must be a JSON object"},
  }
  for _, case in ipairs(CASES) do
    it(case[1], function()
      local u, err, code = core.stats_compute(case[2])
      if type(case[3]) == "string" then
        assert.is_nil(u)
        assert.are.equal("protocol", code)
        assert.matches(case[3], err, 1, true)
      else
        assert(u, err)
        for k, v in pairs(case[3]) do
          if type(v) == "number" then near(v, u[k], 1e-6, k) else assert.are.equal(v, u[k], k) end
        end
      end
    end)
  end

  it("raises on a non-string document", function()
    assert.has_error(function() core.stats_parse({}) end)
    assert.has_error(function() core.stats_compute("{}", 42) end)
  end)

  it("survives every prefix of a real document (no crash, no false success)", function()
    local d = fixture("v2-running.json"):gsub("%s+$", "")
    for i = 0, #d - 1 do
      local u = core.stats_parse(d:sub(1, i))
      assert.is_nil(u)
    end
    assert.is_table(core.stats_parse(d))
  end)
end)
