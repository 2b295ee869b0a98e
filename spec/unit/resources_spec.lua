-- Project-wide aggregation of container samples (no daemon): sums, the
-- per-service breakdown, gaps and the memory-limit rule.
local resources = require("ctrlplane.docker.resources")
local json = require("ctrlplane.docker.json")

local MB = 1024 * 1024
local HOST = 8192 * MB

local function member(id, service, state)
  return {Id = id, State = state or "running", Labels = {["ctrlplane.service"] = service}}
end

local function sample(t)
  local s = {running = true, cpu_percent = 0, cpu_source = "daemon", memory_used = 0,
    memory_limit = HOST, network_rx = 0, network_tx = 0, block_read = 0, block_write = 0, pids = 1}
  for k, v in pairs(t) do s[k] = v end
  return s
end

-- {description, members, samples, host memory, expected top-level, expected per service}
local ROWS = {
  {"three services add up",
    {member("a", "web"), member("b", "db"), member("c", "logger")},
    {a = sample({cpu_percent = 80, memory_used = 10 * MB, network_rx = 2 * MB, network_tx = MB}),
     b = sample({cpu_percent = 15.5, memory_used = 64 * MB, block_write = 3 * MB, pids = 4}),
     c = sample({cpu_percent = 0.25, memory_used = MB / 2})},
    HOST,
    {cpu_percent = 95.75, memory_used_mb = 75, memory_limit_mb = 8192, network_in_mb = 2,
     network_out_mb = 1, block_write_mb = 3, pids = 6, containers = 3, running = 3},
    {web = {cpu_percent = 80, memory_used_mb = 10, containers = 1, running = 1},
     db = {memory_used_mb = 64, pids = 4},
     logger = {memory_used_mb = 1}}}, -- half a MB in use: 1, never a 0 that reads as a gap
  {"replicas of a service are summed within it",
    {member("a", "web"), member("b", "web")},
    {a = sample({cpu_percent = 10, memory_used = 5 * MB, memory_limit = 64 * MB}),
     b = sample({cpu_percent = 20, memory_used = 7 * MB, memory_limit = 64 * MB})},
    HOST,
    {cpu_percent = 30, memory_used_mb = 12, memory_limit_mb = 128, containers = 2},
    {web = {cpu_percent = 30, memory_limit_mb = 128, containers = 2, running = 2}}},
  {"stopped and vanished containers are gaps of zeros",
    {member("a", "web"), member("b", "job", "exited"), member("c", "gone")},
    {a = sample({cpu_percent = 5, memory_used = MB, memory_limit = 32 * MB})},
    HOST,
    {cpu_percent = 5, memory_used_mb = 1, memory_limit_mb = 32, containers = 3, running = 1},
    {job = {cpu_percent = 0, memory_used_mb = 0, memory_limit_mb = 0, containers = 1, running = 0},
     gone = {running = 0}}},
  {"a container without a limit gives the project the host's memory",
    {member("a", "web"), member("b", "db")},
    {a = sample({memory_limit = 64 * MB}), b = sample({memory_limit = HOST})},
    HOST,
    {memory_limit_mb = 8192},
    {web = {memory_limit_mb = 64}, db = {memory_limit_mb = 8192}}},
  {"limits never add up beyond the host",
    {member("a", "x"), member("b", "y")},
    {a = sample({memory_limit = 6000 * MB}), b = sample({memory_limit = 6000 * MB})},
    HOST,
    {memory_limit_mb = 8192}, {}},
  {"without the host's memory the limits are summed",
    {member("a", "x"), member("b", "y")},
    {a = sample({memory_limit = 100 * MB}), b = sample({memory_limit = 28 * MB})},
    nil,
    {memory_limit_mb = 128}, {}},
  {"CPU unknown (one-shot without a previous sample) is flagged",
    {member("a", "x")},
    {a = sample({cpu_source = "none"})},
    HOST,
    {cpu_known = false, cpu_percent = 0}, {x = {cpu_known = false}}},
  {"network rates are summed per service when the samples carry them",
    {member("a", "web"), member("b", "web")},
    {a = sample({rx_rate = MB, tx_rate = MB / 4}), b = sample({rx_rate = MB, tx_rate = 0})},
    HOST,
    {}, {web = {network_in_rate_mb = 2, network_out_rate_mb = 0.25}}},
  {"an empty project is all zeros",
    {}, {}, HOST,
    {cpu_percent = 0, memory_used_mb = 0, memory_limit_mb = 0, containers = 0, running = 0}, {}},
}

describe("resources.aggregate", function()
  for _, row in ipairs(ROWS) do
    local desc, members, samples, host, want, want_services = table.unpack(row)
    it(desc, function()
      local u = resources.aggregate(members, samples, host)
      for k, v in pairs(want) do assert.are.equal(v, u[k], k) end
      for name, fields in pairs(want_services) do
        assert.is_table(u.services[name], name)
        for k, v in pairs(fields) do assert.are.equal(v, u.services[name][k], name .. "." .. k) end
      end
      -- always the contract's figures, as numbers, and a timestamp
      for _, k in ipairs({"cpu_percent", "memory_used_mb", "memory_limit_mb", "network_in_mb",
        "network_out_mb"}) do
        assert.is_number(u[k], k)
      end
      assert.matches("Z$", u.sampled_at)
      assert.is_nil(u.network_in_rate_mb)
      -- services encodes as an object even when empty
      assert.matches('"services":{', json.encode(u))
    end)
  end
end)
