-- The swarm backend without a daemon: its configuration and the service
-- specs a ServiceSpec becomes (table rows: input -> what Swarm is asked for).
local config = require("ctrlplane.docker.config")
local cluster = require("ctrlplane.docker.swarm.cluster")
local sspec = require("ctrlplane.docker.swarm.spec")
local validate = require("ctrlplane.docker.validate")

local function env(t) return function(k) return t[k] end end

describe("swarm configuration", function()
  it("defaults to the engine backend, dnsrr endpoints and host-mode publishing", function()
    local cfg = assert(config.resolve({}, env({})))
    assert.equal("engine", cfg.backend)
    assert.equal("dnsrr", cfg.endpoint_mode)
    assert.equal("host", cfg.publish_mode)
    assert.same({}, cfg.nodes)
  end)

  it("reads CP_DOCKER_BACKEND and CP_DOCKER_NODES", function()
    local cfg = assert(config.resolve({}, env({CP_DOCKER_BACKEND = "swarm",
      CP_DOCKER_NODES = "n1=unix:///a.sock, n2=tcp://10.0.0.2:2376"})))
    assert.equal("swarm", cfg.backend)
    assert.same({n1 = "unix:///a.sock", n2 = "tcp://10.0.0.2:2376"}, cfg.nodes)
  end)

  local bad = {
    {{backend = "k8s"}, "^backend: must be engine or swarm"},
    {{nodes = "n1"}, "^nodes: \"n1\" is not name=URL"},
    {{nodes = "n1=ftp://x"}, "^nodes: n1: invalid Docker host"},
    {{endpoint_mode = "ipvs"}, "^endpoint_mode: must be dnsrr or vip"},
    {{publish_mode = "mesh"}, "^publish_mode: must be host or ingress"},
  }
  for _, row in ipairs(bad) do
    it("rejects " .. next(row[1]) .. " naming the field", function()
      local cfg, err = config.resolve(row[1], env({}))
      assert.is_nil(cfg)
      assert.matches(row[2], err)
    end)
  end

  it("says which modes need IPVS", function()
    assert.is_nil(cluster.mode_warning({endpoint_mode = "dnsrr", publish_mode = "host"}))
    assert.matches("^endpoint mode vip and publish mode ingress need IPVS",
      cluster.mode_warning({endpoint_mode = "vip", publish_mode = "ingress"}))
  end)
end)

describe("swarm service spec", function()
  local cfg = assert(config.resolve({stop_timeout = 2}, env({})))
  local inst = {instance_id = "inst_1", tenant_id = "ten", name = "n", kind = "deployment",
    labels = {["example.com/a"] = "b"}}
  local req = assert(validate.provision({instance_id = "inst_1", services = {
    {name = "setup", role = "init", image = "img:1", command = {"sh", "-c", "true"},
      volumes = {{name = "data", mount_path = "/data"}}},
    {name = "web", image = "img:1", depends_on = {"setup"}, env = {B = "2", A = "1"},
      ports = {{container = 8080}},
      resources = {cpu_millis = 250, memory_mb = 64, replicas = 3},
      health_check = {path = "/", port = 8080}},
    {name = "dns", role = "sidecar", image = "img:1",
      ports = {{container = 53, host = 5353, protocol = "udp"}}},
  }}))
  local job = sspec.service_spec(cfg, inst, req.services[1], {release = "initial"})
  local web = sspec.service_spec(cfg, inst, req.services[2], {release = "r1",
    update = {order = "stop-first", monitor = 3}})
  local dns = sspec.service_spec(cfg, inst, req.services[3], {})

  it("names services cp-<id>-<service> on the instance's network, alias the plain name", function()
    assert.equal("cp-inst_1-web", web.Name)
    assert.same({{Target = "cp-inst_1-net", Aliases = {"web"}}}, web.TaskTemplate.Networks)
  end)

  it("runs an init as a replicated-job of one completion, never retried", function()
    assert.same({ReplicatedJob = {MaxConcurrent = 1, TotalCompletions = 1}}, job.Mode)
    assert.equal("none", job.TaskTemplate.RestartPolicy.Condition)
    assert.is_nil(job.UpdateConfig)
  end)

  it("spreads replicas over nodes, with limits, health check and sorted env", function()
    assert.same({Replicated = {Replicas = 3}}, web.Mode)
    assert.same({{Spread = {SpreadDescriptor = "node.id"}}}, web.TaskTemplate.Placement.Preferences)
    assert.same({NanoCPUs = 250000000, MemoryBytes = 64 * 1048576}, web.TaskTemplate.Resources.Limits)
    assert.same({"A=1", "B=2"}, web.TaskTemplate.ContainerSpec.Env)
    assert.equal("CMD", web.TaskTemplate.ContainerSpec.Healthcheck.Test[1])
    assert.equal(2000000000, web.TaskTemplate.ContainerSpec.StopGracePeriod)
  end)

  it("publishes by the configured modes, fixed host ports kept", function()
    assert.equal("dnsrr", web.EndpointSpec.Mode)
    assert.same({Protocol = "tcp", TargetPort = 8080, PublishMode = "host"}, web.EndpointSpec.Ports[1])
    assert.same({Protocol = "udp", TargetPort = 53, PublishedPort = 5353, PublishMode = "host"},
      dns.EndpointSpec.Ports[1])
    assert.same({Replicated = {Replicas = 1}}, dns.Mode)
  end)

  it("updates natively: order and monitor from the rollout, failure rolls back", function()
    assert.equal("stop-first", web.UpdateConfig.Order)
    assert.equal("rollback", web.UpdateConfig.FailureAction)
    assert.equal(3000000000, web.UpdateConfig.Monitor)
  end)

  it("labels the service like a container on one host, and its containers with the project", function()
    assert.equal("inst_1", web.Labels["ctrlplane.instance"])
    assert.equal("cp-inst_1", web.Labels["ctrlplane.project"])
    assert.equal("r1", web.Labels["ctrlplane.release"])
    assert.equal("b", web.Labels["example.com/a"])
    assert.equal("web", sspec.spec_of({Spec = web}).name)
    assert.equal("cp-inst_1", web.TaskTemplate.ContainerSpec.Labels["ctrlplane.project"])
    assert.equal("web", web.TaskTemplate.ContainerSpec.Labels["ctrlplane.service"])
    -- volumes per node, labelled so deprovision finds them on every node
    local m = job.TaskTemplate.ContainerSpec.Mounts[1]
    assert.equal("cp-inst_1-data", m.Source)
    assert.equal("cp-inst_1", m.VolumeOptions.Labels["ctrlplane.project"])
  end)
end)
