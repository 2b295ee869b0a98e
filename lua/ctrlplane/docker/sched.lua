-- The scheduler: many operations at once in one Lua state (DESIGN §11).
--
-- Each operation runs as a coroutine (a task). The C core's blocking calls
-- (client:request, :batch, :stream, stream:read, client:wait, core.sleep,
-- core.wait_fd) yield to this scheduler instead of waiting when they run in
-- a task; the scheduler's loop drives every transfer of the clients the
-- tasks wait on through one curl multi poll (core.loop_step) and resumes a
-- task when its client made progress, its deadline passed or its fd is
-- ready. Operation code and policy scripts stay plain sequential Lua.
--
--   local s = sched.new({max_inflight = 32, max_queued = 256})
--   local task, err, code = s:spawn(fn, {key = "inst_1", on_done = cb, ...}, args...)
--   s:cancel(task, "cancelled", "cancelled by the client")
--   s:step(max_wait)             -- one turn of the loop
--   s:run(function() return done end)
--
-- Ordering: tasks with the same key run one after another in spawn order;
-- different keys interleave. At most max_inflight tasks with a key or
-- `limited` run at once; the rest wait in arrival order, and spawn fails
-- with code "busy" when max_queued are already waiting. on_done(task, ok,
-- ...) gets the function's results, or false and the error (with a
-- traceback) when it raised: a crashing task takes no other with it.
--
-- Cancel: a task waiting in the queue ends at once (on_done(task, false,
-- message, code)); a running one is resumed at its current wait with
-- "cancel", which makes that call fail (nil, message, code) — the
-- operation then unwinds and cleans up as on any failure. Its later
-- transfers still run (the cleanup needs them), sleeps and lock waits end
-- at once, and after cancel_grace seconds every wait fails.
local core = require("ctrlplane.docker.core")

local M = {}

M.DEFAULT_MAX_INFLIGHT = 32
M.DEFAULT_MAX_QUEUED = 256
M.CANCEL_GRACE = 30

local Sched = {}
Sched.__index = Sched

function M.new(opts)
  opts = opts or {}
  return setmetatable({
    max_inflight = opts.max_inflight or M.DEFAULT_MAX_INFLIGHT,
    max_queued = opts.max_queued or M.DEFAULT_MAX_QUEUED,
    cancel_grace = opts.cancel_grace or M.CANCEL_GRACE,
    before_wait = opts.before_wait, -- called before each wait of the loop (flush output)
    running = {},     -- task -> true (started, not finished)
    inflight = 0,     -- running tasks that count against max_inflight
    pending = {},     -- FIFO of limited tasks waiting for a slot
    queued = 0,       -- tasks not started (pending or behind their key)
    keys = {},        -- key -> FIFO of tasks (head is running or pending)
    ready = {},       -- tasks to resume now: {task, args...}
    deadlines = {},   -- task -> absolute core.clock() deadline
    next_id = 0,
  }, Sched)
end

-- Whether the caller runs inside a scheduler task.
function M.in_task()
  return core.in_task()
end

local function fifo_push(q, v)
  q.tail = (q.tail or 0) + 1
  q.head = q.head or 1
  q[q.tail] = v
end

local function fifo_peek(q)
  while q.head and q.head <= q.tail do
    local v = q[q.head]
    if v and not v.finished then return v end
    q[q.head] = nil
    q.head = q.head + 1
  end
  return nil
end

local function fifo_pop(q)
  local v = fifo_peek(q)
  if v then
    q[q.head] = nil
    q.head = q.head + 1
  end
  return v
end

local function fifo_empty(q) return fifo_peek(q) == nil end

-- Starts the task: it becomes runnable at the next step.
function Sched:_start(task)
  task.state = "running"
  task.started_at = core.clock()
  self.queued = self.queued - 1
  self.running[task] = true
  if task.limited then self.inflight = self.inflight + 1 end
  self.ready[#self.ready + 1] = {task}
end

-- A task may start when it heads its key's queue and, when limited, a
-- slot is free (or it waits in pending, in arrival order).
function Sched:_admit(task)
  if task.key and fifo_peek(self.keys[task.key]) ~= task then return end
  if task.limited then
    if self.inflight >= self.max_inflight then
      if not task.in_pending then
        task.in_pending = true
        fifo_push(self.pending, task)
      end
      return
    end
  end
  self:_start(task)
end

-- Spawns fn(...) as a task. opts: key (same key: one after another),
-- limited (counts against max_inflight; default: true when key is given),
-- on_done(task, ok, ...), name, deadline (seconds from now: then the task is
-- cancelled with code "deadline", queued or running). Returns the task, or nil, message, "busy".
function Sched:spawn(fn, opts, ...)
  opts = opts or {}
  local limited = opts.limited
  if limited == nil then limited = opts.key ~= nil end
  local would_wait = (opts.key and self.keys[opts.key] and not fifo_empty(self.keys[opts.key]))
    or (limited and self.inflight >= self.max_inflight)
  if would_wait and self.queued >= self.max_queued then
    return nil, string.format("server busy: %d operations running and %d queued (the maximum)",
      self.inflight, self.queued), "busy"
  end
  self.next_id = self.next_id + 1
  local task = {id = self.next_id, key = opts.key, limited = limited, name = opts.name,
    on_done = opts.on_done, state = "queued", args = table.pack(...), created_at = core.clock()}
  task.co = coroutine.create(function(...) return fn(...) end)
  core.task_mark(task.co, true)
  if opts.deadline then
    task.deadline = core.clock() + opts.deadline
    self.deadlines[task] = task.deadline
  end
  self.queued = self.queued + 1
  if task.key then
    self.keys[task.key] = self.keys[task.key] or {}
    fifo_push(self.keys[task.key], task)
  end
  self:_admit(task)
  return task
end

function Sched:_finish(task, ...)
  if task.finished then return end
  task.finished = true
  task.wait = nil
  local was = task.state
  task.state = "done"
  if was == "queued" then
    self.queued = self.queued - 1
  else
    self.running[task] = nil
    if task.limited then self.inflight = self.inflight - 1 end
  end
  self.deadlines[task] = nil
  -- closes what the task left open (its <close> variables: locks, streams)
  if coroutine.status(task.co) ~= "running" then coroutine.close(task.co) end
  if task.on_done then
    local ok, err = pcall(task.on_done, task, ...)
    if not ok then io.stderr:write("cpdocker: on_done failed: ", tostring(err), "\n") end
  end
  -- the next task of this key, then whoever waits for a slot
  if task.key then
    local q = self.keys[task.key]
    local nxt = q and fifo_peek(q)
    if not nxt then
      self.keys[task.key] = nil
    elseif nxt.state == "queued" then
      self:_admit(nxt)
    end
  end
  while self.inflight < self.max_inflight do
    local p = fifo_pop(self.pending)
    if not p then break end
    p.in_pending = false
    if p.state == "queued" then self:_start(p) end
  end
end

-- Cancels a task: see the top of this file. code: "cancelled" or
-- "deadline"; message for the failure. Returns true when it was live.
function Sched:cancel(task, code, message)
  if task.finished then return false end
  code = code or "cancelled"
  message = message or "cancelled"
  if task.state == "queued" then
    if task.key then
      local q = self.keys[task.key]
      -- drop it from its key queue: the head moves on when it finishes
      task.finished_in_queue = true
      if q then
        for i = q.head or 1, q.tail or 0 do
          if q[i] == task then q[i] = {finished = true} end
        end
      end
    end
    self:_finish(task, false, message, code)
    return true
  end
  if task.cancel then return true end
  task.cancel = {code = code, message = message, at = core.clock()}
  if task.wait then -- delivered now; else at the task's next wait
    task.wait = nil
    task.cancel.delivered = true
    self.ready[#self.ready + 1] = {task, "cancel", code, message}
  end
  return true
end

local TRACE = tonumber(os.getenv("CP_SCHED_TRACE") or "")

function Sched:_resume(task, ...)
  local t0 = TRACE and core.clock()
  local r = table.pack(coroutine.resume(task.co, ...))
  if TRACE and core.clock() - t0 > TRACE then
    io.stderr:write(string.format("sched: task %s (%s) ran %.1f ms without waiting\n%s\n",
      task.id, tostring(task.name), (core.clock() - t0) * 1000,
      debug.traceback(task.co, "", 0)))
  end
  if not r[1] then
    local tb = debug.traceback(task.co, tostring(r[2]))
    return self:_finish(task, false, tb, "internal")
  end
  if coroutine.status(task.co) == "dead" then
    return self:_finish(task, true, table.unpack(r, 2, r.n))
  end
  if r[2] ~= core.WAIT then
    return self:_finish(task, false, "operation yielded outside a wait", "internal")
  end
  local w = {client = r[3], deadline = r[4], fd = r[5], events = r[6], obj = r[7], mode = r[8]}
  if w.client then w.seen = w.client:events() end
  task.wait = w
  local c = task.cancel
  if c then
    -- the first wait after a cancel fails; after it sleeps and fd waits
    -- end at once, and transfers run during the grace (the cleanup)
    if not c.delivered or not w.client or core.clock() - c.at > self.cancel_grace then
      c.delivered = true
      task.wait = nil
      self.ready[#self.ready + 1] = {task, "cancel", c.code, c.message}
    end
  end
end

-- Tasks started (running or waiting) and queued.
function Sched:counts()
  local n = 0
  for _ in pairs(self.running) do n = n + 1 end
  return {running = n, inflight = self.inflight, queued = self.queued}
end

function Sched:idle()
  return next(self.running) == nil and self.queued == 0 and #self.ready == 0
end

-- One turn: resumes the runnable tasks, then drives the event loop for up
-- to max_wait seconds (less when a task's deadline comes first) and
-- resumes the tasks whose wait is over.
function Sched:step(max_wait)
  local guard = 0
  while #self.ready > 0 and guard < 10000 do
    local batch = self.ready
    self.ready = {}
    for _, r in ipairs(batch) do
      local task = r[1]
      if not task.finished then
        if task.state == "running" and not task.resumed_once then
          task.resumed_once = true
          self:_resume(task, table.unpack(task.args, 1, task.args.n))
        else
          self:_resume(task, table.unpack(r, 2))
        end
      end
      guard = guard + 1
    end
  end
  -- what to wait for
  local clients, cset, fds = {}, {}, {}
  local now = core.clock()
  local wait = max_wait or 1
  for task in pairs(self.running) do
    local w = task.wait
    if w then
      if w.client and not cset[w.client] then
        cset[w.client] = true
        clients[#clients + 1] = w.client
      end
      if w.fd then
        local ev = w.events
        local cur = fds[w.fd]
        local want = (ev & 1 ~= 0 and "r" or "") .. (ev & 4 ~= 0 and "w" or "")
        if want == "" then want = "r" end
        fds[w.fd] = cur and cur ~= want and "rw" or want
      end
      if w.deadline then wait = math.min(wait, math.max(0, w.deadline - now)) end
    end
  end
  for task, d in pairs(self.deadlines) do
    if now >= d then
      self.deadlines[task] = nil
      self:cancel(task, "deadline", string.format("deadline exceeded (%.0f ms after the request)",
        (d - task.created_at) * 1000))
    else
      wait = math.min(wait, d - now)
    end
  end
  if #self.ready > 0 then wait = 0 end
  local any_wait = #clients > 0 or next(fds) ~= nil or next(self.deadlines) ~= nil
  for task in pairs(self.running) do
    if task.wait and task.wait.deadline then any_wait = true end
  end
  if not any_wait then return true end -- nothing to wait for: do not sleep
  if self.before_wait then self.before_wait() end
  local readyfd, err = core.loop_step(clients, wait, fds)
  if not readyfd then return nil, err end
  now = core.clock()
  for task in pairs(self.running) do
    local w = task.wait
    if w then
      -- a transfer wait is over when its client made progress and (when
      -- the task said which transfers) those are ready: no resume for
      -- progress of other tasks' transfers
      local go = (w.deadline and now >= w.deadline)
        or (w.fd and readyfd[w.fd])
        or (w.client and w.client:events() ~= w.seen
          and (w.obj == nil or core.wait_ready(w.obj, w.mode)))
      if not go and task.cancel and now - task.cancel.at > self.cancel_grace then
        task.wait = nil
        self.ready[#self.ready + 1] = {task, "cancel", task.cancel.code, task.cancel.message}
      elseif go then
        task.wait = nil
        self.ready[#self.ready + 1] = {task}
      end
    end
  end
  return true
end

-- Runs until done() is true (checked after each step) or nothing is left.
function Sched:run(done, max_wait)
  while not (done and done()) do
    if self:idle() and not done then return true end
    local ok, err = self:step(max_wait)
    if not ok then return nil, err end
    if core.interrupted() then return nil, "interrupted" end
  end
  return true
end

return M
