-- Shared helpers for the specs. Integration specs call helper.daemon() in
-- their setup: with no Docker daemon the suite fails loudly, never passes
-- silently.
local core = require("ctrlplane.docker.core")

local helper = {}

helper.SOCKET = "unix:///var/run/docker.sock"
helper.IMAGE1 = "cpdocker-test/busybox:1"
helper.IMAGE2 = "cpdocker-test/busybox:2"

function helper.client(opts)
  opts = opts or {}
  opts.host = opts.host or helper.SOCKET
  return assert(core.client(opts))
end

-- Asserts that the daemon answers; returns a client.
function helper.daemon()
  local c = helper.client()
  local res, err = c:request("GET", "/_ping", {raw = true})
  assert(res and res.status == 200, "integration specs need a running Docker daemon at "
    .. helper.SOCKET .. " (run `make setup`): " .. tostring(err))
  return c
end

local counter = 0
-- A unique, valid instance id for one spec.
function helper.instance_id(tag)
  counter = counter + 1
  return string.format("inst_%s%x%x%d", tag or "t", os.time(), math.random(0, 0xfffff), counter)
end

-- Runs a shell command, returns its stdout, exit code.
function helper.sh(cmd)
  local f = assert(io.popen(cmd .. "; echo \"__rc=$?\"", "r"))
  local out = f:read("a")
  f:close()
  local body, rc = out:match("^(.*)__rc=(%d+)%s*$")
  return body, tonumber(rc)
end

function helper.cpdocker(args)
  return helper.sh("./cpdocker " .. args .. " 2>&1")
end

function helper.sleep(s)
  core.sleep(s)
end

function helper.clock()
  return core.clock()
end

return helper
