"""Security hygiene (issue 8): no code path unpickles, evaluates or executes what a user hands pflnas, and a
found.json's strings never become paths pflnas reads or writes.

The source scan is an AST walk over the whole package, so a new ``torch.load`` without ``weights_only=True``,
an ``eval``, a ``pickle.load`` or an unsafe YAML loader anywhere in pflnas fails here."""

from __future__ import annotations

import ast
import io
import json
import pickle
from pathlib import Path

import pytest
import torch

import pflnas
from pflnas.arch import load_architecture
from pflnas.errors import ArchitectureError, PflnasError
from pflnas.train.checkpoint import load_checkpoint

PACKAGE = Path(pflnas.__file__).parent
SOURCES = sorted(PACKAGE.rglob("*.py"))
# the one unpickler: a restricted subclass reading the analog-nasbench data file (find_class allow-list)
PICKLE_ALLOWED = {"bench/nb201.py"}


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node, ast.unparse(node.func)


def _keyword(call: ast.Call, name: str):
    for kw in call.keywords:
        if kw.arg == name:
            return ast.unparse(kw.value)
    return None


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_source_never_unpickles_evaluates_or_executes_user_input(path):
    rel = str(path.relative_to(PACKAGE))
    tree = ast.parse(path.read_text(encoding="utf-8"))
    problems = []
    for call, func in _calls(tree):
        where = f"{rel}:{call.lineno} {func}"
        if func in ("eval", "exec", "compile", "__import__") and not isinstance(call.func, ast.Attribute):
            problems.append(f"{where}: evaluates code")
        if func == "torch.load" and _keyword(call, "weights_only") != "True":
            problems.append(f"{where}: torch.load without weights_only=True")
        if func in ("pickle.load", "pickle.loads", "pickle.Unpickler", "dill.load", "marshal.loads"):
            problems.append(f"{where}: unpickles")
        if func in ("yaml.unsafe_load", "yaml.full_load", "yaml.load_all"):
            problems.append(f"{where}: unsafe YAML loader")
        if func == "yaml.load" and _keyword(call, "Loader") not in ("_StrictLoader", "yaml.SafeLoader"):
            problems.append(f"{where}: yaml.load with a loader that is not a SafeLoader")
        if func in ("np.load", "numpy.load") and _keyword(call, "allow_pickle") != "False":
            problems.append(f"{where}: np.load without allow_pickle=False")
        if _keyword(call, "shell") == "True" or func == "os.system":
            problems.append(f"{where}: runs a shell")
    for node in ast.walk(tree):  # subclassing pickle.Unpickler is the one allowed unpickler
        if isinstance(node, ast.ClassDef) and any(ast.unparse(b) == "pickle.Unpickler" for b in node.bases):
            methods = {n.name for n in node.body if isinstance(n, ast.FunctionDef)}
            if rel not in PICKLE_ALLOWED or "find_class" not in methods:
                problems.append(f"{rel}:{node.lineno} an unpickler without a find_class allow-list")
    assert not problems, problems


def test_the_yaml_loader_is_a_safe_loader():
    import yaml

    from pflnas import parsing

    # libyaml's CSafeLoader is not a SafeLoader subclass; what makes a loader safe is its constructor
    assert issubclass(parsing._StrictLoader, yaml.constructor.SafeConstructor)
    assert not issubclass(parsing._StrictLoader, yaml.constructor.FullConstructor)
    with pytest.raises(PflnasError):  # a python/object tag is refused, not constructed
        parsing.parse_yaml("x: !!python/object/apply:os.system ['echo pwned']", "test")


class _Payload:
    """Unpickling this would create a file: the proof that a loader ran foreign code."""

    def __init__(self, target: str):
        self.target = target

    def __reduce__(self):
        return (Path.touch, (Path(self.target),))


def test_checkpoint_with_a_code_payload_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "pwned"
    ckpt = tmp_path / "checkpoint.pt"
    torch.save({"model": {}, "payload": _Payload(str(marker))}, ckpt)
    with pytest.raises(PflnasError, match="cannot be read"):
        load_checkpoint(ckpt)
    assert not marker.exists()


def test_nb201_unpickler_refuses_anything_but_its_two_records(tmp_path):
    from pflnas.bench.nb201 import _SafeUnpickler

    marker = tmp_path / "pwned"
    data = pickle.dumps({(0,) * 6: _Payload(str(marker))})
    with pytest.raises(pickle.UnpicklingError, match="unexpected object"):
        _SafeUnpickler(io.BytesIO(data)).load()
    assert not marker.exists()


def test_found_json_strings_are_never_paths(tmp_path):
    """A record naming a space like a path, or carrying paths in its provenance, reads and writes nothing
    outside what the user named: the space must be a built-in name or inline data, never a file."""
    from pflnas.arch import save_architecture
    from pflnas.arch.derive import derive_architecture
    from pflnas.spaces import load_space

    space = load_space("nb201").replace(layers=1)
    probs = {f"{g}.{k}": {op: 1 / len(space.ops) for op in space.ops} for g, _ in space.alpha_groups()
             for k in space.choice_keys()}  # fmt: skip
    arch = derive_architecture(space, probs, {"data": "../../../etc/passwd", "out": "/tmp/elsewhere"})
    path = save_architecture(arch, tmp_path / "found.json")
    before = sorted(p.name for p in tmp_path.iterdir())
    assert load_architecture(path).provenance["data"] == "../../../etc/passwd"
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    outside = tmp_path / "evil.yaml"
    outside.write_text(Path(pflnas.__file__).parent.parent.joinpath("search_spaces/nb201.yaml").read_text())
    data = json.loads(path.read_text())
    for name in (str(outside), "../" * 8 + str(outside).lstrip("/"), str(outside.with_suffix(""))):
        data["space"]["name"] = name  # a path where a space name belongs: taken as a label, never opened
        tampered = tmp_path / "tampered.json"
        tampered.write_text(json.dumps(data))
        try:
            loaded = load_architecture(tampered)
        except ArchitectureError:
            continue
        assert loaded.space.name == name and loaded.space.to_dict() == {**arch.space.to_dict(), "name": name}
