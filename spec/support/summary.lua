-- busted output handler: busted's gtest output, then the plain closing line
-- "N passed, N failed" that CI reads (errors count as failures; pending
-- tests are reported as skipped).
return function(options)
  local busted = require("busted")
  local handler = require("busted.outputHandlers.gtest")(options)
  busted.subscribe({"suite", "end"}, function()
    local failed = #handler.failures + #handler.errors
    io.stdout:write(string.format("\n%d passed, %d failed%s\n", #handler.successes, failed,
      #handler.pendings > 0 and (", " .. #handler.pendings .. " skipped") or ""))
    io.stdout:flush()
    return nil, true
  end)
  return handler
end
