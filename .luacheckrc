std = "lua54"
max_line_length = 110
files["spec"] = {std = "+busted", max_line_length = 120}
files["spec/support/summary.lua"] = {std = "+busted"}
exclude_files = {"build"}
-- policy scripts run in a sandbox that provides these helpers
files["scripts"] = {read_globals = {"graph"}}
files["examples/policies"] = {read_globals = {"graph"}}
-- scripts/secrets.lua alone also gets read_file
files["scripts/secrets.lua"] = {read_globals = {"graph", "read_file"}}
