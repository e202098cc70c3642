"""``pflnas report``: Markdown + self-contained HTML with every figure and table, from fabricated runs."""

from __future__ import annotations

import re

import numpy as np
import pytest
from _runs import BLOCKS, make_probs, make_study, write_run

from pflnas.analysis.report import write_report
from pflnas.cli.main import main


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return make_study(tmp_path_factory.mktemp("study"))


def test_report_writes_every_figure_and_table(study, tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["report", str(study), "--out", str(out), "--title", "Demo study"]) == 0
    printed = capsys.readouterr().out
    assert "note:" in printed and "unfinished" in printed  # the incomplete run is named, not fatal
    text = (out / "report.md").read_text()
    assert text.startswith("# Demo study")
    for heading in (
        "Parameter-free share",
        "Comparisons",
        "By stage",
        "Collapse diagnostics",
        "Found architectures",
    ):
        assert heading in text
    assert "strategy: darts vs random" in text and "cell_type: normal vs reduce" in text
    assert "```yaml\nname: demo" in text  # the study configuration
    images = re.findall(r"\(figures/([^)]+\.png)\)", text)
    assert len(images) >= 5
    for name in images:
        assert (out / "figures" / name).stat().st_size > 0
        assert (out / "figures" / name.replace(".png", ".svg")).is_file()
    assert {p.name for p in (out / "tables").iterdir()} >= {
        "share_by_cell_type.csv",
        "comparisons.csv",
        "runs.csv",
    }
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == len(images) and 'src="figures/' not in html
    assert "<table>" in html


def test_report_on_block_runs_and_default_out(tmp_path):
    for seed in range(2):
        probs = make_probs(BLOCKS, np.random.default_rng(seed))
        write_run(tmp_path / "runs" / f"b{seed}", BLOCKS, "darts", seed, probs)
    report = write_report([tmp_path], tmp_path / "rep")
    assert report.complete == 2 and report.html_path.is_file()
    assert main(["report", str(tmp_path / "runs" / "b0")]) == 0
    assert (tmp_path / "runs" / "b0" / "report" / "report.md").is_file()


def test_bad_inputs_are_one_line(tmp_path, capsys):
    assert main(["report", str(tmp_path / "missing")]) == 2
    empty = tmp_path / "empty"
    write_run(empty / "runs" / "r", BLOCKS, finished=False, epochs_done=1)
    assert main(["report", str(empty)]) == 2
    assert main(["report", str(empty), str(tmp_path)]) == 2  # two dirs need --out
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("pflnas report: error:") for line in err)
    assert "not a directory" in err[0] and "no complete run" in err[1] and "--out" in err[2]
