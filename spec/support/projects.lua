-- Builders of ProvisionRequests for the integration specs, and checks on
-- what exists on the engine.
local docker = require("ctrlplane.docker")
local json = require("ctrlplane.docker.json")
local helper = require("support.helper")

local projects = {}

-- Commands that stop at once on SIGTERM (busybox as PID 1 ignores it).
projects.WEB_CMD = {"sh", "-c", "trap 'exit 0' TERM; httpd -f -p 8080 -h /www & wait"}
projects.IDLE_CMD = {"sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1 & wait $!; done"}

function projects.provider(opts)
  opts = opts or {}
  if opts.stop_timeout == nil then opts.stop_timeout = 2 end
  if opts.ready_timeout == nil then opts.ready_timeout = 20 end
  return assert(docker.new(opts))
end

-- init (writes to the shared volume), web (main, published port), sidecar
function projects.three(id, image)
  image = image or helper.IMAGE1
  return {
    instance_id = id,
    tenant_id = "ten_spec",
    name = "spec project",
    labels = {["example.com/suite"] = "lifecycle"},
    services = {
      {name = "setup", role = "init", image = image,
        command = {"sh", "-c", "sleep 0.2; date +%s > /data/init-ran; echo init done"},
        volumes = {{name = "data", mount_path = "/data"}}},
      {name = "web", role = "main", image = image, depends_on = {"setup"},
        command = projects.WEB_CMD, env = {GREETING = "hello"},
        ports = {{container = 8080}},
        volumes = {{name = "data", mount_path = "/data"}},
        resources = {cpu_millis = 250, memory_mb = 32},
        annotations = {["example.com/owner"] = "web-team"}},
      {name = "side", role = "sidecar", image = image, depends_on = {"web"},
        command = projects.IDLE_CMD},
    },
  }
end

-- Containers, networks and volumes carrying the instance's project label.
function projects.leftovers(id)
  local c = helper.client()
  local filter = json.encode({label = {"ctrlplane.project=cp-" .. id}})
  local out = {}
  for _, what in ipairs({"/containers/json", "/networks", "/volumes"}) do
    local res = assert(c:request("GET", what, {query = {filters = filter, all = true}}))
    local v = json.decode(res.body)
    if what == "/volumes" then v = v.Volumes or {} end
    for _, item in ipairs(v) do out[#out + 1] = what .. ":" .. (item.Id or item.Name) end
  end
  c:close()
  return out
end

function projects.inspect(name_or_id)
  local c = helper.client()
  local res, err = c:request("GET", "/containers/" .. name_or_id .. "/json")
  c:close()
  if not res then return nil, err end
  return json.decode(res.body)
end

-- GET over 127.0.0.1 on a published port; returns the body or nil, err.
-- A server without a health check may still be starting when its container
-- runs: retry for a few seconds (bounded).
function projects.fetch(port, path)
  local c = helper.client({host = "tcp://127.0.0.1:" .. port, connect_timeout = 2, timeout = 5})
  local res, err
  for _ = 1, 25 do
    res, err = c:request("GET", path or "/", {raw = true})
    if res then break end
    helper.sleep(0.2)
  end
  c:close()
  if not res then return nil, err end
  return res.body
end

function projects.public_port(result, service)
  for _, e in ipairs(result.endpoints) do
    if e.public and e.service_name == service then return e.port end
  end
end

-- A provider for one spec file and the instance ids it hands out, every one
-- deprovisioned at the end:
--   local session = projects.session()
--   setup(function() p = session.start() end)
--   teardown(session.finish)
--   local id = session.new_id("tag")
function projects.session(opts)
  local s = {ids = {}}
  function s.start()
    helper.daemon()
    s.p = projects.provider(opts)
    return s.p
  end
  function s.new_id(tag)
    local id = helper.instance_id(tag)
    s.ids[#s.ids + 1] = id
    return id
  end
  function s.finish()
    if not s.p then return end
    for _, id in ipairs(s.ids) do s.p:deprovision(id) end
    s.p:close()
  end
  return s
end

function projects.cleanup(p, id)
  local ok, err = p:deprovision(id)
  assert(ok, err)
end

return projects
