#!/usr/bin/env python3
"""Print a SPIN error trail of a kpark model as a readable story.

    python3 verify/show_trail.py DIR/MODEL.pml [--all]

DIR must hold MODEL.pml.trail (run_spin.sh keeps the directory of every
unexpected outcome; `spin -run` writes the trail next to the model).  Each
step is shown with its process, the _kcore.pyx step the model step mirrors
(the "@NAME" note on that model line: "# model: NAME" in _kcore.pyx) and the
word after the step, decoded into its bits.  Without --all only steps that
change a shared variable or carry an "@NAME" note are shown.
"""
import pathlib
import re
import subprocess
import sys

BITS = ["SHOULD_STOP", "SHOULD_PARK", "WAKE", "SLEEPING", "PARKED", "WOKEN",
        "STARTED", "EXITED", "WAITERS", "PER_CPU", "PARKABLE", "REPIN"]
STEP = re.compile(r"^\s*(\d+):\s+proc\s+(\d+)\s+\((\S+?)(?::\d+)?\)\s+(\S+?):(\d+)\s+\(state \d+\)\s+\[(.*)\]\s*$")
GLOBAL = re.compile(r"^\s+(\w+) = (-?\d+)\s*$")
NOTE = re.compile(r"/\*\s*(.*?)\s*\*/")


def decode(word):
    names = [b for i, b in enumerate(BITS) if word & (1 << i)]
    cpu = (word >> 16) - 1
    if cpu >= 0:
        names.append(f"cpu={cpu}")
    return "|".join(names) or "0"


def source_line(files, fname, line, stmt):
    """The model line a step came from (SPIN's file names can be off for
    included files; the line number is right, so match the text)."""
    key = re.sub(r"[()\s]", "", stmt)[:12]
    if len(key) < 3 or key in ("else", "skip"):
        return ""
    order = [fname] + [f for f in files if f != fname]
    for f in order:
        lines = files.get(f)
        if lines and 0 < line <= len(lines):
            if key and key[:6] in re.sub(r"[()\s]", "", lines[line - 1]):
                return lines[line - 1]
    lines = files.get(fname)
    return lines[line - 1] if lines and 0 < line <= len(lines) else ""


def main(argv):
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 2
    model = pathlib.Path(argv[0]).resolve()
    show_all = "--all" in argv
    d = model.parent
    if not (d / (model.name + ".trail")).exists():
        print(f"no trail {model.name}.trail in {d}", file=sys.stderr)
        return 1
    files = {p.name: p.read_text().splitlines() for p in list(d.glob("*.pmh")) + list(d.glob("*.pml"))}
    out = subprocess.run(["spin", "-t", "-p", "-g", model.name], cwd=d,
                         capture_output=True, text=True).stdout.splitlines()
    word = 0
    pending = None
    last_note = {}

    def flush():
        nonlocal pending
        if pending is None:
            return
        n, proc, src, stmt, changed = pending
        note = NOTE.search(src)
        note = note.group(1) if note and re.search(r"@[a-z_]", note.group(1)) else ""
        if note:
            last_note[proc] = note
        elif changed:
            note = "(" + last_note.get(proc, "") + ")"
        if show_all or changed or note:
            ch = " ".join(f"{k}={v}" for k, v in changed.items() if k != "word")
            w = f"word={decode(word)}" if "word" in changed else ""
            print(f"{n:>4} {proc:<14} {stmt[:46]:<46} {note[:40]:<40} {w} {ch}".rstrip())
        pending = None

    for line in out:
        m = STEP.match(line)
        if m:
            flush()
            n, pid, pname, fname, lno, stmt = m.groups()
            src = source_line(files, fname, int(lno), stmt)
            pending = [int(n), f"{pname}", src, stmt, {}]
            continue
        g = GLOBAL.match(line)
        if g and pending is not None:
            k, v = g.group(1), int(g.group(2))
            if k == "word":
                if v != word:
                    word = v
                    pending[4]["word"] = v
            elif k in ("fxq", "spurious", "on_cpu", "stop_sent", "sched_wake", "ctl_done"):
                pending[4][k] = v
            continue
        if line.startswith("spin:") or "trail ends" in line or "<<<<<" in line or "cycle" in line:
            flush()
            print(line.strip())
    flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
