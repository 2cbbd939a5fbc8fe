-- Paced load (wrk2 is not in Debian): wrk -s paced.lua URL -- PATH BODY_FILE RATE THREADS
-- Each thread keeps its own schedule of RATE/THREADS requests per second and delays each request
-- until its slot; a thread that falls behind sends at once. Latency is measured from the send,
-- so a stall is not charged to the requests queued behind it (no coordinated-omission correction).
package.path = debug.getinfo(1, "S").source:match("^@(.*/)") .. "?.lua;" .. package.path
require("report")

local ffi = require("ffi")
ffi.cdef [[
  typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
  int clock_gettime(int clock_id, bench_timespec *tp);
]]
local ts = ffi.new("bench_timespec")
local function now_ms()
  ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end

local interval, next_at = 0, nil

function init(args)
  local path, body_file, rate, threads = args[1], args[2], tonumber(args[3]), tonumber(args[4])
  local f = assert(io.open(body_file, "rb"))
  wrk.method, wrk.body = "POST", f:read("*a")
  f:close()
  wrk.headers["Content-Type"] = "application/json"
  req = wrk.format(nil, path)
  interval = 1000 * threads / rate
end

function request()
  return req
end

function delay()
  local t = now_ms()
  next_at = (next_at or t) + interval
  local wait = next_at - t
  if wait < 0 then
    return 0
  end
  return wait
end
