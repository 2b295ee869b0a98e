-- The Go type checker the contract specs use (spec/support/contract_types.lua):
-- what Go's encoding/json would refuse, it must refuse too.
local types = require("support.contract_types")

local ENDPOINT = '{"service_name":"web","url":"http://localhost:1","port":1,"protocol":"tcp",'
  .. '"public":true}'

local rows = {
  -- {type, json, nil (decodes) or the error text expected}
  {"ResourceUsage", '{"cpu_percent":1.5,"memory_used_mb":3,"memory_limit_mb":0,'
    .. '"network_in_mb":0,"network_out_mb":0.25}', nil},
  {"ResourceUsage", '{"cpu_percent":1.5,"memory_used_mb":3.0,"memory_limit_mb":0,'
    .. '"network_in_mb":0,"network_out_mb":0}', "ResourceUsage.memory_used_mb: expected int, got number 3.0"},
  {"ResourceUsage", '{"cpu_percent":1,"memory_used_mb":1e3,"memory_limit_mb":0,'
    .. '"network_in_mb":0,"network_out_mb":0}', "memory_used_mb: expected int, got number 1e3"},
  {"ResourceUsage", '{"cpu_percent":"1","memory_used_mb":1,"memory_limit_mb":0,'
    .. '"network_in_mb":0,"network_out_mb":0}', "cpu_percent: expected number, got string"},
  {"ResourceUsage", '{"cpu_percent":1,"memory_limit_mb":0,"network_in_mb":0,"network_out_mb":0}',
    "ResourceUsage.memory_used_mb: missing"},
  {"ExecResult", '{"exit_code":0,"stdout":"aGkK","stderr":""}', nil},
  {"ExecResult", '{"exit_code":0,"stdout":"hi\\n","stderr":""}', "ExecResult.stdout: expected bytes"},
  {"ExecResult", '{"exit_code":0,"stdout":"aGk","stderr":""}', "ExecResult.stdout: expected bytes"},
  {"HealthStatus", '{"healthy":true,"message":"ok","latency":1200,"checked_at":"2026-11-29T08:00:00.5Z"}',
    nil},
  {"HealthStatus", '{"healthy":true,"message":"ok","latency":0.0012,"checked_at":"2026-11-29T08:00:00Z"}',
    "HealthStatus.latency: expected int"},
  {"HealthStatus", '{"healthy":"yes","message":"ok","latency":1,"checked_at":"2026-11-29 08:00:00"}',
    "HealthStatus.checked_at: expected time"},
  {"HealthStatus", '{"healthy":"yes","message":"ok","latency":1,"checked_at":"2026-11-29T08:00:00Z"}',
    "HealthStatus.healthy: expected bool"},
  {"InstanceStatus", '{"state":"running","ready":true,"restarts":0,"endpoints":[' .. ENDPOINT .. '],'
    .. '"services":{"web":{"state":"running","ready":true,"restarts":2}},"metadata":{"a":"b"}}', nil},
  {"InstanceStatus", '{"state":"healthy","ready":true,"restarts":0,"endpoints":[]}',
    'InstanceStatus.state: "healthy" is not one of'},
  {"InstanceStatus", '{"state":"running","ready":true,"restarts":0,"endpoints":[],'
    .. '"metadata":{"releases":["initial","r2"]}}', nil},
  {"InstanceStatus", '{"state":"running","ready":true,"restarts":0,"endpoints":[],'
    .. '"metadata":[1]}', "InstanceStatus.metadata: expected an object (map), got array"},
  {"ProvisionResult", '{"provider_ref":"docker:cp-x","endpoints":[],"metadata":{"n":1}}',
    "ProvisionResult.metadata.n: expected string, got number 1"},
  {"InstanceStatus", '{"state":"running","ready":true,"restarts":0,"endpoints":{}}',
    "InstanceStatus.endpoints: expected a list, got object"},
  {"InstanceStatus", '{"state":"running","ready":true,"restarts":0,"endpoints":[],'
    .. '"services":{"web":{"state":"running","ready":true,"restarts":1.5}}}',
    "InstanceStatus.services.web.restarts: expected int, got number 1.5"},
  {"InstanceStatus", '{"state":"running","ready":true,"restarts":0,"endpoints":[],"started_at":null}',
    nil},
  {"ProvisionResult", '{"provider_ref":"docker:cp-x","endpoints":[' .. ENDPOINT .. ']}', nil},
  {"ProvisionResult", '{"provider_ref":"cp-x","endpoints":[]}', "ProvisionResult.provider_ref"},
  {"ProvisionResult", '{"provider_ref":"docker:cp-x","endpoints":[{"url":"u","port":"80",'
    .. '"protocol":"tcp","public":false}]}', "ProvisionResult.endpoints[0].port: expected int"},
  {"DeployResult", '{"provider_ref":"docker:cp-x","status":"running"}', nil},
  {"Capabilities", '["provision","strategy:canary"]', nil},
  {"Capabilities", '["provision",3]', "Capabilities[1]: expected string"},
  {"Info", '{"name":"docker","version":"1","region":"local","location":{"country":"","city":""}}', nil},
  {"LogEvent", '{"ts":"2026-11-29T08:00:00.123456789Z","stream":"stdout","line":"x"}', nil},
  {"LogEvent", '{"ts":"2026-11-29T08:00:00Z","stream":"stdin","line":"x"}', "LogEvent.stream"},
  {"Info", '{"name":"docker",', "invalid JSON"},
  {"Info", '{"name":"a","name":"b"}', "duplicate key name"},
}

describe("support.contract_types", function()
  for i, row in ipairs(rows) do
    local what = row[3] and ("refuses " .. row[3]) or "accepts"
    it(string.format("%d %s: %s", i, row[1], what), function()
      local errs = types.check_json(row[2], row[1])
      if row[3] == nil then
        assert.are.same({}, errs)
      else
        local all = table.concat(errs, "\n")
        assert.truthy(all:find(row[3], 1, true), "expected «" .. row[3] .. "» in:\n" .. all)
      end
    end)
  end

  it("keeps number literals: 1.0 is not an int even though cjson reads it as 1", function()
    local v = types.parse('{"a":1.0,"b":[1,2.5e-3]}')
    assert.are.equal("1.0", v.a.lit)
    assert.are.equal("2.5e-3", v.b[2].lit)
  end)
end)
