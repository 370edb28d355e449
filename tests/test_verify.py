"""The SPIN models of the KThread protocol (verify/*.pml) check as they must.

Every model whose name contains "mutant" carries a deliberate bug in the
protocol and must FAIL; every other model must pass with a complete search.
Each model is checked with the command on its " * run: spin ..." line, in a
private directory.  verify/run_spin.sh does the same from the shell, and
docs/verification.md explains what each model checks.

Skipped when `spin` (Debian: apt-get install spin) or a C compiler is not
installed, or when KPARK_SPIN=0 (the models do not depend on the build, so
a second test pass, e.g. on the pthread backend, may skip them).
"""
from __future__ import annotations

import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
VERIFY = ROOT / "verify"
MODELS = sorted(p.name for p in VERIFY.glob("*.pml"))

needs_spin = pytest.mark.skipif(
    shutil.which("spin") is None or (shutil.which("cc") is None and shutil.which("gcc") is None),
    reason="SPIN model checks need `spin` and a C compiler on PATH "
           "(Debian/Ubuntu: apt-get install spin gcc)")
not_disabled = pytest.mark.skipif(os.environ.get("KPARK_SPIN") == "0",
                                  reason="KPARK_SPIN=0: SPIN model checks disabled")


def run_line(model: str) -> list:
    text = (VERIFY / model).read_text()
    m = re.search(r"^ \* run: spin (.+)$", text, re.M)
    assert m, f"{model} has no ' * run: spin ...' line"
    args = m.group(1).split()
    assert args[-1] == model, f"{model}'s run line checks {args[-1]}"
    return args


def test_models_exist() -> None:
    # the mutants the issue asks for, and the models they break
    names = set(MODELS)
    for required in ("kthread.pml", "kthread_percpu.pml", "kthread_ltl.pml",
                     "kthread_mutant_no_two_phase.pml",
                     "kthread_mutant_clear_after_wake.pml",
                     "kthread_percpu_mutant_no_rebind.pml",
                     # idle() and the park in place
                     "kthread_idle.pml", "kthread_idle_percpu.pml", "kthread_idle_ltl.pml",
                     "kthread_idle_ltl_mutant_unpark_ignores_wake.pml",
                     "kthread_idle_ltl_mutant_wake_deaf_in_place.pml",
                     "kthread_idle_percpu_mutant_no_repin.pml"):
        assert required in names
    for model in MODELS:
        run_line(model)


def test_line_references_match_kcore() -> None:
    """Every ':NNN' a model step names is the line of _kcore.pyx it mirrors."""
    r = subprocess.run([sys.executable, str(VERIFY / "check_refs.py")],
                       capture_output=True, text=True)
    assert r.returncode == 0, (
        "the models' line references no longer match src/kpark/_kcore.pyx; "
        "run `python3 verify/check_refs.py --fix`, review, and update the model "
        "where the code changed meaning:\n" + r.stdout + r.stderr)


@needs_spin
@not_disabled
@pytest.mark.timeout(900)
@pytest.mark.parametrize("model", MODELS)
def test_model(model: str, tmp_path: pathlib.Path) -> None:
    for f in list(VERIFY.glob("*.pmh")) + list(VERIFY.glob("*.pml")):
        shutil.copy(f, tmp_path)
    r = subprocess.run(["spin"] + run_line(model), cwd=tmp_path,
                       capture_output=True, text=True)
    out = r.stdout + r.stderr
    errors = re.findall(r"errors: (\d+)", out)
    assert errors, f"SPIN did not run {model}:\n{out[-3000:]}"
    found = re.findall(r"^pan:\d+: (.*)$", out, re.M)
    if "mutant" in model:
        assert int(errors[-1]) > 0, (
            f"{model} is a mutant with a known bug, but SPIN found nothing: "
            "the models no longer catch that bug")
    else:
        trail = ""
        if int(errors[-1]):
            trail = subprocess.run(
                [sys.executable, str(VERIFY / "show_trail.py"), str(tmp_path / model)],
                capture_output=True, text=True).stdout
        assert int(errors[-1]) == 0, f"SPIN: {model}: {found}\n{trail[-6000:]}"
        assert "max search depth too small" not in out, f"{model}: search truncated"
