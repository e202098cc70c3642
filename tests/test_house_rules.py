"""The package map of docs/architecture.md holds: no import cycle, no private name across packages, no library
module that imports the CLI, and functions and modules of a readable size (tests/_house.py measures them)."""

from __future__ import annotations

import re

import _house


def test_no_import_cycle_between_modules():
    assert _house.cycles() == []


def test_packages_depend_only_downward():
    assert _house.package_cycles() == []


def test_no_private_name_is_imported_across_packages():
    assert _house.private_imports() == []


def test_only_the_cli_imports_the_cli():
    assert _house.cli_imports() == []


def test_no_function_longer_than_80_lines():
    assert _house.long_functions() == []


def test_no_module_longer_than_500_lines():
    assert _house.long_modules() == []


def test_the_checks_see_what_they_look_for(tmp_path, monkeypatch):
    pkg = tmp_path / "pflnas"
    (pkg / "a").mkdir(parents=True)
    (pkg / "b").mkdir()
    (pkg / "cli").mkdir()
    for init in ("__init__.py", "a/__init__.py", "b/__init__.py", "cli/__init__.py"):
        (pkg / init).write_text("")
    (pkg / "a" / "x.py").write_text("from pflnas.b.y import _hidden\n")
    body = "\n".join(f"    v{i} = {i}" for i in range(85))
    (pkg / "b" / "y.py").write_text(f"def long():\n{body}\n\n\ndef g():\n    from pflnas.a import x\n")
    (pkg / "b" / "z.py").write_text("import pflnas.cli\n" + "\n" * 600)
    monkeypatch.setattr(_house, "ROOT", pkg)
    assert _house.cycles() == [["pflnas.a.x", "pflnas.b.y"]]
    assert _house.package_cycles() == [["pflnas.a", "pflnas.b"]]
    assert [line.split(": ", 1)[1] for line in _house.private_imports()] == ["pflnas.b.y _hidden"]
    assert [line.split(": ", 1)[1] for line in _house.cli_imports()] == ["pflnas.cli"]
    assert [line.rsplit(": ", 1)[1] for line in _house.long_functions()] == ["long (86 lines)"]
    assert _house.long_modules() == ["pflnas/b/z.py (601 lines)"]


def _documented_rows() -> dict[str, int]:
    """Package -> row of the package map in docs/architecture.md (``cli/`` -> pflnas.cli, ``device.py`` ->
    pflnas.device)."""
    rows: dict[str, int] = {}
    text = (_house.ROOT.parent / "docs" / "architecture.md").read_text()
    for line in text.splitlines():
        cells = [c.strip() for c in line.split("|")]
        if len(cells) > 3 and cells[1].isdigit():
            for name in re.findall(r"`([^`]+)`", cells[2]):
                rows["pflnas." + name.removesuffix("/").removesuffix(".py")] = int(cells[1])
    return rows


def test_the_package_map_in_the_docs_is_the_code():
    rows = _documented_rows()
    graph = _house.package_graph()
    # the top-level package re-exports, and presets/ and recipes/ hold YAML: the page says so apart
    code = set(graph) - {"pflnas", "pflnas.presets", "pflnas.recipes"}
    assert code <= set(rows), f"packages missing from docs/architecture.md: {sorted(code - set(rows))}"
    upward = [
        f"{p} (row {rows[p]}) imports {q} (row {rows[q]})"
        for p in sorted(code)
        for q in sorted(graph[p])
        if q in rows and rows[q] >= rows[p]
    ]
    assert upward == []
