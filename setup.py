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

# -ffp-contract=off keeps a*b+c unfused so results match the NumPy reference bit-for-bit
# where the operation order is the same.
extensions = [
    Extension(
        f"spikefuse.engine.{name}",
        [f"spikefuse/engine/{name}.pyx"],
        include_dirs=[np.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=["-O3", "-ffp-contract=off"],
    )
    for name in ("_engine", "_kernels")
]
# the driver SDK's per-sample path (spikefuse/sdk/_fast.pyx; oracles in tests/test_sdk_fast.py)
extensions.append(
    Extension(
        "spikefuse.sdk._fast",
        ["spikefuse/sdk/_fast.pyx"],
        include_dirs=[np.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=["-O3", "-ffp-contract=off"],
    )
)

# spikefuse.drivers and spikefuse.benchmarks live in top-level drivers/ and benchmarks/
# (package-dir in pyproject.toml); everything else is found under spikefuse/.
packages = find_packages(include=["spikefuse", "spikefuse.*"]) + [
    "spikefuse.drivers",
    "spikefuse.benchmarks",
]

setup(packages=packages, ext_modules=cythonize(extensions, compiler_directives=DIRECTIVES))
