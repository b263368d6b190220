#!/usr/bin/env python3
"""Compare gpucluster's C++ hot paths with the seed's Python design, on the same workloads.

Runs, in one go:
  * bench/python/seed_bench.py (same interpreter as this script) for the Python numbers;
  * the Google Benchmark programs <build-dir>/{telemetry_bench,scoring_bench,distribution_bench}
    with --benchmark_format=json --benchmark_repetitions=5 --benchmark_report_aggregates_only=true,
    taking each benchmark's `_median` aggregate (real_time, converted to ns).

and prints a table: workload | C++ median | Python median | ratio (Python/C++) | target.
A C++ program that is not built is reported as "missing"; one that fails as "error".

Usage: python3 bench/compare.py [--build-dir build/release] [--quick] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
SEED_BENCH = os.path.join(HERE, "python", "seed_bench.py")

TIME_UNIT_TO_NS = {"ns": 1.0, "us": 1e3, "ms": 1e6, "s": 1e9}

FOOTNOTE = (
    "Capacity plan: the C++ plan produces one index range per device (O(devices) output), "
    "while the Python seed slices the item list into per-device lists (O(items) copying); "
    "the ratio compares those designs, not equal work."
)


@dataclass(frozen=True)
class Workload:
    key: str            # stable id, used in --json
    label: str          # table label
    program: str        # C++ benchmark program in the build dir
    benchmark: str      # Google Benchmark run name
    python_key: str     # key in seed_bench.py's JSON
    target: float       # C++ target (ns, or bytes for kind == "bytes")
    kind: str = "time"  # "time" (ns) or "bytes" (user counter bytes_per_sample)
    counter: Optional[str] = None


WORKLOADS: List[Workload] = [
    Workload("record", "record one validated sample", "telemetry_bench", "BM_RecordSample",
             "record_metrics_ns", 50.0),
    Workload("select_64", "select among 64 devices", "scoring_bench", "BM_SelectDevice/64",
             "select_64_ns", 1_000.0),
    Workload("select_10000", "select among 10,000 devices", "scoring_bench", "BM_SelectDevice/10000",
             "select_10000_ns", 200_000.0),
    Workload("capacity_plan", "capacity plan, 1e7 items / 1,000 dev*", "distribution_bench",
             "BM_PlanCapacity/1000", "capacity_plan_1e7_items_1000_devices_ns", 50_000.0),
    Workload("history_bytes", "history memory per sample", "telemetry_bench",
             "BM_HistoryBytesPerSample", "history_bytes_per_sample", 64.0, kind="bytes",
             counter="bytes_per_sample"),
]


# ---------------------------------------------------------------------------
# Running the two sides
# ---------------------------------------------------------------------------


@dataclass
class ProgramResult:
    status: str                      # "ok", "missing", "error"
    detail: str = ""
    runs: List[Dict[str, Any]] = field(default_factory=list)


def run_python(quick: bool, timeout: float) -> Dict[str, Any]:
    cmd = [sys.executable, SEED_BENCH] + (["--quick"] if quick else [])
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO)
    except subprocess.TimeoutExpired:
        return {"_status": "error", "_detail": f"timed out after {timeout:.0f} s"}
    if proc.returncode != 0:
        return {"_status": "error", "_detail": _last_line(proc.stderr) or f"exit {proc.returncode}"}
    try:
        data = json.loads(proc.stdout)
    except json.JSONDecodeError as e:
        return {"_status": "error", "_detail": f"bad JSON: {e}"}
    data["_status"] = "ok"
    return data


def _filter_for(benchmarks: List[str]) -> str:
    # Match the run name exactly, allowing Google Benchmark suffixes such as /real_time.
    return "^(" + "|".join(benchmarks) + ")(/|$)"


def run_cpp(program_path: str, benchmarks: List[str], quick: bool, timeout: float) -> ProgramResult:
    if not (os.path.isfile(program_path) and os.access(program_path, os.X_OK)):
        return ProgramResult("missing", f"{program_path} not built")
    cmd = [
        program_path,
        "--benchmark_format=json",
        "--benchmark_repetitions=5",
        "--benchmark_report_aggregates_only=true",
        f"--benchmark_filter={_filter_for(benchmarks)}",
    ]
    if quick:
        cmd.append("--benchmark_min_time=0.05")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO)
    except subprocess.TimeoutExpired:
        return ProgramResult("error", f"timed out after {timeout:.0f} s")
    except OSError as e:
        return ProgramResult("error", str(e))
    if proc.returncode != 0:
        return ProgramResult("error", _last_line(proc.stderr) or f"exit {proc.returncode}")
    try:
        data = json.loads(proc.stdout)
    except json.JSONDecodeError as e:
        return ProgramResult("error", f"bad JSON: {e}")
    return ProgramResult("ok", "", list(data.get("benchmarks", [])))


def _last_line(text: str) -> str:
    lines = [line for line in (text or "").strip().splitlines() if line.strip()]
    return lines[-1][:200] if lines else ""


def _matches(run: Dict[str, Any], benchmark: str) -> bool:
    name = run.get("run_name") or run.get("name", "")
    if run.get("run_type") == "aggregate" and "run_name" not in run:
        name = name.rsplit("_", 1)[0]
    return name == benchmark or name.startswith(benchmark + "/")


def _is_median(run: Dict[str, Any]) -> bool:
    if run.get("run_type") == "aggregate":
        return run.get("aggregate_name") == "median"
    return str(run.get("name", "")).endswith("_median")


def cpp_value(result: ProgramResult, w: Workload) -> Dict[str, Any]:
    """{"status", "value" (ns or bytes), "detail"} for one workload from its program's runs."""
    if result.status != "ok":
        return {"status": result.status, "value": None, "detail": result.detail}
    runs = [r for r in result.runs if _matches(r, w.benchmark)]
    if not runs:
        return {"status": "missing", "value": None, "detail": f"{w.benchmark} not in {w.program}"}
    medians = [r for r in runs if _is_median(r)] or runs  # no aggregates: take the single run
    run = medians[0]
    if run.get("error_occurred"):
        return {"status": "error", "value": None, "detail": run.get("error_message", "error")}
    if w.kind == "bytes":
        if w.counter not in run:
            return {"status": "error", "value": None, "detail": f"no counter {w.counter}"}
        return {"status": "ok", "value": float(run[w.counter]), "detail": ""}
    unit = run.get("time_unit", "ns")
    if unit not in TIME_UNIT_TO_NS or "real_time" not in run:
        return {"status": "error", "value": None, "detail": f"unusable entry (time_unit {unit!r})"}
    return {"status": "ok", "value": float(run["real_time"]) * TIME_UNIT_TO_NS[unit], "detail": ""}


# ---------------------------------------------------------------------------
# Formatting
# ---------------------------------------------------------------------------


def fmt_ns(ns: float) -> str:
    if ns < 1e3:
        return f"{ns:.1f} ns"
    if ns < 1e6:
        return f"{ns / 1e3:.2f} µs"
    if ns < 1e9:
        return f"{ns / 1e6:.2f} ms"
    return f"{ns / 1e9:.2f} s"


def fmt_target(value: float, kind: str) -> str:
    if kind == "bytes":
        return f"≤ {value:g} B/sample"
    for scale, unit in ((1e9, "s"), (1e6, "ms"), (1e3, "µs")):
        if value >= scale:
            return f"≤ {value / scale:g} {unit}"
    return f"≤ {value:g} ns"


def fmt_value(value: Optional[float], kind: str) -> str:
    if value is None:
        return "-"
    return f"{value:.1f} B/sample" if kind == "bytes" else fmt_ns(value)


def build_rows(cpp: Dict[str, ProgramResult], py: Dict[str, Any]) -> List[Dict[str, Any]]:
    rows = []
    for w in WORKLOADS:
        c = cpp_value(cpp[w.program], w)
        p_val = py.get(w.python_key) if py.get("_status") == "ok" else None
        p_status = "ok" if isinstance(p_val, (int, float)) else ("error" if py.get("_status") != "ok" else "missing")
        ratio = None
        if c["value"] and p_status == "ok":
            ratio = float(p_val) / c["value"]
        met = None if c["value"] is None else c["value"] <= w.target
        rows.append({
            "workload": w.key,
            "label": w.label,
            "unit": "bytes_per_sample" if w.kind == "bytes" else "ns",
            "cpp": c["value"],
            "cpp_status": c["status"],
            "cpp_detail": c["detail"],
            "python": float(p_val) if p_status == "ok" else None,
            "python_status": p_status,
            "ratio_python_over_cpp": ratio,
            "target": w.target,
            "target_met": met,
            "kind": w.kind,
        })
    return rows


def print_table(rows: List[Dict[str, Any]], py: Dict[str, Any], build_dir: str, quick: bool) -> None:
    header = ["workload", "C++ median", "Python median", "ratio (Python/C++)", "target"]
    body = []
    for r in rows:
        cpp_cell = fmt_value(r["cpp"], r["kind"]) if r["cpp_status"] == "ok" else r["cpp_status"]
        py_cell = fmt_value(r["python"], r["kind"]) if r["python_status"] == "ok" else r["python_status"]
        ratio = r["ratio_python_over_cpp"]
        ratio_cell = "-" if ratio is None else (f"{ratio:,.0f}x" if ratio >= 100 else f"{ratio:.1f}x")
        target_txt = fmt_target(r["target"], r["kind"])
        verdict = {True: "met", False: "NOT met", None: "n/a"}[r["target_met"]]
        body.append([r["label"], cpp_cell, py_cell, ratio_cell, f"{target_txt} ({verdict})"])
    widths = [max(len(row[i]) for row in [header] + body) for i in range(len(header))]

    def line(cells: List[str]) -> str:
        return "| " + " | ".join(c.ljust(widths[i]) for i, c in enumerate(cells)) + " |"

    meta = py.get("meta", {}) if isinstance(py.get("meta"), dict) else {}
    print(f"gpucluster C++ vs seed Python design — build dir {build_dir}"
          f"{' (quick)' if quick else ''}; {platform.machine()}, {os.cpu_count()} CPUs, "
          f"{meta.get('python', platform.python_implementation() + ' ' + platform.python_version())}")
    print(line(header))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in body:
        print(line(row))
    for r in rows:
        if r["cpp_status"] != "ok" and r["cpp_detail"]:
            print(f"  {r['label']}: C++ {r['cpp_status']}: {r['cpp_detail']}")
    if py.get("_status") != "ok":
        print(f"  Python side failed: {py.get('_detail', '')}")
    print(f"* {FOOTNOTE}")
    print("  Medians: C++ = Google Benchmark `_median` of 5 repetitions (real time); "
          "Python = median of seed_bench.py repeats (time.perf_counter_ns). "
          "Targets apply to the C++ side.")


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="C++ vs Python (seed design) side-by-side benchmarks")
    parser.add_argument("--build-dir", default="build/release",
                        help="directory with telemetry_bench, scoring_bench, distribution_bench "
                             "(default: build/release, relative to the repository root)")
    parser.add_argument("--quick", action="store_true",
                        help="seed_bench.py --quick and a shorter C++ min time")
    parser.add_argument("--json", action="store_true", help="emit machine-readable JSON instead of a table")
    parser.add_argument("--timeout", type=float, default=600.0, help="per-program timeout in seconds")
    args = parser.parse_args(argv)

    build_dir = args.build_dir if os.path.isabs(args.build_dir) else os.path.join(REPO, args.build_dir)
    if not os.path.isdir(build_dir) and os.path.isdir(os.path.abspath(args.build_dir)):
        build_dir = os.path.abspath(args.build_dir)  # relative to the current directory instead

    by_program: Dict[str, List[str]] = {}
    for w in WORKLOADS:
        by_program.setdefault(w.program, []).append(w.benchmark)
    cpp = {prog: run_cpp(os.path.join(build_dir, prog), names, args.quick, args.timeout)
           for prog, names in by_program.items()}
    py = run_python(args.quick, args.timeout)
    rows = build_rows(cpp, py)

    if args.json:
        out = {
            "build_dir": build_dir,
            "quick": args.quick,
            "machine": {"arch": platform.machine(), "cpu_count": os.cpu_count(),
                        "platform": platform.platform()},
            "rows": rows,
            "python_raw": {k: v for k, v in py.items() if not k.startswith("_")},
            "python_status": py.get("_status"),
            "cpp_programs": {prog: {"status": r.status, "detail": r.detail} for prog, r in cpp.items()},
            "footnote": FOOTNOTE,
        }
        json.dump(out, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print_table(rows, py, build_dir, args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
