-- The swarm lab itself (spec/support/swarm_lab.sh): N real dockerd nodes in
-- their own namespaces, one swarm; a node that stops is marked Down and comes
-- back Ready; down leaves nothing, and the host's dockerd, docker0 and
-- iptables are not touched.
local helper = require("support.helper")
local swarm = require("support.swarm")

local function host_iptables()
  local out, rc = helper.sh("iptables-save 2>&1")
  assert(rc == 0, out)
  return out
end

describe("swarm lab #swarm", function()
  local l, docker0_before

  setup(function()
    docker0_before = helper.sh("ip -o link show docker0 | awk '{print $1, $2, $(NF-2)}'")
    l = swarm.up(3)
  end)

  teardown(function()
    swarm.down()
  end)

  it("runs 3 Ready nodes, each its own engine with its own hostname", function()
    local states = swarm.node_states(l)
    assert.same({["swarm-node1"] = "ready", ["swarm-node2"] = "ready", ["swarm-node3"] = "ready"}, states)
    local ids, names = {}, {}
    for i = 1, 3 do
      local info = swarm.get(l.socks[i], "/info")
      assert.equal("active", info.Swarm.LocalNodeState)
      assert.is_nil(ids[info.ID], "two nodes share engine id " .. info.ID)
      ids[info.ID] = true
      names[#names + 1] = info.Name
      -- the test images were copied in
      local img = swarm.get(l.socks[i], "/images/" .. helper.IMAGE2 .. "/json")
      assert.truthy(img.Id)
    end
    assert.same({"swarm-node1", "swarm-node2", "swarm-node3"}, names)
    -- the host's daemon is not part of the swarm
    local host = swarm.get(helper.SOCKET, "/info")
    assert.equal("inactive", host.Swarm.LocalNodeState)
  end)

  it("the host reaches the nodes over the lab link, and nothing of the lab is in the host's iptables", function()
    for i = 1, 3 do
      local ip = (swarm.lab("ip " .. i)):gsub("%s+$", "")
      -- the gossip port of the node (7946, every node) accepts a connection
      local out, rc = helper.sh("timeout 3 bash -c '</dev/tcp/" .. ip .. "/7946' 2>&1")
      assert.equal(0, rc, "connect " .. ip .. ":7946: " .. out)
    end
    local ipt = host_iptables()
    assert.is_nil(ipt:find("10.231.0.", 1, true), "a lab address in the host's iptables")
    assert.is_nil(ipt:find("10.232.", 1, true), "a lab overlay subnet in the host's iptables")
    assert.is_nil(ipt:find("docker_gwbridge", 1, true))
  end)

  it("a stopped node is marked down, and ready again when started", function()
    local out, rc = swarm.lab("stop-node 3")
    assert.equal(0, rc, out)
    local down, t = swarm.wait_for(60, function()
      return swarm.node_states(l)["swarm-node3"] == "down"
    end)
    assert.is_true(down, "node 3 not down after " .. t .. " s")
    print(string.format("\nswarm lab: node marked down after %.1f s", t))
    out, rc = swarm.lab("start-node 3")
    assert.equal(0, rc, out)
    local ready
    ready, t = swarm.wait_for(60, function()
      return swarm.node_states(l)["swarm-node3"] == "ready"
    end)
    assert.is_true(ready, "node 3 not ready after " .. t .. " s")
    assert.equal("ready", swarm.node_states(l)["swarm-node2"])
  end)

  it("down removes every namespace, process, cgroup and file of the lab; up again works", function()
    swarm.down()
    local ns = helper.sh("ip netns list")
    assert.is_nil(ns:find("cpsw", 1, true), ns)
    local f = io.open("/tmp/cp-swarm-lab/nodes")
    assert.is_nil(f)
    local cg = helper.sh("ls -d /sys/fs/cgroup/*/cpsw-* 2>/dev/null")
    assert.equal("", cg)
    local procs = helper.sh("ps -eo args | grep '[c]p-swarm-lab' || true")
    assert.equal("", procs)
    assert.is_nil(host_iptables():find("10.231.0.", 1, true))
    assert.equal(docker0_before, (helper.sh("ip -o link show docker0 | awk '{print $1, $2, $(NF-2)}'")))
    -- down is idempotent, and the lab comes back (teardown downs it again)
    swarm.down()
    l = swarm.up(2)
    assert.same({["swarm-node1"] = "ready", ["swarm-node2"] = "ready"}, swarm.node_states(l))
  end)
end)
