-- Image references and pulls: the registry prefix, what /images/create
-- wants, and ensure_images (pull policy, progress events, errors).
local engine = require("ctrlplane.docker.engine")
local json = require("ctrlplane.docker.json")

local function fail(msg, code)
  return nil, msg, code
end

local function emit(ctx, ev)
  if ctx.on_event then ctx.on_event(ev) end
end

-- Registry prefix for refs without a registry host.
local function image_ref(cfg, image)
  if cfg.registry then
    local first = image:match("^([^/]+)/")
    local has_registry = first and (first:find("[.:]") or first == "localhost")
    if not has_registry then return (cfg.registry:gsub("/+$", "")) .. "/" .. image end
  end
  return image
end

-- Splits a ref into what /images/create wants.
local function split_ref(ref)
  if ref:find("@", 1, true) then return ref, nil end
  local name, tag = ref:match("^(.+):([%w][%w_.-]*)$")
  if name and not tag:find("/", 1, true) then return name, tag end
  return ref, "latest"
end

-- Pulls each image by the pull policy; a missing image that cannot be
-- pulled is an error.
local function ensure_images(ctx, images)
  local cfg = ctx.cfg
  local seen, refs = {}, {}
  for _, img in ipairs(images) do
    local ref = image_ref(cfg, img)
    if not seen[ref] then
      seen[ref] = true
      refs[#refs + 1] = ref
    end
  end
  local present = {}
  if cfg.pull_policy ~= "always" then
    local calls = {}
    for i, ref in ipairs(refs) do calls[i] = {path = "/images/" .. engine.segment(ref) .. "/json"} end
    for i, r in ipairs(ctx.eng:batch(calls)) do
      if r.value then
        present[refs[i]] = true
      elseif r.code ~= "not_found" then
        return fail("inspecting image " .. refs[i] .. ": " .. r.error, r.code)
      end
    end
  end
  for _, ref in ipairs(refs) do
    if not present[ref] then
      if cfg.pull_policy == "never" then
        return fail(string.format("image %s is not present locally and the pull policy is never",
          ref), "image_missing")
      end
      local name, tag = split_ref(ref)
      emit(ctx, {type = "pull", image = ref, status = "Pulling"})
      local stream, err, code = ctx.eng:stream("POST", "/images/create",
        {fromImage = name, tag = tag}, {idle_timeout = 120})
      if not stream then
        return fail(string.format("pulling image %s: %s", ref, err), code == "not_found"
          and "image_missing" or code)
      end
      local buf, perr = "", nil
      while true do
        local chunk, rerr, rcode = stream:read(cfg.timeout)
        if chunk == nil then
          if rerr then
            stream:close()
            return fail("pulling image " .. ref .. ": " .. rerr, rcode)
          end
          break
        end
        if chunk then
          buf = buf .. chunk
          for line in buf:gmatch("([^\n]*)\n") do
            local ev = json.decode(line)
            if type(ev) == "table" then
              if ev.error then
                perr = ev.error
              else
                local d = type(ev.progressDetail) == "table" and ev.progressDetail or {}
                emit(ctx, {type = "pull", image = ref, id = ev.id, status = ev.status,
                  current = d.current, total = d.total})
              end
            end
          end
          buf = buf:match("[^\n]*$")
        end
      end
      stream:close()
      if perr then
        return fail(string.format("pulling image %s: %s", ref, perr), "image_missing")
      end
      emit(ctx, {type = "pull", image = ref, status = "Pulled"})
    end
  end
  return true
end

return {
  image_ref = image_ref,
  split_ref = split_ref,
  ensure_images = ensure_images,
}
