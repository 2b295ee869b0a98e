-- Secrets policy: where the value of a service's SecretRef comes from.
--
-- resolve(ref, ctx) -> value | nil, reason
--   ref: {key, type = "env"|"file"} as the request gave it.
--   ctx: {instance_id, tenant_id, service, secrets_dir}
--        secrets_dir is CP_DOCKER_SECRETS_DIR (or the secrets_dir option),
--        nil when not set.
--   returns the secret's value (a string), or nil and a reason. The runtime
--   fails the provision (or deploy) with a field error naming the secret
--   before it touches the engine. The reason must not contain the value.
--
-- The runtime then hands the value to the container: type env as the
-- environment variable KEY_IN_UPPER_SNAKE_CASE, type file as the file
-- /run/secrets/<key> (mode 0400, owned by root). Values never go into
-- labels, logs, errors, status or the release history; the runtime keeps a
-- SHA-256 digest so a changed value redeploys the service.
--
-- Helper available here: read_file(path) -> content | nil, reason (at most 1 MiB).
--
-- The bundled resolver reads <secrets_dir>/<key>; one trailing newline is
-- dropped (so `echo value > file` works). Replace this file (or put a
-- secrets.lua in the policy directory) to read from a vault, per tenant, ...

local function resolve(ref, ctx)
  if not ctx.secrets_dir then
    return nil, "no secrets resolver configured (set CP_DOCKER_SECRETS_DIR to a directory "
      .. "holding one file per secret key, or provide a secrets.lua policy)"
  end
  local value, err = read_file(ctx.secrets_dir .. "/" .. ref.key)
  if not value then
    return nil, "secret " .. ref.key .. " not found in " .. ctx.secrets_dir .. " (" .. err .. ")"
  end
  return (value:gsub("\r?\n$", ""))
end

return {resolve = resolve}
