#!/usr/bin/env bash
# The coordinator under N simulated nodes of M devices (bench/cluster_sim.cpp):
# N = 100, 1,000 and 5,000 with M = 8 by default, each --runs times, printing
# the medians as the markdown table of docs/benchmarks.md "Cluster". With 2 or
# more CPUs the coordinator is pinned to CPU 0 and the simulator to CPU 1, so
# the simulator's own work does not land on the coordinator's core.
# Targets at 1,000 x 8 (docs/design/cluster-plan.md "Part 9"): <= 10 % of one
# core, <= 128 MiB RSS, /v1/cluster p99 <= 20 ms, /v1/select p99 <= 5 ms; the
# other sizes are reported, not judged. Builds nothing.
#
#   scripts/cluster-bench.sh [OPTIONS]
#   scripts/cluster-bench.sh --nodes "100 1000" --duration 20s --runs 1   # a smoke run
#
# Exits 1 when a run had failed reports or views (cluster_sim exits 1), 2 on bad arguments.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: scripts/cluster-bench.sh [OPTIONS]
  --binary PATH         gpucluster (default build/release/gpucluster)
  --sim PATH            cluster_sim (default build/release/cluster_sim)
  --nodes "N N ..."     node counts (default "100 1000 5000")
  --devices M           devices per node (default 8)
  --duration D          steady window per run (default 60s)
  --warmup D            before the window (default 10s)
  --threads T           simulator event-loop threads (default 2)
  --views-rate R        /v1/cluster + /v1/select per second (default 20)
  --runs K              runs per size; the table gives medians (default 3)
  --coordinator-arg A   extra coordinator argument (repeatable), e.g. --history 20
  --keep DIR            keep every run's JSON line in DIR/results.jsonl
  -h, --help            this text
EOF
}

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
binary=$root/build/release/gpucluster sim=$root/build/release/cluster_sim
node_counts="100 1000 5000" devices=8 duration=60s warmup=10s threads=2 views_rate=20 runs=3 keep=""
coordinator_args=()
while (($#)); do
  case $1 in
    --binary) binary=$2; shift ;;
    --sim) sim=$2; shift ;;
    --nodes) node_counts=$2; shift ;;
    --devices) devices=$2; shift ;;
    --duration) duration=$2; shift ;;
    --warmup) warmup=$2; shift ;;
    --threads) threads=$2; shift ;;
    --views-rate) views_rate=$2; shift ;;
    --runs) runs=$2; shift ;;
    --coordinator-arg) coordinator_args+=(--coordinator-arg "$2"); shift ;;
    --keep) keep=$2; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "cluster-bench: unknown argument $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done
for n in $node_counts $devices $runs; do
  if ! [[ $n =~ ^[0-9]+$ ]] || ((n < 1)); then
    echo "cluster-bench: '$n' must be a whole number >= 1" >&2
    exit 2
  fi
done
[[ -x $binary ]] || { echo "cluster-bench: $binary is not an executable (build it first)" >&2; exit 2; }
[[ -x $sim ]] || { echo "cluster-bench: $sim is not an executable (cmake --build build/release --target cluster_sim)" >&2; exit 2; }

pin=() coordinator_cpu=()
if (($(nproc) >= 2)) && command -v taskset >/dev/null; then
  pin=(taskset -c 1) coordinator_cpu=(--coordinator-cpu 0)
fi
results=$(mktemp /tmp/cluster-bench.XXXXXX.jsonl)
trap 'rm -f "$results"' EXIT
status=0
for nodes in $node_counts; do
  for ((run = 1; run <= runs; run++)); do
    echo "cluster-bench: $nodes x $devices, run $run of $runs${pin:+ (simulator on CPU 1, coordinator on CPU 0)}" >&2
    out=$("${pin[@]}" "$sim" --spawn "$binary" "${coordinator_cpu[@]}" "${coordinator_args[@]}" --nodes "$nodes" \
      --devices "$devices" --duration "$duration" --warmup "$warmup" --threads "$threads" \
      --views-rate "$views_rate") || status=1
    line=${out%%$'\n'*}
    echo "${out#*$'\n'}" >&2  # cluster_sim's table
    [[ -n $line ]] || { echo "cluster-bench: cluster_sim printed nothing for $nodes nodes" >&2; status=1; continue; }
    echo "$line" >>"$results"
  done
done
[[ -z $keep ]] || { mkdir -p "$keep"; cp "$results" "$keep/results.jsonl"; }

python3 - "$results" <<'EOF'
import collections, json, statistics, sys
runs = collections.defaultdict(list)
for line in open(sys.argv[1]):
    r = json.loads(line)
    runs[(r["nodes"], r["devices_per_node"])].append(r)

def med(rows, get):
    values = [v for v in (get(r) for r in rows) if v is not None]
    return statistics.median(values) if values else None

def fmt(value, spec=".1f"):
    return "-" if value is None else format(value, spec)

print("| nodes × devices | reports/s | coordinator CPU (% of a core) | RSS (MiB) | VmHWM (MiB) | report p50 / p99 (ms) "
      "| /v1/cluster p50 / p99 / max (ms) | /v1/select p50 / p99 / max (ms) | failed | runs |")
print("|---|---|---|---|---|---|---|---|---|---|")
mib = 1024 * 1024
for (nodes, devices), rows in sorted(runs.items()):
    rss = med(rows, lambda r: r["coordinator_rss_bytes"])
    hwm = med(rows, lambda r: r["coordinator_hwm_bytes"])
    lat = lambda key, field: med(rows, lambda r: r[key][field])
    failed = sum(r["failed_reports"] + r["views_failed"] for r in rows)
    print(f"| {nodes:,} × {devices} | {fmt(med(rows, lambda r: r['reports_per_second']), '.0f')} "
          f"| {fmt(med(rows, lambda r: r['coordinator_cpu_percent_of_core']), '.2f')} "
          f"| {fmt(rss and rss / mib)} | {fmt(hwm and hwm / mib)} "
          f"| {fmt(lat('report_latency', 'p50_ms'), '.2f')} / {fmt(lat('report_latency', 'p99_ms'), '.2f')} "
          f"| {fmt(lat('view_cluster', 'p50_ms'), '.2f')} / {fmt(lat('view_cluster', 'p99_ms'), '.2f')} / "
          f"{fmt(lat('view_cluster', 'max_ms'), '.2f')} "
          f"| {fmt(lat('view_select', 'p50_ms'), '.2f')} / {fmt(lat('view_select', 'p99_ms'), '.2f')} / "
          f"{fmt(lat('view_select', 'max_ms'), '.2f')} | {failed} | {len(rows)} |")
EOF
exit "$status"
