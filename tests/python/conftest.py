"""Imports gpucluster from a build tree (CTest sets PYTHONPATH=<build>/python).

Run by hand with Debian's interpreter (it has pytest and pytest-asyncio):
    PYTHONPATH=build/release/python /usr/bin/python3 -m pytest -q tests/python
Without PYTHONPATH, the first of build/release, build/py that has the module is used.
"""

import os
import sys

import pytest

REPO = os.environ.get("GPUCLUSTER_SOURCE_DIR") or os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))

try:
    import gpucluster  # noqa: F401
except ImportError:
    for build in ("build/release", "build/py"):
        candidate = os.path.join(REPO, build, "python")
        if os.path.isdir(os.path.join(candidate, "gpucluster")):
            sys.path.insert(0, candidate)
            break
    import gpucluster  # noqa: F401


@pytest.fixture
def repo() -> str:
    return REPO


@pytest.fixture
def fleet_8x_h100(repo: str) -> str:
    return os.path.join(repo, "examples", "fleet-8x-h100.json")
