-- The README says what the program does (issue #17.7): the synopsis is
-- `cpdocker --help`'s, every JSON-RPC method and notification has an
-- example that a real server answers with the documented fields, the worked
-- policy examples run as printed, and every setting is documented.
local json = require("ctrlplane.docker.json")
local helper = require("support.helper")
local rpc = require("ctrlplane.docker.rpc")
local rpc_session = require("support.rpc_session")

local function readme()
  local f = assert(io.open("README.md"))
  local text = f:read("a")
  f:close()
  return text
end

-- The body of the first fenced block after `heading` (a plain string).
local function block_after(text, heading, fence)
  local at = assert(text:find(heading, 1, true), "README has no " .. heading)
  local body = text:match("```" .. (fence or "%w*") .. "\n(.-)\n```", at)
  return assert(body, "no code block after " .. heading)
end

-- Every key of documented (an object) is in actual, recursively for
-- objects; lists and scalars only need the same JSON type.
local function same_shape(documented, actual, path)
  if documented == json.null or documented == nil then
    assert.are.equal(json.null, actual, path)
    return
  end
  assert.are.equal(type(documented), type(actual), path)
  if type(documented) == "table" and #documented == 0 and next(documented) then
    for k, v in pairs(documented) do
      assert.is_not_nil(actual[k], path .. "." .. k .. " is documented but not answered")
      same_shape(v, actual[k], path .. "." .. k)
    end
  end
end

local DEMO_ID = "inst_demo01h455vb4pex5vsknk084sn02q"

describe("README", function()
  local text
  setup(function()
    helper.daemon()
    text = readme()
  end)

  it("has the synopsis `cpdocker --help` prints", function()
    local help = helper.sh("./cpdocker --help")
    local commands = assert(help:match("\ncommands:\n(.-)\nexit status"))
    local synopsis = block_after(text, "\n## cpdocker\n")
    local n = 0
    for line in commands:gmatch("[^\n]+") do
      assert.is_truthy(synopsis:find(line, 1, true), "README synopsis lacks: " .. line)
      n = n + 1
    end
    assert.is_true(n >= 18)
    -- and every global option
    for opt in help:match("global options.-\n\ncommands"):gmatch("\n  (%-%-[%w-]+)") do
      assert.is_truthy(synopsis:find(opt, 1, true), "README synopsis lacks " .. opt)
    end
  end)

  it("documents every setting the configuration reads", function()
    local f = assert(io.open("lua/ctrlplane/docker/config.lua"))
    local src = f:read("a")
    f:close()
    local n = 0
    local seen = {}
    for var in src:gmatch('"((%u+)_[%u_]+)"') do
      if (var:match("^CP_") or var:match("^DOCKER_")) and not seen[var] then
        seen[var] = true
        assert.is_truthy(text:find("`" .. var .. "`", 1, true) or text:find("`" .. var .. "=", 1, true),
          var .. " is not in the README")
        n = n + 1
      end
    end
    assert.is_true(n >= 20)
  end)

  it("shows a request and an answer for every JSON-RPC method and notification; a real "
    .. "server answers them with the documented fields", function()
    local section = block_after(text, "## JSON-RPC provider server")
    local sent, answered, notes = {}, {}, {}
    for line in section:gmatch("%-%-> ([^\n]+)") do sent[#sent + 1] = line end
    for line in section:gmatch("<%-%- ([^\n]+)") do
      local m = assert(json.decode(line), "not JSON: " .. line)
      if m.id ~= nil then answered[m.id] = m else notes[m.method] = m end
    end
    local methods = {}
    for _, line in ipairs(sent) do
      local m = assert(json.decode(line), "not JSON: " .. line)
      assert.are.equal("2.0", m.jsonrpc)
      methods[m.method] = true
      assert.is_table(answered[m.id], "no answer documented for " .. line)
    end
    for name in pairs(rpc.methods) do
      assert.is_true(methods[name], "README has no example of method " .. name)
    end
    assert.is_true(methods.logs and methods["logs.cancel"])
    assert.is_table(notes["logs.event"])
    assert.is_table(notes["logs.end"])

    -- replay the session against a real server, with a fresh instance id
    local id = helper.instance_id("readme")
    local s = rpc_session.start()
    local ok, err = pcall(function()
      for _, line in ipairs(sent) do
        local req = json.decode(line)
        s:raw((line:gsub("inst_1", id)))
        local got = s:reply(req.id, 120)
        local want = answered[req.id]
        if want.error then
          assert.is_table(got.error, line)
          assert.are.equal(want.error.code, got.error.code, line)
          assert.are.equal(want.error.data.code, got.error.data.code, line)
        else
          assert.is_nil(got.error, line .. " -> " .. json.encode(got.error or {}))
          same_shape(want.result, got.result, req.method)
        end
        if req.method == "logs" and req.params.opts.follow then
          local ev = s:expect(function(m) return m.method == "logs.event" end, 30)
          same_shape(notes["logs.event"].params, ev.params, "logs.event")
        elseif req.method == "logs.cancel" then
          local e = s:expect(function(m) return m.method == "logs.end" end, 30)
          same_shape(notes["logs.end"].params, e.params, "logs.end")
        end
      end
    end)
    s:close()
    helper.cpdocker("deprovision " .. id)
    assert(ok, err)
  end)

  it("runs the worked policy examples as printed", function()
    local f = assert(io.open("examples/policies/degraded-sidecar/status.lua"))
    local status_src = f:read("a")
    f:close()
    f = assert(io.open("examples/policies/canary/rollout.lua"))
    local canary_src = f:read("a")
    f:close()
    local lua1 = block_after(text, "### Worked example: a failed sidecar", "lua")
    local lua2 = block_after(text, "### Worked example: deploy one service", "lua")
    assert.is_truthy(status_src:find(lua1, 1, true), "README's status.lua is not the example's")
    assert.is_truthy(canary_src:find(lua2, 1, true), "README's rollout.lua is not the example's")

    -- the sessions, with a fresh instance id in place of the demo's
    local id = helper.instance_id("rdpol")
    local dir = helper.sh("mktemp -d"):gsub("%s+$", "")
    for _, name in ipairs({"project.json", "deploy.json"}) do
      helper.sh(string.format("sed 's/%s/%s/' examples/%s > %s/%s", DEMO_ID, id, name, dir, name))
    end
    local function run_session(heading)
      local session = block_after(text, heading, "sh")
      local last, expected = nil, {}
      for line in session:gmatch("[^\n]+") do
        if line:match("^# ") then
          expected[#expected + 1] = line:sub(3)
        else
          local cmd = line:gsub(DEMO_ID, id):gsub("examples/(%w+%.json)", dir .. "/%1")
            :gsub("^cpdocker ", "./cpdocker ")
          local out, rc = helper.sh(cmd .. " 2>/dev/null")
          assert.are.equal(0, rc, cmd .. "\n" .. out)
          last = out
        end
      end
      assert.is_true(#expected > 0)
      for _, want in ipairs(expected) do
        assert.is_truthy(last:find(want:gsub(DEMO_ID, id), 1, true),
          "expected `" .. want .. "` in:\n" .. last)
      end
    end
    local ok, err = pcall(function()
      run_session("### Worked example: a failed sidecar")
      helper.cpdocker("deprovision " .. id)
      run_session("### Worked example: deploy one service")
    end)
    helper.cpdocker("deprovision " .. id)
    helper.sh("rm -rf " .. dir)
    assert(ok, err)
  end)
end)
