-- Pull progress for people (issue #17.4): the bar moves with the bytes and
-- is redrawn on wall-clock time (a clock given here, so no timing), and is
-- not drawn at all when stderr is not a terminal.
local cli_lifecycle = require("ctrlplane.docker.cli_lifecycle")

local function recorder(tty)
  local out, now = {}, 0
  local fn = cli_lifecycle.pull_progress(function(t) out[#out + 1] = t end,
    {tty = tty, clock = function() return now end})
  return fn, out, function(dt) now = now + dt end
end

-- The progress lines drawn ("\r\27[K" then the bar), in order.
local function bars(out)
  local list = {}
  for _, t in ipairs(out) do
    local bar = t:match("^\r\27%[K(.+)$")
    if bar then list[#list + 1] = bar end
  end
  return list
end

local function pct(bar) return tonumber(bar:match("(%d+)%%")) end

describe("pull progress", function()
  it("redraws as time passes, with bytes and percent that move", function()
    local ev, out, advance = recorder(true)
    ev({type = "pull", image = "r/x:1", status = "Pulling"})
    ev({type = "pull", image = "r/x:1", id = "aaa", status = "Pulling fs layer"})
    ev({type = "pull", image = "r/x:1", id = "bbb", status = "Pulling fs layer"})
    for i = 1, 10 do
      advance(cli_lifecycle.REDRAW + 0.001)
      ev({type = "pull", image = "r/x:1", id = "aaa", status = "Downloading",
        current = i * 100000, total = 1000000})
      ev({type = "pull", image = "r/x:1", id = "bbb", status = "Downloading",
        current = i * 50000, total = 1000000})
    end
    local drawn = bars(out)
    assert.is_true(#drawn >= 10, "one redraw per interval, got " .. #drawn)
    local first, last = pct(drawn[1]), pct(drawn[#drawn])
    assert.is_true(first < last, first .. "% then " .. last .. "%")
    assert.are.equal(72, last) -- (1 MB + 0.45 MB) of 2 MB: the last draw of the interval
    assert.matches("1%.4 MB / 1%.9 MB", drawn[#drawn])
    ev({type = "pull", image = "r/x:1", status = "Pulled"})
    assert.matches("pulled r/x:1\n$", table.concat(out))
  end)

  it("draws byte updates at most once per interval, but always a finished layer", function()
    local ev, out, advance = recorder(true)
    ev({type = "pull", image = "r/x:1", status = "Pulling"})
    for i = 1, 50 do -- 50 updates inside one interval
      ev({type = "pull", image = "r/x:1", id = "aaa", status = "Downloading",
        current = i * 1000, total = 100000})
    end
    assert.are.equal(1, #bars(out))
    ev({type = "pull", image = "r/x:1", id = "aaa", status = "Download complete"})
    ev({type = "pull", image = "r/x:1", id = "aaa", status = "Extracting", current = 10, total = 100})
    advance(cli_lifecycle.REDRAW + 0.001)
    ev({type = "pull", image = "r/x:1", id = "aaa", status = "Extracting", current = 60, total = 100})
    ev({type = "pull", image = "r/x:1", id = "aaa", status = "Pull complete"})
    local drawn = bars(out)
    assert.matches("^  extracting", drawn[#drawn - 1])
    assert.are.equal(60, pct(drawn[#drawn - 1]))
    assert.matches("100%%.*%(1/1 layers done%)", drawn[#drawn])
  end)

  it("writes only the step lines when stderr is not a terminal", function()
    local ev, out, advance = recorder(false)
    ev({type = "pull", image = "r/x:1", status = "Pulling"})
    for i = 1, 5 do
      advance(1)
      ev({type = "pull", image = "r/x:1", id = "aaa", status = "Downloading",
        current = i, total = 5})
    end
    ev({type = "pull", image = "r/x:1", status = "Pulled"})
    ev({type = "service", action = "started", service = "web"})
    assert.are.equal("pulling r/x:1\npulled r/x:1\n  started    web\n", table.concat(out))
  end)
end)
