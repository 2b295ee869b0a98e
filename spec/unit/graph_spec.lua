local graph = require("ctrlplane.docker.graph")

local function svc(name, deps, role)
  return {name = name, depends_on = deps or {}, role = role or "main"}
end

describe("graph", function()
  it("finds no cycle in a DAG", function()
    assert.is_nil(graph.find_cycle({svc("a"), svc("b", {"a"}), svc("c", {"a", "b"})}))
  end)

  it("names the services of a cycle", function()
    local cycle = graph.find_cycle({svc("a", {"c"}), svc("b", {"a"}), svc("c", {"b"}), svc("d")})
    assert.are.same({"a", "c", "b", "a"}, cycle)
  end)

  it("orders dependencies first, whatever the list order", function()
    local order = graph.order({svc("web", {"db"}), svc("db", {"cache"}), svc("cache")})
    local names = {}
    for i, s in ipairs(order) do names[i] = s.name end
    assert.are.same({"cache", "db", "web"}, names)
  end)

  it("breaks ties by rank, then position", function()
    local rank = {main = 1, sidecar = 2}
    local order = graph.order({svc("s1", {}, "sidecar"), svc("m", {}, "main"), svc("s2", {}, "sidecar")},
      function(s) return rank[s.role] end)
    assert.are.same({"m", "s1", "s2"}, {order[1].name, order[2].name, order[3].name})
  end)

  it("computes dependency levels", function()
    local l = graph.levels({svc("a"), svc("b", {"a"}), svc("c", {"b", "a"}), svc("d")})
    assert.are.same({a = 1, b = 2, c = 3, d = 1}, l)
  end)
end)
