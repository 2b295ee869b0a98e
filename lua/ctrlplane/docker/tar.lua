-- A tiny ustar (POSIX.1-1988) writer: regular files only, enough to hand
-- Docker's PUT /containers/{id}/archive the config files and secrets of a
-- service. Parent directories are not written: the daemon creates missing
-- ones (0755) and leaves existing ones (their mode and owner) alone.
--
--   tar.archive(files) -> bytes | nil, message
--     files: list of {path = "/abs/or/relative", content = string,
--                     mode = integer (default 0644), uid = 0, gid = 0, mtime = seconds}
local tar = {}

local BLOCK = 512

local function octal(n, width)
  -- width - 1 digits and a NUL, as ustar fields are written
  local s = string.format("%o", n)
  if #s > width - 1 then return nil end
  return string.rep("0", width - 1 - #s) .. s .. "\0"
end

local function field(s, width)
  return s .. string.rep("\0", width - #s)
end

-- Splits a path into ustar's prefix (<= 155 bytes) and name (<= 100 bytes)
-- at a '/'; nil when it cannot be split.
local function split_name(path)
  if #path <= 100 then return "", path end
  for i = math.min(#path, 156), 1, -1 do
    if path:sub(i, i) == "/" and i - 1 <= 155 and #path - i <= 100 and i > 1 then
      return path:sub(1, i - 1), path:sub(i + 1)
    end
  end
  return nil
end

local function header(path, size, mode, uid, gid, mtime)
  local prefix, name = split_name(path)
  if not prefix then return nil, "path too long for a tar header: " .. path end
  local size_f = octal(size, 12)
  if not size_f then return nil, "file too large for a tar header: " .. path end
  local parts = {
    field(name, 100),
    octal(mode, 8), octal(uid, 8), octal(gid, 8),
    size_f, octal(mtime, 12),
    "        ",            -- checksum: spaces while it is computed
    "0",                   -- typeflag: regular file
    field("", 100),        -- linkname
    "ustar\0", "00",
    field("root", 32), field("root", 32),
    octal(0, 8), octal(0, 8),
    field(prefix, 155),
  }
  local h = table.concat(parts)
  h = h .. string.rep("\0", BLOCK - #h)
  local sum = 0
  for i = 1, #h do sum = sum + h:byte(i) end
  local chk = string.format("%06o", sum) .. "\0 "
  return h:sub(1, 148) .. chk .. h:sub(157)
end

function tar.archive(files)
  local out = {}
  for _, f in ipairs(files) do
    local path = f.path:gsub("^/+", "")
    if path == "" then return nil, "a tar entry needs a file name" end
    local content = f.content or ""
    local h, err = header(path, #content, f.mode or 420, f.uid or 0, f.gid or 0,
      math.floor(f.mtime or os.time()))
    if not h then return nil, err end
    out[#out + 1] = h
    out[#out + 1] = content
    local pad = (BLOCK - #content % BLOCK) % BLOCK
    if pad > 0 then out[#out + 1] = string.rep("\0", pad) end
  end
  out[#out + 1] = string.rep("\0", 2 * BLOCK) -- end of archive
  return table.concat(out)
end

return tar
