#!/usr/bin/env python3
"""Every CTest test carries exactly one of the labels unit and integration.

`ctest -L unit` and `ctest -L integration` then together run every test, once.

usage: labels_test.py BUILD_DIR
"""
import json
import subprocess
import sys


def main() -> int:
    listing = subprocess.run(["ctest", "--show-only=json-v1"], cwd=sys.argv[1], check=True,
                             capture_output=True, text=True).stdout
    problems = []
    tests = json.loads(listing)["tests"]
    for test in tests:
        labels = set()
        for prop in test.get("properties", []):
            if prop["name"] == "LABELS":
                labels.update(prop["value"])
        kinds = labels & {"unit", "integration"}
        if len(kinds) != 1:
            problems.append(f"{test['name']}: labels {sorted(labels)}; needs exactly one of unit, integration")
    for problem in problems:
        print(problem)
    print(f"{len(tests)} tests, {len(problems)} without exactly one of the labels unit, integration")
    return 1 if problems or not tests else 0


if __name__ == "__main__":
    sys.exit(main())
