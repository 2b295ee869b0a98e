-- How an instance maps onto Docker (DESIGN §3): names, labels, and finding
-- the members of a project. The runtime only ever touches containers,
-- networks and volumes that carry the project label.
local engine = require("ctrlplane.docker.engine")

local project = {}

project.LABEL = {
  instance = "ctrlplane.instance",
  project = "ctrlplane.project",
  tenant = "ctrlplane.tenant",
  service = "ctrlplane.service",
  role = "ctrlplane.role",
  release = "ctrlplane.release",
  spec_hash = "ctrlplane.spec-hash",
  spec = "ctrlplane.spec",
  replica = "ctrlplane.replica",
  releases = "ctrlplane.releases",
  instance_spec = "ctrlplane.instance-spec",
}

project.ID_PATTERN = "^[A-Za-z0-9][A-Za-z0-9_-]*$"
project.ID_MAX = 64

-- Returns true, or nil and a message naming the field.
function project.validate_id(id, field)
  field = field or "instance_id"
  if type(id) ~= "string" then
    return nil, field .. ": expected a string, got " .. type(id)
  end
  if id == "" then return nil, field .. ": must not be empty" end
  if #id > project.ID_MAX then
    return nil, string.format("%s: at most %d characters (got %d)", field, project.ID_MAX, #id)
  end
  if not id:match(project.ID_PATTERN) then
    return nil, field .. ": \"" .. id .. "\" may contain only letters, digits, '_' and '-'"
      .. " and must start with a letter or digit"
  end
  return true
end

-- Docker names (DESIGN §8: no two different (instance, object) pairs map to
-- the same name). A name is "cp-" .. E(id) .. "-" .. object, where E doubles
-- every '-' of the id: E(id) then holds only even runs of '-', objects start
-- with a letter or digit, so the first odd run of '-' after "cp-" is the
-- separator and the name splits back into exactly one (id, object). An id
-- without '-' (Go's inst_01h455vb4pex5vsknk084sn02q) keeps Go's
-- cp-<id>-<service>. Without the escape, instance "S-y" volume "data" and
-- instance "S" volume "y-data" were the same volume cp-S-y-data.
-- Containers, networks and volumes are separate namespaces on the daemon;
-- within each, the objects are: services (a-z 0-9 '-'), replicas
-- "<service>_<n>" (a service has no '_'), deploy temporaries
-- "<service>[_<n>]_next_<stamp>" / "_retired_<stamp>", volumes
-- (a-z 0-9 '_' '.' '-'), per-replica volumes "<volume>.R<n>" and the
-- manifest's "Manifest.<generation>", and the one network "net".
local function escaped(id) return (id:gsub("%-", "--")) end

-- Label value ctrlplane.project (a label, not a name: compared whole).
function project.name(id) return "cp-" .. id end
function project.network_name(id) return "cp-" .. escaped(id) .. "-net" end
-- A replica's own volume (kind stateful_set) carries ".R<n>": volume names
-- are lowercase, so the "R" cannot come from one, and a volume literally
-- named "data-2" or "data_2" is never replica 2 of "data".
function project.volume_name(id, volume, replica)
  local base = "cp-" .. escaped(id) .. "-" .. volume
  if replica then return base .. ".R" .. replica end
  return base
end

-- The project's manifest (manifest.lua), one volume per generation:
-- "Manifest.<generation>" starts with an uppercase letter, which no volume
-- name (lowercase) has, so it is never a project volume's name.
function project.manifest_name(id, generation)
  return string.format("cp-%s-Manifest.%d", escaped(id), generation)
end

-- Replica 1 (or nil) is the plain name; further replicas get "_N" (a
-- service name cannot contain "_", so no other service's name can clash).
function project.container_name(id, service, replica)
  local base = "cp-" .. escaped(id) .. "-" .. service
  if replica and replica > 1 then return base .. "_" .. replica end
  return base
end

-- The key of replica n of a service inside one instance (events, ids maps,
-- messages): "web" for replica 1, "web_2" after it, as the container names.
function project.replica_key(service, replica)
  if replica and replica > 1 then return service .. "_" .. replica end
  return service
end

-- A deploy's temporary name for a container (kind "next" or "retired"):
-- "_" cannot appear in a service name, so no service's container can
-- carry it.
function project.temp_name(cname, kind, stamp)
  return string.format("%s_%s_%s", cname, kind, stamp)
end

function project.provider_ref(id) return "docker:cp-" .. id end

-- Lists the project's containers (all states), as /containers/json returns
-- them. Returns the list, or nil, message, code. opts: the request's
-- options (timeout).
-- Both labels must match (Docker ANDs label filters): a container is a
-- member only when labelled for this very instance.
function project.members(eng, id, opts)
  local call = project.members_call(id)
  return eng:get(call.path, call.query, opts)
end

-- The same listing as a call for Engine:batch.
function project.members_call(id)
  return {path = "/containers/json", query = {
    all = true,
    filters = engine.filters({label = {project.LABEL.project .. "=" .. project.name(id),
      project.LABEL.instance .. "=" .. id}}),
  }}
end

-- The service a listed container belongs to.
function project.service_of(c)
  return c.Labels and c.Labels[project.LABEL.service]
end

return project
