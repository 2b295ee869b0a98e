-- The project's manifest: which services an instance should have, with
-- their role and number of replicas, kept on the engine so that status can
-- tell a container removed behind the runtime's back (a hole) from one the
-- runtime removed itself (a scale-down, a service dropped by a re-provision).
--
-- Docker labels cannot change, so the manifest is a labelled volume that is
-- never mounted, one per generation: `cp-<id>-Manifest.<generation>`
-- (project.manifest_name: no project volume's name starts with an
-- uppercase letter, so it cannot clash with one). Writing creates the next generation, then removes the
-- older ones; a reader takes the newest, so a process killed between the two
-- leaves a correct manifest. Deprovision removes it with the project's other
-- volumes (it carries the project label).
--
--   manifest.read(eng, id)               -> {services = {name -> {role, replicas}}}
--                                           | false (none) | nil, message, code
--   manifest.write(eng, inst, services)  -> true | nil, message, code
--   manifest.of_specs(specs)             -> services table from service specs
local core = require("ctrlplane.docker.core")
local engine = require("ctrlplane.docker.engine")
local json = require("ctrlplane.docker.json")
local project = require("ctrlplane.docker.project")

local LABEL = project.LABEL
local seg = engine.segment

local manifest = {}

manifest.LABEL = "ctrlplane.manifest"
manifest.GENERATION = "ctrlplane.generation"

manifest.volume_name = project.manifest_name

-- The manifest volumes of a project, newest first.
local function list(eng, id)
  local res, err, code = eng:get("/volumes", {filters = engine.filters({label = {
    LABEL.project .. "=" .. project.name(id), manifest.LABEL}})})
  if not res then return nil, "reading the manifest of " .. id .. ": " .. err, code end
  local out = {}
  for _, v in ipairs(res.Volumes or {}) do
    local labels = v.Labels or {}
    -- only this instance's (the project label is derived from the id)
    if labels[LABEL.instance] == id then
      out[#out + 1] = {name = v.Name, generation = tonumber(labels[manifest.GENERATION]) or 0,
        text = labels[manifest.LABEL]}
    end
  end
  table.sort(out, function(a, b) return a.generation > b.generation end)
  return out
end

function manifest.read(eng, id)
  local vols, err, code = list(eng, id)
  if not vols then return nil, err, code end
  local m = vols[1] and json.decode(vols[1].text or "")
  if type(m) ~= "table" or type(m.services) ~= "table" then return false end
  return m
end

function manifest.of_specs(specs)
  local services = {}
  for _, s in ipairs(specs) do
    local n = s.role ~= "init" and (s.resources or {}).replicas or 1
    if not n or n < 1 then n = 1 end
    services[s.name] = {role = s.role or "main", replicas = n}
  end
  return services
end

function manifest.write(eng, inst, services)
  local id = inst.instance_id
  local vols, err, code = list(eng, id)
  if not vols then return nil, err, code end
  local generation = math.floor(core.walltime() * 1000)
  if vols[1] and vols[1].generation >= generation then generation = vols[1].generation + 1 end
  local name = manifest.volume_name(id, generation)
  local created
  created, err, code = eng:post("/volumes/create", nil, {Name = name, Labels = {
    [LABEL.instance] = id, [LABEL.project] = project.name(id), [LABEL.tenant] = inst.tenant_id or "",
    [manifest.GENERATION] = tostring(generation),
    [manifest.LABEL] = json.encode({services = services})}})
  if not created then return nil, "recording the manifest of " .. id .. ": " .. err, code end
  local calls = {}
  for _, v in ipairs(vols) do
    calls[#calls + 1] = {method = "DELETE", path = "/volumes/" .. seg(v.name)}
  end
  eng:batch(calls) -- an old generation left behind is harmless: the newest wins
  return true
end

return manifest
