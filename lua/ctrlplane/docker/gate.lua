-- The policy gate: loading the scripts an operation needs and checking
-- what they return before the runtime acts on it.
local policy = require("ctrlplane.docker.policy")

local function policies(p, names)
  local want = {}
  for _, n in ipairs(names) do
    want[n] = ({rollout = {"plan"}, status = {"service", "aggregate"},
      reprovision = {"decide"}})[n]
  end
  return policy.load_all(p.cfg, want)
end

-- ---- waves from the rollout policy ------------------------------------------

local function plan_waves(rollout, services)
  local shape = {}
  for i, s in ipairs(services) do
    shape[i] = {name = s.name, role = s.role, depends_on = s.depends_on or {}}
  end
  local waves, err, code = policy.call(rollout, "plan", shape)
  if not waves then return nil, err, code end
  -- the plan must place every service once, after its dependencies
  local placed, by_name = {}, {}
  for _, s in ipairs(services) do by_name[s.name] = s end
  if type(waves) ~= "table" then
    return nil, "policy " .. rollout.path .. ": plan must return a list of waves", "policy"
  end
  for wi, wave in ipairs(waves) do
    for _, name in ipairs(wave) do
      local s = by_name[name]
      if not s then
        return nil, string.format("policy %s: plan wave %d names unknown service %q",
          rollout.path, wi, tostring(name)), "policy"
      end
      if placed[name] then
        return nil, string.format("policy %s: plan places %q twice", rollout.path, name), "policy"
      end
      for _, d in ipairs(s.depends_on or {}) do
        if by_name[d] and not placed[d] then
          return nil, string.format("policy %s: plan starts %q before its dependency %q",
            rollout.path, name, d), "policy"
        end
      end
    end
    for _, name in ipairs(wave) do placed[name] = wi end
  end
  for _, s in ipairs(services) do
    if not placed[s.name] then
      return nil, string.format("policy %s: plan leaves out service %q", rollout.path, s.name),
        "policy"
    end
  end
  return waves
end

return {
  policies = policies,
  plan_waves = plan_waves,
}
