-- The logs operation (DESIGN §2): a stream of {ts, stream, line} events
-- from an instance's containers, one event per line the program wrote.
--
--   local logs, err, code = provider:logs("inst_...", {
--     service_name = "web",   -- one service; absent: the main service
--     all = true,             -- every service of the project, merged
--     follow = true,          -- stay open for new lines
--     tail = 100,             -- the last N lines of each container; 0 or absent: all;
--                             -- "none": no old lines (with follow: only new ones)
--     since = "10m",          -- RFC 3339 time, Unix seconds, or a duration ago ("5s", "1h30m")
--   })
--   while true do
--     local ev, e2, c2 = logs:next(1.0)  -- event | false (timeout) | nil (end) | nil, msg, code
--     if not ev then break end
--     print(ev.ts, ev.stream, ev.line)  -- plus ev.service when several services are merged
--   end
--   logs:close()
--
-- Following (follow = true) survives its containers: when a followed
-- container stops, the stream waits for it and re-attaches when it runs
-- again (a restart: only lines written after the old run ended), or
-- attaches to the service's new container (a deploy replaced it: all its
-- lines). It ends, cleanly (nil), once every followed service is gone (the
-- instance was deprovisioned), and fails only if the daemon stays
-- unreachable for M.REATTACH_GIVE_UP seconds. A container that was not
-- running when the follow began ends its part as `docker logs -f` does.
--
-- The byte work (frames, timestamps, 16 KiB pieces joined, TTY streams) is
-- core.demux in C; this file picks the containers and interleaves them:
-- without follow, several services are merged by time.
-- Several containers are read at once and their events come in the order
-- they arrive. A line longer than core.demux_max_line (1 MiB) comes out as
-- several events, each but the last with partial = true.
local core = require("ctrlplane.docker.core")
local engine = require("ctrlplane.docker.engine")
local project = require("ctrlplane.docker.project")
local util = require("ctrlplane.docker.util")

local M = {}

local SERVICE_PATTERN = "^[a-z0-9][a-z0-9-]*$"

-- following: how often a stopped container is looked at, and how long an
-- unreachable daemon is waited for before the stream fails
M.REATTACH_POLL = 0.25
M.REATTACH_GIVE_UP = 30

-- ---- option parsing ---------------------------------------------------------

local UNITS = {ns = 1e-9, us = 1e-6, ["µs"] = 1e-6, ms = 1e-3, s = 1, m = 60, h = 3600}

-- Go-style duration text ("1h30m", "250ms", "5s") -> seconds, or nil.
function M.parse_duration(s)
  if type(s) ~= "string" or s == "" then return nil end
  local total, rest = 0, s
  while rest ~= "" do
    local num, unit, tail = rest:match("^(%d+%.?%d*)(%a+)(.*)$")
    if not num then
      num, unit, tail = rest:match("^(%d+%.?%d*)(µs)(.*)$")
    end
    if not num or not UNITS[unit] then return nil end
    total = total + tonumber(num) * UNITS[unit]
    rest = tail
  end
  return total
end

-- Days since 1970-01-01 of a civil date (proleptic Gregorian).
local function days_from_civil(y, m, d)
  y = m <= 2 and y - 1 or y
  local era = (y >= 0 and y or y - 399) // 400
  local yoe = y - era * 400
  local doy = (153 * (m + (m > 2 and -3 or 9)) + 2) // 5 + d - 1
  local doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
  return era * 146097 + doe - 719468
end

-- RFC 3339 text -> Unix seconds (a float), or nil.
function M.parse_rfc3339(s)
  local y, mo, d, h, mi, sec, rest = s:match("^(%d%d%d%d)%-(%d%d)%-(%d%d)[Tt ](%d%d):(%d%d):(%d%d)(.*)$")
  if not y then return nil end
  local frac, zone = rest:match("^(%.%d+)(.*)$")
  if not frac then frac, zone = "", rest end
  local offset
  if zone == "Z" or zone == "z" then
    offset = 0
  else
    local sign, zh, zm = zone:match("^([+-])(%d%d):(%d%d)$")
    if not sign then return nil end
    offset = (tonumber(zh) * 3600 + tonumber(zm) * 60) * (sign == "-" and -1 or 1)
  end
  mo, d, h, mi, sec = tonumber(mo), tonumber(d), tonumber(h), tonumber(mi), tonumber(sec)
  if mo < 1 or mo > 12 or d < 1 or d > 31 or h > 23 or mi > 59 or sec > 60 then return nil end
  local t = days_from_civil(tonumber(y), mo, d) * 86400 + h * 3600 + mi * 60 + sec - offset
  return t + (frac ~= "" and tonumber("0" .. frac) or 0)
end

-- since -> Docker's "seconds.nanoseconds", or nil, message.
function M.since_param(since, now)
  if since == nil or since == "" then return nil end
  local t
  if type(since) == "number" then
    t = since
  elseif type(since) == "string" then
    if since:match("^%d+%.?%d*$") then
      t = tonumber(since)
    else
      t = M.parse_rfc3339(since)
      if not t then
        local ago = M.parse_duration(since)
        if ago then t = (now or core.walltime()) - ago end
      end
    end
  end
  -- before year 10000: beyond that (1e20, inf) Docker cannot parse it
  if not t or t ~= t or t < 0 or t >= 253402300800 then
    return nil, "since: expected an RFC 3339 time, Unix seconds or a duration such as \"10m\", got "
      .. string.format("%q", tostring(since))
  end
  local secs = math.floor(t)
  local nanos = math.floor((t - secs) * 1e9 + 0.5)
  if nanos >= 1000000000 then secs, nanos = secs + 1, nanos - 1000000000 end
  return string.format("%d.%09d", secs, nanos)
end

-- tail -> Docker's "all" or a count, or nil, message. 0 means all lines
-- (ctrlplane's LogOptions: Go sends 0 for "not set"), unlike Docker's own
-- tail=0; "none" asks for no old lines (`cpdocker logs --tail 0`, as docker).
function M.tail_param(tail)
  if tail == nil or tail == "" or tail == "all" then return "all" end
  if tail == "none" then return 0 end
  local n = math.tointeger(tonumber(tail))
  if not n or n < 0 then
    return nil, "tail: expected a number of lines >= 0 (0 means all), got " .. tostring(tail)
  end
  return n == 0 and "all" or n
end

-- Returns the query table for /containers/{id}/logs, or nil, message.
function M.query(opts)
  local since, err = M.since_param(opts.since)
  if err then return nil, err end
  local tail, terr = M.tail_param(opts.tail)
  if not tail then return nil, terr end
  if opts.follow ~= nil and type(opts.follow) ~= "boolean" then
    return nil, "follow: expected a boolean, got " .. type(opts.follow)
  end
  return {stdout = true, stderr = true, timestamps = true, follow = opts.follow == true,
    tail = tail, since = since}
end

-- ---- choosing containers -----------------------------------------------------

local function role_of(c)
  local r = c.Labels and c.Labels[project.LABEL.role]
  return (r == nil or r == "") and "main" or r
end

local function name_of(c)
  return c.Names and c.Names[1] and c.Names[1]:gsub("^/", "") or c.Id
end

-- Picks the containers to read; returns a list or nil, message, code.
function M.select(members, id, opts)
  local want = opts.service_name
  if want == "" then want = nil end
  local out, services = {}, {}
  for _, c in ipairs(members) do
    local s = project.service_of(c) or "?"
    services[s] = true
    if (want and s == want) or (not want and (opts.all or role_of(c) == "main")) then
      out[#out + 1] = c
    end
  end
  if #out == 0 then
    local names = util.sorted_keys(services)
    if want then
      return nil, string.format("service_name: instance %s has no service %q (services: %s)", id,
        want, #names > 0 and table.concat(names, ", ") or "none"), "not_found"
    end
    if #members > 0 then return M.select(members, id, {all = true}) end
    return nil, "instance " .. id .. " not found (no containers labelled "
      .. project.LABEL.project .. "=" .. project.name(id) .. ")", "not_found"
  end
  table.sort(out, function(a, b)
    local sa, sb = project.service_of(a) or "", project.service_of(b) or ""
    if sa ~= sb then return sa < sb end
    return name_of(a) < name_of(b)
  end)
  return out
end

-- ---- the event stream ----------------------------------------------------------

local LogStream = {}
LogStream.__index = LogStream
M.LogStream = LogStream

-- sources: {service, name, container, stream, demux, done, started_at,
-- waiting, next_check, unreachable_since, ended_at}
-- follow: nil, or {engine, instance_id, query, max_line} for re-attaching
-- ordered: merge the sources by time (streams that end: follow = false)
local function new_stream(client, sources, merged, follow, ordered)
  return setmetatable({client = client, sources = sources, merged = merged, queue = {},
    head = 1, turn = 0, follow = follow, ordered = ordered}, LogStream)
end

local function live_sources(self, want)
  local live = {}
  for _, src in ipairs(self.sources) do
    if not src.done and not src.waiting and (not want or want(src)) then
      live[#live + 1] = src
    end
  end
  return live
end

-- RFC 3339 text with nanoseconds -> Docker's "seconds.nanoseconds", exact.
function M.since_exact(ts)
  local date, frac = ts:match("^(%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d)%.?(%d*)Z$")
  if not date then return M.since_param(ts) end
  local whole = M.parse_rfc3339(date .. "Z")
  if not whole then return nil end
  return string.format("%d.%s", math.floor(whole), (frac .. "000000000"):sub(1, 9))
end

-- A followed source's stream ended (or broke): wait for its container.
function LogStream:_ended(src)
  if src.stream then src.stream:close() end
  src.stream = nil
  if not self.follow or not src.started_at then
    src.done = true -- not following, or it was not running when the follow began
    return
  end
  src.waiting = true
  src.ended_at = core.walltime()
  src.next_check = core.clock()
end

-- Attaches src to container c (an inspect document) from `since` (nil: all).
function LogStream:_attach(src, c, since)
  local f = self.follow
  local query = {}
  for k, v in pairs(f.query) do query[k] = v end
  query.since = since
  if since then query.tail = "all" end
  local stream, err, code = f.engine:stream("GET",
    "/containers/" .. engine.segment(c.Id) .. "/logs", query)
  if not stream then return nil, err, code end
  src.demux:close()
  src.demux = core.demux({timestamps = true, max_line = f.max_line})
  src.render_opts = nil
  src.stream, src.container, src.waiting = stream, c.Id, false
  src.started_at = c.State and c.State.StartedAt
  src.unreachable_since = nil
  return true
end

-- Where a waiting source stands: the container now under its name (a
-- fresh one when a deploy replaced it), "wait", "gone", or nil, message, code.
function LogStream:_locate(src)
  local f = self.follow
  local c, err, code = f.engine:get("/containers/" .. engine.segment(src.name) .. "/json")
  local labels = c and c.Config and c.Config.Labels or {}
  if c and labels[project.LABEL.project] == project.name(f.instance_id)
      and labels[project.LABEL.instance] == f.instance_id then
    if c.Id ~= src.container then c.fresh = true end
    return c
  end
  if c or code == "not_found" then
    -- nothing of ours under the name: mid-deploy (the old one renamed), or removed
    local list
    list, err, code = f.engine:get("/containers/json", {all = true,
      filters = engine.filters({label = {project.LABEL.project .. "=" .. project.name(f.instance_id),
        project.LABEL.service .. "=" .. src.service}})})
    if list then return #list == 0 and "gone" or "wait" end
  end
  return nil, err, code
end

-- Looks at the waiting sources whose time has come: re-attach, keep
-- waiting, or end. Returns true, or nil, message, code.
function LogStream:_revive()
  if not self.follow then return true end
  local now = core.clock()
  for _, src in ipairs(self.sources) do
    if src.waiting and not src.done and src.next_check <= now then
      local c, err, code = self:_locate(src)
      src.next_check = now + M.REATTACH_POLL
      if c == "gone" then
        src.done, src.waiting = true, false
      elseif type(c) == "table" and (c.fresh or (c.State and c.State.Running)) then
        -- a fresh container: all its lines. A restart: the lines after the
        -- old run ended (FinishedAt; not StartedAt, which the daemon sets
        -- after the program may have written its first lines).
        local since
        if not c.fresh then
          since = c.State.StartedAt ~= src.started_at and M.since_exact(c.State.FinishedAt)
            or string.format("%.9f", src.ended_at)
        end
        local ok
        ok, err, code = self:_attach(src, c, since)
        if not ok and code ~= "unreachable" and code ~= "not_found" then
          return nil, string.format("logs of %s: %s", src.name, err), code
        end
        src.unreachable_since = nil
      elseif c then
        src.unreachable_since = nil -- stopped, restarting, or mid-deploy: look again soon
      elseif code == "unreachable" or code == "timeout" then
        src.unreachable_since = src.unreachable_since or now
        if now - src.unreachable_since > M.REATTACH_GIVE_UP then
          return nil, string.format("logs of %s: %s", src.name, err), code
        end
        src.next_check = now + 1
      else
        return nil, string.format("logs of %s: %s", src.name, err), code
      end
    end
  end
  return true
end

-- Seconds until the next waiting source is due (nil: none waiting).
function LogStream:_next_check()
  local soonest
  for _, src in ipairs(self.sources) do
    if src.waiting and not src.done then
      soonest = math.min(soonest or math.huge, src.next_check)
    end
  end
  return soonest and math.max(0, soonest - core.clock())
end

-- Waits for sources with bytes (or an end) and hands each chunk to
-- consume(src, chunk) (chunk nil: the source ended). Only sources for which
-- want(src) is true are read, when want is given. Returns true, false
-- (timeout), nil (all ended) or nil, message, code.
function LogStream:_pull(timeout, consume, want)
  if self.failed then return nil, self.failed[1], self.failed[2] end
  local deadline = timeout and core.clock() + timeout
  while true do
    local ok, err, code = self:_revive()
    if not ok then
      self.failed = {err, code}
      self:close()
      return nil, err, code
    end
    local live = live_sources(self, want)
    local due = self:_next_check()
    if #live == 0 and not due then return nil end
    local slice = deadline and math.max(0, deadline - core.clock())
    if due then slice = slice and math.min(slice, due) or due end
    if #live == 0 then
      if not core.sleep(slice) then return nil, "interrupted", "interrupted" end
    else
      local got
      got, err, code = self:_pull_live(live, slice, consume)
      if got ~= false then return got, err, code end
    end
    if deadline and core.clock() >= deadline then return false end
  end
end

-- One round over the live sources: true (something consumed), false (no
-- data within timeout), or nil, message, code.
function LogStream:_pull_live(live, timeout, consume)
  local ready
  if #live == 1 then
    ready = {1}
  else
    local streams = {}
    for i, src in ipairs(live) do streams[i] = src.stream end
    local idx, err, code = self.client:wait(streams, timeout)
    if not idx then return nil, err, code end
    if #idx == 0 then return false end
    ready = idx
  end
  -- start with a different source each time so none is starved
  self.turn = self.turn % #ready + 1
  for k = 0, #ready - 1 do
    local src = live[ready[(self.turn - 1 + k) % #ready + 1]]
    local wait = 0 -- a source that wait() reported has its bytes already
    if #live == 1 then wait = timeout end
    local chunk, err, code = src.stream:read(wait)
    local broken = chunk == nil and err and self.follow and src.started_at
      and (code == "unreachable" or code == "protocol" or code == "timeout")
    if chunk == false then
      if #live == 1 then return false end
    elseif chunk == nil and err and not broken then
      self.failed = {string.format("logs of %s: %s", src.name, err), code}
      self:close()
      return nil, self.failed[1], code
    else
      local ok, e2, c2 = consume(src, chunk)
      if chunk == nil then self:_ended(src) end
      if not ok then
        self.failed = {string.format("logs of %s: %s", src.name, e2), c2}
        self:close()
        return nil, self.failed[1], c2
      end
    end
  end
  return true
end

-- Merging by time: each source has its own queue, and the earliest head
-- is given out once every source still open has one (or has ended).
function LogStream:_next_ordered(deadline)
  while true do
    local best, waiting = nil, false
    for _, src in ipairs(self.sources) do
      local q = src.queue
      if q and src.head <= #q then
        if not best or (q[src.head].ts or "") < (best.queue[best.head].ts or "") then best = src end
      elseif not src.done then
        waiting = true
      end
    end
    if best and not waiting then
      local ev = best.queue[best.head]
      best.queue[best.head] = nil
      best.head = best.head + 1
      return ev
    end
    if not best and not waiting then return nil end
    local left = deadline and math.max(0, deadline - core.clock())
    local ok, err, code = self:_pull(left, function(src, chunk)
      if not src.queue or src.head > #src.queue then src.queue, src.head = {}, 1 end
      local q = src.queue
      local start = #q + 1
      local events, e2, c2
      if chunk then
        events, e2, c2 = src.demux:feed(chunk, q)
      else
        events, e2, c2 = src.demux:finish(q)
      end
      if not events then return nil, e2, c2 end
      for i = start, #q do q[i].service = src.service end
      return true
    end, function(src) -- only the sources the merge waits for
      return not src.queue or src.head > #src.queue
    end)
    if not ok then return ok, err, code end
  end
end

-- The next event: a table | false (timeout) | nil (end) | nil, message, code.
-- timeout in seconds; nil waits as long as it takes.
function LogStream:next(timeout)
  local deadline = timeout and core.clock() + timeout
  if self.ordered then return self:_next_ordered(deadline) end
  while true do
    local q = self.queue
    if self.head <= #q then
      local ev = q[self.head]
      q[self.head] = nil
      self.head = self.head + 1
      return ev
    end
    self.queue, self.head = {}, 1
    local left = deadline and math.max(0, deadline - core.clock())
    local ok, err, code = self:_pull(left, function(src, chunk)
      local start = #self.queue + 1
      local events, e2, c2
      if chunk then
        events, e2, c2 = src.demux:feed(chunk, self.queue)
      else
        events, e2, c2 = src.demux:finish(self.queue)
      end
      if not events then return nil, e2, c2 end
      if self.merged then
        for i = start, #self.queue do self.queue[i].service = src.service end
      end
      return true
    end)
    if not ok then return ok, err, code end
  end
end

-- Every remaining event as a list (for streams that end: follow = false).
function LogStream:collect(timeout)
  local out = {}
  while true do
    local ev, err, code = self:next(timeout)
    if ev == nil and err then return nil, err, code, out end
    if ev == false then return nil, "timed out reading logs", "timeout", out end
    if ev == nil then return out end
    out[#out + 1] = ev
  end
end

-- Rendered text for a host that prints: out, err (strings, maybe empty) |
-- false (timeout) | nil (end) | nil, message, code. fmt: {json = bool,
-- timestamps = bool, prefix = fn(service) -> text before each line}.
function LogStream:read_text(fmt, timeout)
  fmt = fmt or {}
  local outs, errs = {}, {}
  local ok, err, code = self:_pull(timeout, function(src, chunk)
    local ro = src.render_opts
    if not ro then
      ro = {json = fmt.json, timestamps = fmt.timestamps,
        service = self.merged and src.service or nil,
        prefix = fmt.prefix and fmt.prefix(src.service) or nil}
      src.render_opts = ro
    end
    local o, e, c
    if chunk then
      o, e, c = src.demux:render(chunk, ro)
    else
      o, e, c = src.demux:render_finish(ro)
    end
    if not o then return nil, e, c end
    if o ~= "" then outs[#outs + 1] = o end
    if e ~= "" then errs[#errs + 1] = e end
    return true
  end)
  if not ok then return ok, err, code end
  return table.concat(outs), table.concat(errs)
end

-- The services being read, in order.
function LogStream:services()
  local out = {}
  for i, src in ipairs(self.sources) do out[i] = src.service end
  return out
end

function LogStream:close()
  for _, src in ipairs(self.sources) do
    if src.stream then src.stream:close() end
    src.demux:close()
    src.done, src.waiting = true, false
  end
end

LogStream.__close = LogStream.close
LogStream.__gc = LogStream.close

-- ---- the operation ------------------------------------------------------------------

local function logs(self, instance_id, opts)
  opts = opts or {}
  if type(opts) ~= "table" then error("logs: options must be a table", 2) end
  local ok, err = project.validate_id(instance_id)
  if not ok then return nil, err, "bad_request" end
  local svc = opts.service_name
  if svc ~= nil and svc ~= "" then
    if type(svc) ~= "string" or #svc > 63 or not svc:match(SERVICE_PATTERN) then
      return nil, "service_name: " .. string.format("%q", tostring(svc))
        .. " is not a valid service name (lower-case letters, digits and '-')", "bad_request"
    end
  end
  local query, qerr = M.query(opts)
  if not query then return nil, qerr, "bad_request" end
  local members, merr, mcode = project.members(self.engine, instance_id)
  if not members then return nil, merr, mcode end
  local chosen, serr, scode = M.select(members, instance_id, opts)
  if not chosen then return nil, serr, scode end
  local sources = {}
  for i, c in ipairs(chosen) do
    local service = project.service_of(c) or name_of(c)
    local stream, e2, c2 = self.engine:stream("GET", "/containers/" .. engine.segment(c.Id) .. "/logs",
      query)
    if not stream then
      for _, src in ipairs(sources) do
        src.stream:close()
        src.demux:close()
      end
      return nil, string.format("logs of %s: %s", name_of(c), e2), c2
    end
    -- mode "auto": with timestamps on, a TTY stream starts with a digit and a
    -- multiplexed one with a frame header, so no inspect round trip is needed
    sources[i] = {service = service, name = name_of(c), container = c.Id, stream = stream,
      demux = core.demux({timestamps = true, max_line = opts.max_line})}
  end
  local merged = #sources > 1
  local follow
  if query.follow then
    follow = {engine = self.engine, instance_id = instance_id, query = query,
      max_line = opts.max_line}
    -- when each one (re)started: a restart is told apart by a new StartedAt
    local calls = {}
    for i, src in ipairs(sources) do
      calls[i] = {path = "/containers/" .. engine.segment(src.container) .. "/json"}
    end
    for i, r in ipairs(self.engine:batch(calls)) do
      local st = r.value and r.value.State
      if st and st.Running then sources[i].started_at = st.StartedAt end
    end
  end
  return new_stream(self.engine.client, sources, merged, follow, merged and not opts.follow)
end

function M.install(docker)
  docker.Provider.logs = logs
  docker.register_capabilities({"logs"})
end

return M
