-- Closed loop, as fast as the connections go: wrk -s load.lua URL -- PATH [BODY_FILE]
-- A POST when a body file is given (its JSON sent as is), else a GET.
package.path = debug.getinfo(1, "S").source:match("^@(.*/)") .. "?.lua;" .. package.path
require("report")

function init(args)
  local path, body_file = args[1], args[2]
  if body_file and body_file ~= "" then
    local f = assert(io.open(body_file, "rb"))
    wrk.method, wrk.body = "POST", f:read("*a")
    f:close()
    wrk.headers["Content-Type"] = "application/json"
  end
  req = wrk.format(nil, path)
end

function request()
  return req
end
