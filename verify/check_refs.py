#!/usr/bin/env python3
"""Keep the models' line references in step with src/kpark/_kcore.pyx.

Every step of the Promela models names the line of _kcore.pyx it mirrors,
as ":NNN" or ":NNN-MMM" inside a comment, optionally followed by the
operation ("CAS", "load", "kp_wait", ...).  verify/kcore.pyx.snapshot is
the _kcore.pyx the references were written (and the models checked)
against.

    python3 verify/check_refs.py          check
    python3 verify/check_refs.py --fix    follow moved lines

The check passes when every referenced line of _kcore.pyx is still the very
line of the snapshot (same number, same text) and, where an operation is
named, holds the C call that performs it (CAS -> kp_cas32, load ->
kp_load32, ...).  It fails when an edit of _kcore.pyx moved or changed a
referenced line.

--fix maps the snapshot's lines onto the current file (difflib), moves
every reference whose lines are unchanged, and makes the current file the
new snapshot, so that afterwards every reference is a line of the current
file and a second --fix changes nothing.  A reference whose lines changed,
went away or had lines inserted between them is moved to where the code
went (best guess) and marked for review with a "?" (":?NNN"), which the
check reports until somebody has reviewed the model step there, corrected
the reference if need be, and deleted the "?".  Then re-run
verify/run_spin.sh.
Exit status 0 when everything checks (or was moved), 1 otherwise.
"""
import argparse
import difflib
import pathlib
import re
import sys

HERE = pathlib.Path(__file__).resolve().parent
DEFAULT_PYX = HERE.parent / "src" / "kpark" / "_kcore.pyx"
SNAPSHOT = HERE / "kcore.pyx.snapshot"

# operation word in the model -> text that must appear on the .pyx line(s)
TOKENS = {
    "CAS": "kp_cas32",
    "load": "kp_load32",
    "kp_wait": "kp_wait(",
    "wait_step": "wait_step(",
    "kp_pin_self": "kp_pin_self(",
    "fetch_or": "kp_fetch_or32(",
    "fetch_and": "kp_fetch_and32(",
}
# ":NNN" or ":NNN-MMM" (not inside a word or a path), then maybe an operation;
# ":?NNN" is a reference that --fix moved to a changed line: to be reviewed
REF = re.compile(r"(?<![\w./-]):(\?)?(\d+)(?:-(\d+))?(?:\s+([A-Za-z_]+))?")
COMMENT = re.compile(r"/\*.*?\*/", re.S)


def model_files():
    return sorted(list(HERE.glob("*.pmh")) + list(HERE.glob("*.pml")))


def refs_in(text):
    """Yield (start, end, first, last, op, marked) for each reference in
    comments; start/end delimit the marker (if any) and the numbers in `text`."""
    for c in COMMENT.finditer(text):
        for m in REF.finditer(c.group(0)):
            first = int(m.group(2))
            last = int(m.group(3) or first)
            op = m.group(4) if m.group(4) in TOKENS else None
            end = m.end(3) if m.group(3) else m.end(2)
            yield c.start() + m.start(1 if m.group(1) else 2), c.start() + end, first, last, op, bool(m.group(1))


def span(first, last, marked=False):
    return ("?" if marked else "") + f"{first}" + (f"-{last}" if last != first else "")


def line_of(lines, n):
    """Line n (1-based) of `lines`, shortened, for messages."""
    return repr(lines[n - 1].strip()[:60]) if 1 <= n <= len(lines) else "(no such line)"


def check(cur, snap, pyx_name):
    bad = 0
    for path in model_files():
        for _, _, first, last, op, marked in refs_in(path.read_text()):
            where = f"{path.name}: :{span(first, last, marked)}"
            if not (1 <= first <= last <= len(cur)):
                print(f"{where}: beyond the end of {pyx_name}")
                bad += 1
                continue
            if marked:
                print(f"{where}: marked for review by --fix (now {line_of(cur, first)}): "
                      "check the model step against the code, correct the reference, "
                      "delete the '?'")
                bad += 1
                continue
            changed = [n for n in range(first, last + 1)
                       if n > len(snap) or cur[n - 1] != snap[n - 1]]
            if changed:
                print(f"{where}: line {changed[0]} moved or changed since the model was "
                      f"checked (was {snap[changed[0] - 1].strip()[:60]!r})"
                      if changed[0] <= len(snap) else f"{where}: not in the snapshot")
                bad += 1
            elif op and not any(TOKENS[op] in cur[n - 1] for n in range(first, last + 1)):
                print(f"{where} {op}: no {TOKENS[op]!r} on that line")
                bad += 1
    return bad


def line_map(snap, cur):
    """(exact, guess): exact maps each unchanged snapshot line to its line in
    `cur`; guess(n, is_last) says where line n went, changed or not."""
    exact, blocks = {}, []
    sm = difflib.SequenceMatcher(None, snap, cur, autojunk=False)
    for tag, i1, i2, j1, j2 in sm.get_opcodes():
        if tag == "equal":
            for k in range(i2 - i1):
                exact[i1 + k + 1] = j1 + k + 1
        elif i2 > i1:                       # replace or delete
            blocks.append((i1, i2, j1, j2))

    def guess(n, is_last):
        if n in exact:
            return exact[n]
        for i1, i2, j1, j2 in blocks:
            if i1 < n <= i2:
                if j2 == j1:                # deleted: the line that follows now
                    return min(j1 + 1, len(cur))
                if is_last and n == i2:     # the end of a replaced block
                    return j2
                return j1 + min(n - 1 - i1, j2 - j1 - 1) + 1
        return min(max(n, 1), len(cur))     # beyond the snapshot: leave it
    return exact, guess


def fix(cur, snap, pyx_path):
    """Move every reference from the snapshot's lines to the current file's,
    then make the current file the snapshot (so that --fix is idempotent)."""
    # The references must be lines of the snapshot: a named operation that is
    # not on its snapshot line means they are not (edited by hand against the
    # current file, or moved by an older --fix that left the snapshot behind),
    # and mapping them again would move them to wrong lines.
    stale = 0
    for path in model_files():
        for _, _, first, last, op, _ in refs_in(path.read_text()):
            if op and not (1 <= first <= last <= len(snap)
                           and any(TOKENS[op] in snap[n - 1] for n in range(first, last + 1))):
                print(f"{path.name}: :{span(first, last)} {op}: no {TOKENS[op]!r} there "
                      f"in {SNAPSHOT.name}")
                stale += 1
    if stale:
        print(f"{stale} reference(s) are not lines of {SNAPSHOT.name}, so the references "
              "cannot be mapped from it: nothing changed.  Restore the models' references "
              "to the snapshot's lines (or correct them by hand against the current file "
              "and copy it to the snapshot).")
        return 1
    exact, guess = line_map(snap, cur)
    review = moved = 0
    for path in model_files():
        text = path.read_text()
        edits = []
        for start, end, first, last, op, marked in refs_in(text):
            a, b = exact.get(first), exact.get(last)
            where = f"{path.name}: :{span(first, last, marked)}{' ' + op if op else ''}"
            ok = (a is not None and b is not None and b - a == last - first
                  and all(n in exact for n in range(first, last + 1)))
            if not ok:
                a, b = guess(first, False), guess(last, True)
                b = max(a, b)
                print(f"{where}: the code changed or went away (was {line_of(snap, first)}"
                      + (f" .. {line_of(snap, last)}" if last != first else "")
                      + f"); now :?{span(a, b)}: review the model step there")
                review += 1
            elif marked:
                review += 1
            new = span(a, b, marked or not ok)
            if new != text[start:end]:
                edits.append((start, end, new))
        for start, end, new in reversed(edits):
            text = text[:start] + new + text[end:]
        if edits:
            path.write_text(text)
            moved += len(edits)
            print(f"{path.name}: moved {len(edits)} reference(s)")
    SNAPSHOT.write_text(pyx_path.read_text())
    print(f"moved {moved} reference(s); {SNAPSHOT.name} is now {pyx_path.name}.")
    if review:
        print(f"{review} reference(s) marked ':?NNN' need a look: review the model there, "
              "correct the reference, delete the '?'; then re-run verify/run_spin.sh.")
        return 1
    print("Re-run verify/run_spin.sh.")
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fix", action="store_true", help="follow moved lines")
    ap.add_argument("--pyx", default=str(DEFAULT_PYX))
    args = ap.parse_args(argv)
    pyx = pathlib.Path(args.pyx)
    cur = pyx.read_text().splitlines()
    if not SNAPSHOT.exists():
        print(f"no {SNAPSHOT}; create it from the _kcore.pyx the models were checked against")
        return 1
    snap = SNAPSHOT.read_text().splitlines()
    if args.fix:
        return fix(cur, snap, pyx)
    bad = check(cur, snap, pyx)
    marked = sum(m for f in model_files() for *_, m in refs_in(f.read_text()))
    if bad and bad == marked:
        print(f"{bad} reference(s) still marked for review (':?NNN')")
        return 1
    if bad:
        print(f"{bad} reference(s) out of step with {pyx}: run `python3 {HERE.name}/check_refs.py "
              "--fix`, then re-check the models")
        return 1
    print(f"all line references of {len(model_files())} model files match {pyx}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
