"""docs/api.md is true: its names are kpark's public names, its signatures
the code's (inspect.signature) or the stubs' (.pyi, for the compiled names).

Headings carry the entries: "### `name(signature)`" for a public name of
kpark (or "### `kpark.kthread.name(signature)`"), "#### `Class.member(...)`"
for a method and "#### `Class.member`" for a property or attribute.
"""
from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import pytest

import kpark
import kpark.kthread

DOC = Path(__file__).resolve().parent.parent / "docs" / "api.md"
PKG = Path(kpark.__file__).resolve().parent
HEADING = re.compile(r"^(###|####) `([\w.]+)(\(.*\))?`\s*$", re.M)

#: Names compiled in kpark._native: their signatures come from these stubs.
STUB_OF = {"Completion": "_completion.pyi", "Flags": "_flags.pyi", "BACKEND": "_kcore.pyi",
           "ThreadExitedError": "_kcore.pyi", "current": "_kcore.pyi", "parkme": "_kcore.pyi",
           "schedule": "_kcore.pyi", "should_park": "_kcore.pyi", "should_stop": "_kcore.pyi"}

Params = List[Tuple[str, str, Optional[str]]]   # (name, kind, default source)


def entries() -> Tuple[Dict[str, Optional[str]], Dict[str, Dict[str, Optional[str]]]]:
    """({top-level name: signature}, {class: {member: signature}})."""
    names: Dict[str, Optional[str]] = {}
    members: Dict[str, Dict[str, Optional[str]]] = {}
    for level, name, sig in HEADING.findall(DOC.read_text(encoding="utf-8")):
        sig = sig or None
        if level == "###":
            assert name not in names, f"{name} is documented twice"
            names[name] = sig
        else:
            cls, _, member = name.rpartition(".")
            assert cls in names, f"{name}: its class has no entry above it"
            members.setdefault(cls, {})[member] = sig
    return names, members


def params_of_text(sig: str) -> Params:
    """The parameters of a signature as written in api.md."""
    fn = ast.parse(f"def f{sig}: pass").body[0]
    assert isinstance(fn, ast.FunctionDef)
    return params_of_ast(fn.args)


def params_of_ast(a: ast.arguments, drop_self: bool = False) -> Params:
    out: Params = []
    pos = a.posonlyargs + a.args
    defaults = [None] * (len(pos) - len(a.defaults)) + list(a.defaults)
    for i, (arg, d) in enumerate(zip(pos, defaults)):
        kind = "POSITIONAL_ONLY" if i < len(a.posonlyargs) else "POSITIONAL_OR_KEYWORD"
        out.append((arg.arg, kind, None if d is None else ast.unparse(d)))
    if a.vararg:
        out.append((a.vararg.arg, "VAR_POSITIONAL", None))
    for arg, d in zip(a.kwonlyargs, a.kw_defaults):
        out.append((arg.arg, "KEYWORD_ONLY", None if d is None else ast.unparse(d)))
    if a.kwarg:
        out.append((a.kwarg.arg, "VAR_KEYWORD", None))
    if drop_self and out and out[0][0] in ("self", "cls"):
        out = out[1:]
    return out


def params_of_object(obj: Any) -> Params:
    out: Params = []
    for p in inspect.signature(obj).parameters.values():
        default = None if p.default is inspect.Parameter.empty else repr(p.default)
        out.append((p.name, p.kind.name, default))
    return out


def stub_defs(stub: str) -> Dict[str, ast.AST]:
    """{"name" or "Class.member": its def (or class) in the stub}."""
    tree = ast.parse((PKG / stub).read_text())
    out: Dict[str, ast.AST] = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.AnnAssign)):
            name = node.target.id if isinstance(node, ast.AnnAssign) else node.name  # type: ignore[union-attr]
            out[name] = node
        if isinstance(node, ast.ClassDef):
            for sub in node.body:
                if isinstance(sub, ast.FunctionDef):
                    out[f"{node.name}.{sub.name}"] = sub
    return out


def expected_params(qual: str, obj: Any) -> Params:
    top = qual.split(".")[0]
    if top in STUB_OF:
        defs = stub_defs(STUB_OF[top])
        node = defs.get(qual if "." in qual else f"{qual}.__init__") or defs[qual]
        assert isinstance(node, ast.FunctionDef), f"{qual}: not a def in {STUB_OF[top]}"
        return params_of_ast(node.args, drop_self=True)
    return params_of_object(obj)


def public_members(cls: type) -> List[str]:
    """What kpark defines on the class itself (the stub, for compiled ones)."""
    if cls.__name__ in STUB_OF:
        return [k.split(".", 1)[1] for k in stub_defs(STUB_OF[cls.__name__])
                if k.startswith(cls.__name__ + ".") and not k.split(".", 1)[1].startswith("_")]
    return [k for k in vars(cls) if not k.startswith("_")]


def test_the_names_are_the_public_names() -> None:
    names, _ = entries()
    documented = {n for n in names if not n.startswith("kpark.kthread.")}
    assert documented == set(kpark.__all__)
    compat = {n[len("kpark.kthread."):] for n in names if n.startswith("kpark.kthread.")}
    assert compat == set(kpark.kthread.__all__)


def test_each_class_lists_exactly_its_members() -> None:
    names, members = entries()
    for name in names:
        obj = getattr(kpark, name, None)
        if not isinstance(obj, type) or issubclass(obj, BaseException):
            continue
        doc = set(members.get(name, {}))
        code = set(public_members(obj))
        assert doc == code, f"{name}: documented {sorted(doc - code)} are not members; " \
                            f"members {sorted(code - doc)} are not documented"
        for member, sig in members[name].items():
            attr = inspect.getattr_static(obj, member)
            is_call = callable(attr) and not isinstance(attr, property)
            kind = type(attr).__name__
            if kind == "getset_descriptor" or isinstance(attr, property):
                is_call = False
            assert (sig is not None) == is_call, \
                f"{name}.{member}: a {'method' if is_call else 'property'} in the code"


def test_signatures_match_the_code_and_the_stubs() -> None:
    names, members = entries()
    checked = 0
    for name, sig in names.items():
        if name.startswith("kpark.kthread."):
            qual, obj = name[len("kpark.kthread."):], None
            obj = getattr(kpark.kthread, qual)
        else:
            qual, obj = name, getattr(kpark, name)
        if sig is None:
            assert not callable(obj) or (isinstance(obj, type) and issubclass(obj, BaseException)), \
                f"{name} is callable: document its signature"
            continue
        want = expected_params(qual, obj)
        got = params_of_text(sig)
        assert got == want, f"{name}{sig}: the code says {want}"
        checked += 1
        for member, msig in members.get(name, {}).items():
            if msig is None:
                continue
            mobj = getattr(obj, member)
            want = expected_params(f"{qual}.{member}", mobj)
            if want and want[0][0] == "self":
                want = want[1:]
            assert params_of_text(msig) == want, f"{name}.{member}{msig}: the code says {want}"
            checked += 1
    assert checked >= 40


@pytest.mark.parametrize("bad", ["### `should_stop(x)`", "### `no_such_name()`"])
def test_the_check_catches_a_wrong_entry(bad: str, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    text = DOC.read_text(encoding="utf-8").replace("### `should_stop()`", bad, 1)
    doc = tmp_path / "api.md"
    doc.write_text(text, encoding="utf-8")
    monkeypatch.setattr(__import__(__name__), "DOC", doc)
    with pytest.raises(AssertionError):
        test_the_names_are_the_public_names()
        test_signatures_match_the_code_and_the_stubs()
