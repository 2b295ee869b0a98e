-- The logs operation's option handling and container choice (no daemon).
local logs = require("ctrlplane.docker.logs")

describe("logs options", function()
  local NOW = 1700000000

  local since_rows = {
    {"absent", nil, nil},
    {"Unix seconds", 1699999000, "1699999000.000000000"},
    {"Unix seconds as text", "1699999000.5", "1699999000.500000000"},
    {"RFC 3339 UTC", "2023-11-14T22:13:20Z", "1700000000.000000000"},
    {"RFC 3339 with fraction", "2023-11-14T22:13:20.25Z", "1700000000.250000000"},
    {"RFC 3339 with offset", "2023-11-15T00:13:20+02:00", "1700000000.000000000"},
    {"a leap day", "2024-02-29T00:00:00Z", "1709164800.000000000"},
    {"duration ago", "10m", "1699999400.000000000"},
    {"compound duration", "1h30m", "1699994600.000000000"},
    {"milliseconds", "250ms", "1699999999.750000000"},
  }
  for _, r in ipairs(since_rows) do
    it("since: " .. r[1], function()
      assert.are.equal(r[3], (logs.since_param(r[2], NOW)))
    end)
  end

  it("since: rejects what it cannot read, naming the field", function()
    for _, bad in ipairs({"yesterday", "2023-13-01T00:00:00Z", "10 minutes", "5x", {}, -1}) do
      local v, err = logs.since_param(bad, NOW)
      assert.is_nil(v)
      assert.matches("^since:", err)
    end
  end)

  it("tail: 0, absent and 'all' mean every line; negative is an error", function()
    assert.are.equal("all", logs.tail_param(nil))
    assert.are.equal("all", logs.tail_param(0))
    assert.are.equal("all", logs.tail_param("all"))
    assert.are.equal(5, logs.tail_param("5"))
    assert.are.equal(5, logs.tail_param(5))
    assert.is_nil(logs.tail_param(-1))
    assert.is_nil(logs.tail_param(1.5))
    assert.matches("^tail:", select(2, logs.tail_param("x")))
  end)

  it("builds the Engine query: timestamps always on", function()
    assert.are.same({stdout = true, stderr = true, timestamps = true, follow = true, tail = 10,
      since = "1700000000.000000000"}, logs.query({follow = true, tail = 10, since = 1700000000}))
    assert.is_nil(logs.query({follow = "yes"}))
  end)

  describe("choosing containers", function()
    local function c(service, role, name)
      return {Id = name .. "-id", Names = {"/" .. name},
        Labels = {["ctrlplane.service"] = service, ["ctrlplane.role"] = role}}
    end
    local members = {c("web", "main", "cp-i-web-2"), c("db", "sidecar", "cp-i-db"),
      c("web", "main", "cp-i-web"), c("init", "init", "cp-i-init")}
    local function names(list)
      local t = {}
      for i, m in ipairs(list) do t[i] = m.Names[1] end
      return t
    end

    it("takes the main service (every replica) by default", function()
      assert.are.same({"/cp-i-web", "/cp-i-web-2"}, names(logs.select(members, "i", {})))
    end)
    it("takes one service by name", function()
      assert.are.same({"/cp-i-db"}, names(logs.select(members, "i", {service_name = "db"})))
    end)
    it("takes all services with all = true, ordered by service", function()
      assert.are.same({"/cp-i-db", "/cp-i-init", "/cp-i-web", "/cp-i-web-2"},
        names(logs.select(members, "i", {all = true})))
    end)
    it("names the services when the one asked for is missing", function()
      local none, err, code = logs.select(members, "i", {service_name = "cache"})
      assert.is_nil(none)
      assert.are.equal("not_found", code)
      assert.matches('no service "cache" %(services: db, init, web%)', err)
    end)
    it("reports an instance without containers as not found", function()
      local _, err, code = logs.select({}, "i", {})
      assert.are.equal("not_found", code)
      assert.matches("instance i not found", err)
    end)
  end)
end)
