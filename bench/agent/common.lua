-- Shared helpers for the wrk scripts in bench/agent (wrk is built on LuaJIT,
-- so the ffi gives us clock_gettime for pacing and real timestamps).
local ffi = require("ffi")
ffi.cdef [[
  typedef struct { long tv_sec; long tv_nsec; } gc_timespec;
  int clock_gettime(int clock_id, gc_timespec *tp);
]]
local CLOCK_REALTIME, CLOCK_MONOTONIC = 0, 1
local ts = ffi.new("gc_timespec")

local M = {}

function M.monotonic_ms()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, ts)
  return tonumber(ts.tv_sec) * 1e3 + tonumber(ts.tv_nsec) / 1e6
end

function M.realtime_s()
  ffi.C.clock_gettime(CLOCK_REALTIME, ts)
  return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) / 1e9
end

-- One machine-readable line, parsed by scripts/load-test.sh.
function M.report(name, summary, latency, extra)
  local e = summary.errors
  local seconds = summary.duration / 1e6
  io.write(string.format(
    "RESULT %s requests=%d seconds=%.3f rate=%.1f p50_ms=%.3f p90_ms=%.3f p99_ms=%.3f max_ms=%.3f " ..
    "non2xx=%d connect_errors=%d read_errors=%d write_errors=%d timeouts=%d%s\n",
    name, summary.requests, seconds, summary.requests / seconds,
    latency:percentile(50) / 1e3, latency:percentile(90) / 1e3, latency:percentile(99) / 1e3,
    latency.max / 1e3, e.status, e.connect, e.read, e.write, e.timeout, extra or ""))
end

return M
