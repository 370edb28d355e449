#!/usr/bin/env python3
"""Keep the SPIN models and src/kpark/_kcore.pyx naming the same steps.

A step of the protocol carries a name in the source, as a comment:

    # model: park_loop.announce          (own line: the code that follows)
    v = kp_load32(...)  # model: park_loop.load     (end of line: that line)

and every model step that mirrors it names it in a Promela comment, with
the operation and memory ordering the model assumes where there is one:

    CAS(v, n, ok);      /* @park_loop.announce CAS ACQ_REL */

An anchor on a line of its own covers the code below it down to the next
anchor at the same or a shallower indent, the end of the enclosing block,
or (for an anchor above a def) the next def at its indent; an anchor at the
end of a line covers that statement (continuation lines included).

    python3 verify/check_refs.py [--pyx PATH]

The check passes when
  - every anchor a model names exists in the source, and every anchor in
    the source is named by a model (an unnamed one is a step nobody checks);
  - no anchor name is given twice in the source;
  - where a model names an operation, the code under the anchor performs it
    (CAS -> kp_cas32, load -> kp_load32, ...), and where it also names an
    ordering, one such call there uses it (a CAS: its success ordering).
Moving code, reflowing a docstring or adding lines touches nothing here;
changing what a step does (its operation or ordering) fails the check until
the model is re-examined (then re-run verify/run_spin.sh).
Exit status 0 when everything checks, 1 otherwise.
"""
import argparse
import pathlib
import re
import sys

HERE = pathlib.Path(__file__).resolve().parent
DEFAULT_PYX = HERE.parent / "src" / "kpark" / "_kcore.pyx"

# operation word in the model -> the C call that performs it
OPS = {
    "CAS": "kp_cas32",
    "load": "kp_load32",
    "store": "kp_store32",
    "fetch_or": "kp_fetch_or32",
    "fetch_and": "kp_fetch_and32",
    "kp_wait": "kp_wait",
    "wait_step": "wait_step",
    "kp_pin_self": "kp_pin_self",
}
ORDERS = ("RELAXED", "ACQUIRE", "RELEASE", "ACQ_REL", "SEQ_CST")
NAME = r"[a-z_][a-z0-9_]*(?:\.[a-z_][a-z0-9_]*)*"
ANCHOR = re.compile(r"#\s*model:\s*(" + NAME + r")")
REF = re.compile(r"(?<![\w@])@(" + NAME + r")(?:\s+(" + "|".join(OPS) + r")\b"
                 r"(?:\s+(" + "|".join(ORDERS) + r")\b)?)?")
COMMENT = re.compile(r"/\*.*?\*/", re.S)
DEF = re.compile(r"\s*(?:@|c?def\s|cpdef\s|class\s)")


def model_files():
    return sorted(list(HERE.glob("*.pmh")) + list(HERE.glob("*.pml")))


def _indent(line):
    return len(line) - len(line.lstrip())


def _is_code(line):
    s = line.strip()
    return bool(s) and not s.startswith("#")


def _statement_end(lines, i):
    """Index of the last line of the statement that starts at line i."""
    depth = 0
    j = i
    while True:
        code = re.sub(r"#.*", "", re.sub(r"'[^']*'|\"[^\"]*\"", "''", lines[j]))
        depth += code.count("(") + code.count("[") - code.count(")") - code.count("]")
        if depth <= 0 or j + 1 >= len(lines):
            return j
        j += 1


def anchors(text):
    """{name: (first, last)} (0-based line indices) of the source's anchors,
    and a list of names given twice."""
    lines = text.splitlines()
    found, twice = {}, []
    for i, line in enumerate(lines):
        m = ANCHOR.search(line)
        if not m:
            continue
        name = m.group(1)
        if name in found:
            twice.append(name)
        if line.strip().startswith("#"):
            ind = _indent(line)
            seen_def = False
            j = i + 1
            while j < len(lines):
                nxt = lines[j]
                if nxt.strip().startswith("#") and ANCHOR.search(nxt) and _indent(nxt) <= ind:
                    break
                if _is_code(nxt):
                    if _indent(nxt) < ind:
                        break
                    if _indent(nxt) == ind and DEF.match(nxt):
                        # an anchor above a def covers that def only
                        if seen_def:
                            break
                        seen_def = not nxt.lstrip().startswith("@")
                j += 1
            found[name] = (i + 1, j - 1)
        else:
            found[name] = (i, _statement_end(lines, i))
    return found, twice


def refs(path):
    """Yield (line, name, op, order) for each anchor named in `path`'s comments."""
    text = path.read_text()
    for c in COMMENT.finditer(text):
        for m in REF.finditer(c.group(0)):
            line = text.count("\n", 0, c.start() + m.start()) + 1
            yield line, m.group(1), m.group(2), m.group(3)


def calls(code, func):
    """The memory-ordering arguments of each call of `func` in `code`."""
    out = []
    for m in re.finditer(r"\b" + re.escape(func) + r"\s*\(", code):
        depth, k = 1, m.end()
        while k < len(code) and depth:
            depth += {"(": 1, ")": -1}.get(code[k], 0)
            k += 1
        out.append(re.findall(r"\bKP_(" + "|".join(ORDERS) + r")\b", code[m.end():k]))
    return out


def check(pyx):
    text = pyx.read_text()
    lines = text.splitlines()
    found, twice = anchors(text)
    bad = 0
    for name in twice:
        print(f"{pyx.name}: anchor {name!r} is given more than once")
        bad += 1
    named = set()
    for path in model_files():
        for line, name, op, order in refs(path):
            named.add(name)
            where = f"{path.name}:{line}: @{name}"
            if name not in found:
                print(f"{where}: no '# model: {name}' in {pyx.name}")
                bad += 1
                continue
            if op is None:
                continue
            first, last = found[name]
            code = "\n".join(re.sub(r"#.*", "", l) for l in lines[first:last + 1])
            orders = calls(code, OPS[op])
            if not orders:
                print(f"{where} {op}: no {OPS[op]}() under the anchor "
                      f"({pyx.name} lines {first + 1}-{last + 1})")
                bad += 1
            elif order and not any(o and o[0] == order for o in orders):
                print(f"{where} {op} {order}: the code under the anchor uses "
                      + ", ".join(o[0] if o else "no ordering" for o in orders))
                bad += 1
    for name in sorted(set(found) - named):
        print(f"{pyx.name}:{found[name][0]}: anchor {name!r} is named by no model")
        bad += 1
    return bad, len(found)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pyx", default=str(DEFAULT_PYX))
    args = ap.parse_args(argv)
    pyx = pathlib.Path(args.pyx)
    bad, count = check(pyx)
    if bad:
        print(f"{bad} problem(s) between the models and {pyx}: re-examine the model "
              "steps named above, then re-run verify/run_spin.sh")
        return 1
    print(f"all {count} anchors of {pyx.name} match {len(model_files())} model files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
