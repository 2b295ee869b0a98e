-- Swarm backend: status (tasks through scripts/status.lua), logs (the
-- manager's service logs, demultiplexed by the C core, merged by time),
-- resources (each task's container sampled on its node, all nodes at once),
-- exec (in a running task's container, on its node).
local cluster = require("ctrlplane.docker.swarm.cluster")
local core = require("ctrlplane.docker.core")
local engine = require("ctrlplane.docker.engine")
local exec = require("ctrlplane.docker.exec")
local gate = require("ctrlplane.docker.gate")
local json = require("ctrlplane.docker.json")
local logs = require("ctrlplane.docker.logs")
local project = require("ctrlplane.docker.project")
local release_history = require("ctrlplane.docker.release_history")
local resources = require("ctrlplane.docker.resources")
local sspec = require("ctrlplane.docker.swarm.spec")
local util = require("ctrlplane.docker.util")

local LABEL = project.LABEL
local seg = engine.segment
local P = {}

-- Every task of the given services in one call: {service id -> {task...}}
local function tasks_by_service(p, ids)
  if #ids == 0 then return {} end
  local tasks, err, code = p.engine:get("/tasks", {filters = engine.filters({service = ids})})
  if not tasks then return nil, err, code end
  local out = {}
  for _, t in ipairs(tasks) do
    out[t.ServiceID] = out[t.ServiceID] or {}
    table.insert(out[t.ServiceID], t)
  end
  return out
end

local PENDING = {new = true, pending = true, assigned = true, accepted = true, preparing = true,
  ready = true}

-- A task as scripts/status.lua service() sees a container.
local function task_input(name, spec, t, node)
  local st = t.Status or {}
  local cs = st.ContainerStatus or {}
  local s = st.State
  local input = {name = name, role = spec.role, has_health_check = spec.health_check ~= nil,
    restart_policy = spec.role == "init" and "no" or "always", restarts = 0, replica = t.Slot,
    started_at = st.Timestamp, error = st.Err or "", oom_killed = false}
  if node and node.state ~= "ready" then
    input.docker_state, input.exit_code = "restarting", cs.ExitCode or 0
    input.node_down = string.format("node %s is %s", node.hostname, node.state)
  elseif PENDING[s] then
    input.docker_state = "created"
  elseif s == "starting" then
    input.docker_state, input.health = "running", spec.health_check and "starting" or nil
  elseif s == "running" then
    input.docker_state, input.health = "running", spec.health_check and "healthy" or nil
  elseif s == "complete" then
    input.docker_state, input.exit_code = "exited", 0
  elseif s == "shutdown" then
    input.docker_state, input.exit_code, input.restart_policy = "exited", cs.ExitCode or 0, "always"
  elseif s == "failed" then
    input.docker_state, input.exit_code, input.restart_policy = "exited", cs.ExitCode or -1, "no"
  elseif s == "remove" then
    input.docker_state = "removing"
  else -- rejected, orphaned
    input.docker_state = "dead"
  end
  return input
end

-- The task that speaks for a slot: the newest one desired running (jobs:
-- the newest task).
local function current_tasks(tasks, is_job)
  table.sort(tasks, function(a, b) return (a.CreatedAt or "") > (b.CreatedAt or "") end)
  if is_job then return {tasks[1]} end
  local out = {}
  for _, t in ipairs(tasks) do
    if t.DesiredState == "running" then out[#out + 1] = t end
  end
  return out
end

function P:status(instance_id)
  local ok, verr = project.validate_id(instance_id)
  if not ok then return nil, verr, "invalid" end
  local pol, perr, pcode = gate.load(self, {"status"})
  if not pol then return nil, perr, pcode end
  local by, list = cluster.services_by_name(self, instance_id)
  if not by then return nil, list, "unreachable" end
  local result = {state = "destroyed", ready = false, restarts = 0, message = "",
    endpoints = json.array({}), services = json.object({}),
    metadata = {project = project.name(instance_id), backend = "swarm"}}
  if not next(by) then
    result.message = "no services"
    return result
  end
  local nodes, nerr, ncode = cluster.nodes(self)
  if not nodes then return nil, nerr, ncode end
  local ids = {}
  for _, s in pairs(by) do ids[#ids + 1] = s.ID end
  local tasks, terr, tcode = tasks_by_service(self, ids)
  if not tasks then return nil, terr, tcode end
  local agg_in = {}
  local severity = gate.severity(pol.status)
  for _, name in ipairs(util.sorted_keys(by)) do
    local svc = by[name]
    local spec = sspec.spec_of(svc)
    local all = tasks[svc.ID] or {}
    local is_job = svc.Spec.Mode.ReplicatedJob ~= nil
    local desired = is_job and 1 or svc.Spec.Mode.Replicated.Replicas
    local inputs, running = {}, 0
    for _, t in ipairs(current_tasks(all, is_job)) do
      local input = task_input(name, spec, t, nodes[t.NodeID])
      if input.docker_state == "running" and not input.node_down then running = running + 1 end
      inputs[#inputs + 1] = input
    end
    if not is_job then
      for _ = #inputs + 1, desired do
        inputs[#inputs + 1] = {name = name, role = spec.role, docker_state = "created",
          restart_policy = "always", has_health_check = spec.health_check ~= nil, restarts = 0,
          error = ""}
      end
      if desired == 0 then
        inputs = {{name = name, role = spec.role, docker_state = "exited", exit_code = 0,
          restart_policy = "no", has_health_check = false, restarts = 0, error = ""}}
      end
    end
    local restarts = 0
    for _, t in ipairs(all) do
      if t.Status and (t.Status.State == "failed" or t.Status.State == "rejected") then
        restarts = restarts + 1
      end
    end
    local entry
    local reps_in = {}
    for i, input in ipairs(inputs) do
      local s, serr, scode = gate.service(pol.status, input)
      if not s then return nil, serr, scode end
      reps_in[#reps_in + 1] = {replica = i, state = s.state, ready = s.ready, message = s.message,
        restarts = 0}
      local msg = input.node_down or s.message or ""
      if desired == 0 and not is_job then s, msg = {state = "stopped", ready = false}, "stopped" end
      if not entry then
        entry = {state = s.state, ready = s.ready and true or false, message = msg,
          restarts = restarts, provider_ref = svc.ID, replicas = desired}
      else
        if (severity[s.state] or 0) < (severity[entry.state] or 0) then
          entry.state = s.state
          entry.message = string.format("replica %d: %s", i, msg)
        end
        entry.ready = entry.ready and (s.ready and true or false)
      end
    end
    entry.running = running
    -- Swarm's own notion: a replicated service with some but not all of its
    -- desired tasks running is degraded (it still serves)
    if not is_job and running > 0 and running < desired and entry.state ~= "failed" then
      entry.state = "degraded"
    end
    if not is_job and running < desired and entry.message == "" then
      entry.message = string.format("%d/%d replicas running", running, desired)
    elseif not is_job and running < desired then
      entry.message = string.format("%d/%d replicas running; %s", running, desired, entry.message)
    end
    if spec.role == "main" then
      local rel = svc.Spec.Labels[LABEL.release]
      if rel and rel ~= "" then result.metadata.release = rel end
      for _, t in ipairs(current_tasks(all, false)) do
        if t.Status and t.Status.State == "running" then result.started_at = t.Status.Timestamp end
      end
    end
    -- endpoints: in-network by service name, and each running task's host-mode ports on its node
    for _, port in ipairs(spec.ports or {}) do
      local scheme = port.protocol == "udp" and "udp" or "http"
      result.endpoints[#result.endpoints + 1] = {service_name = name, port = port.container,
        protocol = port.protocol, public = false,
        url = string.format("%s://%s:%d", scheme, project.container_name(instance_id, name),
          port.container)}
    end
    local seen_url = {}
    for _, t in ipairs(current_tasks(all, false)) do
      local node = nodes[t.NodeID]
      for _, ps in ipairs(t.Status and t.Status.PortStatus and t.Status.PortStatus.Ports or {}) do
        local url = node and node.addr and string.format("%s://%s:%d",
          ps.Protocol == "udp" and "udp" or "http", node.addr, ps.PublishedPort or 0)
        if url and t.Status.State == "running" and ps.PublishedPort and not seen_url[url] then
          seen_url[url] = true
          result.endpoints[#result.endpoints + 1] = {service_name = name,
            port = math.tointeger(ps.PublishedPort), protocol = ps.Protocol, public = true,
            url = url, node = node.hostname}
        end
      end
    end
    result.services[name] = entry
    agg_in[#agg_in + 1] = {name = name, role = spec.role, state = entry.state, ready = entry.ready,
      message = entry.message, restarts = entry.restarts, replicas = desired,
      replica_states = reps_in}
    result.restarts = result.restarts + entry.restarts
  end
  local agg, aerr, acode = gate.aggregate(pol.status, agg_in)
  if not agg then return nil, aerr, acode end
  result.state = agg.state
  result.ready = agg.ready and true or false
  result.message = agg.message or ""
  result.metadata.network = project.network_name(instance_id)
  local shaped = {}
  for i, s in ipairs(list) do
    shaped[i] = {Labels = s.Spec.Labels, Created = (s.Version or {}).Index or 0}
  end
  -- the recorded releases, oldest first: a JSON list in the extra field
  -- `releases`, and as a list in metadata.releases
  local releases = json.array({})
  for _, e in ipairs(release_history.history_of(shaped)) do releases[#releases + 1] = e.id end
  result.releases = releases
  result.metadata.releases = releases
  return result
end

-- ---- logs ---------------------------------------------------------------------------

local INCOMPLETE = "^Error grabbing logs: (.*)$"

-- A log stream over the services' log endpoints: without follow, every line
-- is read first and merged by time across tasks and services; with follow,
-- events come as they arrive. An "incomplete log stream" (a node could not
-- be reached) is an event flagged incomplete = true on stderr, and
-- :incomplete() returns its message: never a silent gap.
local SwarmLogs = {}
SwarmLogs.__index = SwarmLogs
-- following: how often the followed services are looked up (gone: the end)
SwarmLogs.CHECK_EVERY = 1

function SwarmLogs:_consume(src, chunk)
  local q = {}
  local events, err, code
  if chunk then events, err, code = src.demux:feed(chunk, q)
  else events, err, code = src.demux:finish(q) end
  if not events then return nil, err, code end
  for _, ev in ipairs(q) do
    local why = ev.line:match(INCOMPLETE)
    if why then
      ev.stream, ev.incomplete = "stderr", true
      self.incomplete_msg = why
    end
    if self.merged then ev.service = src.service end
    self.queue[#self.queue + 1] = ev
  end
  return true
end

function SwarmLogs:_read_all(timeout)
  local deadline = core.clock() + (timeout or 60)
  for _, src in ipairs(self.sources) do
    while true do
      local chunk, err, code = src.stream:read(math.max(0, deadline - core.clock()))
      if chunk == false then return nil, "timed out reading logs of " .. src.service, "timeout" end
      if chunk == nil and err then return nil, "logs of " .. src.service .. ": " .. err, code end
      local ok, e2, c2 = self:_consume(src, chunk)
      if not ok then return nil, e2, c2 end
      if chunk == nil then break end
    end
    src.stream:close()
    src.done = true
  end
  -- merged by time, stable: lines without a time keep their place at the end
  for i, ev in ipairs(self.queue) do ev._i = i end
  table.sort(self.queue, function(a, b)
    local ta, tb = a.ts or "~", b.ts or "~"
    if ta ~= tb then return ta < tb end
    return a._i < b._i
  end)
  for _, ev in ipairs(self.queue) do ev._i = nil end
  return true
end

function SwarmLogs:next(timeout)
  local deadline = timeout and core.clock() + timeout
  while true do
    if self.head <= #self.queue then
      local ev = self.queue[self.head]
      self.queue[self.head] = nil
      self.head = self.head + 1
      return ev
    end
    self.queue, self.head = {}, 1
    if self.failed then return nil, self.failed[1], self.failed[2] end
    if self.follow and core.clock() >= self.next_check then
      -- a followed service that is gone (deprovisioned) ends its part
      self.next_check = core.clock() + SwarmLogs.CHECK_EVERY
      for _, src in ipairs(self.sources) do
        if not src.done then
          local found, _, code = self.engine:get("/services/" .. seg(src.id))
          if not found and code == "not_found" then
            src.stream:close()
            src.done = true
          end
        end
      end
    end
    local live = {}
    for _, src in ipairs(self.sources) do
      if not src.done then live[#live + 1] = src end
    end
    if #live == 0 then return nil end
    local streams = {}
    for i, src in ipairs(live) do streams[i] = src.stream end
    local slice = deadline and math.max(0, deadline - core.clock())
    if self.follow then
      slice = math.max(0, self.next_check - core.clock())
      if deadline then slice = math.min(slice, math.max(0, deadline - core.clock())) end
    end
    local idx, err, code = self.client:wait(streams, slice)
    if not idx then return nil, err, code end
    if #idx == 0 and (not self.follow or (deadline and core.clock() >= deadline)) then
      return false
    end
    for _, i in ipairs(idx) do
      local src = live[i]
      local chunk, e2, c2 = src.stream:read(0)
      if chunk == nil and e2 then
        self.failed = {"logs of " .. src.service .. ": " .. e2, c2}
      elseif chunk ~= false then
        local ok, e3, c3 = self:_consume(src, chunk)
        if not ok then self.failed = {e3, c3} end
        if chunk == nil then
          src.stream:close()
          src.done = true
        end
      end
    end
  end
end

function SwarmLogs:collect(timeout)
  local out = {}
  while true do
    local ev, err, code = self:next(timeout)
    if ev == nil and err then return nil, err, code, out end
    if ev == false then return nil, "timed out reading logs", "timeout", out end
    if ev == nil then return out end
    out[#out + 1] = ev
  end
end

-- Text for a host that prints (as LogStream:read_text).
function SwarmLogs:read_text(fmt, timeout)
  fmt = fmt or {}
  local ev, err, code = self:next(timeout)
  if not ev then return ev, err, code end
  local outs, errs = {}, {}
  repeat
    local text
    if fmt.json then
      text = json.encode({ts = ev.ts, stream = ev.stream, line = ev.line, service = ev.service,
        incomplete = ev.incomplete}) .. "\n"
    else
      text = (fmt.prefix and ev.service and fmt.prefix(ev.service) or "")
        .. (fmt.timestamps and ev.ts and (ev.ts .. " ") or "") .. ev.line .. "\n"
    end
    local into = (not fmt.json and ev.stream == "stderr") and errs or outs
    into[#into + 1] = text
    ev = self.head <= #self.queue and self:next(0) or nil
  until not ev
  return table.concat(outs), table.concat(errs)
end

function SwarmLogs:services()
  local out = {}
  for i, src in ipairs(self.sources) do out[i] = src.service end
  return out
end

function SwarmLogs:incomplete() return self.incomplete_msg end

function SwarmLogs:close()
  for _, src in ipairs(self.sources) do
    if src.stream and not src.done then src.stream:close() end
    if src.demux then src.demux:close() end
    src.done = true
  end
end

SwarmLogs.__close = SwarmLogs.close
SwarmLogs.__gc = SwarmLogs.close

function P:logs(instance_id, opts)
  opts = opts or {}
  if type(opts) ~= "table" then error("logs: options must be a table", 2) end
  local ok, err = project.validate_id(instance_id)
  if not ok then return nil, err, "bad_request" end
  local want = opts.service_name
  if want == "" then want = nil end
  if want ~= nil and (type(want) ~= "string" or #want > 63 or not want:match("^[a-z0-9][a-z0-9-]*$")) then
    return nil, "service_name: " .. string.format("%q", tostring(want))
      .. " is not a valid service name (lower-case letters, digits and '-')", "bad_request"
  end
  local query, qerr = logs.query(opts)
  if not query then return nil, qerr, "bad_request" end
  local by, list = cluster.services_by_name(self, instance_id)
  if not by then return nil, list, "unreachable" end
  if not next(by) then return nil, "instance " .. instance_id .. " does not exist", "not_found" end
  local chosen = {}
  for _, name in ipairs(util.sorted_keys(by)) do
    local role = by[name].Spec.Labels[LABEL.role]
    if opts.all or name == want or (not want and role == "main") then chosen[#chosen + 1] = name end
  end
  if #chosen == 0 then
    return nil, string.format("instance %s has no service %s (it has: %s)", instance_id,
      tostring(want), table.concat(util.sorted_keys(by), ", ")), "not_found"
  end
  local sources = {}
  for i, name in ipairs(chosen) do
    local stream, e2, c2 = self.engine:stream("GET", "/services/" .. seg(by[name].ID) .. "/logs", query)
    if not stream then
      for _, src in ipairs(sources) do src.stream:close() src.demux:close() end
      return nil, string.format("logs of %s: %s", name, e2), c2
    end
    sources[i] = {service = name, id = by[name].ID, stream = stream,
      demux = core.demux({timestamps = true, max_line = opts.max_line})}
  end
  local s = setmetatable({client = self.engine.client, engine = self.engine, sources = sources,
    queue = {}, head = 1, merged = #sources > 1, follow = query.follow,
    next_check = core.clock() + SwarmLogs.CHECK_EVERY}, SwarmLogs)
  if not query.follow then
    local rok, rerr, rcode = s:_read_all(opts.timeout)
    if not rok then
      s:close()
      return nil, rerr, rcode
    end
  end
  return s
end

-- ---- resources -------------------------------------------------------------------

-- The running tasks of the instance: list of {service, task, node (hostname), container}
function P:_running_tasks(instance_id)
  local by, list = cluster.services_by_name(self, instance_id)
  if not by then return nil, list, "unreachable" end
  if not next(by) then
    return nil, "instance " .. instance_id .. " not found (no services labelled "
      .. LABEL.project .. "=" .. project.name(instance_id) .. ")", "not_found"
  end
  local nodes, nerr, ncode = cluster.nodes(self)
  if not nodes then return nil, nerr, ncode end
  local ids, names = {}, {}
  for name, s in pairs(by) do
    ids[#ids + 1] = s.ID
    names[s.ID] = name
  end
  local tasks, terr, tcode = tasks_by_service(self, ids)
  if not tasks then return nil, terr, tcode end
  local out = {}
  for sid, ts in pairs(tasks) do
    for _, t in ipairs(ts) do
      local node = nodes[t.NodeID]
      local cs = t.Status and t.Status.ContainerStatus or {}
      if t.DesiredState == "running" and t.Status.State == "running" and node
          and node.state == "ready" and cs.ContainerID then
        out[#out + 1] = {service = names[sid], task = t.ID, slot = t.Slot, node = node.hostname,
          container = cs.ContainerID, created = t.CreatedAt}
      end
    end
  end
  table.sort(out, function(a, b)
    if a.service ~= b.service then return a.service < b.service end
    return (a.slot or 0) < (b.slot or 0)
  end)
  return out, nodes
end

function P:resources(instance_id, opts)
  opts = opts or {}
  local ok, verr = project.validate_id(instance_id)
  if not ok then return nil, verr, "bad_request" end
  local running, nodes, code = self:_running_tasks(instance_id)
  if not running then return nil, nodes, code end
  -- one sampler per node, every stats stream open at once, pumped in turn
  local per_node, members = {}, {}
  for _, r in ipairs(running) do
    members[#members + 1] = {Id = r.container, Labels = {[LABEL.service] = r.service}}
    if not per_node[r.node] then
      local eng, err, ecode = cluster.node_engine(self, r.node, "resources")
      if not eng then return nil, err, ecode end
      per_node[r.node] = {eng = eng, ids = {}}
    end
    table.insert(per_node[r.node].ids, r.container)
  end
  local samplers = {}
  for host, n in pairs(per_node) do
    n.sampler = core.sampler(n.eng.client, {ring = 4})
    n.sampler:watch(n.ids)
    samplers[#samplers + 1] = n
    n.host = host
  end
  local need = opts.one_shot and 1 or 2
  local deadline = core.clock() + (opts.timeout or 10)
  local samples, failure = {}, nil
  repeat
    local cold = false
    for _, n in ipairs(samplers) do
      local pok, perr, pcode = n.sampler:pump(0.05)
      if not pok then failure = {perr, pcode} end
      for _, id in ipairs(n.ids) do
        local u = n.sampler:usage(id)
        if not u or u.samples < need then cold = true end
      end
    end
  until not cold or failure or core.clock() > deadline
  for _, n in ipairs(samplers) do
    for _, id in ipairs(n.ids) do
      local u = n.sampler:usage(id)
      if u then samples[id] = u end
    end
    n.sampler:close()
  end
  if failure then return nil, failure[1], failure[2] end
  local mem = 0
  local infos = {}
  for _, n in ipairs(samplers) do
    local info = infos[n.host] or n.eng:get("/info")
    infos[n.host] = info
    if type(info) == "table" then mem = mem + (tonumber(info.MemTotal) or 0) end
  end
  local usage = resources.aggregate(members, samples, mem > 0 and mem or nil)
  usage.nodes = json.array(util.sorted_keys(per_node))
  return usage
end

-- A monitor for `cpdocker top`: on the swarm backend each refresh samples
-- afresh (resources above: the nodes at once, ~1-2 s), nothing is kept open
-- between refreshes, so a task that moved to another node is simply found there.
local SwarmMonitor = {}
SwarmMonitor.__index = SwarmMonitor

function SwarmMonitor.warm() return true end
function SwarmMonitor:usage() return self.provider:resources(self.id, {timeout = 5}) end
function SwarmMonitor.poll(_, wait)
  if wait and wait > 0 and not core.sleep(wait) then return nil, "interrupted", "interrupted" end
  return true
end
function SwarmMonitor.close() end

function P:resource_monitor(instance_id)
  local ok, verr = project.validate_id(instance_id)
  if not ok then return nil, verr, "bad_request" end
  return setmetatable({provider = self, id = instance_id}, SwarmMonitor)
end

-- ---- exec ---------------------------------------------------------------------------

-- req.task: a task id (or a prefix of one) or a slot number; default: the
-- service's first running task on a ready node.
function P:exec(instance_id, req, opts)
  local ok, err = project.validate_id(instance_id)
  if not ok then return nil, err, "invalid" end
  ok, err = exec.check_request(req)
  if not ok then return nil, "invalid request: " .. err, "invalid" end
  if req.task ~= nil and type(req.task) ~= "string" and math.type(req.task) ~= "integer" then
    return nil, "invalid request: task: expected a task id or a slot number", "invalid"
  end
  local running, nodes, code = self:_running_tasks(instance_id)
  if not running then return nil, nodes, code end
  local want = req.service or req.service_name
  if not want then
    local by = cluster.services_by_name(self, instance_id) or {}
    for name, s in pairs(by) do
      if s.Spec.Labels[LABEL.role] == "main" then want = name end
    end
  end
  local target
  for _, r in ipairs(running) do
    if r.service == want and not target then
      local t = req.task
      if t == nil or tostring(r.slot) == tostring(t) or (type(t) == "string" and #t >= 4
          and r.task:sub(1, #t) == t) then
        target = r
      end
    end
  end
  if not target then
    return nil, string.format("service %s of instance %s has no running task%s", tostring(want),
      instance_id, req.task and (" " .. tostring(req.task)) or ""), "not_running"
  end
  local eng, eerr, ecode = cluster.node_engine(self, target.node, "exec")
  if not eng then return nil, eerr, ecode end
  local res, xerr, xcode = exec.exec_in(eng, target.container, want, req, opts)
  if not res then return nil, xerr, xcode end
  res.task, res.node = target.task, target.node
  return res
end

return P
