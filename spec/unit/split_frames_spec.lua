-- core.split_frames: Docker's frames cut byte-exact in C (exec output), one
-- byte at a time as well as whole.
local core = require("ctrlplane.docker.core")
local exec = require("ctrlplane.docker.exec")

local function frame(stream, s) return string.pack(">BxxxI4", stream, #s) .. s end

describe("core.split_frames", function()
  it("returns whole frames and how much it used, keeping a cut frame for later", function()
    local data = frame(1, "out\n") .. frame(2, "e\0r") .. frame(1, "tail")
    local pieces, used = core.split_frames(data:sub(1, #data - 2))
    assert.are.same({"stdout", "out\n", "stderr", "e\0r"}, pieces)
    assert.are.equal(#frame(1, "out\n") + #frame(2, "e\0r"), used)
    assert.are.same({}, (core.split_frames("\1\0\0")))
  end)

  it("refuses a header that is not a frame header", function()
    local p, err, code = core.split_frames("\7\0\0\0\0\0\0\1x")
    assert.is_nil(p)
    assert.are.equal("protocol", code)
    assert.matches("malformed stream header", err)
  end)

  it("gives exec the same bytes whole or fed one byte at a time", function()
    local data = frame(1, "hello\n") .. frame(2, string.rep("\255", 70000)) .. frame(1, "")
      .. frame(1, "end")
    for _, step in ipairs({#data, 1, 7}) do
      local got = {}
      local feed, rest = exec._frame_splitter(function(stream, bytes)
        got[#got + 1] = stream .. ":" .. bytes
        return true
      end)
      for i = 1, #data, step do assert(feed(data:sub(i, i + step - 1))) end
      assert.are.equal(0, rest())
      assert.are.same({"stdout:hello\n", "stderr:" .. string.rep("\255", 70000), "stdout:",
        "stdout:end"}, got)
    end
  end)
end)
