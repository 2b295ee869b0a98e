-- The rockspec must ship every Lua module and policy script of the tree.
describe("ctrlplane-docker-scm-1.rockspec", function()
  local spec = {}
  setup(function()
    local chunk = assert(loadfile("ctrlplane-docker-scm-1.rockspec", "t", spec))
    chunk()
  end)

  local function listed()
    local files = {}
    for _, v in pairs(spec.build.modules) do
      if type(v) == "string" then files[v] = true end
    end
    return files
  end

  it("lists every module under lua/ and every script under scripts/", function()
    local files = listed()
    local p = assert(io.popen("find lua scripts -name '*.lua' | sort"))
    local missing = {}
    for path in p:lines() do
      if not files[path] then missing[#missing + 1] = path end
    end
    p:close()
    assert.are.same({}, missing)
  end)

  it("builds the C core from every runtime source it needs", function()
    local core = spec.build.modules["ctrlplane.docker.core"]
    local mk = assert(io.open("Makefile")):read("a")
    local srcs = mk:match("CORE_SRC = ([^\n]+)")
    for src in srcs:gmatch("%S+") do
      local found = false
      for _, s in ipairs(core.sources) do if s == src then found = true end end
      assert.is_true(found, src .. " is in the Makefile's CORE_SRC but not in the rockspec")
    end
  end)
end)
