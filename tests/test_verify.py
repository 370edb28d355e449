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
KCORE = ROOT / "src" / "kpark" / "_kcore.pyx"
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
    # the mutants, and the models they break
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


def check_refs(pyx: pathlib.Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(VERIFY / "check_refs.py"), "--pyx", str(pyx)],
                          capture_output=True, text=True)


def test_model_anchors_match_kcore() -> None:
    """Every '@NAME' a model step names is a '# model: NAME' step of _kcore.pyx
    doing the operation, with the ordering, the model states, and back."""
    r = check_refs(KCORE)
    assert r.returncode == 0, (
        "the models and src/kpark/_kcore.pyx no longer name the same steps; "
        "re-examine the model steps listed, then run verify/run_spin.sh:\n"
        + r.stdout + r.stderr)


def test_moving_code_leaves_the_models_alone(tmp_path: pathlib.Path) -> None:
    # A docstring reflow and inserted lines move every line below them.
    text = KCORE.read_text()
    moved = text.replace('"""The KThread state machine', '"""\n\n\nThe KThread state machine', 1)
    moved = moved.replace("\ncdef enum:", "\n# a comment\n\ncdef enum:", 1)
    assert moved != text
    pyx = tmp_path / "_kcore.pyx"
    pyx.write_text(moved)
    r = check_refs(pyx)
    assert r.returncode == 0, r.stdout


@pytest.mark.parametrize("edit, message", [
    # the park loop's announcement CAS with a weaker ordering
    (("if not kp_cas32(&self.word, &v, n, KP_ACQ_REL, KP_ACQUIRE):\n                continue\n"
      "            _wake_if(&self.word, v & WAITERS)\n            parked = True",
      "if not kp_cas32(&self.word, &v, n, KP_RELAXED, KP_ACQUIRE):\n                continue\n"
      "            _wake_if(&self.word, v & WAITERS)\n            parked = True"),
     "park_loop.announce CAS ACQ_REL"),
    # an anchor the models name, gone
    (("# model: enter.cas\n", "\n"), "no '# model: enter.cas'"),
    # an anchor no model names
    (("# model: enter.cas\n", "# model: enter.cas\n        # model: enter.extra\n"),
     "'enter.extra' is named by no model"),
])
def test_changed_steps_fail_the_check(tmp_path: pathlib.Path, edit: tuple, message: str) -> None:
    text = KCORE.read_text()
    old, new = edit
    assert text.count(old) == 1, old
    pyx = tmp_path / "_kcore.pyx"
    pyx.write_text(text.replace(old, new))
    r = check_refs(pyx)
    assert r.returncode == 1
    assert message in r.stdout, r.stdout


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
