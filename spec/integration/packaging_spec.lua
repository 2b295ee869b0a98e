-- Installing the runtime: luarocks make into a local tree, make install
-- into a prefix, and the C embedding example.
local json = require("ctrlplane.docker.json")
local helper = require("support.helper")

local function tmpdir()
  local out = helper.sh("mktemp -d")
  return (out:gsub("%s+$", ""))
end

describe("packaging", function()
  setup(function()
    helper.daemon()
  end)

  it("`luarocks make` installs a tree that plain lua5.4 can load", function()
    local _, has = helper.sh("command -v luarocks >/dev/null")
    assert.are.equal(0, has, "luarocks is needed (make setup installs it)")
    local tree = tmpdir()
    local out, rc = helper.sh("luarocks --lua-version=5.4 --tree=" .. tree
      .. " make --deps-mode=none ctrlplane-docker-scm-1.rockspec 2>&1")
    assert.are.equal(0, rc, out)
    local script = string.format([[
      package.path = "%s/share/lua/5.4/?.lua;%s/share/lua/5.4/?/init.lua;" .. package.path
      package.cpath = "%s/lib/lua/5.4/?.so;" .. package.cpath
      local docker = require "ctrlplane.docker"
      local p = assert(docker.new())
      assert(p:health_check().healthy)
      assert(p:status("inst_pkg_none").state == "destroyed")
      print(package.searchpath("ctrlplane.docker.core", package.cpath))]], tree, tree, tree)
    local f = assert(io.open(tree .. "/check.lua", "w"))
    f:write(script)
    f:close()
    local out2, rc2 = helper.sh("cd / && lua5.4 " .. tree .. "/check.lua 2>&1")
    helper.sh("rm -rf " .. tree)
    assert.are.equal(0, rc2, out2)
    assert.matches(tree .. "/lib/lua/5.4/ctrlplane/docker/core.so", out2, 1, true)
  end)

  it("`make install PREFIX=...` installs a cpdocker that runs from anywhere", function()
    local prefix = tmpdir()
    local out, rc = helper.sh("make -s install PREFIX=" .. prefix .. " 2>&1")
    assert.are.equal(0, rc, out)
    for _, f in ipairs({"/bin/cpdocker", "/include/ctrlplane_docker.h", "/lib/libctrlplane-docker.a",
        "/lib/libctrlplane-docker.so", "/share/ctrlplane-docker/scripts/rollout.lua",
        "/share/ctrlplane-docker/lua/ctrlplane/docker/init.lua",
        "/lib/lua/5.4/ctrlplane/docker/core.so"}) do
      local h = io.open(prefix .. f)
      assert.is_not_nil(h, prefix .. f .. " was not installed")
      h:close()
    end
    local out2, rc2 = helper.sh("cd / && " .. prefix .. "/bin/cpdocker --json health 2>&1")
    helper.sh("rm -rf " .. prefix)
    assert.are.equal(0, rc2, out2)
    assert.is_true(json.decode(out2).healthy)
  end)

  it("after a plain `make`, `make install PREFIX` gives a library that finds its modules "
    .. "there, a pkg-config file, and Lua modules lua5.4 loads", function()
    -- nothing to fall back on: the build's default PREFIX holds no install
    assert.is_nil(io.open("/usr/local/share/ctrlplane-docker/lua/ctrlplane/docker/init.lua"),
      "/usr/local has an install of ctrlplane-docker; this spec needs it absent")
    local prefix = tmpdir() .. "/opt"
    local out, rc = helper.sh("make -s all >/dev/null && make -s install PREFIX=" .. prefix .. " 2>&1")
    assert.are.equal(0, rc, out)
    local env = "env -u CP_DOCKER_HOME -u LD_LIBRARY_PATH PKG_CONFIG_PATH=" .. prefix .. "/lib/pkgconfig "
    out, rc = helper.sh(env .. "pkg-config --modversion ctrlplane-docker")
    assert.are.equal(0, rc, out)
    assert.matches("^%d+%.%d+%.%d+", out)
    -- the example, built against the installed library with pkg-config only
    out, rc = helper.sh(env .. "sh -c 'cc -o " .. prefix .. "/embed examples/embed_example.c "
      .. "$(pkg-config --cflags --libs ctrlplane-docker)' 2>&1")
    assert.are.equal(0, rc, out)
    out, rc = helper.sh("cd / && " .. env .. prefix .. "/embed status "
      .. "'{\"instance_id\":\"inst_pkg_none\"}' 2>&1")
    assert.are.equal(0, rc, out)
    assert.are.equal("destroyed", json.decode(out:match("status ok ([^\n]+)")).state)
    out = helper.sh("ldd " .. prefix .. "/embed")
    assert.matches(prefix .. "/lib/libctrlplane-docker.so", out, 1, true)
    -- plain lua5.4 with the prefix's share/lua/5.4 and lib/lua/5.4 on its paths
    out, rc = helper.sh(string.format("cd / && LUA_PATH='%s/share/lua/5.4/?.lua;%s/share/lua/5.4/?/init.lua;;' "
      .. "LUA_CPATH='%s/lib/lua/5.4/?.so;;' lua5.4 -e 'local p = assert(require(\"ctrlplane.docker\").new()) "
      .. "print(assert(p:status(\"inst_pkg_none\")).state)' 2>&1", prefix, prefix, prefix))
    helper.sh("rm -rf " .. prefix:gsub("/opt$", ""))
    assert.are.equal(0, rc, out)
    assert.are.equal("destroyed\n", out)
  end)

  it("the in-tree embedding example runs from anywhere without CP_DOCKER_HOME", function()
    local here = helper.sh("pwd"):gsub("%s+$", "")
    local out, rc = helper.sh("cd / && env -u CP_DOCKER_HOME " .. here
      .. "/build/embed-example info '' 2>&1")
    assert.are.equal(0, rc, out)
    assert.are.equal("docker", json.decode(out:match("info ok ([^\n]+)")).name)
  end)

  it("has --help for every command", function()
    local out = helper.cpdocker("--help")
    local n = 0
    for cmd in out:gmatch("\n  (%l+)[^\n]*") do
      local text, rc = helper.cpdocker(cmd .. " --help")
      assert.are.equal(0, rc, cmd)
      assert.matches("usage: cpdocker " .. cmd, text)
      n = n + 1
    end
    assert.is_true(n >= 10)
  end)

  it("the C embedding example opens a runtime and calls operations with JSON", function()
    local out, rc = helper.sh("CP_DOCKER_HOME=. valgrind -q --leak-check=full --errors-for-leak-kinds=definite"
      .. " --error-exitcode=99 build/embed-example health_check '' info '' "
      .. "status '{\"instance_id\":\"inst_embed_none\"}' provision '{\"instance_id\":\"bad id\"}' 2>&1")
    assert.are.equal(1, rc, out) -- the invalid provision fails; valgrind would exit 99
    assert.matches("^runtime %d+%.%d+%.%d+\n", out)
    local health = json.decode(out:match("health_check ok ([^\n]+)"))
    assert.is_true(health.healthy)
    assert.are.equal("docker", json.decode(out:match("info ok ([^\n]+)")).name)
    assert.are.equal("destroyed", json.decode(out:match("status ok ([^\n]+)")).state)
    local err = json.decode(out:match("provision failed ([^\n]+)"))
    assert.are.equal(-32602, err.code)
    assert.are.equal("instance_id", err.data.errors[1].field)
  end)

  it("the embedding API reports a bad configuration", function()
    local out, rc = helper.sh("CP_DOCKER_HOME=. CPD_CONFIG='{\"host\":\"ftp://x\"}' build/embed-example 2>&1")
    assert.are.equal(2, rc)
    assert.matches("host: invalid Docker host", out)
  end)
end)
