"""Device sources for ``gpucluster.Manager(backends=[...])``. Each Backend object is
handed to one Manager, which owns it from then on.

    Manager(backends=[backends.nvml(), backends.host()])

A backend named here must work: ``Manager.start()`` raises
``BackendUnavailableError`` when one cannot be used (its library is missing, its
driver is not initialised, its discovery fails or misses
``discovery_timeout_seconds``). ``Manager(..., require_backends=False)`` skips such
backends instead; ``backend_reports()`` says what each one found.
"""

from __future__ import annotations

from typing import Optional, Union

from ._native import Backend, Fleet
from . import _native

__all__ = ["Backend", "host", "simulated", "nvml", "rocm", "sysfs"]


def host() -> Backend:
    """This machine's CPU (memory, utilization; temperature, power, clock where readable)."""
    return _native.host_backend()


def simulated(fleet: Union[str, Fleet]) -> Backend:
    """The devices of a fleet file (path) or a parsed Fleet."""
    return _native.simulated_backend(fleet)


def nvml(library_path: str = "") -> Backend:
    """NVIDIA GPUs through NVML, loaded at run time (GPUCLUSTER_NVML_LIBRARY overrides)."""
    return _native.nvml_backend(library_path)


def rocm(library_path: str = "") -> Backend:
    """AMD GPUs through ROCm SMI, loaded at run time (GPUCLUSTER_ROCM_SMI_LIBRARY overrides)."""
    return _native.rocm_backend(library_path)


def sysfs(root: Optional[str] = None) -> Backend:
    """AMD (amdgpu) and Intel (i915, xe) GPUs from /sys/class/drm (root overrides /sys)."""
    return _native.sysfs_backend(root)
