"""Builds gpucluster._native with the project's CMake (target gpucluster_python) for the
interpreter running this script, and packages it with python/gpucluster/.

    pip install --no-build-isolation .      # offline: setuptools, wheel, pybind11 from Debian

Environment: GPUCLUSTER_CMAKE_ARGS (extra configure arguments), GPUCLUSTER_BUILD_JOBS
(parallel jobs, default 2). The CMake build tree is build/pip/cmake.
"""

import os
import shlex
import shutil
import subprocess
import sys
import sysconfig

from setuptools import setup
from setuptools.command.build_ext import build_ext
from setuptools.extension import Extension

ROOT = os.path.dirname(os.path.abspath(__file__))
os.makedirs(os.path.join(ROOT, "build", "pip"), exist_ok=True)


class CMakeExtension(Extension):
    def __init__(self, name):
        super().__init__(name, sources=[])


class CMakeBuild(build_ext):
    def build_extension(self, ext):
        build_dir = os.path.join(ROOT, "build", "pip", "cmake")
        os.makedirs(build_dir, exist_ok=True)
        generator = ["-G", "Ninja"] if shutil.which("ninja") else []
        configure = ["cmake", "-S", ROOT, "-B", build_dir, *generator, "-DCMAKE_BUILD_TYPE=Release",
                     "-DGPUCLUSTER_BUILD_TESTS=OFF", "-DGPUCLUSTER_BUILD_BENCH=OFF",
                     f"-DGPUCLUSTER_PYTHON={sys.executable}",
                     *shlex.split(os.environ.get("GPUCLUSTER_CMAKE_ARGS", ""))]
        subprocess.run(configure, check=True)
        jobs = os.environ.get("GPUCLUSTER_BUILD_JOBS", "2")
        subprocess.run(["cmake", "--build", build_dir, "--target", "gpucluster_python", "-j", jobs], check=True)
        suffix = sysconfig.get_config_var("EXT_SUFFIX")
        built = os.path.join(build_dir, "python", "gpucluster", "_native" + suffix)
        if not os.path.isfile(built):
            raise RuntimeError(f"CMake did not produce {built}")
        target = self.get_ext_fullpath(ext.name)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copyfile(built, target)


setup(
    ext_modules=[CMakeExtension("gpucluster._native")],
    cmdclass={"build_ext": CMakeBuild},
    options={"build": {"build_base": os.path.join("build", "pip", "setuptools")},
             "egg_info": {"egg_base": os.path.join("build", "pip")}},
)
