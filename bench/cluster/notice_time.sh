#!/usr/bin/env bash
# How long a coordinator with its DEFAULT timings (--suspect-after 3s,
# --evict-after 10s) takes to notice a killed agent: K real agents join it,
# each is SIGKILLed at a random moment (uniform over --spread, so several are
# alive at once and kills are staggered), and a poller asks GET /v1/nodes every
# 20 ms, recording kill → "suspect" and kill → "down". Prints every kill, then
# min/median/max and the split between the two transitions. Expected: kill →
# down within [9.0, 10.1] s (the last report came up to one interval before
# the kill). docs/benchmarks.md "Cluster"; docs/design/cluster-plan.md "Part 9".
#
#   bench/cluster/notice_time.sh [--agents K] [--spread SECONDS] [--seed N] [BINARY]
#   bench/cluster/notice_time.sh --agents 20 --spread 240    # the full run, ~4.5 minutes
#
# Exits 1 when a killed agent is not seen down within 30 s, 2 on bad arguments.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
exec python3 - "$root" "$@" <<'PYTHON'
import argparse
import http.client
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

root = sys.argv[1]
parser = argparse.ArgumentParser(prog="notice_time.sh", description="kill → down time of a coordinator's default timings")
parser.add_argument("binary", nargs="?", default=os.path.join(root, "build/release/gpucluster"))
parser.add_argument("--agents", type=int, default=20, help="agents joined and killed (default 20)")
parser.add_argument("--spread", type=float, default=None, help="kills are uniform over this many seconds (default 12 × agents)")
parser.add_argument("--seed", type=int, default=None, help="random seed of the kill times")
parser.add_argument("--poll-ms", type=float, default=20.0, help="GET /v1/nodes period (default 20)")
args = parser.parse_args(sys.argv[2:])
if args.agents < 1:
    parser.error(f"--agents: {args.agents} must be at least 1")
spread = args.spread if args.spread is not None else 12.0 * args.agents
if spread < 0:
    parser.error(f"--spread: {spread} must be >= 0")
if not os.access(args.binary, os.X_OK):
    parser.error(f"{args.binary} is not an executable (build it first)")
fleet = os.path.join(root, "examples/fleet-8x-h100.json")
DOWN_TIMEOUT_S = 30.0

work = tempfile.mkdtemp(prefix="notice_time.")
procs = []


def start(name, extra):
    log = open(os.path.join(work, f"{name}.log"), "w")
    proc = subprocess.Popen(
        [args.binary, "agent", "--listen", "127.0.0.1:0", "--state-dir", os.path.join(work, name), "--node-name", name,
         "--json", *extra],
        stdout=subprocess.PIPE, stderr=log, text=True)
    procs.append(proc)
    line = proc.stdout.readline()
    if not line:
        sys.exit(f"notice_time: {name} exited before it listened; see {work}/{name}.log")
    # Keep reading its stdout so that a full pipe never blocks it.
    threading.Thread(target=lambda: proc.stdout.read(), daemon=True).start()
    return proc, json.loads(line)["url"]


def cleanup():
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Nodes:
    """GET /v1/nodes over one kept-alive connection."""

    def __init__(self, url):
        host, port = url.removeprefix("http://").rsplit(":", 1)
        self.conn = http.client.HTTPConnection(host, int(port), timeout=5)

    def states(self):
        try:
            self.conn.request("GET", "/v1/nodes")
            response = self.conn.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException):
            self.conn.close()
            return None
        if response.status != 200:
            return None
        return {node["name"]: node["state"] for node in json.loads(body)["nodes"]}


try:
    coordinator, url = start("coord", ["--coordinator"])
    names = [f"a{i}" for i in range(args.agents)]
    agents = {name: start(name, ["--fleet", fleet, "--join", url])[0] for name in names}
    nodes = Nodes(url)
    deadline = time.monotonic() + 30
    while True:
        states = nodes.states() or {}
        if all(states.get(name) == "alive" for name in names):
            break
        if time.monotonic() > deadline:
            sys.exit(f"notice_time: not every agent is alive after 30 s: {states}")
        time.sleep(0.1)
    print(f"notice_time: {args.agents} agents alive at {url}; kills over {spread:.0f} s; poll every {args.poll_ms:.0f} ms",
          flush=True)

    rng = random.Random(args.seed)
    offsets = sorted(rng.uniform(0, spread) for _ in names)
    order = names[:]
    rng.shuffle(order)
    killed_at, suspect_at, down_at = {}, {}, {}
    lock = threading.Lock()
    stop = threading.Event()

    def poll():
        period = args.poll_ms / 1000.0
        next_at = time.monotonic()
        while not stop.is_set():
            states = nodes.states()
            seen = time.monotonic()
            if states is not None:
                with lock:
                    for name in killed_at:
                        state = states.get(name)
                        if state in ("suspect", "down") and name not in suspect_at:
                            suspect_at[name] = seen
                        if state == "down" and name not in down_at:
                            down_at[name] = seen
            next_at += period
            time.sleep(max(0.0, next_at - time.monotonic()))

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    begin = time.monotonic()
    for name, offset in zip(order, offsets):
        time.sleep(max(0.0, begin + offset - time.monotonic()))
        with lock:
            agents[name].send_signal(signal.SIGKILL)
            killed_at[name] = time.monotonic()
        agents[name].wait()
    last_kill = time.monotonic()
    while time.monotonic() - last_kill < DOWN_TIMEOUT_S:
        with lock:
            if len(down_at) == len(names):
                break
        time.sleep(0.1)
    stop.set()
    poller.join()

    missing = [name for name in names if name not in down_at]
    rows = []
    for name in order:
        if name in down_at:
            rows.append((name, suspect_at[name] - killed_at[name], down_at[name] - killed_at[name]))
    print(f"{'agent':<6} {'kill→suspect s':>15} {'kill→down s':>12} {'suspect→down s':>15}")
    for name, suspect, down in rows:
        print(f"{name:<6} {suspect:>15.3f} {down:>12.3f} {down - suspect:>15.3f}")
    if rows:
        downs = [down for _, _, down in rows]
        suspects = [suspect for _, suspect, _ in rows]
        splits = [down - suspect for _, suspect, down in rows]
        summary = {
            "bench": "notice_time", "agents": args.agents, "spread_s": spread, "poll_ms": args.poll_ms,
            "down_min_s": min(downs), "down_median_s": statistics.median(downs), "down_max_s": max(downs),
            "suspect_min_s": min(suspects), "suspect_median_s": statistics.median(suspects),
            "suspect_max_s": max(suspects), "suspect_to_down_median_s": statistics.median(splits),
            "inside_expected": all(9.0 <= d <= 10.1 for d in downs), "not_seen_down": missing,
        }
        print(json.dumps(summary))
        print(f"kill → down:    min {min(downs):.3f} s, median {statistics.median(downs):.3f} s, max {max(downs):.3f} s "
              f"(expected within [9.0, 10.1]: {'yes' if summary['inside_expected'] else 'NO'})")
        print(f"kill → suspect: min {min(suspects):.3f} s, median {statistics.median(suspects):.3f} s, "
              f"max {max(suspects):.3f} s; suspect → down median {statistics.median(splits):.3f} s")
    if missing:
        print(f"notice_time: not seen down within {DOWN_TIMEOUT_S:.0f} s of the last kill: {missing}", file=sys.stderr)
        sys.exit(1)
finally:
    cleanup()
    if "missing" in globals() and not missing:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"notice_time: logs kept in {work}", file=sys.stderr)
PYTHON
