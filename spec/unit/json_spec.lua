local json = require("ctrlplane.docker.json")

describe("json.encode", function()
  local rows = {
    {"an integer keeps every digit", 1234567890123456789, "1234567890123456789"},
    {"a float reads back the same", 0.1, "0.1"},
    {"a whole float is written as an integer", 3.0, "3"},
    {"strings are escaped", 'a"b\\c\n\t\1', '"a\\"b\\\\c\\n\\t\\u0001"'},
    {"invalid UTF-8 becomes U+FFFD", "ok\255end", '"ok\239\191\189end"'},
    {"valid UTF-8 passes through", "h\195\169", '"h\195\169"'},
    {"objects have sorted keys", {b = 1, a = {c = true}}, '{"a":{"c":true},"b":1}'},
    {"a sequence is a list", {1, "x", false}, '[1,"x",false]'},
    {"an empty table is an object", {}, "{}"},
    {"a marked empty list is a list", json.array({}), "[]"},
    {"null", json.null, "null"},
    {"NaN is null", 0 / 0, "null"},
  }
  for _, row in ipairs(rows) do
    it(row[1], function()
      assert.are.equal(row[3], json.encode(row[2]))
    end)
  end

  it("refuses values JSON cannot hold", function()
    assert.has_error(function() json.encode({f = print}) end)
    local cyclic = {}
    cyclic.self = cyclic
    assert.has_error(function() json.encode(cyclic) end)
  end)
end)

describe("json.decode", function()
  it("round-trips", function()
    local v = {a = {1, 2, 3}, b = "x", c = {d = false}}
    assert.are.same(v, json.decode(json.encode(v)))
  end)
  it("returns nil and a message for bad text", function()
    local v, err = json.decode("{nope")
    assert.is_nil(v)
    assert.matches("invalid JSON", err)
  end)
  it("raises for a non-string", function()
    assert.has_error(function() json.decode(42) end)
  end)
end)

describe("util.base64", function()
  local util = require("ctrlplane.docker.util")
  local rows = {{"", ""}, {"f", "Zg=="}, {"fo", "Zm8="}, {"foo", "Zm9v"}, {"foobar", "Zm9vYmFy"},
    {"\0\255\1", "AP8B"}}
  for _, r in ipairs(rows) do
    it("encodes " .. string.format("%q", r[1]) .. " as Go does", function()
      assert.are.equal(r[2], util.base64(r[1]))
      assert.are.equal(r[1], util.unbase64(r[2]))
    end)
  end
end)

describe("json.decode_request (duplicate keys)", function()
  local rows = {
    {'{"a":1,"a":2}', "a"},
    {'{"services":[{"name":"x"},{"name":"y","env":{"A":"1","B":"\\"","A":"2"}}]}', "services[1].env.A"},
    {'{"\\u0061":1,"a":2}', "a"},
    {'{"x":[1,2,{"k":1,"k":2}]}', "x[2].k"},
    {'{"o":{"p":{},"p":{}}}', "o.p"},
  }
  for _, row in ipairs(rows) do
    it("refuses " .. row[1], function()
      local v, err = json.decode_request(row[1])
      assert.is_nil(v)
      assert.are.equal("duplicate key: " .. row[2] .. " is given twice", err)
    end)
  end
  it("accepts equal keys in different objects and key-like text in strings", function()
    assert.is_table(json.decode_request('{"a":"x\\"a\\":1","b":{"a":1},"c":[{"a":1},{"a":1}]}'))
    assert.are.equal(3, json.decode_request("3"))
    assert.is_nil(json.decode_request('{"a":'))
  end)
end)

describe("json.decode_request against generated documents", function()
  -- random nested documents written as text, each object's keys drawn from
  -- a tiny set (so duplicates are frequent) and spelled with escapes at
  -- times; whether a duplicate exists is known by construction
  local state = 12345
  local function rnd(n)
    state = state * 48271 % 2147483647
    return state % n + 1
  end
  local KEYS = {{"a", '"a"'}, {"a", '"\\u0061"'}, {"b", '"b"'}, {'q"', '"q\\""'}, {"a\\", '"a\\\\"'}}
  local function gen(depth, dup)
    local k = rnd(depth > 3 and 3 or 5)
    if k == 1 then return ({'1', '"x"', 'null', 'true', '"a\\":"', '"{[,]}"'})[rnd(6)] end
    if k == 2 or k == 3 then return '"' .. string.rep("s", rnd(3)) .. '"' end
    if k == 4 then
      local parts = {}
      for i = 1, rnd(3) - 1 do parts[i] = gen(depth + 1, dup) end
      return "[" .. table.concat(parts, ",") .. "]"
    end
    local parts, seen = {}, {}
    for i = 1, rnd(4) - 1 do
      local key = KEYS[rnd(#KEYS)]
      if seen[key[1]] then dup.found = true end
      seen[key[1]] = true
      parts[i] = key[2] .. ":" .. gen(depth + 1, dup)
    end
    return "{" .. table.concat(parts, ",") .. "}"
  end
  it("finds exactly the documents with a repeated key", function()
    local with, without = 0, 0
    for _ = 1, 3000 do
      local dup = {}
      local text = "{" .. '"top":' .. gen(0, dup) .. "}"
      local v, err = json.decode_request(text)
      if dup.found then
        with = with + 1
        assert.is_nil(v, text)
        assert.matches("^duplicate key: ", err)
      else
        without = without + 1
        assert.is_table(v, text .. " " .. tostring(err))
      end
    end
    assert.is_true(with > 100 and without > 100, with .. " / " .. without)
  end)
end)
