-- runtime/stats.c on its own (no Lua), built with ASan and UBSan: the
-- figures of the fixtures, then every prefix and 2000 mutations of each.
local function sh(cmd)
  local f = assert(io.popen(cmd .. " 2>&1; echo \"__rc=$?\"", "r"))
  local out = f:read("a")
  f:close()
  local body, rc = out:match("^(.*)__rc=(%d+)%s*$")
  return body, tonumber(rc)
end

describe("stats.c without Lua", function()
  local bin = "build/stats_check"
  setup(function()
    local out, rc = sh("mkdir -p build && ${CC:-cc} -std=c11 -D_POSIX_C_SOURCE=200809L -g -O1 "
      .. "-Wall -Wextra -Wconversion -Werror -fsanitize=address,undefined "
      .. "-fno-sanitize-recover=all runtime/stats.c spec/support/stats_check.c -o " .. bin)
    assert(rc == 0, "building the sanitized stats checker failed:\n" .. out)
  end)

  it("computes the figures of the fixtures", function()
    local out, rc = sh(bin .. " spec/fixtures/stats/v1-busy-oneshot-1.json "
      .. "spec/fixtures/stats/v1-busy-oneshot-2.json spec/fixtures/stats/v2-running.json")
    assert.are.equal(0, rc, out)
    assert.matches("oneshot%-1.json: running=1 cpu=0.0000 src=0 mem=1814528/25276026880", out)
    assert.matches("oneshot%-2.json: running=1 cpu=100.9387 src=2", out)
    assert.matches("v2%-running.json: running=1 cpu=50.0000 src=1 mem=157286400/536870912 "
      .. "rx=3145728 tx=524288 pids=7", out)
  end)

  it("survives prefixes and mutations of every fixture under the sanitizers", function()
    local out, rc = sh(bin .. " --fuzz 2000 spec/fixtures/stats/*.json")
    assert.are.equal(0, rc, out)
    assert.matches("^fuzz ok %d+", out)
  end)
end)
