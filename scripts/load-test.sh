#!/usr/bin/env bash
# Load test of `gpucluster agent` with wrk on loopback:
#   1. GET /metrics with 64 devices: p99 <= 5 ms at 200 requests/s;
#   2. POST /v1/telemetry heartbeats: >= 20,000 per second;
#   3. the agent's RSS flat during a heartbeat soak (sampled every second).
# Builds nothing. Starts the agent on a free loopback port with a generated
# fleet of simulated devices, runs the measurements (each --runs times; the
# summary gives the medians), soaks, stops the agent with SIGTERM and checks
# that it exits 0. Prints one PASS/FAIL line per target; exits 1 when any
# target or check fails (with --report-only only a failed check does: a
# 4xx/5xx answer, a socket error, a missing device, a non-zero exit).
#
#   scripts/load-test.sh [OPTIONS] [BINARY]        (default build/release/gpucluster)
#   scripts/load-test.sh --smoke --report-only build/release/gpucluster   # CI: ~20 s
#
# See docs/load.md for the measured numbers and the machine.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: scripts/load-test.sh [OPTIONS] [BINARY]
  BINARY                  gpucluster binary (default build/release/gpucluster)
  --devices N             simulated devices in the fleet (default 64)
  --rate R                /metrics requests per second (default 200)
  --metrics-duration S    seconds per /metrics run (default 30)
  --metrics-threads N     wrk threads for /metrics (default 2)
  --metrics-connections N wrk connections for /metrics, sharing each thread's send schedule (default 8)
  --heartbeat-duration S  seconds per heartbeat run (default 30)
  --connections N         wrk threads = connections for heartbeats, one device each (default 8)
  --soak-duration S       seconds of heartbeats while RSS is sampled (default 120; 0 skips)
  --runs N                repetitions of each measurement; medians reported (default 3)
  --agent-threads N       the agent's --threads (default: its own default, one per core)
  --agent-arg ARG         extra argument for `gpucluster agent` (repeatable)
  --agent-env VAR=VALUE   environment variable for the agent only (repeatable), e.g.
                          MALLOC_ARENA_MAX=2
  --smoke                 5-second runs, 1 repetition, 10-second soak
  --report-only           targets missed do not fail the script (checks still do)
  --keep DIR              keep logs and wrk output in DIR (default: a temp dir, removed)
  -h, --help              this text
EOF
}

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bench="$root/bench/agent"
binary="$root/build/release/gpucluster"
devices=64 rate=200 metrics_duration=30 metrics_threads=2 metrics_connections=8 heartbeat_duration=30 connections=8
soak_duration=120 runs=3 agent_threads="" report_only=0 keep=""
agent_args=() agent_env=()
while (($#)); do
  case $1 in
    --devices) devices=$2; shift ;;
    --rate) rate=$2; shift ;;
    --metrics-duration) metrics_duration=$2; shift ;;
    --metrics-threads) metrics_threads=$2; shift ;;
    --metrics-connections) metrics_connections=$2; shift ;;
    --heartbeat-duration) heartbeat_duration=$2; shift ;;
    --connections) connections=$2; shift ;;
    --soak-duration) soak_duration=$2; shift ;;
    --runs) runs=$2; shift ;;
    --agent-threads) agent_threads=$2; shift ;;
    --agent-arg) agent_args+=("$2"); shift ;;
    --agent-env) agent_env+=("$2"); shift ;;
    --smoke) metrics_duration=5 heartbeat_duration=5 soak_duration=10 runs=1 ;;
    --report-only) report_only=1 ;;
    --keep) keep=$2; shift ;;
    -h | --help) usage; exit 0 ;;
    -*) echo "load-test: unknown option $1" >&2; usage >&2; exit 2 ;;
    *) binary=$1 ;;
  esac
  shift
done
for n in devices rate metrics_duration metrics_threads metrics_connections heartbeat_duration connections soak_duration runs; do
  if ! [[ ${!n} =~ ^[0-9]+$ ]]; then echo "load-test: --${n//_/-} must be a whole number" >&2; exit 2; fi
done
((runs >= 1 && connections >= 1 && metrics_threads >= 1 && metrics_connections >= metrics_threads && rate >= 1)) || { echo "load-test: counts must be >= 1" >&2; exit 2; }
[[ -x $binary ]] || { echo "load-test: $binary is not an executable (build it first)" >&2; exit 2; }
command -v wrk >/dev/null || { echo "load-test: wrk not found (apt-get install wrk)" >&2; exit 2; }
command -v curl >/dev/null || { echo "load-test: curl not found" >&2; exit 2; }

if [[ -n $keep ]]; then
  mkdir -p "$keep"; work=$(cd "$keep" && pwd)
else
  work=$(mktemp -d -t gpucluster-load.XXXXXX)
fi
agent_pid="" sampler_pid=""
cleanup() {
  [[ -n $sampler_pid ]] && kill "$sampler_pid" 2>/dev/null || true
  [[ -n $agent_pid ]] && kill -KILL "$agent_pid" 2>/dev/null || true
  [[ -z $keep ]] && rm -rf "$work"
}
trap cleanup EXIT

checks_failed=0 targets_failed=0
check() {  # check NAME OK(0/1) DETAIL
  if [[ $2 == 1 ]]; then printf 'PASS  %s (%s)\n' "$1" "$3"; else printf 'FAIL  %s (%s)\n' "$1" "$3"; checks_failed=1; fi
}
target() {
  if [[ $2 == 1 ]]; then printf 'PASS  %s (%s)\n' "$1" "$3"; else printf 'FAIL  %s (%s)\n' "$1" "$3"; targets_failed=1; fi
}
median() { sort -g | awk '{v[NR] = $1} END {if (NR == 0) print "nan"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
field() { # field FILE KEY: the KEY=value of the RESULT line in FILE
  awk -v key="$2" '/^RESULT/ {for (i = 3; i <= NF; i++) {split($i, kv, "="); if (kv[1] == key) print kv[2]}}' "$1"
}
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$agent_pid/status" 2>/dev/null || echo 0; }
load_avg() { cut -d' ' -f1-3 /proc/loadavg; }
# CPU time (user + system) the agent has used, in clock ticks.
agent_ticks() { awk '{sub(/^.*\) /, ""); print $12 + $13}' "/proc/$agent_pid/stat" 2>/dev/null || echo 0; }
hz=$(getconf CLK_TCK)
# cpu_per_request TICKS_BEFORE FILE: the agent's CPU microseconds per request of the run in FILE.
cpu_per_request() {
  local used=$(($(agent_ticks) - $1)) requests
  requests=$(field "$2" requests)
  awk -v t="$used" -v hz="$hz" -v n="${requests:-0}" 'BEGIN {printf "%.1f", (n > 0 ? 1e6 * t / hz / n : 0)}'
}

echo "== gpucluster agent load test"
echo "date:     $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
echo "machine:  $(nproc) CPUs, $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo), $(awk '/^MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo); kernel $(uname -r)"
echo "wrk:      $(wrk --version 2>&1 | head -1 | cut -d' ' -f1-2)"
echo "binary:   $binary"
echo "load avg: $(load_avg) (at start)"

# --- the agent --------------------------------------------------------------
"$bench/make-fleet.sh" "$devices" load-node-01 >"$work/fleet.json"
agent_cmd=("$binary" agent --listen 127.0.0.1:0 --fleet "$work/fleet.json")
[[ -n $agent_threads ]] && agent_cmd+=(--threads "$agent_threads")
agent_cmd+=("${agent_args[@]}")
echo "agent:    ${agent_env[*]}${agent_env[*]:+ }${agent_cmd[*]}"
env "${agent_env[@]}" "${agent_cmd[@]}" >"$work/agent.out" 2>"$work/agent.err" &
agent_pid=$!
port=""
for _ in $(seq 100); do  # the port, then "ready:" (devices discovered)
  port=$(sed -n 's|^gpucluster agent on http://127\.0\.0\.1:\([0-9]*\).*|\1|p' "$work/agent.out" | head -1)
  [[ -n $port ]] && grep -q '^ready: ' "$work/agent.out" && break
  kill -0 "$agent_pid" 2>/dev/null || { port=""; break; }
  sleep 0.1
done
if [[ -z $port ]]; then
  echo "load-test: the agent did not start:" >&2; cat "$work/agent.out" "$work/agent.err" >&2; exit 1
fi
base="http://127.0.0.1:$port"
echo "url:      $base (pid $agent_pid, RSS $(rss_kib) KiB)"

series=$(curl -fsS "$base/metrics" | grep -c '^gpucluster_device_up{.*host="load-node-01"' || true)
check "/metrics has $devices devices' series" "$([[ $series == "$devices" ]] && echo 1 || echo 0)" \
  "gpucluster_device_up series for the fleet: $series"

# --- 1. GET /metrics at a fixed rate --------------------------------------------
echo
echo "== 1. GET /metrics, $devices devices, $rate requests/s, ${metrics_duration}s x $runs"
echo "wrk -t$metrics_threads -c$metrics_connections -d${metrics_duration}s --latency -s bench/agent/metrics_paced.lua $base/metrics -- $rate $metrics_threads"
for ((r = 1; r <= runs; r++)); do
  ticks=$(agent_ticks)
  wrk -t"$metrics_threads" -c"$metrics_connections" -d"${metrics_duration}s" --latency -s "$bench/metrics_paced.lua" \
    "$base/metrics" -- "$rate" "$metrics_threads" >"$work/metrics-$r.txt" 2>&1 || true
  echo "run $r: $(grep '^RESULT' "$work/metrics-$r.txt" | cut -d' ' -f3- || echo 'no result') agent_cpu_us_per_request=$(cpu_per_request "$ticks" "$work/metrics-$r.txt")  [load $(load_avg)]"
done

# --- 2. POST /v1/telemetry heartbeats, as fast as answered ---------------------------
echo
echo "== 2. POST /v1/telemetry heartbeats, $connections connections (one device each), ${heartbeat_duration}s x $runs"
echo "wrk -t$connections -c$connections -d${heartbeat_duration}s --latency -s bench/agent/heartbeat.lua $base/v1/telemetry -- wrk-load"
for ((r = 1; r <= runs; r++)); do
  ticks=$(agent_ticks)
  wrk -t"$connections" -c"$connections" -d"${heartbeat_duration}s" --latency -s "$bench/heartbeat.lua" \
    "$base/v1/telemetry" -- wrk-load >"$work/heartbeat-$r.txt" 2>&1 || true
  cpu=$(cpu_per_request "$ticks" "$work/heartbeat-$r.txt")
  echo "$cpu" >>"$work/cpu-heartbeat.txt"
  echo "run $r: $(grep '^RESULT' "$work/heartbeat-$r.txt" | cut -d' ' -f3- || echo 'no result') agent_cpu_us_per_request=$cpu  [load $(load_avg)]"
done

# --- 3. soak: heartbeats while sampling RSS ------------------------------------------------
rss_start=0 rss_end=0 rss_max=0 rss_warm=0 rss_growth=0 soak_rate=0
if ((soak_duration > 0)); then
  warmup=$((soak_duration / 5 > 5 ? soak_duration / 5 : 5))
  ((warmup >= soak_duration)) && warmup=$((soak_duration / 2))
  echo
  echo "== 3. soak: heartbeats for ${soak_duration}s, VmRSS sampled every second (warm-up ${warmup}s)"
  rss_start=$(rss_kib)
  (
    t=0
    while kill -0 "$agent_pid" 2>/dev/null; do
      echo "$t $(awk '/^VmRSS:/ {print $2}' "/proc/$agent_pid/status" 2>/dev/null)"
      sleep 1; t=$((t + 1))
    done
  ) >"$work/rss.txt" &
  sampler_pid=$!
  wrk -t"$connections" -c"$connections" -d"${soak_duration}s" --latency -s "$bench/heartbeat.lua" \
    "$base/v1/telemetry" -- wrk-load >"$work/soak.txt" 2>&1 || true
  sleep 1
  kill "$sampler_pid" 2>/dev/null || true; wait "$sampler_pid" 2>/dev/null || true; sampler_pid=""
  rss_end=$(rss_kib)
  echo "soak: $(grep '^RESULT' "$work/soak.txt" | cut -d' ' -f3- || echo 'no result')  [load $(load_avg)]"
  soak_rate=$(field "$work/soak.txt" rate)
  # After warm-up: the mean of the first quarter of the samples against the
  # mean of the last quarter, and the maximum.
  read -r rss_max rss_warm rss_late < <(awk -v w="$warmup" -v end="$soak_duration" '
    $2 > max {max = $2}
    $1 >= w && $1 <= end {v[n++] = $2}
    END {q = int(n / 4); if (q < 1) q = 1
         for (i = 0; i < q; i++) {a += v[i]; b += v[n - 1 - i]}
         printf "%d %d %d\n", max, a / q, b / q}' "$work/rss.txt")
  rss_growth=$(awk -v a="$rss_warm" -v b="$rss_late" 'BEGIN {printf "%.1f", (a > 0 ? 100 * (b - a) / a : 0)}')
  echo "RSS KiB: start $rss_start, after warm-up $rss_warm, last quarter $rss_late, end $rss_end, max $rss_max (growth after warm-up ${rss_growth}%)"
  echo "RSS samples (s KiB): $(awk '{printf "%s%s:%s", (NR > 1 ? " " : ""), $1, $2}' "$work/rss.txt")"
fi

# --- the agent's own account of what it answered --------------------------------------------
exposition=$(curl -fsS "$base/metrics" || true)
bad_telemetry=$(awk '/^gpucluster_http_requests_total\{route="\/v1\/telemetry"/ && !/code="202"/ {s += $NF} END {print s + 0}' <<<"$exposition")
ok_telemetry=$(awk '/^gpucluster_http_requests_total\{route="\/v1\/telemetry",code="202"/ {s += $NF} END {print s + 0}' <<<"$exposition")
bad_metrics=$(awk '/^gpucluster_http_requests_total\{route="\/metrics"/ && !/code="200"/ {s += $NF} END {print s + 0}' <<<"$exposition")

# --- SIGTERM ----------------------------------------------------------------------------
kill -TERM "$agent_pid"
status=0
wait "$agent_pid" || status=$?
agent_pid=""

# --- summary ----------------------------------------------------------------------------
echo
echo "== summary (medians of $runs runs; load avg now $(load_avg))"
m_p50=$(for r in $(seq "$runs"); do field "$work/metrics-$r.txt" p50_ms; done | median)
m_p90=$(for r in $(seq "$runs"); do field "$work/metrics-$r.txt" p90_ms; done | median)
m_p99=$(for r in $(seq "$runs"); do field "$work/metrics-$r.txt" p99_ms; done | median)
m_rate=$(for r in $(seq "$runs"); do field "$work/metrics-$r.txt" rate; done | median)
h_rate=$(for r in $(seq "$runs"); do field "$work/heartbeat-$r.txt" rate; done | median)
h_p50=$(for r in $(seq "$runs"); do field "$work/heartbeat-$r.txt" p50_ms; done | median)
h_p99=$(for r in $(seq "$runs"); do field "$work/heartbeat-$r.txt" p99_ms; done | median)
wrk_errors=0
for f in "$work"/metrics-*.txt "$work"/heartbeat-*.txt ${soak_duration:+"$work/soak.txt"}; do
  [[ -f $f ]] || continue
  if ! grep -q '^RESULT' "$f"; then wrk_errors=$((wrk_errors + 1)); echo "no result in $(basename "$f"):"; cat "$f"; continue; fi
  for k in non2xx connect_errors read_errors write_errors timeouts; do
    wrk_errors=$((wrk_errors + $(field "$f" "$k")))
  done
done
echo "/metrics:   p50 ${m_p50} ms, p90 ${m_p90} ms, p99 ${m_p99} ms at ${m_rate} requests/s"
h_cpu=$(median <"$work/cpu-heartbeat.txt")
echo "heartbeats: ${h_rate} per second (p50 ${h_p50} ms, p99 ${h_p99} ms), soak ${soak_rate} per second; agent CPU ${h_cpu} us per heartbeat"
target "/metrics p99 <= 5 ms at $rate requests/s" \
  "$(awk -v p="$m_p99" -v r="$m_rate" -v want="$rate" 'BEGIN {print ((p <= 5 && r >= 0.95 * want) ? 1 : 0)}')" \
  "p99 ${m_p99} ms, ${m_rate} requests/s achieved"
target "heartbeats >= 20000 per second" "$(awk -v r="$h_rate" 'BEGIN {print ((r >= 20000) ? 1 : 0)}')" "${h_rate} per second"
if ((soak_duration > 0)); then
  target "agent RSS flat during the ${soak_duration}s soak (<= 5% growth after warm-up)" \
    "$(awk -v g="$rss_growth" 'BEGIN {print ((g <= 5) ? 1 : 0)}')" \
    "start ${rss_start} KiB, end ${rss_end} KiB, max ${rss_max} KiB, growth after warm-up ${rss_growth}%"
fi
check "every answer 2xx and no socket errors (wrk)" "$([[ $wrk_errors == 0 ]] && echo 1 || echo 0)" "$wrk_errors errors"
check "agent counted no /v1/telemetry answer but 202, no /metrics answer but 200" \
  "$([[ $bad_telemetry == 0 && $bad_metrics == 0 && $ok_telemetry -gt 0 ]] && echo 1 || echo 0)" \
  "telemetry 202: $ok_telemetry, other: $bad_telemetry; /metrics non-200: $bad_metrics"
check "SIGTERM: the agent exits 0" "$([[ $status == 0 ]] && echo 1 || echo 0)" "exit status $status"
[[ -n $keep ]] && echo "logs and wrk output: $work"

if ((checks_failed)) || { ((targets_failed)) && ((!report_only)); }; then exit 1; fi
exit 0
