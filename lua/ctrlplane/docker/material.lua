-- What a service's containers get besides their spec: the resolved secrets
-- (scripts/secrets.lua) and the files written into the container before its
-- process starts (config_files and type-file secrets), uploaded as a tar
-- with PUT /containers/{id}/archive.
--
--   material.resolve(p, inst, svc, field) -> m | nil, message, "invalid"
--     m = {env = {NAME = value}, files = {{path, content, mode}}, digest = hex | nil}
--   material.upload(eng, id, m, svc) -> true | nil, message, code
--
-- Secret values live only in m (in memory) and in the container (its env
-- for type env, /run/secrets/<key> for type file). The spec hash gets
-- m.digest, a SHA-256 over the keys, types and values, so a changed value
-- redeploys the service; labels, errors and history never see a value.
local engine = require("ctrlplane.docker.engine")
local policy = require("ctrlplane.docker.policy")
local sha256 = require("ctrlplane.docker.sha256")
local tar = require("ctrlplane.docker.tar")
local validate = require("ctrlplane.docker.validate")

local material = {}

material.CONFIG_MODE = tonumber("444", 8) -- read-only for everyone
material.SECRET_MODE = tonumber("400", 8) -- read-only for root
material.ENV_VALUE_MAX = 128 * 1024 - 1   -- MAX_ARG_STRLEN, with NAME= counted below

local function files_of(svc)
  local files = {}
  for _, f in ipairs(svc.config_files or {}) do
    files[#files + 1] = {path = f.path, content = f.content or "", mode = material.CONFIG_MODE}
  end
  return files
end

-- Resolves the secrets of svc through the secrets policy. field names the
-- service in errors (services[2] for a request, "service web" otherwise).
function material.resolve(p, inst, svc, field)
  local m = {env = {}, files = files_of(svc)}
  local refs = svc.secrets or {}
  if #refs == 0 then return m end
  local pol, perr = policy.load_secrets(p.cfg)
  if not pol then
    return nil, string.format("invalid request: %s.secrets: %s", field, perr), "invalid"
  end
  local digest = {}
  for i, ref in ipairs(refs) do
    local sf = string.format("%s.secrets[%d]", field, i - 1)
    local ctx = {instance_id = inst.instance_id, tenant_id = inst.tenant_id or "",
      service = svc.name, secrets_dir = p.cfg.secrets_dir}
    local value, why = policy.call(pol, "resolve", {key = ref.key, type = ref.type}, ctx)
    if type(value) ~= "string" then
      local reason = why or (value == nil and "the resolver returned nothing")
        or ("the resolver returned a " .. type(value) .. ", not a string")
      return nil, string.format("invalid request: %s (key %q, type %s): cannot resolve the "
        .. "secret: %s", sf, ref.key, ref.type, tostring(reason)), "invalid"
    end
    if ref.type == "env" then
      local name = validate.secret_env_name(ref.key)
      if value:find("\0", 1, true) then
        return nil, string.format("invalid request: %s (key %q): an env secret cannot contain "
          .. "a NUL byte", sf, ref.key), "invalid"
      end
      if #name + 1 + #value > material.ENV_VALUE_MAX then
        return nil, string.format("invalid request: %s (key %q): value of %d bytes is over the "
          .. "kernel's 128 KiB limit for one environment string", sf, ref.key, #value), "invalid"
      end
      m.env[name] = value
    else
      m.files[#m.files + 1] = {path = validate.SECRETS_DIR .. "/" .. ref.key, content = value,
        mode = material.SECRET_MODE}
    end
    digest[#digest + 1] = ref.type .. "\0" .. ref.key .. "\0" .. value
  end
  m.digest = sha256.hex(table.concat(digest, "\0\0"))
  return m
end

-- Writes m.files into the created (not yet started) container.
function material.upload(eng, id, m, svc)
  if not m or #m.files == 0 then return true end
  local bytes, terr = tar.archive(m.files)
  if not bytes then return nil, "service " .. svc.name .. ": " .. terr, "invalid" end
  local ok, err, code = eng:call("PUT", "/containers/" .. engine.segment(id) .. "/archive",
    {path = "/"}, bytes, {content_type = "application/x-tar"})
  if not ok then
    return nil, string.format("writing config files and secrets into service %s: %s", svc.name,
      err), code
  end
  return true
end

return material
