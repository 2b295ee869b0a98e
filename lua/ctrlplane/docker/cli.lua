-- The cpdocker command line (DESIGN §9). cli.main(argv) returns the exit
-- status: 0 success, 1 the operation failed, 2 a usage error.
local core = require("ctrlplane.docker.core")
local json = require("ctrlplane.docker.json")
local util = require("ctrlplane.docker.util")

local cli = {}

local GLOBAL_HELP = [[
usage: cpdocker [global options] COMMAND [ARGS]

Runs ctrlplane provider operations against a Docker Engine.

global options (accepted anywhere on the line):
  --host URL         Docker daemon (unix:///var/run/docker.sock, tcp://host:2376);
                     default $CP_DOCKER_HOST, $DOCKER_HOST, then the local socket
  --network NAME     extra network every container joins ($CP_DOCKER_NETWORK)
  --registry PREFIX  registry prefix for image refs without one ($CP_DOCKER_REGISTRY)
  --policy DIR       policy scripts that override the bundled ones ($CP_POLICY_DIR)
  --backend NAME     engine (one Docker host, default) or swarm (--host is a swarm
                     manager; $CP_DOCKER_NODES maps node hostnames to daemons)
                     ($CP_DOCKER_BACKEND)
  --json             print results as JSON in the provider contract's shape;
                     errors too: {"error": {"message", "code"}} on stdout
  --help, -h         this help, or `cpdocker COMMAND --help` for one command
  --version          cpdocker's version (`cpdocker version`: the daemon's too)

commands:
%s
exit status: 0 success, 1 the operation failed (the reason on stderr, with
its stable code in brackets), 2 usage error.
]]

-- name -> {usage, summary, options = {flag = "value"|"flag"}, run = fn(ctx, args, opts)}
cli.commands = {}
cli.order = {}

function cli.command(name, spec)
  cli.commands[name] = spec
  cli.order[#cli.order + 1] = name
end

local function usage_error(msg)
  return {usage = true, message = msg}
end

-- ---- output -------------------------------------------------------------

local Ctx = {}
Ctx.__index = Ctx

function Ctx:print(...)
  self.stdout:write(table.concat({...}, "\t"), "\n")
end

function Ctx:printf(fmt, ...)
  self.stdout:write(string.format(fmt, ...))
end

function Ctx:json(value)
  self.stdout:write(json.encode(value), "\n")
end

-- Every error carries a stable code: the operation's, or "error" when the
-- failure has none of its own. With --json the error is a JSON document on
-- stdout, {"error": {"message", "code"[, "errors"]}}, so a caller parsing
-- stdout always gets one; the exit status is the same either way.
function Ctx:fail(msg, code, errors)
  if code == nil and not self._provider then code = self._provider_code end
  code = code or "error"
  msg = tostring(msg)
  if self.json_out then
    local e = {message = msg, code = code}
    if errors and #errors > 0 then e.errors = errors end
    self.stdout:write(json.encode({error = e}), "\n")
    self.stdout:flush()
    return 1
  end
  if msg:sub(-#code - 2) == "[" .. code .. "]" then
    self.stderr:write("cpdocker: ", msg, "\n")
  else
    self.stderr:write("cpdocker: ", msg, " [", code, "]\n")
  end
  return 1
end

-- A usage error (exit 2), as JSON with --json.
function Ctx:usage_fail(msg, usage)
  if self.json_out then
    self.stdout:write(json.encode({error = {message = msg, code = "usage",
      usage = usage and ("cpdocker " .. usage) or nil}}), "\n")
    return 2
  end
  self.stderr:write(msg, "\n", usage and ("usage: cpdocker " .. usage .. "\n")
    or "(see cpdocker --help)\n")
  return 2
end

-- Prints rows of {key, value} aligned.
function Ctx:fields(rows)
  local width = 0
  for _, r in ipairs(rows) do width = math.max(width, #r[1]) end
  for _, r in ipairs(rows) do
    self:printf("%-" .. (width + 1) .. "s %s\n", r[1] .. ":", tostring(r[2]))
  end
end

-- Prints a table with a header row; columns aligned to their widest cell.
function Ctx:table(headers, rows)
  local widths = {}
  for i, h in ipairs(headers) do widths[i] = utf8.len(h) or #h end
  for _, r in ipairs(rows) do
    for i = 1, #headers do
      local cell = tostring(r[i] == nil and "" or r[i])
      widths[i] = math.max(widths[i], utf8.len(cell) or #cell)
    end
  end
  local function line(cells, bold)
    local parts = {}
    for i = 1, #headers do
      local cell = tostring(cells[i] == nil and "" or cells[i])
      local pad = widths[i] - (utf8.len(cell) or #cell)
      parts[i] = i < #headers and (cell .. string.rep(" ", pad)) or cell
    end
    local text = table.concat(parts, "  ")
    self.stdout:write(bold and self:color("1", text) or text, "\n")
  end
  line(headers, true)
  for _, r in ipairs(rows) do line(r) end
end

-- Reports a failed operation: the message, and one line per invalid field.
function Ctx:fail_op(what, err, code, errors)
  if errors and #errors > 0 then
    if self.json_out then
      return self:fail(what .. ": invalid request", code or "invalid", errors)
    end
    self.stderr:write("cpdocker: ", what, ": invalid request [", code or "invalid", "]\n")
    for _, e in ipairs(errors) do
      self.stderr:write("  ", e.field, ": ", e.message, "\n")
    end
    return 1
  end
  return self:fail(string.format("%s: %s", what, tostring(err)), code)
end

-- Colour only on a terminal, and never with NO_COLOR set or TERM=dumb
-- (https://no-color.org); ctx.color_ok is decided once in cli.main.
function Ctx:color(code, text)
  if self.color_ok then return "\27[" .. code .. "m" .. text .. "\27[0m" end
  return text
end

-- The provider, created on first use so `--help` needs no daemon.
function Ctx:provider()
  if not self._provider then
    local docker = require("ctrlplane.docker")
    local p, err, code = docker.new(self.provider_opts)
    if not p then
      self._provider_code = code
      return nil, err, code
    end
    self._provider = p
  end
  return self._provider
end

-- ---- argument parsing ------------------------------------------------------

local GLOBALS = {
  ["--host"] = "host", ["--network"] = "network",
  ["--registry"] = "registry", ["--policy"] = "policy_dir",
  ["--backend"] = "backend",
}

-- Splits argv into global options, the command and its own arguments.
local function parse_globals(argv)
  local g, rest = {json = false}, {}
  local i = 1
  while i <= #argv do
    local a = argv[i]
    if a == "--" then
      for j = i, #argv do rest[#rest + 1] = argv[j] end
      break
    end
    local name, inline = a:match("^(%-%-[%w-]+)=(.*)$")
    name = name or a
    if GLOBALS[name] then
      local v = inline
      if not v then
        i = i + 1
        v = argv[i]
      end
      if v == nil or v == "" then return nil, usage_error(name .. " needs a value") end
      g[GLOBALS[name]] = v
    elseif a == "--json" then
      g.json = true
    elseif a == "--help" or a == "-h" then
      g.help = true
    elseif a == "--version" then
      g.version = true
    else
      rest[#rest + 1] = a
    end
    i = i + 1
  end
  return g, rest
end

-- Splits combined short flags, as in `-it` or `-ft`, into one argument
-- each when every letter is a flag of the command (the last one may take
-- a value). Anything else is left for parse_options to judge.
local function expand_short_flags(spec, args)
  local out, takes_value = {}, false
  for i, a in ipairs(args) do
    if a == "--" and not takes_value then
      table.move(args, i, #args, #out + 1, out)
      break
    end
    local letters = not takes_value and spec and not spec[a] and a:match("^%-(%a%a+)$")
    local ok = letters and true
    if letters then
      for k = 1, #letters do
        local kind = spec["-" .. letters:sub(k, k)]
        if not (kind == "flag" or (kind and k == #letters)) then ok = false end
      end
    end
    if ok then
      for k = 1, #letters do out[#out + 1] = "-" .. letters:sub(k, k) end
      takes_value = spec["-" .. letters:sub(-1)] ~= "flag"
    else
      out[#out + 1] = a
      takes_value = not takes_value and spec ~= nil and spec[a] == "value"
    end
  end
  return out
end

-- Parses a command's own options: spec maps "--name" to "value" or "flag".
function cli.parse_options(spec, args)
  local opts, positional = {}, {}
  args = expand_short_flags(spec, args)
  local i = 1
  while i <= #args do
    local a = args[i]
    if a == "--" then
      opts["--"] = {table.unpack(args, i + 1)}
      break
    end
    local name, inline = a:match("^(%-%-?[%w-]+)=(.*)$")
    name = name or a
    if name:sub(1, 1) == "-" and #name > 1 and not tonumber(name) then
      local kind = spec and spec[name]
      if not kind then return nil, "unknown option " .. name end
      local key = name:gsub("^%-+", ""):gsub("-", "_")
      if kind == "flag" then
        opts[key] = true
      else
        local v = inline
        if not v then
          i = i + 1
          v = args[i]
        end
        if v == nil then return nil, name .. " needs a value" end
        opts[key] = v
      end
    else
      positional[#positional + 1] = a
    end
    i = i + 1
  end
  return opts, positional
end

local function command_help(spec)
  return string.format("usage: cpdocker %s\n\n%s\n%s", spec.usage, spec.summary,
    spec.help and ("\n" .. spec.help .. "\n") or "")
end

local function global_help()
  local lines = {}
  for _, name in ipairs(cli.order) do
    local spec = cli.commands[name]
    if #spec.usage > 34 then -- a long synopsis gets its own line
      lines[#lines + 1] = "  " .. spec.usage
      lines[#lines + 1] = string.format("  %-34s %s", "", spec.summary)
    else
      lines[#lines + 1] = string.format("  %-34s %s", spec.usage, spec.summary)
    end
  end
  return string.format(GLOBAL_HELP, table.concat(lines, "\n"))
end

function cli.main(argv, io_)
  io_ = io_ or {}
  local ctx = setmetatable({
    stdout = io_.stdout or io.stdout,
    stderr = io_.stderr or io.stderr,
  }, Ctx)
  local g, rest = parse_globals(argv)
  if not g then
    for _, a in ipairs(argv) do if a == "--json" then ctx.json_out = true end end
    return ctx:usage_fail("cpdocker: " .. rest.message)
  end
  ctx.globals = g
  ctx.json_out = g.json
  ctx.tty = io_.tty
  if ctx.tty == nil then ctx.tty = core.isatty(1) end
  ctx.err_tty = io_.err_tty
  if ctx.err_tty == nil then ctx.err_tty = core.isatty(2) end
  local getenv = io_.getenv or os.getenv
  -- TERM=dumb: no colour and no cursor movement (progress bars, redraws)
  ctx.dumb = getenv("TERM") == "dumb"
  ctx.no_color = (getenv("NO_COLOR") or "") ~= "" or ctx.dumb
  ctx.color_ok = ctx.tty and not ctx.no_color
  ctx.provider_opts = {host = g.host, network = g.network, registry = g.registry,
    policy_dir = g.policy_dir, backend = g.backend,
    names = {host = "--host", network = "--network", registry = "--registry",
      policy_dir = "--policy", backend = "--backend"}}
  local name = table.remove(rest, 1)
  if g.version then
    -- `cpdocker --version`: this program's version, no daemon needed
    if ctx.json_out then
      ctx:json({version = core.version, lua = _VERSION, curl = core.curl_version})
    else
      ctx:print("cpdocker " .. core.version .. " (" .. _VERSION .. ", libcurl "
        .. core.curl_version .. ")")
    end
    return 0
  end
  if not name then
    if g.help then
      ctx.stdout:write(global_help())
      return 0
    end
    if ctx.json_out then return ctx:usage_fail("cpdocker: no command given") end
    ctx.stderr:write(global_help())
    return 2
  end
  if name == "help" then
    name = table.remove(rest, 1)
    if not name then
      ctx.stdout:write(global_help())
      return 0
    end
    g.help = true
  end
  local spec = cli.commands[name]
  if not spec then
    return ctx:usage_fail("cpdocker: unknown command '" .. name .. "'")
  end
  if g.help then
    ctx.stdout:write(command_help(spec))
    return 0
  end
  local opts, positional = cli.parse_options(spec.options, rest)
  local hint = spec.usage_hint and ("\n(" .. spec.usage_hint .. ")") or ""
  if not opts then
    return ctx:usage_fail("cpdocker " .. name .. ": " .. positional .. hint, spec.usage)
  end
  local nargs = spec.args or 0
  if #positional ~= nargs and not spec.varargs then
    return ctx:usage_fail(string.format("cpdocker %s: expected %d argument%s, got %d%s", name,
      nargs, nargs == 1 and "" or "s", #positional, hint), spec.usage)
  end
  local code = spec.run(ctx, positional, opts)
  if type(code) == "table" and code.usage then
    if ctx._provider then ctx._provider:close() end
    return ctx:usage_fail("cpdocker " .. name .. ": " .. code.message, spec.usage)
  end
  if ctx._provider then ctx._provider:close() end
  ctx.stdout:flush()
  return code or 0
end

cli.usage_error = usage_error

-- ---- commands ---------------------------------------------------------------

cli.command("info", {
  usage = "info",
  summary = "provider name, version and region",
  run = function(ctx)
    local p, err = ctx:provider()
    if not p then return ctx:fail(err) end
    local info = p:info()
    if ctx.json_out then
      ctx:json(info)
      return 0
    end
    local loc = info.location
    local place = table.concat({loc.city ~= "" and loc.city or nil,
      loc.country ~= "" and loc.country or nil}, ", ")
    ctx:fields({
      {"name", info.name}, {"version", info.version}, {"region", info.region},
      {"location", place ~= "" and place or "-"}, {"docker host", p.cfg.host},
    })
    return 0
  end,
})

cli.command("capabilities", {
  usage = "capabilities",
  summary = "the operations this provider really supports",
  run = function(ctx)
    local p, err = ctx:provider()
    if not p then return ctx:fail(err) end
    local caps = p:capabilities()
    if ctx.json_out then
      ctx:json(caps)
    else
      for _, c in ipairs(caps) do ctx:print(c) end
    end
    return 0
  end,
})

cli.command("health", {
  usage = "health",
  summary = "ping the Docker daemon (exit 1 when it does not answer)",
  run = function(ctx)
    local p, err = ctx:provider()
    if not p then return ctx:fail(err) end
    local h = p:health_check()
    if ctx.json_out then
      ctx:json(h)
    else
      ctx:fields({
        {"healthy", h.healthy and ctx:color("32", "true") or ctx:color("31", "false")},
        {"message", h.message},
        {"latency", util.human_duration(h.latency / 1e9)},
        {"checked_at", h.checked_at},
      })
    end
    return h.healthy and 0 or 1
  end,
})

cli.command("version", {
  usage = "version",
  summary = "versions of cpdocker, Lua, libcurl and the Docker daemon",
  run = function(ctx)
    local out = {version = core.version, lua = _VERSION, curl = core.curl_version,
      api_max = core.api_max}
    local p, err = ctx:provider()
    if not p then return ctx:fail(err) end
    local v, verr = p:daemon_version()
    if v then
      out.daemon = {version = v.Version, api_version = v.ApiVersion,
        min_api_version = v.MinAPIVersion, os = v.Os, arch = v.Arch,
        negotiated_api_version = p.engine:api_version()}
    else
      out.daemon_error = verr
    end
    if ctx.json_out then
      ctx:json(out)
      return 0
    end
    local rows = {{"cpdocker", out.version}, {"lua", out.lua}, {"libcurl", out.curl}}
    if v then
      rows[#rows + 1] = {"docker", string.format("%s (API %s, using %s)", v.Version,
        v.ApiVersion, out.daemon.negotiated_api_version)}
    else
      rows[#rows + 1] = {"docker", "unreachable: " .. verr}
    end
    ctx:fields(rows)
    return 0
  end,
})

-- Command modules: each exports install(cli) and registers its commands.
cli.command_modules = {"cli_lifecycle", "cli_exec", "cli_logs", "cli_resources", "cli_serve",
  "cli_ps"}

for _, name in ipairs(cli.command_modules) do
  require("ctrlplane.docker." .. name).install(cli)
end

return cli
