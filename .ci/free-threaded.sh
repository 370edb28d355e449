#!/usr/bin/env bash
# CI stage: kpark on free-threaded CPython 3.13 (built with --disable-gil).
#
# tools/free-threaded-python builds the interpreter once into a cache outside
# the checkout (about 7 min on 2 CPUs) and reuses it afterwards.  Then, in a
# fresh virtual environment: the README's test install, a check that no
# kpark module turns the GIL back on, the whole suite, the stress and
# differential tests with larger step counts than the default run, and the
# benchmark floor.  Each step prints its elapsed time.  About 10-15 min on a
# 2-CPU machine with the interpreter cached.
# Everything a step needs is installed here; called from .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n=== free-threaded: %s ===\n' "$*"; }
t_stage=$SECONDS
t_step=$SECONDS
step() {
    printf -- '--- free-threaded: previous step took %ds\n' $((SECONDS - t_step))
    t_step=$SECONDS
    log "$*"
}

log "interpreter: tools/free-threaded-python (builds once, then cached)"
FT_PY=$(tools/free-threaded-python | tail -n1)
"$FT_PY" -VV
"$FT_PY" -c 'import sys, sysconfig
assert sysconfig.get_config_var("Py_GIL_DISABLED"), "not a free-threaded build"
assert not sys._is_gil_enabled(), "the GIL is on"'

step "fresh venv; pip install \".[test]\""
FT_VENV=$(mktemp -d /tmp/kpark-ci-ft-venv.XXXXXX)
trap 'rm -rf "$FT_VENV"' EXIT
"$FT_PY" -m venv "$FT_VENV/venv"
# shellcheck disable=SC1091
. "$FT_VENV/venv/bin/activate"
python -m pip install -q --upgrade pip
pip install ".[test]"

step "every kpark module imported: the GIL stays off"
# joblib is pure Python: kpark.joblib is imported too.  kpark.dask needs
# distributed's whole stack, which the integrations stage installs; here it
# is named as not imported rather than silently left out.
pip install -q joblib
# From outside the checkout: the installed build, not src/, is imported.
(cd "$FT_VENV" && python - <<'PY'
import importlib, pkgutil, sys
import kpark
names = ["kpark"] + [m.name for m in pkgutil.walk_packages(kpark.__path__, "kpark.")]
done = []
for name in names:
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if name != "kpark.dask" or (exc.name or "").startswith("kpark"):
            raise
        print(f"not imported: {name} (needs {exc.name}, not installed here)")
        continue
    assert not sys._is_gil_enabled(), f"importing {name} enabled the GIL"
    done.append(name)
print(f"{len(done)} of {len(names)} modules imported, sys._is_gil_enabled() is False;",
      "backend:", kpark.BACKEND)
PY
)

step "whole suite (the SPIN models do not depend on the build: checked by .ci/run)"
KPARK_SPIN=0 pytest -q

step "stress, differential and free-threading stress tests, larger step counts"
# Defaults: 20000 stress steps, 150 model examples, 2 s per shared object.
KPARK_SPIN=0 KPARK_STRESS_STEPS=60000 KPARK_MODEL_EXAMPLES=400 KPARK_FT_SECONDS=10 \
    pytest -q tests/test_stress.py tests/test_model.py tests/test_freethreading.py

step "benchmark floor: kpark must beat plain threading (ratio >= 1)"
# As in .ci/run, one retry: a 2-CPU machine where something else grabs a CPU
# for a moment can push a single run under the floor.
floor() { python -m kpark bench --quick --json "$FT_VENV/bench.json" \
          && python bench/check_floor.py "$FT_VENV/bench.json"; }
floor || { echo "bench floor missed once; measuring again"; floor; }

printf -- '--- free-threaded: previous step took %ds\n' $((SECONDS - t_step))
log "passed in $((SECONDS - t_stage))s"
