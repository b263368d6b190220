#!/usr/bin/env bash
# What joining a coordinator costs an agent: a coordinator plus one agent with
# the 8-device fleet (examples/fleet-8x-h100.json), run twice for the same
# time, first without --join, then with --join (one report per second). The
# agent's CPU (utime + stime from /proc/PID/stat) is read over each run after a
# settle time; the difference is the pusher's cost, as % of one core (target
# <= 0.2 %, about 2 ms of CPU per second). Same machine, same sitting.
# docs/benchmarks.md "Cluster"; docs/design/cluster-plan.md "Part 9".
#
#   bench/cluster/push_cost.sh [SECONDS] [BINARY]     (default 60 s, build/release/gpucluster)
#   bench/cluster/push_cost.sh 120                    # the full run, ~4.5 minutes
#
# Env: SETTLE_S (default 5): seconds after the agent listens before measuring
# (discovery and the first report are start-up, not steady cost).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
seconds=${1:-60}
binary=${2:-$root/build/release/gpucluster}
settle=${SETTLE_S:-5}
if ! [[ $seconds =~ ^[0-9]+$ ]] || ((seconds < 1)); then
  echo "push_cost: SECONDS: '$seconds' must be a whole number >= 1" >&2
  exit 2
fi
[[ $settle =~ ^[0-9]+$ ]] || { echo "push_cost: SETTLE_S: '$settle' must be a whole number" >&2; exit 2; }
[[ -x $binary ]] || { echo "push_cost: $binary is not an executable (build it first)" >&2; exit 2; }
fleet=$root/examples/fleet-8x-h100.json
ticks=$(getconf CLK_TCK)

work=$(mktemp -d /tmp/push_cost.XXXXXX)
pids=()
cleanup() {
  local pid
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

# start NAME ARGS...: starts an agent, waits for its JSON banner; sets $started_pid and $started_url.
start() {
  local name=$1
  shift
  "$binary" agent --listen 127.0.0.1:0 --state-dir "$work/$name" --node-name "$name" --json "$@" \
    >"$work/$name.out" 2>"$work/$name.log" &
  started_pid=$!
  pids+=("$started_pid")
  local i
  for ((i = 0; i < 100; i++)); do
    if [[ -s $work/$name.out ]]; then
      started_url=$(head -n1 "$work/$name.out" | python3 -c 'import json,sys; print(json.loads(sys.stdin.readline())["url"])')
      return 0
    fi
    kill -0 "$started_pid" 2>/dev/null || { echo "push_cost: $name exited; its log:" >&2; cat "$work/$name.log" >&2; exit 1; }
    sleep 0.1
  done
  echo "push_cost: $name did not print its banner within 10 s" >&2
  exit 1
}

# CPU seconds (utime + stime) of PID; fields after the command name's last ')'.
cpu_seconds() {
  local stat
  stat=$(<"/proc/$1/stat")
  stat=${stat##*) }
  # shellcheck disable=SC2086
  set -- $stat
  # Field 14 is utime and 15 stime (proc(5)); after the name, field n is at $((n - 2)).
  awk -v u="${12}" -v s="${13}" -v t="$ticks" 'BEGIN { printf "%.6f\n", (u + s) / t }'
}

stop() {
  kill -TERM "$1"
  wait "$1" || { echo "push_cost: agent $1 exited non-zero" >&2; exit 1; }
  local kept=() pid
  for pid in "${pids[@]}"; do [[ $pid == "$1" ]] || kept+=("$pid"); done
  pids=("${kept[@]}")
}

# The reports the coordinator holds from node NAME (0 when it does not list it).
reports_of() {
  python3 - "$coordinator_url" "$1" <<'EOF'
import json, sys, urllib.request
nodes = json.load(urllib.request.urlopen(sys.argv[1] + "/v1/nodes", timeout=5))["nodes"]
print(sum(node["reports"] or 0 for node in nodes if node["name"] == sys.argv[2]))
EOF
}

# measure NAME ARGS...: one run of the agent; sets $measured (its CPU as % of
# one core) and $measured_reports (the coordinator's count of its reports).
measure() {
  local name=$1 begin end t0 t1
  shift
  start "$name" --fleet "$fleet" "$@"
  local pid=$started_pid
  sleep "$settle"
  begin=$(cpu_seconds "$pid")
  t0=$(date +%s.%N)
  sleep "$seconds"
  end=$(cpu_seconds "$pid")
  t1=$(date +%s.%N)
  measured_reports=$(reports_of "$name")
  stop "$pid"
  measured=$(awk -v b="$begin" -v e="$end" -v t0="$t0" -v t1="$t1" 'BEGIN { printf "%.6f\n", 100 * (e - b) / (t1 - t0) }')
}

start coord --coordinator
coordinator_url=$started_url
echo "push_cost: coordinator $coordinator_url; agent with 8 devices, ${seconds} s per run after ${settle} s settle" >&2

measure agent-alone
alone=$measured
((measured_reports == 0)) || { echo "push_cost: the coordinator lists reports of the agent without --join" >&2; exit 1; }
measure agent-joined --join "$coordinator_url"
joined=$measured reports=$measured_reports
# The pusher did run: the coordinator holds the joined agent's reports.
((reports > 0)) || { echo "push_cost: the coordinator received no report from the joined agent" >&2; exit 1; }

python3 - "$alone" "$joined" "$seconds" "$reports" "$ticks" <<'EOF'
import json, sys
alone, joined, seconds, reports, ticks = map(float, sys.argv[1:6])
diff = joined - alone
# /proc counts CPU in clock ticks: one tick over the run is the resolution of each figure.
resolution = 100.0 / ticks / seconds
print(json.dumps({"bench": "push_cost", "seconds": seconds, "agent_cpu_percent_alone": alone,
                  "agent_cpu_percent_joined": joined, "push_cost_percent_of_core": diff,
                  "reports_received": int(reports), "resolution_percent": resolution, "target_percent": 0.2, "within_target": diff <= 0.2}))
print(f"agent CPU without --join: {alone:.3f} % of one core")
print(f"agent CPU with --join:    {joined:.3f} % of one core ({int(reports)} reports received)")
print(f"cost of pushing:          {diff:+.3f} % of one core ({diff * 10:+.2f} ms CPU/s; target <= 0.2 %: "
      f"{'yes' if diff <= 0.2 else 'NO'})")
print(f"resolution:               {resolution:.3f} % of one core (one {1000 / ticks:.0f} ms clock tick over {seconds:.0f} s)")
EOF
