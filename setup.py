"""Declares kpark's Cython extensions; metadata lives in pyproject.toml.

KPARK_BACKEND=pthread builds the mutex + condition-variable wait backend
instead of Linux futexes.  KPARK_CFLAGS adds compiler flags (sanitizers).
"""
import os
import shlex

from Cython.Build import cythonize
from setuptools import Extension, setup

backend = os.environ.get("KPARK_BACKEND", "futex")
if backend not in ("futex", "pthread"):
    raise SystemExit(f"KPARK_BACKEND must be 'futex' or 'pthread', not {backend!r}")
macros = [("KPARK_BACKEND_PTHREAD", "1")] if backend == "pthread" else []
extra = ["-O2", "-Wall", "-Wno-unused-function"] + shlex.split(os.environ.get("KPARK_CFLAGS", ""))
link_extra = shlex.split(os.environ.get("KPARK_LDFLAGS", ""))

extensions = [
    Extension(name, [path], include_dirs=["src/kpark"],
              define_macros=macros, extra_compile_args=extra, extra_link_args=link_extra,
              libraries=["pthread"])
    # kpark._native: _flags.pyx, _completion.pyx and _kcore.pyx in one module
    for name, path in (("kpark._native", "src/kpark/_native.pyx"),
                       ("kpark.bench._limit", "src/kpark/bench/_limit.pyx"))
]

setup(ext_modules=cythonize(extensions, include_path=["src"],
                            compile_time_env={}, language_level=3))
