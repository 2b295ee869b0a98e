-- Docker names of an instance's objects (project.lua) are injective: no two
-- different (instance, object) pairs map to the same container, network or
-- volume name (DESIGN §8, issue #12 item 1). Exhaustive over a small
-- alphabet that has every character class the validators accept, plus the
-- cases the issue names. No daemon.
local project = require("ctrlplane.docker.project")
local validate = require("ctrlplane.docker.validate")

-- every string of length 1..max over chars that `ok` accepts
local function strings(chars, max, ok)
  local out, frontier = {}, {""}
  for _ = 1, max do
    local nxt = {}
    for _, prefix in ipairs(frontier) do
      for i = 1, #chars do
        local s = prefix .. chars:sub(i, i)
        nxt[#nxt + 1] = s
        if ok(s) then out[#out + 1] = s end
      end
    end
    frontier = nxt
  end
  return out
end

local IDS = strings("a-_", 5, function(s) return project.validate_id(s) == true end)
local SERVICES = strings("a-", 5, function(s)
  return s:match(validate.SERVICE_NAME) ~= nil and s:sub(-1) ~= "-"
end)
local VOLUMES = strings("a-_.", 4, function(s) return s:match(validate.VOLUME_NAME) ~= nil end)

-- adds name -> owner; fails on the first name two different owners share
local function claim(seen, name, owner)
  local prev = seen[name]
  if prev and prev ~= owner then
    error(string.format("%q is both %s and %s", name, prev, owner), 2)
  end
  seen[name] = owner
end

describe("Docker names", function()
  it("keep Go's cp-<id>-<service> for ids without '-'", function()
    local id = "inst_01h455vb4pex5vsknk084sn02q"
    assert.are.equal("cp-" .. id .. "-web", project.container_name(id, "web"))
    assert.are.equal("cp-" .. id .. "-web_2", project.container_name(id, "web", 2))
    assert.are.equal("cp-" .. id .. "-net", project.network_name(id))
    assert.are.equal("cp-" .. id .. "-data", project.volume_name(id, "data"))
    assert.are.equal("cp-" .. id, project.name(id))
  end)

  it("separate the cases issue #12 names", function()
    assert.are_not.equal(project.volume_name("S-y", "data"), project.volume_name("S", "y-data"))
    assert.are_not.equal(project.container_name("S-y", "web"), project.container_name("S", "y-web"))
    assert.are_not.equal(project.network_name("S-y"), project.network_name("S"))
    assert.are_not.equal(project.container_name("S", "web", 2), project.container_name("S", "web-2"))
    assert.are_not.equal(project.volume_name("S", "data", 2), project.volume_name("S", "data-2"))
    assert.are_not.equal(project.volume_name("S", "data", 2), project.volume_name("S", "data_2"))
    assert.are_not.equal(project.volume_name("S", "data", 2), project.volume_name("S", "data.r2"))
    assert.are_not.equal(project.container_name("a-", "b"), project.container_name("a", "-b"))
    assert.are_not.equal(project.temp_name(project.container_name("S", "web"), "retired", "1"),
      project.container_name("S", "web-retired-1"))
  end)

  it("are injective over every id, service, replica and volume of a small alphabet", function()
    assert.is_true(#IDS > 100 and #SERVICES > 10 and #VOLUMES > 50,
      string.format("%d ids, %d services, %d volumes", #IDS, #SERVICES, #VOLUMES))
    local containers, networks, volumes = {}, {}, {}
    local n = 0
    for _, id in ipairs(IDS) do
      claim(networks, project.network_name(id), "network of " .. id)
      for _, svc in ipairs(SERVICES) do
        for r = 1, 3 do
          local owner = string.format("%s/%s#%d", id, svc, r)
          local cname = project.container_name(id, svc, r)
          claim(containers, cname, owner)
          claim(containers, project.temp_name(cname, "next", "17"), owner .. " next")
          claim(containers, project.temp_name(cname, "retired", "17"), owner .. " retired")
          n = n + 3
        end
      end
      for _, vol in ipairs(VOLUMES) do
        claim(volumes, project.volume_name(id, vol), id .. "/" .. vol)
        for r = 1, 3 do
          claim(volumes, project.volume_name(id, vol, r), string.format("%s/%s#%d", id, vol, r))
        end
        n = n + 4
      end
    end
    assert.is_true(n > 20000, "pairs checked: " .. n)
  end)

  it("are names Docker accepts", function()
    local docker_name = "^[a-zA-Z0-9][a-zA-Z0-9_.-]+$"
    for _, id in ipairs({"S-y", "a--", "inst_x", "A_-b"}) do
      assert.matches(docker_name, project.container_name(id, "web", 3))
      assert.matches(docker_name, project.network_name(id))
      assert.matches(docker_name, project.volume_name(id, "d.a_t-a"))
      assert.matches(docker_name, project.volume_name(id, "d.a_t-a", 12))
    end
  end)
end)
