"""Declares kpark's Cython extensions; the rest of the metadata lives in pyproject.toml.

KPARK_BACKEND=pthread builds the mutex + condition-variable wait backend
instead of Linux futexes.  KPARK_CFLAGS / KPARK_LDFLAGS add compiler and
linker flags (sanitizers).  The shared objects are linked stripped (-s) and
compiled without debug info; KPARK_DEBUG=1 keeps the debug info and symbols,
and so does a -g in KPARK_CFLAGS (asking for debug info explicitly).

The .pyx sources are cythonized when build_ext runs, not when this file is
read: making an sdist runs no Cython and writes no generated .c, and a build
from the sdist gets Cython from the build requirements.
"""
import os
import re
import shlex
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

#: (module name, source path) of every extension.  Each is compiled with its own
#: directory and src/kpark on the include path (for the kp_*.h shims).
EXTENSIONS = [
    # One module from _flags.pyx, _completion.pyx, _kcore.pyx and _futurecore.pyx
    # (included by _native.pyx), so kp_spin.h's statics exist once.
    ("kpark._native", "src/kpark/_native.pyx"),
    # The per-CPU pool's and the executor's Python, compiled as it is (the
    # .py stays the source and the fallback): hotplug and submit are mostly
    # this code, and a free-threaded CPython has no specialising interpreter
    # for it (docs/performance.md, "Instruction counts").
    ("kpark.percpu", "src/kpark/percpu.py"),
    ("kpark.executor", "src/kpark/executor.py"),
    # The benchmarks' C reference (the "C limit"), not part of the core.
    ("kpark.bench._limit", "src/kpark/bench/_limit.pyx"),
]

backend = os.environ.get("KPARK_BACKEND", "futex")
if backend not in ("futex", "pthread"):
    raise SystemExit(f"KPARK_BACKEND must be 'futex' or 'pthread', not {backend!r}")
user_cflags = shlex.split(os.environ.get("KPARK_CFLAGS", ""))
user_ldflags = shlex.split(os.environ.get("KPARK_LDFLAGS", ""))
debug = os.environ.get("KPARK_DEBUG", "0") not in ("", "0") or any(
    f.startswith("-g") and f != "-g0" for f in user_cflags)

macros = [("KPARK_BACKEND_PTHREAD", "1")] if backend == "pthread" else []
# -g0 comes after Python's own CFLAGS (which carry -g) and so wins.
cflags = ["-O2", "-Wall", "-Wno-unused-function"] + ([] if debug else ["-g0"]) + user_cflags
ldflags = ([] if debug else ["-s"]) + user_ldflags


class cythonize_build_ext(build_ext):
    """build_ext that turns each extension's .pyx (or .py) into C just before compiling it.

    Not earlier: sdist also asks build_ext for its source files, and must get
    the .pyx, not generated C.
    """

    def build_extension(self, ext):
        from Cython.Build import cythonize

        directives = {"freethreading_compatible": True}
        if ext.sources[0].endswith(".py"):
            # Annotations there are for type checkers: never checks at run time.
            directives["annotation_typing"] = False
        (c_ext,) = cythonize([ext], include_path=["src"], compile_time_env={},
                             language_level=3, force=self.force,
                             compiler_directives=directives)
        ext.sources = c_ext.sources
        super().build_extension(ext)


def long_description():
    """README.md without its relative-path images, which a package index cannot show."""
    text = Path(__file__).with_name("README.md").read_text(encoding="utf-8")
    return re.sub(r"^!\[[^\]]*\]\((?![a-z]+://)[^)]*\)\n\n?", "", text, flags=re.M)


setup(
    ext_modules=[
        Extension(name, [pyx], include_dirs=sorted({os.path.dirname(pyx), "src/kpark"}),
                  define_macros=macros, extra_compile_args=cflags,
                  extra_link_args=ldflags, libraries=["pthread"])
        for name, pyx in EXTENSIONS
    ],
    cmdclass={"build_ext": cythonize_build_ext},
    long_description=long_description(),
    long_description_content_type="text/markdown",
)
