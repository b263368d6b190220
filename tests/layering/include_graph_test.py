#!/usr/bin/env python3
"""Fails if a layer includes a header of a layer above it (docs/architecture.md).

Reads every #include "..." of src/<layer>/, include/gpucluster/<layer>/ and
python/src/, maps the included header to its layer, and checks it against the
allowed layers below. Also fails if a public header (include/) includes an
internal one (src/), which would not be installed, or if a folder under src/ or
include/gpucluster/ is not a known layer.

usage: include_graph_test.py SOURCE_DIR      (exit 0: clean; 1: every violation listed)
       include_graph_test.py --self-test     (the checker finds planted violations)
"""
import pathlib
import re
import sys

# Each layer and the layers it may include, in the order of the data flow.
BELOW = {
    "model": set(),
    "backends": {"model"},
    "telemetry": {"model"},
    "scheduling": {"telemetry", "model"},
    "node": {"scheduling", "telemetry", "backends", "model"},
    "wire": {"node", "scheduling", "telemetry", "backends", "model"},
    "export": {"node", "scheduling", "telemetry", "backends", "model"},
    "cluster": {"wire", "export", "node", "scheduling", "telemetry", "backends", "model"},
    "agent": {"cluster", "wire", "export", "node", "scheduling", "telemetry", "backends", "model"},
}
BELOW["cli"] = set(BELOW) - {"cli"}
BELOW["python"] = set(BELOW) - {"cli", "python"}

INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def included_layer(header: str, own_layer: str) -> tuple[str, bool]:
    """The layer of an included header and whether it is public (include/gpucluster/)."""
    parts = header.split("/")
    if parts[0] == "gpucluster":
        return parts[1], True
    if len(parts) == 1:  # a header next to the including file
        return own_layer, False
    return parts[0], False


def check(source_dir: pathlib.Path) -> list[str]:
    problems = []
    roots = [(source_dir / "src", False), (source_dir / "include" / "gpucluster", True)]
    files = []
    for root, public in roots:
        for layer_dir in sorted(p for p in root.iterdir() if p.is_dir()):
            if layer_dir.name not in BELOW:
                problems.append(f"{layer_dir.relative_to(source_dir)}: not a known layer {sorted(BELOW)}")
                continue
            files += [(f, layer_dir.name, public) for f in sorted(layer_dir.rglob("*.[ch]pp"))]
        for stray in sorted(p for p in root.iterdir() if p.is_file()):
            problems.append(f"{stray.relative_to(source_dir)}: outside every layer's folder")
    files += [(f, "python", False) for f in sorted((source_dir / "python" / "src").glob("*.[ch]pp"))]
    for path, layer, public in files:
        for header in INCLUDE.findall(path.read_text(encoding="utf-8")):
            target, target_public = included_layer(header, layer)
            where = path.relative_to(source_dir)
            if target == layer:
                pass
            elif target not in BELOW:
                if layer != "python":  # python/src's own headers ("common.hpp") are its layer's
                    problems.append(f"{where}: includes \"{header}\" of no known layer")
                continue
            elif target not in BELOW[layer]:
                problems.append(f"{where}: layer {layer} includes \"{header}\" of layer {target}, which is above it")
            if public and not target_public:
                problems.append(f"{where}: public header includes the internal \"{header}\" (not installed)")
    return problems


def self_test() -> int:
    """Plants one violation of each kind in a temporary tree and expects each reported."""
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        root = pathlib.Path(tmp)
        files = {
            "src/model/upward.cpp": '#include "gpucluster/node/manager.hpp"\n',
            "src/backends/sideways.cpp": '#include "telemetry/ring_buffer.hpp"\n',
            "src/node/fine.cpp": '#include "gpucluster/backends/backend.hpp"\n#include "worker.hpp"\n',
            "include/gpucluster/telemetry/leak.hpp": '#include "telemetry/ring_buffer.hpp"\n',
            "src/gadgets/new.cpp": "",
            "python/src/module.cpp": '#include "common.hpp"\n#include "cli/output.hpp"\n',
        }
        for name, text in files.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_text(text)
        found = check(root)
        expected = ["src/model/upward.cpp: layer model includes", "src/backends/sideways.cpp: layer backends",
                    "include/gpucluster/telemetry/leak.hpp: public header includes the internal",
                    "src/gadgets: not a known layer", "python/src/module.cpp: layer python includes"]
        missing = [e for e in expected if not any(p.startswith(e) for p in found)]
        if missing or len(found) != len(expected):
            print("self-test failed; found:", *found, "missing:", *missing, sep="\n  ")
            return 1
    print("include graph self-test: every planted violation found, nothing else")
    return 0


def main() -> int:
    if sys.argv[1:] == ["--self-test"]:
        return self_test()
    source_dir = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else ".").resolve()
    problems = check(source_dir)
    for problem in problems:
        print(problem)
    print(f"include graph: {len(problems)} violation(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
