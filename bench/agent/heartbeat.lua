-- POST /v1/telemetry heartbeats (the protocol's "heartbeat" message with
-- metrics, as examples/protocol/heartbeat.json) as fast as the agent answers.
--
-- The agent refuses (422) a sample that is not newer than the device's
-- newest, so every wrk thread owns one remote device and must have exactly
-- one connection (run with -c equal to -t): its first requests register the
-- device (device_registration), every later one is a heartbeat whose
-- timestamp is the wall clock, forced strictly increasing.  (wrk calls the
-- first thread's request() once before the run to check the script and
-- throws that request away, so the first two calls of every thread are
-- registrations; registering again is an update, answered 202 too.)
--
--   wrk -t8 -c8 -d30s --latency -s bench/agent/heartbeat.lua \
--       http://127.0.0.1:PORT/v1/telemetry -- wrk-load
--
-- Script argument (after --): HOST, the hostname the devices register under
-- (default wrk-load); device ids are hb:0 .. hb:(threads-1).
package.path = (debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "?.lua;" .. package.path
local common = require("common")

local next_id = 0
function setup(thread)
  thread:set("thread_index", next_id)
  next_id = next_id + 1
end

local host, device, calls, last_ts, n
local headers = { ["Content-Type"] = "application/json" }

function init(args)
  host = args[1] or "wrk-load"
  device = string.format("hb:%d", thread_index)
  calls = 0
  last_ts = 0
  n = 0
end

local function timestamp()
  local t = common.realtime_s()
  if t <= last_ts + 1e-6 then t = last_ts + 1e-6 end
  last_ts = t
  return t
end

local registration_format = [[
{"type":"device_registration","version":"1.0","timestamp":%.6f,"payload":{"hostname":"%s","port":8765,
"device_id":"%s","timestamp":%.6f,"capabilities":{"device_id":"%s","device_type":"cuda",
"device_name":"NVIDIA H100 80GB HBM3","vendor":"NVIDIA","compute_units":132,"memory_bandwidth_gbps":3350.0,
"max_memory_bytes":85520809984,"driver_version":"535.129.03","supports_fp64":true,"supports_tensor_cores":true}}}]]

local heartbeat_format = '{"type":"heartbeat","version":"1.0","timestamp":%.6f,"payload":{"hostname":"%s","device_id":"%s",' ..
  '"metrics":{"device_id":"%s","timestamp":%.6f,"memory_used_bytes":%d,"memory_total_bytes":85520809984,' ..
  '"compute_utilization_percent":%.1f,"power_watts":%.2f,"temperature_celsius":%.1f,"clock_rate_mhz":1980.0},' ..
  '"timestamp":%.6f,"is_available":true,"error_message":null}}'

function request()
  local t = timestamp()
  local body
  calls = calls + 1
  if calls <= 2 then
    body = string.format(registration_format, t, host, device, t, device)
  else
    n = n + 1
    local k = n % 100
    body = string.format(heartbeat_format, t, host, device, device, t, 40000000000 + k * 100000000, k + 0.5,
                         300 + k * 3.5, 50 + k * 0.25, t)
  end
  return wrk.format("POST", nil, headers, body)
end

function done(summary, latency, requests)
  common.report("heartbeat", summary, latency)
end
