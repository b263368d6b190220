-- GET /metrics at a fixed total rate (default 200 requests/s), paced with
-- wrk's delay() hook.  Each wrk thread keeps its own schedule of send slots,
-- RATE/THREADS per second; every connection that is ready to send takes the
-- next free slot, so the offered rate does not drift with the latency.
--
--   wrk -t2 -c8 -d30s --latency -s bench/agent/metrics_paced.lua \
--       http://127.0.0.1:PORT/metrics -- 200 2
--
-- Script arguments (after --): RATE (total requests/s, default 200) and
-- THREADS (must equal wrk's -t, default 2).
package.path = (debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "?.lua;" .. package.path
local common = require("common")

local interval_ms, next_slot

function init(args)
  local rate = tonumber(args[1] or "200")
  local threads = tonumber(args[2] or "2")
  assert(rate and rate > 0, "RATE must be a positive number")
  assert(threads and threads >= 1, "THREADS must be >= 1 (wrk's -t)")
  interval_ms = 1000.0 * threads / rate
  wrk.method = "GET"
  wrk.headers["Accept"] = "text/plain"
end

function delay()
  local now = common.monotonic_ms()
  -- Start, or resynchronise after falling more than one slot behind (no burst
  -- to catch up: the achieved rate, reported below, shows any shortfall).
  if next_slot == nil or next_slot < now - interval_ms then next_slot = now end
  local wait = next_slot - now
  next_slot = next_slot + interval_ms
  return math.floor(wait + 0.5)
end

function done(summary, latency, requests)
  common.report("metrics", summary, latency)
end
