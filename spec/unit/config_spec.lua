local config = require("ctrlplane.docker.config")

local function env(t)
  return function(k) return t[k] end
end

describe("config.resolve", function()
  it("defaults to the local socket and loopback publishing", function()
    local cfg = assert(config.resolve({}, env({})))
    assert.are.equal("unix:///var/run/docker.sock", cfg.host)
    assert.are.equal("127.0.0.1", cfg.publish_address)
    assert.are.equal("if-not-present", cfg.pull_policy)
    assert.is_false(cfg.tls)
    assert.are.equal(2, cfg.connect_timeout)
  end)

  it("prefers --host, then CP_DOCKER_HOST, then DOCKER_HOST", function()
    local e = env({CP_DOCKER_HOST = "tcp://a:1", DOCKER_HOST = "tcp://b:2"})
    assert.are.equal("unix:///x.sock", config.resolve({host = "unix:///x.sock"}, e).host)
    assert.are.equal("tcp://a:1", config.resolve({}, e).host)
    assert.are.equal("tcp://b:2", config.resolve({}, env({DOCKER_HOST = "tcp://b:2"})).host)
  end)

  it("turns on TLS from DOCKER_TLS_VERIFY, not from DOCKER_CERT_PATH alone (as docker)", function()
    local dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir -p " .. dir .. " && touch " .. dir .. "/ca.pem " .. dir
      .. "/cert.pem " .. dir .. "/key.pem"))
    local cfg = config.resolve({}, env({DOCKER_HOST = "tcp://h:2376",
      DOCKER_TLS_VERIFY = "1", DOCKER_CERT_PATH = dir}))
    assert.is_true(cfg.tls)
    assert.is_true(cfg.tls_verify)
    assert.are.equal(dir .. "/ca.pem", cfg.ca)
    assert.are.equal(dir .. "/cert.pem", cfg.cert)
    assert.are.equal(dir .. "/key.pem", cfg.key)
    local plain = config.resolve({}, env({DOCKER_CERT_PATH = dir}))
    assert.is_false(plain.tls)
    assert.is_false(plain.tls_verify)
    os.execute("rm -rf " .. dir)
  end)

  it("names the variable or flag the operator set in an error", function()
    local _, e1 = config.resolve({}, env({CP_DOCKER_TIMEOUT = "soon"}))
    assert.matches("^CP_DOCKER_TIMEOUT: invalid duration", e1)
    local _, e2 = config.resolve({timeout = "soon", names = {timeout = "--request-timeout"}}, env({}))
    assert.matches("^%-%-request%-timeout: invalid duration", e2)
    local _, e3 = config.resolve({host = "ftp://x", names = {host = "--host"}}, env({}))
    assert.matches("^%-%-host: invalid Docker host", e3)
    local _, e4 = config.resolve({}, env({DOCKER_HOST = "ftp://y"}))
    assert.matches("^DOCKER_HOST: invalid Docker host", e4)
    local _, e5 = config.resolve({}, env({CP_DOCKER_PULL_POLICY = "sometimes"}))
    assert.matches("^CP_DOCKER_PULL_POLICY:", e5)
  end)

  it("reads durations in several forms", function()
    assert.are.equal(5, config.seconds("5s", "x"))
    assert.are.equal(0.25, config.seconds("250ms", "x"))
    assert.are.equal(90, config.seconds("1m30s", "x"))
    assert.are.equal(2, config.seconds(2000000000, "x")) -- Go nanoseconds
    assert.are.equal(1.5, config.seconds(1.5, "x"))
    assert.are.equal(7, config.seconds("7", "x"))
    local v, err = config.seconds("soon", "stop_timeout")
    assert.is_nil(v)
    assert.matches("stop_timeout: invalid duration", err)
  end)

  it("rejects a bad host or pull policy naming the setting", function()
    local c1, e1 = config.resolve({host = "ftp://x"}, env({}))
    assert.is_nil(c1)
    assert.matches("^host:", e1)
    local c2, e2 = config.resolve({pull_policy = "sometimes"}, env({}))
    assert.is_nil(c2)
    assert.matches("^pull_policy:", e2)
  end)
end)

describe("config.resolve request limits", function()
  it("defaults to 50 replicas and no privileged host ports", function()
    local cfg = assert(config.resolve({}, env({})))
    assert.are.equal(50, cfg.max_replicas)
    assert.is_false(cfg.allow_privileged_ports)
  end)

  it("reads CP_DOCKER_MAX_REPLICAS and CP_DOCKER_ALLOW_PRIVILEGED_PORTS", function()
    local cfg = assert(config.resolve({}, env({CP_DOCKER_MAX_REPLICAS = "7",
      CP_DOCKER_ALLOW_PRIVILEGED_PORTS = "1"})))
    assert.are.equal(7, cfg.max_replicas)
    assert.is_true(cfg.allow_privileged_ports)
    for _, bad in ipairs({{CP_DOCKER_MAX_REPLICAS = "0"}, {CP_DOCKER_MAX_REPLICAS = "inf"},
        {CP_DOCKER_MAX_REPLICAS = "1e20"}, {CP_DOCKER_ALLOW_PRIVILEGED_PORTS = "maybe"}}) do
      local c, err = config.resolve({}, env(bad))
      assert.is_nil(c)
      assert.matches("^" .. next(bad) .. ": ", err) -- the variable the operator set
    end
  end)
end)

describe("config.resolve policy_dir", function()
  it("must name an existing directory", function()
    local c, err = config.resolve({policy_dir = "/nonexistent/cp-policy"}, env({}))
    assert.is_nil(c)
    assert.are.equal("policy_dir: /nonexistent/cp-policy is not a directory", err)
    c, err = config.resolve({}, env({CP_POLICY_DIR = "/etc/hostname"}))
    assert.is_nil(c)
    assert.matches("^CP_POLICY_DIR: ", err) -- the variable the operator set
    assert.are.equal("scripts", assert(config.resolve({policy_dir = "scripts"}, env({}))).policy_dir)
  end)
end)
