-- TLS with the docker CLI's semantics (issue #17.3), against a TLS listener
-- on 127.0.0.1 (openssl s_server with a self-signed certificate; no Docker
-- daemon needed): a wrong CA is never healthy when verification was asked
-- for, DOCKER_CERT_PATH alone never means "TLS without checking the
-- server", and the errors say what to fix.
local config = require("ctrlplane.docker.config")
local engine = require("ctrlplane.docker.engine")
local helper = require("support.helper")

local function env(t)
  return function(k) return t[k] end
end

-- Runs ./cpdocker with the environment given (a string of VAR=value ...).
local function cpdocker(envs, args)
  return helper.sh("env -u DOCKER_HOST -u CP_DOCKER_HOST -u DOCKER_TLS_VERIFY -u DOCKER_CERT_PATH "
    .. envs .. " ./cpdocker " .. args .. " 2>&1")
end

describe("TLS settings (config.resolve)", function()
  local dir
  setup(function()
    dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir -p " .. dir .. "/certs && touch " .. dir .. "/certs/ca.pem "
      .. dir .. "/certs/cert.pem " .. dir .. "/certs/key.pem"))
  end)
  teardown(function() os.execute("rm -rf " .. dir) end)

  -- {description, environment, expected tls, expected tls_verify}
  local rows = {
    {"DOCKER_TLS_VERIFY turns on TLS and verification", {DOCKER_TLS_VERIFY = "1"}, true, true},
    {"any non-empty DOCKER_TLS_VERIFY verifies (as docker: even \"0\")",
      {DOCKER_TLS_VERIFY = "0"}, true, true},
    {"DOCKER_CERT_PATH alone does not turn on TLS (as docker)", {}, false, false},
    {"an https:// host is TLS, verified", {DOCKER_HOST = "https://127.0.0.1:2376"}, true, true},
  }
  for _, r in ipairs(rows) do
    it(r[1], function()
      local e = {DOCKER_HOST = "tcp://127.0.0.1:2376", DOCKER_CERT_PATH = dir .. "/certs"}
      for k, v in pairs(r[2]) do e[k] = v end
      local cfg = assert(config.resolve({}, env(e)))
      assert.are.equal(r[3], cfg.tls)
      assert.are.equal(r[4], cfg.tls_verify)
      if cfg.tls then
        assert.are.equal(dir .. "/certs/ca.pem", cfg.ca)
        assert.are.equal(dir .. "/certs/cert.pem", cfg.cert)
      end
    end)
  end

  it("turns verification off only when asked for by name", function()
    local cfg = assert(config.resolve({tls = true, tls_verify = false}, env({})))
    assert.is_true(cfg.tls)
    assert.is_false(cfg.tls_verify)
    assert.is_true(assert(config.resolve({tls = true}, env({}))).tls_verify)
  end)

  it("refuses a DOCKER_CERT_PATH without ca.pem when verifying, naming the variable", function()
    local cfg, err = config.resolve({}, env({DOCKER_TLS_VERIFY = "1",
      DOCKER_CERT_PATH = dir .. "/nothing-here"}))
    assert.is_nil(cfg)
    assert.matches("^DOCKER_CERT_PATH: .*nothing%-here/ca%.pem not found", err)
  end)

  -- the daemon's own answers, as data: what the error says to do
  local explain_rows = {
    {"a Go daemon answering plain HTTP on its TLS port", {host = "tcp://h:2376", tls = false},
      "Client sent an HTTP request to an HTTPS server.", "bad_request", 400,
      "speaks TLS on this port: set DOCKER_TLS_VERIFY=1", "tls"},
    {"a TLS listener closing a plain HTTP request", {host = "tcp://h:2376", tls = false},
      "cannot reach: Empty reply from server", "unreachable", 0,
      "speaks TLS on this port", "tls"},
    {"TLS to a plain port", {host = "tcp://h:2375", tls = true},
      "SSL routines::wrong version number", "tls", 0, "does not speak TLS on this port", "tls"},
    {"a certificate the CA did not sign", {host = "tcp://h:2376", tls = true, ca = "/c/ca.pem"},
      "SSL certificate problem: self-signed certificate", "tls", 0,
      "not signed by the CA in /c/ca%.pem: point DOCKER_CERT_PATH", "tls"},
    {"a request timeout names CP_DOCKER_TIMEOUT", {host = "unix:///x", timeout = 60},
      "Operation timed out after 60000 milliseconds", "timeout", 0,
      "request timeout 60s: raise CP_DOCKER_TIMEOUT", "timeout"},
    {"a connect timeout names CP_DOCKER_CONNECT_TIMEOUT", {host = "tcp://h:1", connect_timeout = 2},
      "Connection timed out after 2001 milliseconds", "timeout", 0,
      "raise CP_DOCKER_CONNECT_TIMEOUT", "timeout"},
  }
  for _, r in ipairs(explain_rows) do
    it("explains " .. r[1], function()
      local e = setmetatable({cfg = r[2]}, {__index = engine.Engine})
      local msg, code = e:explain(r[3], r[4], r[5])
      assert.matches(r[6], msg)
      assert.are.equal(r[7], code)
    end)
  end
end)

describe("TLS against a listener on 127.0.0.1", function()
  local dir, pid, port
  setup(function()
    dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir -p " .. dir .. "/server " .. dir .. "/right " .. dir .. "/wrong"))
    -- the server's self-signed certificate is its own CA; another one is "wrong"
    local _, rc = helper.sh(string.format("cd %s && openssl req -x509 -newkey rsa:2048 -nodes "
      .. "-keyout server/key.pem -out server/cert.pem -days 2 -subj /CN=127.0.0.1 "
      .. "-addext subjectAltName=IP:127.0.0.1 >/dev/null 2>&1 && cp server/cert.pem right/ca.pem && "
      .. "openssl req -x509 -newkey rsa:2048 -nodes -keyout wrong/k.pem -out wrong/ca.pem -days 2 "
      .. "-subj /CN=other >/dev/null 2>&1", dir))
    assert.are.equal(0, rc, "openssl is needed for this spec (apt-get install openssl)")
    for _ = 1, 5 do -- a free port: the listener fails to bind a taken one
      port = math.random(20000, 29999)
      local out = helper.sh(string.format("cd %s && (openssl s_server -accept 127.0.0.1:%d "
        .. "-cert server/cert.pem -key server/key.pem -www -quiet >/dev/null 2>&1 & echo $!)",
        dir, port))
      pid = tonumber(out:match("%d+"))
      local ok
      for _ = 1, 50 do
        helper.sleep(0.1)
        ok = select(2, helper.sh("bash -c \"exec 3<>/dev/tcp/127.0.0.1/" .. port .. "\" 2>/dev/null")) == 0
        if ok or select(2, helper.sh("kill -0 " .. pid .. " 2>/dev/null")) ~= 0 then break end
      end
      if ok then break end
      helper.sh("kill " .. pid .. " 2>/dev/null")
      pid = nil
    end
    assert(pid, "could not start openssl s_server on 127.0.0.1")
  end)

  teardown(function()
    if pid then helper.sh("kill " .. pid .. " 2>/dev/null") end
    os.execute("rm -rf " .. dir)
  end)

  local function host() return "DOCKER_HOST=tcp://127.0.0.1:" .. port end

  it("is healthy with the CA that signed the server's certificate", function()
    local out, rc = cpdocker(host() .. " DOCKER_TLS_VERIFY=1 DOCKER_CERT_PATH=" .. dir .. "/right",
      "health")
    assert.are.equal(0, rc, out)
    assert.matches("healthy:%s+true", out)
  end)

  it("is never healthy with a wrong CA when verification was asked for, and says what to fix",
    function()
      local out, rc = cpdocker(host() .. " DOCKER_TLS_VERIFY=1 DOCKER_CERT_PATH=" .. dir .. "/wrong",
        "health")
      assert.are.equal(1, rc, out)
      assert.matches("healthy:%s+false", out)
      assert.matches("certificate", out)
      assert.matches("point DOCKER_CERT_PATH at the directory holding the CA", out)
      out, rc = cpdocker(host() .. " DOCKER_TLS_VERIFY=1 DOCKER_CERT_PATH=" .. dir .. "/wrong",
        "--json status inst_tlsux1")
      assert.are.equal(1, rc, out)
      assert.matches('"code":"tls"', out, 1, true)
    end)

  it("applies the same TLS settings to a hijacked connection (exec with stdin) as to requests",
    function()
      -- both kinds of handle get their CA/verify settings from one place
      -- (cp_client_setup_easy): a wrong CA fails the handshake of a hijack
      local core = require("ctrlplane.docker.core")
      local function client(ca)
        return core.client({host = "tcp://127.0.0.1:" .. port, tls = true, tls_verify = true,
          ca = dir .. "/" .. ca .. "/ca.pem", timeout = 5})
      end
      local wrong = client("wrong")
      local raw, msg, code = wrong:hijack("POST", "/v1.41/exec/x/start", "{}", {timeout = 5})
      wrong:close()
      assert.is_nil(raw)
      assert.matches("certificate", msg)
      assert.are.equal("tls", code, msg)
      local right = client("right")
      raw, msg, code = right:hijack("POST", "/v1.41/exec/x/start", "{}", {timeout = 1})
      right:close()
      if raw then raw:close() end
      -- the handshake passed and the request went out; openssl's test server
      -- never answers a POST, so the wait for the response head runs out
      assert.is_nil(raw)
      assert.are.equal("timeout", code, msg)
    end)

  it("with DOCKER_CERT_PATH alone does not talk TLS unchecked: it says to set DOCKER_TLS_VERIFY",
    function()
      -- even with the right CA there: no verification asked for means no TLS (as docker)
      local out, rc = cpdocker(host() .. " DOCKER_CERT_PATH=" .. dir .. "/right", "health")
      assert.are.equal(1, rc, out)
      assert.matches("healthy:%s+false", out)
      assert.matches("speaks TLS on this port: set DOCKER_TLS_VERIFY=1", out)
      out, rc = cpdocker(host() .. " DOCKER_CERT_PATH=" .. dir .. "/wrong", "status inst_tlsux1")
      assert.are.equal(1, rc, out)
      assert.matches("%[tls%]", out)
    end)
end)
