-- exec against real containers: exit codes, stdout apart from stderr, stdin, TTY.
local json = require("ctrlplane.docker.json")
local util = require("ctrlplane.docker.util")
local helper = require("support.helper")
local projects = require("support.projects")

describe("exec", function()
  local p, id

  setup(function()
    helper.daemon()
    p = projects.provider()
    id = helper.instance_id("exec")
    assert(p:provision(projects.three(id)))
  end)

  teardown(function()
    if p and id then p:deprovision(id) end
  end)

  local rows = {
    {"exit 0", {"true"}, 0},
    {"exit 7", {"sh", "-c", "exit 7"}, 7},
    {"command not found in a shell", {"sh", "-c", "no-such-command-x"}, 127},
  }
  for _, row in ipairs(rows) do
    it("returns the real exit code: " .. row[1], function()
      local res = assert(p:exec(id, {command = row[2]}))
      assert.are.equal(row[3], res.exit_code)
    end)
  end

  it("keeps stderr apart from stdout, byte for byte", function()
    local res = assert(p:exec(id, {command = {"sh", "-c",
      "printf 'out1\\n'; printf 'err1\\n' >&2; printf 'out2 no newline'; printf '\\001\\000\\377' >&2"}}))
    assert.are.equal("out1\nout2 no newline", res.stdout)
    assert.are.equal("err1\n\1\0\255", res.stderr)
    assert.are.equal(0, res.exit_code)
  end)

  it("sends stdin and closes it, so the command sees end of file", function()
    local input = "line one\nline two\n" .. string.rep("x", 100000)
    local res = assert(p:exec(id, {command = {"sh", "-c", "cat; echo; echo eof-seen"}, stdin = input}))
    assert.are.equal(input .. "\neof-seen\n", res.stdout)
    assert.are.equal(0, res.exit_code)
  end)

  it("carries large outputs intact", function()
    local res = assert(p:exec(id, {command = {"sh", "-c", "head -c 300000 /dev/zero | tr '\\0' 'a'"}}))
    assert.are.equal(300000, #res.stdout)
    assert.is_nil(res.stdout:find("[^a]"))
  end)

  it("runs with a TTY", function()
    local res = assert(p:exec(id, {command = {"sh", "-c", "tty; echo err >&2"}, tty = true}))
    assert.matches("^/dev/pts/%d+\r\nerr\r\n$", res.stdout)
    assert.are.equal("", res.stderr)
  end)

  it("runs in the service asked for", function()
    local cmdline = {"sh", "-c", "tr '\\0' ' ' < /proc/1/cmdline"}
    local res = assert(p:exec(id, {command = cmdline, service = "side"}))
    assert.matches("while true", res.stdout) -- the sidecar's own command
    local web = assert(p:exec(id, {command = cmdline}))
    assert.matches("httpd", web.stdout)
  end)

  it("gives a clear error for a service that is not running", function()
    local res, err, code = p:exec(id, {command = {"true"}, service = "setup"})
    assert.is_nil(res)
    assert.are.equal("not_running", code)
    assert.matches("service setup of instance .* is not running", err)
    local r2, _, c2 = p:exec("inst_no_such_instance_x", {command = {"true"}})
    assert.is_nil(r2)
    assert.are.equal("not_found", c2)
    local r3, e3, c3 = p:exec(id, {command = {"true"}, service = "db"})
    assert.is_nil(r3)
    assert.are.equal("not_found", c3)
    assert.matches("no service db", e3)
  end)

  it("times out", function()
    local t0 = helper.clock()
    local res, err, code = p:exec(id, {command = {"sleep", "10"}}, {timeout = 0.5})
    assert.is_nil(res)
    assert.are.equal("timeout", code)
    assert.matches("timed out", err)
    assert.is_true(helper.clock() - t0 < 15) -- the kill is a second exec: bounded, not instant
  end)

  it("rejects a bad request", function()
    local res, err, code = p:exec(id, {command = {}})
    assert.is_nil(res)
    assert.are.equal("invalid", code)
    assert.matches("command", err)
  end)

  describe("cpdocker exec", function()
    it("passes stdout and stderr through and exits with the command's status", function()
      local out, rc = helper.sh("./cpdocker exec " .. id .. " -- sh -c 'echo to-out; echo to-err >&2; exit 7'"
        .. " 2>/tmp/cpdocker-exec-err")
      local errtext = assert(io.open("/tmp/cpdocker-exec-err")):read("a")
      os.remove("/tmp/cpdocker-exec-err")
      assert.are.equal(7, rc)
      assert.are.equal("to-out\n", out)
      assert.are.equal("to-err\n", errtext)
    end)

    it("sends its stdin with -i", function()
      local out, rc = helper.sh("printf 'abc' | ./cpdocker exec " .. id .. " -i -- sh -c 'cat; echo .'")
      assert.are.equal(0, rc)
      assert.are.equal("abc.\n", out)
    end)

    it("prints an ExecResult with --json, bytes in base64", function()
      local out, rc = helper.sh("./cpdocker --json exec " .. id
        .. " --service side -- sh -c 'printf hi; printf oops >&2; exit 3'")
      assert.are.equal(0, rc)
      local r = json.decode(out)
      assert.are.equal(3, r.exit_code)
      assert.are.equal(util.base64("hi"), r.stdout)
      assert.are.equal("oops", util.unbase64(r.stderr))
    end)
  end)
end)
