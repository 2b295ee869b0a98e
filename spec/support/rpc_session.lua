-- Drives `cpdocker serve` as a control plane would: requests written to its
-- stdin (a fifo, kept open), replies and notifications read from its stdout.
local json = require("ctrlplane.docker.json")
local helper = require("support.helper")

local Session = {}
Session.__index = Session

local M = {}

-- env: optional settings for the server, {NAME = value}
function M.start(args, env)
  local dir = (helper.sh("mktemp -d")):gsub("%s+$", "")
  assert(os.execute("mkfifo " .. dir .. "/in"))
  local vars = {}
  for k, v in pairs(env or {}) do vars[#vars + 1] = k .. "='" .. tostring(v) .. "'" end
  assert(os.execute(string.format("%s./cpdocker serve %s < %s/in > %s/out 2> %s/err & echo $! > %s/pid",
    #vars > 0 and ("env " .. table.concat(vars, " ") .. " ") or "", args or "", dir, dir, dir, dir)))
  local s = setmetatable({dir = dir, buf = "", msgs = {}, next_id = 0,
    lines = setmetatable({}, {__mode = "k"})}, Session)
  s.w = assert(io.open(dir .. "/in", "w")) -- blocks until the server opens its end
  for _ = 1, 100 do
    s.r = io.open(dir .. "/out", "r")
    if s.r then break end
    helper.sleep(0.02)
  end
  assert(s.r, "the server's output did not appear")
  s.pid = assert(io.open(dir .. "/pid")):read("l")
  return s
end

-- Writes raw text (a line is added).
function Session:raw(text)
  self.w:write(text, "\n")
  self.w:flush()
end

-- Sends a request; returns its id.
function Session:send(method, params)
  self.next_id = self.next_id + 1
  self:raw(json.encode({jsonrpc = "2.0", id = self.next_id, method = method, params = params}))
  return self.next_id
end

function Session:poll()
  local chunk = self.r:read("a")
  if chunk and #chunk > 0 then
    self.buf = self.buf .. chunk
    while true do
      local nl = self.buf:find("\n", 1, true)
      if not nl then break end
      local line = self.buf:sub(1, nl - 1)
      self.buf = self.buf:sub(nl + 1)
      local msg = assert(json.decode(line), "server wrote a line that is not JSON: " .. line)
      self.msgs[#self.msgs + 1] = msg
      if type(msg) == "table" then self.lines[msg] = line end
    end
  end
end

-- Waits (bounded) for the first message matching pred and removes it.
function Session:expect(pred, timeout)
  local deadline = helper.clock() + (timeout or 30)
  while true do
    self:poll()
    for i, m in ipairs(self.msgs) do
      if pred(m) then
        table.remove(self.msgs, i)
        return m
      end
    end
    if helper.clock() > deadline then
      error("no matching message from the server within the timeout; stderr: "
        .. (io.open(self.dir .. "/err"):read("a") or ""), 2)
    end
    helper.sleep(0.02)
  end
end

-- The exact line the server wrote for a message (for checks on the JSON
-- text itself, such as integer literals).
function Session:raw_line(msg)
  return self.lines[msg]
end

function Session:reply(id, timeout)
  return self:expect(function(m) return m.id == id end, timeout)
end

-- Sends and waits for the answer.
function Session:call(method, params, timeout)
  return self:reply(self:send(method, params), timeout)
end

-- Closes stdin and waits (bounded) for the server to exit; returns whether it did.
function Session:close()
  self.w:close()
  for _ = 1, 100 do
    local _, rc = helper.sh("kill -0 " .. self.pid .. " 2>/dev/null")
    if rc ~= 0 then
      self.r:close()
      helper.sh("rm -rf " .. self.dir)
      return true
    end
    helper.sleep(0.05)
  end
  helper.sh("kill " .. self.pid)
  return false
end

return M
