-- Lifecycle operations, gathered onto the provider. Where each part lives:
--   specbuild.lua      pure spec building: container body, health check, spec
--                  hash, endpoints (testable without Docker)
--   image.lua      image refs (registry prefix) and pulls
--   network.lua    the project network (explicit subnet) and volumes
--   steps.lua      engine steps: create/start/remove, init, readiness, undo
--   members.lua    the project's members and the current state
--   release_history.lua  release history in labels
--   gate.lua       every call into a policy script, output checked
--   ops/*.lua      one file per operation group: provision (+deprovision),
--                  power (start/stop/restart), status, deploy (+rollback),
--                  scale
-- The decisions (order, strategy, what a state means, what re-provisioning
-- keeps) come from the policy scripts (scripts/rollout.lua, status.lua,
-- reprovision.lua).
--
-- All operations return plain tables in the contract's shape, or nil,
-- message, code. Progress is reported through opts.on_event(event) with
-- event = {type = "pull", image, status, id, current, total}
--       | {type = "service", service, action, container}.
local image = require("ctrlplane.docker.image")
local release_history = require("ctrlplane.docker.release_history")
local specbuild = require("ctrlplane.docker.specbuild")
local steps = require("ctrlplane.docker.steps")

local lifecycle = {}

lifecycle.HISTORY_MAX = release_history.HISTORY_MAX

lifecycle.OPS = {"provision", "power", "status", "deploy", "scale"}

function lifecycle.install(M)
  for _, name in ipairs(lifecycle.OPS) do
    for k, fn in pairs(require("ctrlplane.docker.ops." .. name)) do M.Provider[k] = fn end
  end
  M.register_capabilities({"provision", "deploy", "rollback", "scale", "volumes",
    "strategy:recreate", "strategy:rolling", "strategy:blue-green", "strategy:canary"})
end

-- for specs
lifecycle._fnv1a = specbuild.fnv1a
lifecycle._frames_to_text = steps.frames_to_text
lifecycle._container_body = specbuild.container_body
lifecycle._split_ref = image.split_ref
lifecycle._image_ref = image.image_ref
lifecycle._record_release = release_history.record_release

return lifecycle
