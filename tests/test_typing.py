"""`mypy --strict` accepts user code calling every public name of kpark.

tests/data/typing_sample.py calls every public name of kpark and
kpark.kthread with realistic types and must type-check cleanly;
tests/data/typing_bad.py holds deliberate type errors, each marked
`# error`, which mypy must report - exactly those lines - so this test
fails if mypy does not actually read kpark's .pyi stubs and py.typed.

mypy runs with the interpreter running the tests, so it sees the same kpark:
an installed kpark is found as a PEP 561 package; a kpark imported from a
source tree (PYTHONPATH=src) is given to mypy through MYPYPATH.
"""
from __future__ import annotations

import importlib.util
import os
import re
import site
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mypy", reason="mypy is not installed (it comes with the [test] extra)")

import kpark
import kpark.kthread

DATA = Path(__file__).resolve().parent / "data"
GOOD = DATA / "typing_sample.py"
BAD = DATA / "typing_bad.py"

pytestmark = pytest.mark.timeout(300)

#: The KThread methods and properties of the public API.
KTHREAD_MEMBERS = ["wake", "start", "bind", "park", "unpark", "stop", "join", "is_alive",
                   "name", "ident", "native_id", "data", "cpu", "is_per_cpu", "is_parked",
                   "should_park", "should_stop", "started"]
FLAGS_MEMBERS = ["test_bit", "set_bit", "clear_bit", "test_and_set_bit",
                 "test_and_clear_bit", "value"]
COMPLETION_MEMBERS = ["complete", "complete_all", "wait", "try_wait", "done", "reinit"]


def _kpark_root() -> Path:
    spec = importlib.util.find_spec("kpark")
    assert spec is not None and spec.origin is not None
    return Path(spec.origin).resolve().parent.parent


def _is_site_dir(path: Path) -> bool:
    sites = set(site.getsitepackages())
    user = site.getusersitepackages()
    if user:
        sites.add(user)
    return (path.name in ("site-packages", "dist-packages")
            or any(Path(s).resolve() == path for s in sites))


def _env() -> dict[str, str]:
    """The environment for a child that must see the same kpark as this run."""
    env = dict(os.environ)
    env.pop("MYPYPATH", None)
    root = _kpark_root()
    if not _is_site_dir(root):
        # kpark from a source tree (PYTHONPATH=src may be relative to our cwd)
        env["MYPYPATH"] = str(root)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(root)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env


def run_mypy(target: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = _env()
    cmd = [sys.executable, "-m", "mypy", "--strict", "--no-incremental",
           "--cache-dir", str(tmp_path / "mypy_cache"), "--show-error-codes",
           "--no-error-summary", "--hide-error-context", "--no-color-output",
           str(target)]
    # Run outside the repository so no project config file changes the check.
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=240)


def test_stubs_and_py_typed_ship_with_the_package():
    pkg = Path(kpark.__file__).resolve().parent
    assert (pkg / "py.typed").is_file()
    for mod in ("_flags", "_completion", "_kcore"):
        assert (pkg / f"{mod}.pyi").is_file(), mod


def test_sample_calls_every_public_name():
    text = GOOD.read_text()
    words = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", text))
    public = set(kpark.__all__) | set(kpark.kthread.__all__) | {"__version__"}
    public |= set(KTHREAD_MEMBERS) | set(FLAGS_MEMBERS) | set(COMPLETION_MEMBERS)
    missing = sorted(public - words)
    assert missing == [], f"typing_sample.py does not use {missing}"


def test_mypy_strict_accepts_user_code(tmp_path):
    proc = run_mypy(GOOD, tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"mypy --strict rejected the sample:\n{out}"
    assert "error" not in out


def test_mypy_uses_kpark_stubs_and_rejects_type_errors(tmp_path):
    proc = run_mypy(BAD, tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "import-not-found" not in out and "import-untyped" not in out, out
    expected = {i for i, line in enumerate(BAD.read_text().splitlines(), 1)
                if line.rstrip().endswith("# error")}
    reported = {int(m.group(1)) for m in
                re.finditer(rf"^{re.escape(BAD.name)}:(\d+): error:", out, re.M)}
    if not reported:
        reported = {int(m.group(1)) for m in re.finditer(r":(\d+): error:", out)}
    assert len(expected) >= 10
    assert sorted(expected - reported) == [], f"mypy missed marked errors:\n{out}"
    assert sorted(reported - expected) == [], f"mypy reported unmarked lines:\n{out}"


def test_typing_sample_runs(tmp_path):
    # The sample is real code: the types it declares are the ones it gets.
    proc = subprocess.run([sys.executable, str(GOOD)], cwd=tmp_path, env=_env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert kpark.BACKEND in proc.stdout
