-- The resources operation (DESIGN §2): ResourceUsage summed over every
-- container of an instance's project, with a per-service breakdown.
--
--   p:resources(instance_id[, opts])          -> ResourceUsage | nil, msg, code
--   p:resource_monitor(instance_id[, opts])   -> Monitor | nil, msg, code
--
-- The C sampler does the I/O and the arithmetic; this file decides what a
-- project's usage is:
--   * every container of the project counts, whatever its service or role;
--   * a container that is stopped, or gone between the listing and its stats
--     request, is a gap (zeros, counted in `containers` but not `running`);
--   * a daemon that cannot be reached is an error;
--   * memory limits: a container without a limit may use all of the host's
--     memory, so a project with such a container has the host's memory as its
--     limit; otherwise the limits add up (never above the host's memory).
--
-- Cold calls take one of two paths, named in the result's metadata.source:
--   "cgroup": the daemon is local (unix socket) and this process can read
--     /sys/fs/cgroup: each running container's cgroup files and the
--     /proc/<pid>/net/dev of a process in it are read twice, `stats_interval`
--     (0.1 s) apart, for every container at once (runtime/cgroup.c);
--   "api": otherwise (or for a container whose files cannot be read) the
--     daemon's stats of every running container at once (stream=false: the
--     daemon takes ~1-2 s to supply a CPU delta, once for the whole project).
-- Settings: stats_source "auto" (default) | "api" (CP_DOCKER_STATS_SOURCE),
-- stats_interval seconds (CP_DOCKER_STATS_INTERVAL); per call opts.source.
-- A Monitor keeps one stats stream per container open, follows the project's
-- container events to pick up containers that appear or go, and answers from
-- the samples it already holds; p:resources() uses it while it is open.
--
-- ResourceUsage (snake_case JSON):
--   {cpu_percent, memory_used_mb, memory_limit_mb, network_in_mb, network_out_mb,
--    block_read_mb, block_write_mb, pids, containers, running, sampled_at,
--    metadata = {source = "cgroup"|"api"|"cgroup+api"|"none", ...},
--    services = {name = {...the same figures..., containers, running,
--                        [network_in_rate_mb, network_out_rate_mb] (MB/s)}}}
-- cpu_percent: 100 = one CPU busy (as `docker stats`); MB = 2^20 bytes;
-- network figures are totals since each container started.
-- memory_used_mb (rounded up), memory_limit_mb, pids, containers and running
-- are integers (Go decodes the first two into `int`); the other figures are numbers.
-- An instance with no containers has a zero usage (the Go provider's answer;
-- its metrics poller reads zero as a gap).
local core = require("ctrlplane.docker.core")
local engine = require("ctrlplane.docker.engine")
local json = require("ctrlplane.docker.json")
local project = require("ctrlplane.docker.project")
local util = require("ctrlplane.docker.util")

local M = {}

local MB = 1024 * 1024
-- seconds after which the one-shot sampler forgets a container it no longer
-- sees (its previous sample is too old to average CPU over anyway)
M.SAMPLER_STALE = 120

local FIGURES = {"cpu_percent", "memory_used_mb", "memory_limit_mb", "network_in_mb",
  "network_out_mb", "block_read_mb", "block_write_mb", "pids"}

local function round(x, places)
  local m = 10 ^ (places or 3)
  return math.floor(x * m + 0.5) / m
end

local function zero_usage()
  local u = {}
  for _, k in ipairs(FIGURES) do u[k] = 0 end
  u.containers, u.running = 0, 0
  return u
end

-- Adds one container's sample (a usage table from the C sampler, or nil for
-- a gap) into the service and project totals.
local function add(total, sample)
  total.containers = total.containers + 1
  if not sample or not sample.running then return end
  total.running = total.running + 1
  total.cpu_percent = total.cpu_percent + sample.cpu_percent
  total.memory_used_mb = total.memory_used_mb + sample.memory_used / MB
  total.network_in_mb = total.network_in_mb + sample.network_rx / MB
  total.network_out_mb = total.network_out_mb + sample.network_tx / MB
  total.block_read_mb = total.block_read_mb + sample.block_read / MB
  total.block_write_mb = total.block_write_mb + sample.block_write / MB
  total.pids = total.pids + sample.pids
  total._limits[#total._limits + 1] = sample.memory_limit
  if sample.rx_rate then
    total.network_in_rate_mb = (total.network_in_rate_mb or 0) + sample.rx_rate / MB
    total.network_out_rate_mb = (total.network_out_rate_mb or 0) + sample.tx_rate / MB
  end
  if sample.cpu_source == "none" then total._cpu_unknown = true end
end

-- Sum of memory limits in bytes under the rule above.
function M.memory_limit(limits, host_memory)
  local sum = 0
  for _, l in ipairs(limits) do
    if host_memory and host_memory > 0 and l >= host_memory then return host_memory end
    sum = sum + l
  end
  if host_memory and host_memory > 0 and sum > host_memory then return host_memory end
  return sum
end

-- Figures Go decodes into `int`: whole numbers. Memory used is rounded up,
-- so a running container is never 0 MB (Go's metrics poller reads a zero as
-- a gap); the limit to the nearest MB.
local INTEGER = {memory_used_mb = math.ceil, memory_limit_mb = function(x)
  return math.floor(x + 0.5)
end, pids = math.floor}

local function finish(total, host_memory)
  total.memory_limit_mb = M.memory_limit(total._limits, host_memory) / MB
  for _, k in ipairs(FIGURES) do
    if INTEGER[k] then
      total[k] = math.tointeger(INTEGER[k](total[k]))
    else
      total[k] = round(total[k], k == "cpu_percent" and 2 or 3)
    end
  end
  if total.network_in_rate_mb then
    total.network_in_rate_mb = round(total.network_in_rate_mb, 4)
    total.network_out_rate_mb = round(total.network_out_rate_mb, 4)
  end
  total.cpu_known = not total._cpu_unknown
  total._limits, total._cpu_unknown = nil, nil
  return total
end

-- members: containers as /containers/json lists them; samples: container
-- id -> usage table (or nothing for a gap). Pure: specs call it directly.
function M.aggregate(members, samples, host_memory)
  local total = zero_usage()
  total._limits = {}
  local services = {}
  for _, c in ipairs(members) do
    local name = project.service_of(c) or "?"
    local svc = services[name]
    if not svc then
      svc = zero_usage()
      svc._limits = {}
      services[name] = svc
    end
    local s = samples[c.Id]
    add(svc, s)
    add(total, s)
  end
  finish(total, host_memory)
  for name, svc in pairs(services) do services[name] = finish(svc, host_memory) end
  total.network_in_rate_mb, total.network_out_rate_mb = nil, nil
  total.services = json.object(services)
  total.sampled_at = util.rfc3339()
  return total
end

local function running_ids(members)
  local ids = {}
  for _, c in ipairs(members) do
    -- a paused container still holds its memory: sample it too
    if c.State == "running" or c.State == "paused" then ids[#ids + 1] = c.Id end
  end
  return ids
end

-- ---- Monitor: persistent sampling ----------------------------------------------

local Monitor = {}
Monitor.__index = Monitor
M.Monitor = Monitor

local EVENTS = {"start", "die", "destroy", "pause", "unpause"}

function Monitor:_open_events()
  local stream = self.provider.engine:stream("GET", "/events", {
    since = tostring(os.time()),
    filters = engine.filters({type = {"container"}, event = EVENTS,
      label = {project.LABEL.project .. "=" .. project.name(self.id)}}),
  })
  self.events = stream -- nil when it failed: membership is then re-listed on a timer
end

-- Lists the project and keeps a stats stream open for each running member.
function Monitor:refresh()
  local members, err, code = project.members(self.provider.engine, self.id)
  if not members then return nil, err, code end
  if #members == 0 and not self.members then
    return nil, "instance " .. self.id .. " not found (no containers labelled "
      .. project.LABEL.project .. "=" .. project.name(self.id) .. ")", "not_found"
  end
  self.members = members
  self.listed_at = core.clock()
  self.watched = running_ids(members)
  self.sampler:watch(self.watched)
  self.watched_at = self.listed_at
  self.dirty = false
  return true
end

-- Moves what has arrived into the sampler (waiting up to `wait` seconds for
-- something), re-listing the project when its containers changed.
function Monitor:poll(wait)
  if self.events then
    for _ = 1, 64 do
      local chunk = self.events:read(0)
      if chunk then
        self.dirty = true
      else
        if chunk == nil then -- ended or failed: fall back to re-listing
          self.events:close()
          self.events = nil
        end
        break
      end
    end
  elseif core.clock() - (self.listed_at or 0) >= self.relist then
    self.dirty = true
  end
  if self.dirty then
    local ok, err, code = self:refresh()
    if not ok then return nil, err, code end
  elseif self.sampler:live() < #self.watched and core.clock() - self.watched_at >= 1 then
    -- a stats stream ended (daemon hiccup, idle timeout): reopen it, at most once a second
    self.sampler:watch(self.watched)
    self.watched_at = core.clock()
  end
  local n, err, code = self.sampler:pump(wait or 0)
  if not n then return nil, err, code end
  return n
end

-- Waits (at most `timeout` seconds) until every running member has `n`
-- samples (2: CPU from the daemon's delta and network rates).
function Monitor:warm(n, timeout)
  n = n or 2
  local deadline = core.clock() + (timeout or 5)
  repeat
    local ok, err, code = self:poll(0)
    if not ok then return nil, err, code end
    local cold = false
    for _, id in ipairs(running_ids(self.members)) do
      local u = self.sampler:usage(id)
      if not u or u.samples < n then cold = true end
    end
    if not cold then return true end
    local left = deadline - core.clock()
    if left <= 0 then return false end
    ok, err, code = self.sampler:pump(math.min(left, 0.25))
    if not ok then return nil, err, code end
  until false
end

-- The project's usage from the samples held now.
function Monitor:usage()
  local ok, err, code = self:poll(0)
  if not ok then return nil, err, code end
  local samples = {}
  for _, id in ipairs(running_ids(self.members)) do
    samples[id] = self.sampler:usage(id)
  end
  return M.aggregate(self.members, samples, self.provider:_host_memory())
end

function Monitor:close()
  if self.events then self.events:close() end
  self.events = nil
  self.sampler:close()
  if self.provider._monitors[self.id] == self then self.provider._monitors[self.id] = nil end
end

Monitor.__close = Monitor.close

-- ---- sampling paths ------------------------------------------------------------

-- The shared one-shot sampler keeps a ring per container id it has seen.
-- Entries of containers not in this call and not sampled for
-- M.SAMPLER_STALE seconds (or with no sample: gone) are forgotten, so a
-- long-lived provider over churning instances keeps a flat footprint.
local function prune(sampler, keep)
  for _, id in ipairs(sampler:ids()) do
    if not keep[id] then
      local u = sampler:usage(id)
      if not u or (u.age or 0) > M.SAMPLER_STALE then sampler:forget(id) end
    end
  end
end

-- Samples ids from their cgroup files: two readings `interval` apart.
-- Returns samples (id -> usage) and failed (id -> {error, code}).
local function kernel_fetch(self, ids, interval)
  local t0 = core.clock()
  local readers = {core.cgroup_open(ids)}
  local missing = {}
  for id, f in pairs(readers[1]:failures()) do
    if f.code == "not_found" then missing[#missing + 1] = id end
  end
  if #missing > 0 then
    -- not where the drivers put it by default (a custom cgroup parent):
    -- the daemon names the container's init pid, whose cgroup file names the directory
    local calls = {}
    for i, id in ipairs(missing) do calls[i] = {path = "/containers/" .. id .. "/json"} end
    local targets = {}
    for i, r in ipairs(self.engine:batch(calls)) do
      local pid = r.value and r.value.State and math.tointeger(r.value.State.Pid)
      if pid and pid > 0 then targets[#targets + 1] = {id = missing[i], pid = pid} end
    end
    if #targets > 0 then readers[2] = core.cgroup_open(targets) end
  end
  local wait = interval - (core.clock() - t0)
  if wait > 0 and not core.sleep(wait) then return nil, "interrupted", "interrupted" end
  local samples, failed = {}, {}
  for _, reader in ipairs(readers) do
    for id, u in pairs(reader:sample()) do
      if u.error then
        if not samples[id] then failed[id] = u end
      else
        samples[id], failed[id] = u, nil
      end
    end
  end
  return samples, failed
end

-- The daemon's stats of ids at once; adds them to samples.
local function api_fetch(self, ids, samples, opts)
  local sampler = self:_sampler()
  local results, ferr, fcode = sampler:fetch(ids,
    {one_shot = opts.one_shot, timeout = opts.timeout or 30})
  if not results then return nil, ferr, fcode end
  local keep = {}
  for _, id in ipairs(ids) do keep[id] = true end
  prune(sampler, keep)
  for id, r in pairs(results) do
    if r.error then
      -- gone or stopped since the listing: a gap; the daemon down: an error
      if r.code == "unreachable" or r.code == "interrupted" then
        return nil, r.error, r.code
      end
    else
      samples[id] = r
    end
  end
  return true
end

-- ---- provider methods ------------------------------------------------------------

function M.install(docker)
  local Provider = docker.Provider

  -- Host memory in bytes (cached): the limit of a container without one.
  function Provider:_host_memory()
    if self._host_mem == nil then
      local info = self.engine:get("/info")
      self._host_mem = type(info) == "table" and tonumber(info.MemTotal) or false
    end
    return self._host_mem or nil
  end

  function Provider:_sampler()
    if not self._stats_sampler then
      self._stats_sampler = core.sampler(self.engine.client)
    end
    return self._stats_sampler
  end

  -- The kernel path's probe (cached): {version, mem_total}, or false when
  -- the daemon is remote or the cgroup hierarchy cannot be read.
  function Provider:_kernel()
    if self._cgroup == nil then
      local local_daemon = tostring(self.cfg and self.cfg.host or ""):match("^unix://") ~= nil
      self._cgroup = local_daemon and core.cgroup_probe() or false
    end
    return self._cgroup
  end

  -- opts: {one_shot = bool (API path: no daemon wait; CPU needs an earlier call),
  --        source = "auto"|"api" (default: the stats_source setting),
  --        interval = seconds between the kernel path's readings,
  --        timeout = seconds}
  function Provider:resources(instance_id, opts)
    opts = opts or {}
    local ok, verr = project.validate_id(instance_id)
    if not ok then return nil, verr, "bad_request" end
    local mon = self._monitors and self._monitors[instance_id]
    if mon then return mon:usage() end
    local members, err, code = project.members(self.engine, instance_id)
    if not members then return nil, err, code end
    local ids = running_ids(members)
    local samples, meta = {}, {source = "none"}
    local source = opts.source or (self.cfg and self.cfg.stats_source) or "auto"
    local kernel = source ~= "api" and #ids > 0 and self:_kernel()
    local rest = ids
    if kernel then
      local interval = opts.interval or (self.cfg and self.cfg.stats_interval) or 0.1
      local failed
      samples, failed = kernel_fetch(self, ids, interval)
      if not samples then return nil, failed, "interrupted" end
      rest = {}
      for _, id in ipairs(ids) do
        if failed[id] and failed[id].code ~= "no_process" then rest[#rest + 1] = id end
      end
      meta = {source = "cgroup", cgroup_version = kernel.version,
        interval_ms = math.floor(interval * 1000 + 0.5)}
    end
    if #rest > 0 then
      local aok, aerr, acode = api_fetch(self, rest, samples, opts)
      if not aok then return nil, aerr, acode end
      meta.source = kernel and "cgroup+api" or "api"
    end
    local host_memory = kernel and kernel.mem_total > 0 and kernel.mem_total
      or (#ids > 0 and self:_host_memory()) or nil
    local usage = M.aggregate(members, samples, host_memory)
    usage.metadata = meta
    return usage
  end

  -- opts: {ring = samples kept per container (8), relist = seconds between
  -- listings when the events stream is unavailable (2)}
  function Provider:resource_monitor(instance_id, opts)
    opts = opts or {}
    local ok, verr = project.validate_id(instance_id)
    if not ok then return nil, verr, "bad_request" end
    self._monitors = self._monitors or {}
    if self._monitors[instance_id] then return self._monitors[instance_id] end
    local mon = setmetatable({
      provider = self, id = instance_id, relist = opts.relist or 2,
      sampler = core.sampler(self.engine.client, {ring = opts.ring or 8}),
    }, Monitor)
    -- events first, then the listing: a container starting in between is
    -- seen by one or the other
    mon:_open_events()
    local lok, err, code = mon:refresh()
    if not lok then
      if mon.events then mon.events:close() end
      mon.sampler:close()
      return nil, err, code
    end
    self._monitors[instance_id] = mon
    return mon
  end

  local close = Provider.close
  function Provider:close()
    for _, mon in pairs(self._monitors or {}) do mon:close() end
    if self._stats_sampler then self._stats_sampler:close() end
    close(self)
  end

  docker.register_capabilities({"resources"})
end

return M
