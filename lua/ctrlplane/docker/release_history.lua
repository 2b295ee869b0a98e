-- Release history, kept in container labels on the engine (the last
-- HISTORY_MAX releases, each with the image (ref, image ID and repo digest)
-- and env of every service).
local json = require("ctrlplane.docker.json")
local project = require("ctrlplane.docker.project")
local util = require("ctrlplane.docker.util")

local LABEL = project.LABEL
local release_history = {}

release_history.HISTORY_MAX = 10

-- The newest history among the members (the last container created
-- carries the most recent one).
local function history_of(list)
  local newest, at = nil, -1
  for _, c in ipairs(list or {}) do
    local labels = c.Labels or {}
    if labels[LABEL.releases] and (c.Created or 0) > at then
      newest, at = labels[LABEL.releases], c.Created or 0
    end
  end
  local h = newest and json.decode(newest)
  return type(h) == "table" and h or {}
end

-- What each service ran: pins = {name -> {image_id, repo_digest}} (see
-- pins below) beside the ref, so a rollback restores exactly that image.
local function snapshot(specs, pins)
  local out = {}
  for _, s in pairs(specs) do
    local pin = pins and pins[s.name] or {}
    out[s.name] = {image = s.image, env = s.env or json.object({}),
      image_id = pin.image_id, repo_digest = pin.repo_digest}
  end
  return out
end

-- Inspects the image each service runs (targets: name -> image ref or ID)
-- and returns name -> {image_id, repo_digest}. An image that cannot be
-- inspected is recorded by ref only.
local function pins(eng, targets)
  local names = util.sorted_keys(targets)
  local calls = {}
  for i, name in ipairs(names) do
    -- refs go in unencoded, as image.ensure_images sends them (a ref has '/')
    calls[i] = {path = "/images/" .. targets[name] .. "/json"}
  end
  local out = {}
  for i, r in ipairs(eng:batch(calls)) do
    if r.value and type(r.value) == "table" then
      local digests = r.value.RepoDigests
      out[names[i]] = {image_id = r.value.Id,
        repo_digest = type(digests) == "table" and digests[1] or nil}
    end
  end
  return out
end

-- Appends (or moves to the end) the release id with its snapshot; keeps the
-- last max (default HISTORY_MAX; the rollout script's history). Returns the
-- JSON text for the label.
local function record_release(history, id, services, max)
  local out = json.array({})
  for _, e in ipairs(history) do
    if e.id ~= id then out[#out + 1] = e end
  end
  out[#out + 1] = {id = id, at = util.rfc3339(), services = services}
  while #out > (max or release_history.HISTORY_MAX) do table.remove(out, 1) end
  return json.encode(out), out
end

release_history.history_of = history_of
release_history.snapshot = snapshot
release_history.pins = pins
release_history.record_release = record_release

-- The ids of a history, oldest first.
function release_history.ids(history)
  local out = {}
  for i, e in ipairs(history) do out[i] = e.id end
  return out
end

return release_history
