-- The multi-node swarm lab for the swarm specs (spec/support/swarm_lab.sh):
-- each swarm spec file brings up its own lab in setup() and tears it down in
-- teardown(). One lab runs on a machine at a time (its namespaces and
-- addresses have fixed names unless CP_SWARM_* says otherwise).
local helper = require("support.helper")
local json = require("ctrlplane.docker.json")

local swarm = {}

swarm.SCRIPT = "spec/support/swarm_lab.sh"

local function lab(args)
  return helper.sh("bash " .. swarm.SCRIPT .. " " .. args .. " 2>&1")
end
swarm.lab = lab

-- Brings up an n-node lab (fails loudly when it cannot); returns
-- {n, manager = URL, socks = {URL...}, nodes = "name=URL,..."}.
function swarm.up(n)
  n = n or 3
  helper.daemon()
  local out, rc = lab("up " .. n)
  assert(rc == 0, "swarm lab did not come up: " .. out)
  local l = {n = n, socks = {}}
  for i = 1, n do
    local s = assert(lab("sock " .. i)):gsub("%s+$", "")
    l.socks[i] = s
  end
  l.manager = l.socks[1]
  l.nodes = (lab("nodes")):gsub("%s+$", "")
  return l
end

function swarm.down()
  local out, rc = lab("down")
  assert(rc == 0, "swarm lab down failed: " .. out)
end

-- GET path on a node's API; the decoded body
function swarm.get(url, path, query)
  local c = helper.client({host = url})
  local res, err = c:request("GET", path, {query = query})
  c:close()
  assert(res, "GET " .. path .. " on " .. url .. ": " .. tostring(err))
  return json.decode(res.body)
end

-- {hostname = status} from the manager's /nodes
function swarm.node_states(l)
  local out = {}
  for _, n in ipairs(swarm.get(l.manager, "/nodes")) do
    out[n.Description.Hostname] = n.Status.State
  end
  return out
end

-- Polls fn() every 0.5 s until it returns a truthy value or `limit` seconds pass.
function swarm.wait_for(limit, fn)
  local t0 = helper.clock()
  local v
  repeat
    v = fn()
    if v then return v, helper.clock() - t0 end
    helper.sleep(0.5)
  until helper.clock() - t0 > limit
  return nil, helper.clock() - t0
end

return swarm
