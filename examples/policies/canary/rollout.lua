-- Rollout policy (worked example): deploy one service at a time; after the
-- first one, pause, check that the instance is running and ready, and only
-- then continue. A failed check stops the deploy and every service it
-- replaced is put back. The pause is CANARY_PAUSE seconds below.
-- Use with: cpdocker --policy examples/policies/canary deploy FILE
--
-- plan(services) -> waves         (here: the bundled order, one wave per service)
-- strategy(service, request) -> "recreate"
-- after_service(step) -> true | false, reason

local CANARY_PAUSE = 1

local ROLE_RANK = {init = 0, main = 1, sidecar = 2}

local function plan(services)
  local waves = {}
  local inits, others = {}, {}
  for _, s in ipairs(services) do
    if s.role == "init" then inits[#inits + 1] = s else others[#others + 1] = s end
  end
  for _, s in ipairs(graph.order(inits)) do waves[#waves + 1] = {s.name} end
  for _, s in ipairs(graph.order(others, function(x) return ROLE_RANK[x.role] end)) do
    waves[#waves + 1] = {s.name}
  end
  return waves
end

local function after_service(step)
  if step.index ~= 1 or step.total == 1 then return true end
  step.sleep(CANARY_PAUSE)
  local st = step.status()
  if not st or st.state ~= "running" or not st.ready then
    return false, string.format("canary check failed after %s: instance %s%s", step.service,
      st and st.state or "unknown", st and st.message ~= "" and (" (" .. st.message .. ")") or "")
  end
  return true
end

return {
  plan = plan,
  strategy = function(_, request) return request.strategy or "recreate" end,
  after_service = after_service,
}
