"""analysis/op_selection.ipynb runs headless against a small study and is committed without outputs."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from _runs import make_study

NOTEBOOK = Path(__file__).resolve().parents[1] / "analysis" / "op_selection.ipynb"


def test_notebook_is_committed_with_outputs_stripped():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)


@pytest.mark.slow
def test_notebook_executes_on_a_study(tmp_path, monkeypatch):
    from nbclient import NotebookClient

    study = make_study(tmp_path / "study")
    monkeypatch.setenv("PFLNAS_STUDY", str(study))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    shown = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert any("image/png" in o.get("data", {}) for o in shown)  # figures rendered
