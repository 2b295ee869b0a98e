-- The project's own files, for specs that check them against each other
-- (docs_spec, error_codes_spec).
local M = {}

function M.read(path)
  local f = assert(io.open(path, "r"))
  local s = f:read("a")
  f:close()
  return s
end

-- runtime/*.c, as paths
function M.c_files()
  local out = {}
  local p = assert(io.popen("ls runtime/*.c"))
  for line in p:lines() do out[#out + 1] = line end
  p:close()
  return out
end

return M
