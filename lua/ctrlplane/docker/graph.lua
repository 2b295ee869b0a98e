-- Dependency graph of a project's services (each {name, depends_on = {...}}).
--
--   graph.find_cycle(services) -> nil | {"a", "b", "a"}  (names along the cycle)
--   graph.order(services, rank) -> list of services: dependencies first, ties
--                                  broken by rank(service) then list position
--   graph.levels(services)      -> {[name] = n}: 1 for no dependencies, else
--                                  1 + the highest level of its dependencies
local graph = {}

local function index(services)
  local by_name = {}
  for i, s in ipairs(services) do by_name[s.name] = {svc = s, pos = i} end
  return by_name
end

function graph.find_cycle(services)
  local by_name = index(services)
  local color, stack = {}, {}
  local found
  local function visit(name)
    color[name] = "grey"
    stack[#stack + 1] = name
    for _, d in ipairs(by_name[name].svc.depends_on or {}) do
      if by_name[d] then
        if color[d] == "grey" then
          -- the cycle is the part of the stack from d onwards
          local cycle = {}
          for i = #stack, 1, -1 do
            table.insert(cycle, 1, stack[i])
            if stack[i] == d then break end
          end
          cycle[#cycle + 1] = d
          found = cycle
          return true
        elseif not color[d] and visit(d) then
          return true
        end
      end
    end
    stack[#stack] = nil
    color[name] = "black"
    return false
  end
  for _, s in ipairs(services) do
    if not color[s.name] and visit(s.name) then return found end
  end
  return nil
end

-- Kahn's algorithm; among the services whose dependencies are all placed,
-- the lowest (rank, position) goes next. Assumes no cycle.
function graph.order(services, rank)
  rank = rank or function() return 0 end
  local by_name = index(services)
  local placed, out = {}, {}
  while #out < #services do
    local best, best_key
    for i, s in ipairs(services) do
      if not placed[s.name] then
        local ready = true
        for _, d in ipairs(s.depends_on or {}) do
          if by_name[d] and not placed[d] then ready = false break end
        end
        if ready then
          local key = rank(s) * 100000 + i
          if not best_key or key < best_key then best, best_key = s, key end
        end
      end
    end
    if not best then error("graph.order: dependency cycle", 2) end
    placed[best.name] = true
    out[#out + 1] = best
  end
  return out
end

function graph.levels(services)
  local by_name = index(services)
  local level = {}
  local function get(name, depth)
    if level[name] then return level[name] end
    if depth > #services then error("graph.levels: dependency cycle", 3) end
    local l = 1
    for _, d in ipairs(by_name[name].svc.depends_on or {}) do
      if by_name[d] then l = math.max(l, get(d, depth + 1) + 1) end
    end
    level[name] = l
    return l
  end
  for _, s in ipairs(services) do get(s.name, 0) end
  return level
end

return graph
