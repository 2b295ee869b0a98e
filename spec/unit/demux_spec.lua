-- The C log demultiplexer (runtime/demux.c) through core.demux, on canned
-- byte streams and on streams captured from a real daemon
-- (spec/fixtures/logs-*.bin, made by spec/support/capture-log-fixtures.sh).
local core = require("ctrlplane.docker.core")
local json = require("ctrlplane.docker.json")
local cjson = require("cjson")

local TS1 = "2026-11-28T21:30:00.123456789Z"
local TS2 = "2026-11-28T21:30:01.000000001Z"
local TS3 = "2026-11-28T21:30:02.5+02:00"

local function frame(stream, payload)
  return string.char(stream, 0, 0, 0) .. string.pack(">I4", #payload) .. payload
end
local function out(p) return frame(1, p) end
local function err(p) return frame(2, p) end

local function fixture(name)
  local f = assert(io.open("spec/fixtures/logs-" .. name .. ".bin", "rb"))
  local data = f:read("a")
  f:close()
  return data
end

-- Feeds data in pieces of the given sizes (cycled), then finishes.
local function run(opts, data, sizes)
  local d = core.demux(opts)
  local events = {}
  local i, k = 1, 1
  while i <= #data do
    local n = sizes and sizes[(k - 1) % #sizes + 1] or #data
    assert(d:feed(data:sub(i, i + n - 1), events))
    i, k = i + n, k + 1
  end
  assert(d:finish(events))
  d:close()
  return events
end

-- {ts, stream, line[, partial]} rows for compact expectations
local function rows(events)
  local t = {}
  for i, e in ipairs(events) do t[i] = {e.ts, e.stream, e.line, e.partial} end
  return t
end

describe("core.demux", function()
  local cases = {
    {"one stdout line", {}, out("hello\n"), {{nil, "stdout", "hello"}}},
    {"stdout and stderr frames", {}, out("a\n") .. err("b\n") .. out("c\n"),
      {{nil, "stdout", "a"}, {nil, "stderr", "b"}, {nil, "stdout", "c"}}},
    {"several lines in one frame (no timestamps)", {}, out("a\nb\n\nc\n"),
      {{nil, "stdout", "a"}, {nil, "stdout", "b"}, {nil, "stdout", ""}, {nil, "stdout", "c"}}},
    {"a line spread over frames", {}, out("ab") .. out("cd") .. out("e\n"), {{nil, "stdout", "abcde"}}},
    {"stdout and stderr pieces interleaved", {}, out("o1") .. err("e1") .. out("o2\n") .. err("e2\n"),
      {{nil, "stdout", "o1o2"}, {nil, "stderr", "e1e2"}}},
    {"timestamp stripped and reported", {timestamps = true}, out(TS1 .. " hello\n"),
      {{TS1, "stdout", "hello"}}},
    {"16 KiB pieces joined, time of the first piece", {timestamps = true},
      out(TS1 .. " " .. ("x"):rep(16384)) .. out(TS2 .. " " .. ("y"):rep(100) .. "\n"),
      {{TS1, "stdout", ("x"):rep(16384) .. ("y"):rep(100)}}},
    {"zone offsets and short fractions accepted", {timestamps = true}, out(TS3 .. " z\n"),
      {{TS3, "stdout", "z"}}},
    {"no timestamp where one was expected: text kept", {timestamps = true}, out("2026-11 not a time\n"),
      {{nil, "stdout", "2026-11 not a time"}}},
    {"timestamp-like text inside a line is not touched", {timestamps = true},
      out(TS1 .. " at " .. TS2 .. " x\n"), {{TS1, "stdout", "at " .. TS2 .. " x"}}},
    {"empty line with a timestamp", {timestamps = true}, out(TS1 .. " \n"), {{TS1, "stdout", ""}}},
    {"zero-length frames are ignored", {}, out("") .. out("a\n") .. err(""), {{nil, "stdout", "a"}}},
    {"system error stream", {}, frame(3, "oops\n"), {{nil, "system", "oops"}}},
    {"last line without a newline comes at the end", {}, out("a\nrest"),
      {{nil, "stdout", "a"}, {nil, "stdout", "rest"}}},
    {"CR kept in multiplexed streams", {}, out("a\r\n"), {{nil, "stdout", "a\r"}}},
    {"raw TTY stream: CRLF lines", {mode = "raw"}, "one\r\ntwo\r\n", {{nil, "stdout", "one"},
      {nil, "stdout", "two"}}},
    {"raw TTY stream with timestamps", {mode = "tty", timestamps = true},
      TS1 .. " one\r\n" .. TS2 .. " two\r\n", {{TS1, "stdout", "one"}, {TS2, "stdout", "two"}}},
    {"raw TTY: pieces at 16 KiB joined", {mode = "raw", timestamps = true},
      TS1 .. " " .. ("x"):rep(16384) .. TS2 .. " " .. ("x"):rep(10) .. "\r\n",
      {{TS1, "stdout", ("x"):rep(16394)}}},
    {"raw TTY: keep_cr", {mode = "raw", keep_cr = true}, "a\r\n", {{nil, "stdout", "a\r"}}},
    {"auto: frames recognised", {}, out("x\n"), {{nil, "stdout", "x"}}},
    {"auto: text is a raw stream", {}, "plain text\n", {{nil, "stdout", "plain text"}}},
    {"auto: a stream shorter than a header is raw", {}, "\1\0", {{nil, "stdout", "\1\0"}}},
    {"line cap: pieces flagged partial, nothing lost", {max_line = 4}, out("abcdefghij\n"),
      {{nil, "stdout", "abcd", true}, {nil, "stdout", "efgh", true}, {nil, "stdout", "ij"}}},
    {"line cap: a line of exactly the cap is one event", {max_line = 3}, out("abc\n"),
      {{nil, "stdout", "abc"}}},
    {"line cap: exact multiple", {max_line = 3}, out("abcdef\n"),
      {{nil, "stdout", "abc", true}, {nil, "stdout", "def"}}},
    {"line cap: last line at the end of the stream", {max_line = 3}, out("abcdefg"),
      {{nil, "stdout", "abc", true}, {nil, "stdout", "def", true}, {nil, "stdout", "g"}}},
    {"line cap keeps the first piece's time", {max_line = 4, timestamps = true},
      out(TS1 .. " abc") .. out(TS2 .. " def\n"),
      {{TS1, "stdout", "abcd", true}, {TS1, "stdout", "ef"}}},
  }

  for _, c in ipairs(cases) do
    local desc, opts, input, expected = c[1], c[2], c[3], c[4]
    it(desc, function()
      assert.are.same(expected, rows(run(opts, input)))
    end)
    it(desc .. " (fed one byte at a time)", function()
      assert.are.same(expected, rows(run(opts, input, {1})))
    end)
  end

  describe("on streams captured from Docker 20.10", function()
    local program = {
      {"stdout", "hello stdout"}, {"stderr", "hello stderr"}, {"stdout", ""},
      {"stdout", ("x"):rep(40000)}, {"stdout", "bad \u{FFFD}\u{FFFD} utf8 \u{e9} ok"},
      {"stdout", "tab\there \"quote\" back\\slash"}, {"stdout", "crlf\r"},
      {"stderr", "err line 2"}, {"stdout", "no newline at end"},
    }
    local function lines(events)
      local t = {}
      for i, e in ipairs(events) do t[i] = {e.stream, e.line} end
      return t
    end
    local function by_stream(list)
      local t = {stdout = {}, stderr = {}}
      for _, r in ipairs(list) do table.insert(t[r[1]], r[2]) end
      return t
    end

    it("multiplexed with timestamps: one event per line, 40000-byte line whole", function()
      local events = run({timestamps = true}, fixture("mux-ts"))
      -- stdout and stderr are separate files in the daemon: compare per stream
      assert.are.same(by_stream(program), by_stream(lines(events)))
      for _, e in ipairs(events) do
        assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d+Z$", e.ts)
        assert.is_nil(e.line:find(e.ts, 1, true))
      end
      -- the long line reports the time of its first piece
      local data = fixture("mux-ts")
      local first = data:match("(%d%d%d%d%-[%d:T%-%.]+Z) xxxx")
      for _, e in ipairs(events) do
        if #e.line == 40000 then assert.are.equal(first, e.ts) end
      end
    end)

    it("multiplexed without timestamps", function()
      assert.are.same(by_stream(program), by_stream(lines(run({}, fixture("mux-plain")))))
    end)

    it("TTY with timestamps: CRLF removed, pieces of the long line joined", function()
      local events = run({mode = "tty", timestamps = true}, fixture("tty-ts"))
      local expect = {}
      for i, r in ipairs(program) do expect[i] = {"stdout", r[2]} end
      -- a TTY merges stderr into stdout in program order
      assert.are.same(expect, lines(events))
      assert.are.equal("raw", core.demux({mode = "raw"}):stats().mode)
    end)

    it("TTY without timestamps, mode detected", function()
      local d = core.demux()
      local events = assert(d:feed(fixture("tty-plain")))
      assert(d:finish(events))
      assert.are.equal("raw", d:stats().mode)
      assert.are.equal(9, #events)
      assert.are.equal(40000, #events[4].line)
    end)

    it("gives the same events however the stream is cut", function()
      for _, name in ipairs({"mux-ts", "tty-ts"}) do
        local opts = {timestamps = true, mode = name == "tty-ts" and "raw" or "auto"}
        local whole = rows(run(opts, fixture(name)))
        assert.are.same(whole, rows(run(opts, fixture(name), {1})))
        assert.are.same(whole, rows(run(opts, fixture(name), {7, 8, 9, 31, 4096})))
        math.randomseed(42)
        local sizes = {}
        for i = 1, 200 do sizes[i] = math.random(1, 300) end
        assert.are.same(whole, rows(run(opts, fixture(name), sizes)))
      end
    end)

    it("counts bytes and events", function()
      local d = core.demux({timestamps = true})
      local data = fixture("mux-ts")
      local events = assert(d:feed(data))
      assert(d:finish(events))
      local s = d:stats()
      assert.are.equal(#data, s.bytes)
      assert.are.equal(#events, s.events)
      assert.are.equal("mux", s.mode)
    end)
  end)

  describe("bad streams", function()
    it("returns nil, message, 'protocol' and the events before the bad header", function()
      local d = core.demux({mode = "mux"})
      local events, msg, code, partial = d:feed(out("ok\n") .. "\9\0\0\0\0\0\0\1x")
      assert.is_nil(events)
      assert.are.equal("protocol", code)
      assert.matches("bad frame header at byte 11", msg, 1, true)
      assert.are.same({{nil, "stdout", "ok"}}, rows(partial))
      -- and stays failed
      local again, _, code2 = d:feed(out("more\n"))
      assert.is_nil(again)
      assert.are.equal("protocol", code2)
    end)

    it("reports a stream that ends inside a frame, after its lines", function()
      local d = core.demux()
      assert.are.same({{nil, "stdout", "a"}}, rows(assert(d:feed(out("a\nb\n"):sub(1, -2)))))
      local events, msg, code, partial = d:finish()
      assert.is_nil(events)
      assert.are.equal("protocol", code)
      assert.matches("ended inside a frame", msg)
      assert.are.same({{nil, "stdout", "b"}}, rows(partial))
    end)
  end)

  describe("rendering", function()
    it("writes JSON lines the way json.encode writes the event", function()
      local d = core.demux({timestamps = true})
      local text, etext = assert(d:render(out(TS1 .. " a \"q\"\n") .. err(TS2 .. " e\tf\n"),
        {json = true, service = "web"}))
      assert.are.equal("", etext)
      assert.are.equal(json.encode({ts = TS1, stream = "stdout", line = "a \"q\"", service = "web"})
        .. "\n" .. json.encode({ts = TS2, stream = "stderr", line = "e\tf", service = "web"}) .. "\n",
        text)
    end)

    it("always produces valid JSON, matching json.encode byte for byte", function()
      math.randomseed(7)
      local specials = {"\0", "\127", "\192\128", "\237\160\128", "\244\144\128\128", "\255",
        "\195", "\226\130", "\240\159\152\128", "\u{10FFFF}", "\\", "\"", "\r", "\8", "\12"}
      for _ = 1, 300 do
        local parts = {}
        for j = 1, math.random(0, 20) do
          if math.random() < 0.5 then
            parts[j] = specials[math.random(#specials)]
          else
            parts[j] = string.char(math.random(0, 255))
          end
        end
        local line = table.concat(parts):gsub("\n", "")
        local d = core.demux({max_line = 1 << 20})
        local text = assert(d:render(out(line .. "\n"), {json = true}))
        assert.are.equal(json.encode({stream = "stdout", line = line}) .. "\n", text)
        local decoded = cjson.decode(text)
        assert.are.equal("stdout", decoded.stream)
        assert.is_truthy(utf8.len(decoded.line))
      end
    end)

    it("writes text for people: stdout and stderr apart, prefix and time", function()
      local d = core.demux({timestamps = true})
      local o, e = assert(d:render(out(TS1 .. " a\n") .. err(TS2 .. " b\n"),
        {prefix = "web | ", timestamps = true}))
      assert.are.equal("web | " .. TS1 .. " a\n", o)
      assert.are.equal("web | " .. TS2 .. " b\n", e)
    end)

    it("writes a capped line as one text line", function()
      local d = core.demux({max_line = 3})
      local o = assert(d:render(out("abcdefg\n"), {prefix = "> "}))
      assert.are.equal("> abcdefg\n", o)
      local j = assert(core.demux({max_line = 3}):render(out("abcd\n"), {json = true}))
      assert.are.equal('{"line":"abc","partial":true,"stream":"stdout"}\n'
        .. '{"line":"d","stream":"stdout"}\n', j)
    end)

    it("render_finish flushes the last line", function()
      local d = core.demux()
      assert.are.equal("", (assert(d:render(out("tail")))))
      assert.are.equal("tail\n", (assert(d:render_finish())))
    end)
  end)

  describe("misuse", function()
    it("raises for bad options and arguments", function()
      assert.has_error(function() core.demux({mode = "bogus"}) end)
      assert.has_error(function() core.demux({max_line = 0}) end)
      assert.has_error(function() core.demux({timestamps = "yes"}) end)
      assert.has_error(function() core.demux():feed({}) end)
      assert.has_error(function() core.demux():render("x", {service = {}}) end)
    end)

    it("closes once, and raises when used after close", function()
      local d = core.demux()
      d:close()
      d:close()
      assert.has_error(function() d:feed("x") end, "attempt to use a closed demuxer")
      do
        local d2 <close> = core.demux()
        assert(d2:feed(out("a\n")))
      end
    end)
  end)
end)
