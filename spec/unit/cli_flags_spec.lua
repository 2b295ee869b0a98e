-- The command-line parser: combined short flags (`-it`, `-ti`, `-ft`) as in
-- the docker CLI, and `exec` without `--` hinting at it. No daemon needed:
-- every case here ends before a provider is made.
local cli = require("ctrlplane.docker.cli")

local function buffer()
  local b = {text = ""}
  function b:write(...)
    for _, v in ipairs({...}) do self.text = self.text .. tostring(v) end
    return self
  end
  function b.flush() end
  return b
end

local function run(argv)
  local out, err = buffer(), buffer()
  local rc = cli.main(argv, {stdout = out, stderr = err, tty = false})
  return rc, out.text, err.text
end

describe("combined short flags", function()
  local exec_opts = cli.commands.exec.options
  local logs_opts = cli.commands.logs.options
  local rows = {
    -- {description, options, args, expected opts (nil: an error), positional}
    {"-it for exec", exec_opts, {"ID", "-it", "--", "sh"}, {i = true, t = true, ["--"] = {"sh"}}, {"ID"}},
    {"-ti for exec", exec_opts, {"-ti", "ID", "--", "sh"}, {i = true, t = true, ["--"] = {"sh"}}, {"ID"}},
    {"-ft for logs", logs_opts, {"ID", "-ft"}, {f = true, t = true}, {"ID"}},
    {"-tf for logs", logs_opts, {"-tf", "ID"}, {f = true, t = true}, {"ID"}},
    {"separate flags still work", exec_opts, {"ID", "-i", "-t", "--", "cat"},
      {i = true, t = true, ["--"] = {"cat"}}, {"ID"}},
    {"after --, letters belong to the command", exec_opts, {"ID", "--", "ls", "-la"},
      {["--"] = {"ls", "-la"}}, {"ID"}},
    {"a value that looks like flags is a value", exec_opts, {"ID", "--service", "-it", "--", "sh"},
      {service = "-it", ["--"] = {"sh"}}, {"ID"}},
    {"an unknown letter is an error", exec_opts, {"ID", "-ix"}, nil, "unknown option %-ix"},
    {"a bundle of a command without such flags is an error", cli.commands.status.options,
      {"ID", "-it"}, nil, "unknown option %-it"},
  }
  for _, r in ipairs(rows) do
    it(r[1], function()
      local opts, positional = cli.parse_options(r[2], r[3])
      if r[4] == nil then
        assert.is_nil(opts)
        assert.matches(r[5], positional)
      else
        assert.are.same(r[4], opts)
        assert.are.same(r[5], positional)
      end
    end)
  end

  it("leaves the caller's argument list as it was", function()
    local args = {"ID", "-it", "--", "sh"}
    cli.parse_options(exec_opts, args)
    assert.are.same({"ID", "-it", "--", "sh"}, args)
  end)
end)

describe("cpdocker exec usage", function()
  it("hints at -- when the command is given without it", function()
    local rc, _, err = run({"exec", "inst_x", "ls", "/"})
    assert.are.equal(2, rc)
    assert.matches("expected 1 argument, got 3", err)
    assert.matches("the command goes after %-%-, e%.g%. cpdocker exec ID %-%- ls /", err)
  end)

  it("hints at -- when the command's own option looks like one of exec's", function()
    local rc, _, err = run({"exec", "inst_x", "ls", "-la"})
    assert.are.equal(2, rc)
    assert.matches("unknown option %-la", err)
    assert.matches("goes after %-%-", err)
  end)

  it("asks for a command after --", function()
    local rc, _, err = run({"exec", "inst_x", "--"})
    assert.are.equal(2, rc)
    assert.matches("give the command after %-%-", err)
  end)
end)
