-- The Swarm service spec (POST /services/create, /services/{id}/update) that
-- one validated ServiceSpec becomes. Pure: no Docker.
--
--   init      a replicated-job (one completion); a failed job is not retried
--   main,     a replicated service, resources.replicas tasks spread over the
--   sidecar   nodes (placement preference spread node.id), restarted on any exit
-- Every service: the instance's labels (as containers carry them on one host,
-- release history included) on the service, the project labels on its task
-- containers (so a node's daemon can find them), the network cp-<id>-net with
-- the plain service name as alias, cpu/memory as resource limits, the health
-- check as the image's HEALTHCHECK (a task is running once it is healthy),
-- named volumes per node (labelled), the endpoint and publish modes of the
-- configuration.
local image = require("ctrlplane.docker.image")
local json = require("ctrlplane.docker.json")
local project = require("ctrlplane.docker.project")
local specbuild = require("ctrlplane.docker.specbuild")
local util = require("ctrlplane.docker.util")

local LABEL = project.LABEL
local M = {}

-- Labels on the service's containers (what a node's daemon filters by).
function M.container_labels(inst, svc)
  return {[LABEL.instance] = inst.instance_id, [LABEL.project] = project.name(inst.instance_id),
    [LABEL.tenant] = inst.tenant_id or "", [LABEL.service] = svc.name, [LABEL.role] = svc.role}
end

-- update settings: {parallelism, delay (s), monitor (s), order}
function M.update_config(u)
  return {Parallelism = u.parallelism or 1, Delay = util.nanos(u.delay or 0),
    FailureAction = "rollback", Monitor = util.nanos(u.monitor or 5), MaxFailureRatio = 0,
    Order = u.order or "start-first"}
end

-- cfg: the runtime's configuration; inst: instance_info(); svc: a validated
-- service; o: {release, history (JSON text), replicas, update = {...}}
function M.service_spec(cfg, inst, svc, o)
  o = o or {}
  local labels = {}
  for k, v in pairs(inst.labels or {}) do labels[k] = v end
  for k, v in pairs(svc.annotations or {}) do labels[k] = v end
  for k, v in pairs(M.container_labels(inst, svc)) do labels[k] = v end
  labels[LABEL.release] = o.release or ""
  labels[LABEL.spec] = json.encode(specbuild.stored_service(svc))
  labels[LABEL.instance_spec] = json.encode(inst)
  labels[LABEL.spec_hash] = specbuild.spec_hash(cfg, inst, svc)
  if o.history then labels[LABEL.releases] = o.history end

  local env = json.array({})
  for _, k in ipairs(util.sorted_keys(svc.env or {})) do env[#env + 1] = k .. "=" .. svc.env[k] end

  local mounts = json.array({})
  for _, v in ipairs(svc.volumes or {}) do
    if v.type == "ephemeral" then
      local m = {Type = "tmpfs", Target = v.mount_path}
      if v.size_mb and v.size_mb > 0 then m.TmpfsOptions = {SizeBytes = v.size_mb * 1048576} end
      mounts[#mounts + 1] = m
    else
      -- Swarm has no shared storage: each node that runs a task gets its own volume
      mounts[#mounts + 1] = {Type = "volume", Source = project.volume_name(inst.instance_id, v.name),
        Target = v.mount_path, VolumeOptions = {Labels = M.container_labels(inst, svc)}}
    end
  end

  local container = {
    Image = image.image_ref(cfg, svc.image),
    Env = env,
    Labels = M.container_labels(inst, svc),
    Mounts = mounts,
    StopGracePeriod = util.nanos(cfg.stop_timeout),
  }
  if svc.command and #svc.command > 0 then container.Command = svc.command end
  if svc.args and #svc.args > 0 then container.Args = svc.args end
  if svc.health_check then container.Healthcheck = specbuild.healthcheck(svc.health_check) end

  local res = svc.resources or {}
  local limits = json.object({})
  if res.cpu_millis and res.cpu_millis > 0 then limits.NanoCPUs = res.cpu_millis * 1000000 end
  if res.memory_mb and res.memory_mb > 0 then limits.MemoryBytes = res.memory_mb * 1048576 end

  local is_job = svc.role == "init"
  local task = {
    ContainerSpec = container,
    Resources = {Limits = limits},
    RestartPolicy = is_job and {Condition = "none"} or {Condition = "any", Delay = util.nanos(1)},
    Placement = {Preferences = {{Spread = {SpreadDescriptor = "node.id"}}}},
    Networks = {{Target = project.network_name(inst.instance_id), Aliases = {svc.name}}},
  }
  if cfg.network then
    task.Networks[2] = {Target = cfg.network}
  end

  local ports = json.array({})
  for _, p in ipairs(svc.ports or {}) do
    ports[#ports + 1] = {Protocol = p.protocol or "tcp", TargetPort = p.container,
      PublishedPort = p.host, PublishMode = cfg.publish_mode}
  end

  local spec = {
    Name = project.container_name(inst.instance_id, svc.name),
    Labels = labels,
    TaskTemplate = task,
    EndpointSpec = {Mode = cfg.endpoint_mode, Ports = ports},
  }
  if is_job then
    spec.Mode = {ReplicatedJob = {MaxConcurrent = 1, TotalCompletions = 1}}
  else
    local n = o.replicas or res.replicas or 1
    if n < 1 and not o.replicas then n = 1 end
    spec.Mode = {Replicated = {Replicas = n}}
    local u = o.update or {}
    spec.UpdateConfig = M.update_config(u)
    spec.RollbackConfig = {Parallelism = 0, FailureAction = "pause", Order = u.order or "start-first",
      Monitor = util.nanos(u.monitor or 5)}
  end
  return spec
end

-- The validated service a Swarm service was made from (its spec label).
function M.spec_of(service)
  local labels = service.Spec and service.Spec.Labels or {}
  local s = labels[LABEL.spec] and json.decode(labels[LABEL.spec]) or {}
  s.name = s.name or labels[LABEL.service]
  s.role = s.role or labels[LABEL.role] or "main"
  s.depends_on = s.depends_on or {}
  return s
end

function M.inst_of(service)
  local labels = service.Spec and service.Spec.Labels or {}
  local inst = labels[LABEL.instance_spec] and json.decode(labels[LABEL.instance_spec])
  return inst or {instance_id = labels[LABEL.instance], tenant_id = labels[LABEL.tenant] or "",
    labels = json.object({})}
end

return M
