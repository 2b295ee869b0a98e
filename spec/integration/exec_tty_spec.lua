-- Interactive exec like `docker exec -it`, on a real pseudo-terminal
-- (spec/support/pty_run.c): output appears as it comes, the local terminal
-- is raw while attached and restored afterwards (also on failure and on
-- SIGTERM), the window size reaches the command at start and on resize, and
-- Ctrl-D / exit end it with the command's status. Issue #17 item 1.
local json = require("ctrlplane.docker.json")
local util = require("ctrlplane.docker.util")
local helper = require("support.helper")
local projects = require("support.projects")

local PTY_RUN = "build/pty_run"

-- Runs argv (a shell-quoted string) on a pty of rows x cols playing steps;
-- returns the output, the exit status, whether the terminal was restored,
-- and the "mode=" notes.
local function on_pty(rows, cols, steps, cmd)
  local script = os.tmpname()
  local f = assert(io.open(script, "w"))
  f:write(table.concat(steps, "\n"), "\n")
  f:close()
  local errfile = script .. ".err"
  local out, rc = helper.sh(string.format("%s %d %d %s -- %s 2> %s", PTY_RUN, rows, cols, script,
    cmd, errfile))
  local err = assert(io.open(errfile)):read("a")
  os.remove(script)
  os.remove(errfile)
  assert.are.equal(0, rc, "pty_run: " .. err .. "\noutput: " .. out)
  local modes = {}
  for m in err:gmatch("mode=(%a+)") do modes[#modes + 1] = m end
  return out, tonumber(err:match("exit=(%d+)")), err:match("restored=(%d)") == "1", modes, err
end

describe("exec -it on a terminal", function()
  local s = projects.session()
  local id

  setup(function()
    assert(os.execute("cc -std=c11 -O1 -g -Wall -Wextra -Werror -o " .. PTY_RUN
      .. " spec/support/pty_run.c"), "cannot build " .. PTY_RUN)
    local p = s.start()
    id = s.new_id("extty")
    assert(p:provision({instance_id = id, tenant_id = "ten_exec", name = "exec tty",
      services = {{name = "app", image = helper.IMAGE1, command = projects.IDLE_CMD}}}))
  end)

  teardown(function() s.finish() end)

  it("shows the output, runs raw while attached, restores the terminal, exits with the status", function()
    local out, code, restored, modes = on_pty(24, 80, {
      "wait # ",
      "mode",
      "send echo sum-$((40+2))\\r",
      "wait sum-42",
      "send exit 5\\r",
    }, "./cpdocker exec " .. id .. " -it -- sh")
    assert.matches("sum%-42\r\n", out)
    assert.are.equal(5, code)
    assert.are.same({"raw"}, modes)
    assert.is_true(restored)
  end)

  it("sends the window size at start and again on resize (SIGWINCH)", function()
    local out, code, restored = on_pty(24, 80, {
      "wait # ",
      "send stty size\\r",
      "wait 24 80",
      "resize 33 101",
      "sleep 0.5",
      "send stty size\\r",
      "wait 33 101",
      "send exit\\r",
    }, "./cpdocker exec " .. id .. " -ti -- sh")
    assert.matches("24 80\r\n.*33 101\r\n", out)
    assert.are.equal(0, code)
    assert.is_true(restored)
  end)

  it("gives the command of -t (without -i) the terminal's size", function()
    -- the size may land just after the command starts (API 1.41 has no
    -- ConsoleSize on exec): the command looks for a few seconds
    local out, code, restored = on_pty(31, 97, {"wait size=31 97"}, "./cpdocker exec " .. id
      .. " -t -- sh -c 'for i in $(seq 50); do s=; stty size > /tmp/size 2>&1 && read s < /tmp/size;"
      .. " case \"$s\" in [1-9]*\" \"[1-9]*) break;; esac; sleep 0.1; done; echo size=$s'")
    assert.matches("size=31 97\r+\n", out)
    assert.are.equal(0, code)
    assert.is_true(restored)
  end)

  it("ends cleanly on Ctrl-D with the command's status", function()
    local out, code, restored = on_pty(24, 80, {
      "wait # ",
      "send false\\r",
      "sleep 0.3",
      "send \\x04",
    }, "./cpdocker exec " .. id .. " -it -- sh")
    assert.matches("# ", out)
    assert.are.equal(1, code) -- ash exits with the last command's status
    assert.is_true(restored)
    local _, code2 = on_pty(24, 80, {"sleep 0.5", "send abc\\r\\x04"},
      "./cpdocker exec " .. id .. " -it -- sh -c 'cat; exit 3'")
    assert.are.equal(3, code2)
  end)

  it("passes keys such as Ctrl-C to the command instead of ending cpdocker", function()
    local out, code, restored = on_pty(24, 80, {
      "wait # ",
      "send sleep 1006\\r",
      "sleep 0.5",
      "send \\x03",
      "wait # ",
      "send echo after-$((1+1))\\r",
      "wait after-2",
      "send exit 4\\r",
    }, "./cpdocker exec " .. id .. " -it -- sh")
    assert.matches("after%-2", out)
    assert.are.equal(4, code)
    assert.is_true(restored)
  end)

  it("restores the terminal when the exec fails", function()
    local out, code, restored = on_pty(24, 80, {},
      "./cpdocker exec " .. id .. " -it --service nosuch -- sh")
    assert.matches("no service nosuch", out)
    assert.are.equal(1, code)
    assert.is_true(restored)
  end)

  it("restores the terminal on SIGTERM and kills the command", function()
    local out, code, restored = on_pty(24, 80, {
      "wait # ",
      "mode",
      "send sleep 1007\\r",
      "sleep 0.5",
      "signal TERM",
    }, "./cpdocker exec " .. id .. " -it -- sh")
    assert.matches("interrupted %(the command was killed%)", out)
    assert.are.equal(1, code)
    assert.is_true(restored)
    local res = assert(s.p:exec(id, {command = {"ps", "-o", "args"}}))
    assert.is_nil(res.stdout:find("sleep 1007", 1, true))
  end)

  it("gives the output and the exit code with --json (stdin not a terminal)", function()
    local out, rc = helper.sh("printf 'echo hi-$((2+3))\\nexit 3\\n' | ./cpdocker --json exec "
      .. id .. " -it -- sh")
    assert.are.equal(0, rc)
    local r = json.decode(out)
    assert.are.equal(3, r.exit_code)
    assert.matches("hi%-5\r\n", util.unbase64(r.stdout))
  end)

  it("with -t and piped stdin, the end of input reaches the command as Ctrl-D", function()
    local out, rc = helper.sh("printf 'abc' | ./cpdocker exec " .. id .. " -it -- sh -c 'cat; exit 7'")
    assert.are.equal(7, rc)
    assert.matches("abc", out)
  end)
end)
