"""Build the private Cython engine. Compiler directives are set here, once."""

import runpy

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, find_packages, setup

DIRECTIVES = {
    "language_level": "3",
    "boundscheck": False,
    "wraparound": False,
    "initializedcheck": False,
    "cdivision": True,
    "nonecheck": False,
    "embedsignature": True,
}

# The engine's node/edge/activation numbering is generated from the builder's single source.
runpy.run_path("spikefuse/graph/kinds.py")["write_pxi"]("spikefuse/engine/_kinds.pxi")

# Every compiled module: the engine's event loop and kernels, the fusion core's per-message
# path (cimports the engine's Core), the driver SDK's per-sample path (oracles in
# tests/test_core_hot.py and tests/test_sdk_fast.py) and the unix:// transport's receive;
# one set of build flags for all.
# -ffp-contract=off keeps a*b+c unfused so results match the NumPy reference bit-for-bit
# where the operation order is the same.
COMPILED = (
    "spikefuse.engine._engine",
    "spikefuse.engine._kernels",
    "spikefuse.core._hot",
    "spikefuse.sdk._fast",
    "spikefuse.transport._unixfast",
)
extensions = [
    Extension(
        name,
        [name.replace(".", "/") + ".pyx"],
        include_dirs=[np.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=["-O3", "-ffp-contract=off"],
    )
    for name in COMPILED
]

# spikefuse.drivers and spikefuse.benchmarks live in top-level drivers/ and benchmarks/
# (package-dir in pyproject.toml); everything else is found under spikefuse/.
packages = find_packages(include=["spikefuse", "spikefuse.*"]) + [
    "spikefuse.drivers",
    "spikefuse.benchmarks",
]

setup(packages=packages, ext_modules=cythonize(extensions, compiler_directives=DIRECTIVES))
