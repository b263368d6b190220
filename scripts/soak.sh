#!/usr/bin/env bash
# Soak test of `gpucluster agent` (not run by CI): N simulated devices
# sampled R times a second each by the agent's background sampler, /metrics
# scraped every second, for D seconds. Reads the agent's RSS every second and
# its sample counter (gpucluster_sample_duration_seconds_count: one per device
# sample) every 10 s. PASS when the achieved sample rate is within 5 % of
# N x R, no sample was rejected, no scrape failed, the RSS after warm-up stays
# within 5 % (mean of the last quarter against the mean of the first quarter
# after warm-up) and SIGTERM exits 0.
#
#   scripts/soak.sh [--devices 1000] [--rate 10] [--duration 600] [--warmup 60] [BINARY]
#
# Output: a report on stdout (docs/soak.md keeps the last one).
set -euo pipefail

devices=1000 rate=10 duration=600 warmup=60
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
binary="$root/build/release/gpucluster"
while (($#)); do
  case $1 in
    --devices) devices=$2; shift ;;
    --rate) rate=$2; shift ;;
    --duration) duration=$2; shift ;;
    --warmup) warmup=$2; shift ;;
    -h | --help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "soak: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) binary=$1 ;;
  esac
  shift
done
for n in devices rate duration warmup; do
  [[ ${!n} =~ ^[0-9]+$ ]] || { echo "soak: --$n must be a whole number, not '${!n}'" >&2; exit 2; }
done
((devices >= 1 && rate >= 1 && rate <= 1000 && duration > warmup)) ||
  { echo "soak: need devices >= 1, 1 <= rate <= 1000, duration > warmup" >&2; exit 2; }
[[ -x $binary ]] || { echo "soak: $binary is not an executable (build it first)" >&2; exit 2; }

work=$(mktemp -d -t gpucluster-soak.XXXXXX)
agent_pid=""
cleanup() {
  [[ -n $agent_pid ]] && kill -KILL "$agent_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

"$root/bench/agent/make-fleet.sh" "$devices" soak-node >"$work/fleet.json"
interval_ms=$((1000 / rate))
"$binary" agent --listen 127.0.0.1:0 --fleet "$work/fleet.json" --interval "${interval_ms}ms" \
  >"$work/agent.out" 2>"$work/agent.err" &
agent_pid=$!
port=""
for _ in $(seq 100); do  # the port, then "ready:" (devices discovered)
  port=$(sed -n 's|^gpucluster agent on http://127\.0\.0\.1:\([0-9]*\).*|\1|p' "$work/agent.out" | head -1)
  [[ -n $port ]] && grep -q '^ready: ' "$work/agent.out" && break
  sleep 0.1
done
[[ -n $port ]] || { echo "soak: the agent did not start:" >&2; cat "$work/agent.out" "$work/agent.err" >&2; exit 1; }
base="http://127.0.0.1:$port"

metric() { # metric NAME: the sum of a metric's samples in the last scrape
  awk -v name="$1" '$1 == name || index($1, name "{") == 1 {sum += $NF} END {printf "%.0f", sum}' "$work/metrics.txt"
}
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$agent_pid/status"; }

echo "== gpucluster agent soak"
echo "date:     $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
echo "machine:  $(nproc) CPUs, $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo); kernel $(uname -r)"
echo "agent:    $binary agent --listen 127.0.0.1:0 --fleet FLEET($devices simulated devices) --interval ${interval_ms}ms"
echo "target:   $devices devices x $rate samples/s = $((devices * rate)) samples/s for ${duration}s (warm-up ${warmup}s)"
echo "load avg: $(cut -d' ' -f1-3 /proc/loadavg) (at start)"
echo
echo "   t  RSS_KiB  samples/s(last 10s)  scrape_ms"

scrape_failures=0 rss_series=() rates=() last_count="" last_t=""
start=$(date +%s.%N)
for ((t = 0; t <= duration; t++)); do
  sleep_until=$(awk -v s="$start" -v t="$t" 'BEGIN {printf "%.3f", s + t}')
  now=$(date +%s.%N)
  delay=$(awk -v a="$sleep_until" -v b="$now" 'BEGIN {d = a - b; printf "%.3f", (d > 0 ? d : 0)}')
  sleep "$delay"
  kill -0 "$agent_pid" 2>/dev/null || { echo "soak: the agent died at t=${t}s" >&2; cat "$work/agent.err" >&2; exit 1; }
  began=$(date +%s%N)
  if ! curl -fsS -o "$work/metrics.txt" "$base/metrics"; then
    scrape_failures=$((scrape_failures + 1))
    continue
  fi
  scrape_ms=$((($(date +%s%N) - began) / 1000000))
  rss=$(rss_kib)
  rss_series+=("$t:$rss")
  if ((t % 10 == 0)); then
    count=$(metric gpucluster_sample_duration_seconds_count)
    shown="-"
    if [[ -n $last_count ]]; then
      shown=$(awk -v c="$count" -v l="$last_count" -v dt="$((t - last_t))" 'BEGIN {printf "%.0f", (c - l) / dt}')
      ((t > warmup)) && rates+=("$shown")
    fi
    last_count=$count last_t=$t
    printf '%4d  %7d  %19s  %9d\n' "$t" "$rss" "$shown" "$scrape_ms"
  fi
done

rejected=$(metric gpucluster_rejected_samples_total)
backend_errors=$(metric gpucluster_backend_errors_total)
kill -TERM "$agent_pid"
exit_status=0
wait "$agent_pid" || exit_status=$?
agent_pid=""

# RSS after warm-up: first and last quarter means.
read -r first_quarter last_quarter max_rss after_warmup < <(printf '%s\n' "${rss_series[@]}" |
  awk -F: -v w="$warmup" '$1 > w {v[++n] = $2} END {q = int(n / 4); if (q < 1) q = 1;
    for (i = 1; i <= q; i++) a += v[i]; for (i = n - q + 1; i <= n; i++) b += v[i];
    for (i = 1; i <= n; i++) if (v[i] > m) m = v[i]; printf "%.0f %.0f %d %d\n", a / q, b / q, m, v[1]}')
growth=$(awk -v a="$first_quarter" -v b="$last_quarter" 'BEGIN {printf "%.2f", 100 * (b - a) / a}')
median_rate=$(printf '%s\n' "${rates[@]}" | sort -g | awk '{v[NR] = $1} END {print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2)}')
min_rate=$(printf '%s\n' "${rates[@]}" | sort -g | head -1)
wanted=$((devices * rate))

echo
echo "== summary (load avg now $(cut -d' ' -f1-3 /proc/loadavg))"
failed=0
verdict() { # verdict OK NAME DETAIL
  if [[ $1 == 1 ]]; then echo "PASS  $2 ($3)"; else echo "FAIL  $2 ($3)"; failed=1; fi
}
rate_ok=$(awk -v m="$median_rate" -v w="$wanted" 'BEGIN {print (m >= 0.95 * w && m <= 1.05 * w) ? 1 : 0}')
verdict "$rate_ok" "samples at $wanted/s" "median $median_rate/s over 10 s windows after warm-up, lowest $min_rate/s"
verdict "$([[ $rejected == 0 && $backend_errors == 0 ]] && echo 1 || echo 0)" "no sample rejected, no backend error" \
  "rejected $rejected, backend errors $backend_errors"
verdict "$([[ $scrape_failures == 0 ]] && echo 1 || echo 0)" "every /metrics scrape answered" "$scrape_failures failed"
flat=$(awk -v g="$growth" 'BEGIN {print (g <= 5 && g >= -5) ? 1 : 0}')
verdict "$flat" "RSS flat within 5 % after warm-up" \
  "after warm-up ${after_warmup} KiB, first quarter ${first_quarter} KiB, last quarter ${last_quarter} KiB, max ${max_rss} KiB, change ${growth} %"
verdict "$([[ $exit_status == 0 ]] && echo 1 || echo 0)" "SIGTERM: the agent exits 0" "exit status $exit_status"
exit "$failed"
