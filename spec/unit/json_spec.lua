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
