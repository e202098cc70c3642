"""No user string reaches report.html as markup (issue 15): titles, run folders and ids, settings, provenance,
study files, op names and swap labels all carry HTML/JS payloads here, for the search, layer and swap
reports; report.html is parsed and may hold only the elements and attributes pflnas itself writes."""

from __future__ import annotations

import json
import os
from html.parser import HTMLParser
from pathlib import Path

import markdown
import numpy as np
import pytest
import yaml
from _runs import CELL, make_probs, write_run

from pflnas.cli.main import main

ARCH = Path(__file__).resolve().parents[1] / "experiments" / "archs" / "quick_cell_v1_s0.json"
IMG = "<img src=x onerror=alert(1)>"  # fits in a folder name
SCRIPT = "<script>alert(1)</script>"
LINK = "[click](javascript:alert(1)) ![i](javascript:alert(2))"
BREAK = "a|b ` `` </code><svg onload=alert(3)> $x^2$ \\"  # a table cell, code spans, TeX, a backslash
PAYLOAD = f"{SCRIPT} {IMG} {LINK} {BREAK}"
TITLE = f"{PAYLOAD} &amp; <title></title>"

ALLOWED = {"html", "head", "meta", "title", "style", "body", "h1", "h2", "h3", "h4", "p", "ul", "ol", "li"}
ALLOWED |= {"table", "thead", "tbody", "tr", "th", "td", "img", "code", "pre", "em", "strong", "hr", "br"}


class _Elements(HTMLParser):
    """Every element and attribute of a page, and the text of its <title>."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []
        self.title, self._in_title = "", False

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, attrs))
        self._in_title = tag == "title"

    def handle_endtag(self, tag):
        self._in_title = False

    def handle_data(self, data):
        if self._in_title:
            self.title += data


def _check_elements(page: str, title: str | None) -> None:
    parsed = _Elements()
    parsed.feed(page)
    assert {tag for tag, _ in parsed.tags} <= ALLOWED, {tag for tag, _ in parsed.tags} - ALLOWED
    for tag, attrs in parsed.tags:
        for name, value in attrs:
            assert name in {"lang", "charset", "src", "alt", "class"}, (tag, name, value)
            if name == "src":
                assert value.startswith(("data:image/png;base64,", "figures/")), value[:80]
            if name == "class":
                assert value == "language-yaml", value
    if title is not None:
        assert parsed.title == title  # shown as written, not parsed


def _check_page(report: Path) -> None:
    page = (report / "report.html").read_text()
    _check_elements(page, TITLE)
    assert "&lt;script&gt;" in page  # the payload is there, as text
    # report.md rendered by a stock renderer (raw HTML on, as on a code forge) is just as inert
    _check_elements(
        markdown.markdown((report / "report.md").read_text(), extensions=["tables", "fenced_code"]), None
    )


def _report(capsys, source: Path, out: Path) -> None:
    code = main(["report", str(source), "--out", str(out), "--title", TITLE])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    _check_page(out)


# --- search runs ------------------------------------------------------------------------------------------
def test_search_report_escapes_every_user_string(tmp_path, capsys):
    study = tmp_path / f"study {IMG}"
    (study / "runs").mkdir(parents=True)
    (study / "study.yaml").write_text(yaml.safe_dump({"name": "demo", "description": PAYLOAD}))
    for strategy, favour in (("darts", "conv_3x3"), ("random", "max_pool_3x3")):
        for seed in range(2):
            run_id = f"{IMG} {strategy} {seed}"
            info = {"run_id": f"{PAYLOAD} {strategy}{seed}", "strategy": strategy, "seed": seed}
            probs = make_probs(CELL, np.random.default_rng(seed), favour=favour, weight=0.6)
            run = write_run(
                study / "runs" / run_id, CELL, strategy, seed, probs, run_info={**info, "setting": LINK}
            )
            record = json.loads((run / "found.json").read_text())
            record["provenance"].update(device=PAYLOAD, note=SCRIPT)
            (run / "found.json").write_text(json.dumps(record))
    _report(capsys, study, tmp_path / "report")


# --- layer and swap studies: fabricated finished retrains ---------------------------------------------------
def _retrain_run(folder: Path, record: dict, top1: float, op: str | None = None) -> None:
    (folder / "retrain").mkdir(parents=True)
    (folder / "run.json").write_text(json.dumps(record))
    arch = json.loads(ARCH.read_text())
    arch["provenance"] = {**arch.get("provenance", {}), "op": op or PAYLOAD}
    (folder / "arch.json").write_text(json.dumps(arch))
    (folder / "retrain" / "result.json").write_text(json.dumps({"top1": top1, "top5": 0.9, "epochs": 1}))
    config = {
        "data": {"dataset": "cifar10", "subset": 64, "batch_size": 8},
        "schedule": {"epochs": 1},
        "run": {"threads": 1},
        "network": {"init_channels": 4, "layers": 3, "num_classes": 10},
    }
    (folder / "retrain" / "config.yaml").write_text(yaml.safe_dump(config))
    profile = {"params": 1000 + int(100 * top1), "macs": 5000, "latency": {"median_ms": 1.0 + top1}}
    (folder / "profile.json").write_text(json.dumps(profile))


def test_layer_report_escapes_every_user_string(tmp_path, capsys):
    study = tmp_path / f"layer {IMG}"
    study.mkdir()
    (study / "study.yaml").write_text(yaml.safe_dump({"kind": "layer", "name": "l", "note": PAYLOAD}))
    for i, op in enumerate((PAYLOAD, LINK)):
        record = {"run_id": f"{IMG}{i}", "seed": i}
        _retrain_run(study / "runs" / f"{IMG} {i}", record, 0.3 + 0.1 * i, op=op)
    _report(capsys, study, tmp_path / "report")


def test_swap_report_escapes_every_user_string(tmp_path, capsys):
    study = tmp_path / f"swap {IMG}"
    spec = {
        "kind": "swap",
        "name": "s",
        "description": PAYLOAD,
        "archs": [PAYLOAD],
        "seeds": [0, 1, 2],
        "swaps": PAYLOAD,
        "retrain": {"recipe": PAYLOAD, "set": {PAYLOAD: LINK}},
    }
    (study / "study.yaml").parent.mkdir(parents=True)
    (study / "study.yaml").write_text(yaml.safe_dump(spec))
    swap = {"label": PAYLOAD, "group": "cell0", "stride": 1, "old_op": SCRIPT, "new_op": IMG}
    swap.update(param_free_pick=True, rule=LINK, node=2, source=0, p_old=0.4, p_new=0.3)
    for seed in range(3):
        base = {"arch": f"{PAYLOAD}", "seed": seed}
        _retrain_run(study / "runs" / f"{IMG} orig {seed}", {**base, "swap": None}, 0.30 + 0.01 * seed)
        _retrain_run(study / "runs" / f"{IMG} cf {seed}", {**base, "swap": swap}, 0.32 + 0.02 * seed)
    _report(capsys, study, tmp_path / "report")


@pytest.mark.parametrize("text", [PAYLOAD, "```", "````yaml\n<script>x</script>\n````"])
def test_a_study_file_cannot_close_its_code_block(text):
    from pflnas.analysis.report_page import markdown_to_html
    from pflnas.analysis.report_parts import md_code_block

    page = markdown_to_html(
        "\n".join(["## Study", "", *md_code_block(f"name: x\nnote: {text}\n", "yaml"), ""])
    )
    assert page.count("<pre>") == 1 and "<script" not in page and page.rstrip().endswith("</code></pre>")


def test_the_html_step_turns_raw_html_into_text_whatever_reaches_it():
    """The second guard: raw HTML that slipped past md_text is text (links are md_text's to stop)."""
    from pflnas.analysis.report_page import markdown_to_html

    page = markdown_to_html(
        f"# {SCRIPT} {IMG}\n\n<div onclick=alert(1)>{SCRIPT}</div>\n\n| a |\n| --- |\n| {IMG} |\n"
    )
    parsed = _Elements()
    parsed.feed(page)
    assert {tag for tag, _ in parsed.tags} == {"h1", "p", "table", "thead", "tbody", "tr", "th", "td"}
    assert not any(attrs for _, attrs in parsed.tags)


# --- damaged runs: the report names the files ---------------------------------------------------------------
def _one_line(capsys, argv: list[str]) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err.strip()


def test_a_report_of_damaged_runs_names_the_damaged_files(tmp_path, capsys):
    runs = [write_run(tmp_path / "runs" / f"r{seed}", CELL, "darts", seed) for seed in range(2)]
    found = runs[0] / "found.json"
    found.write_text(found.read_text()[:100])  # cut short
    (runs[1] / "metrics.jsonl").unlink()
    os.mkfifo(runs[1] / "metrics.jsonl")  # would block a reader forever
    line = _one_line(capsys, ["report", str(tmp_path / "runs"), "--out", str(tmp_path / "report")])
    assert f"{runs[0]}: found.json unreadable" in line and "metrics.jsonl" in line and "FIFO" in line
    assert "restore them" in line and "finish them first" not in line


@pytest.mark.parametrize("damage", ["cut_short", "fifo", "not_an_object", "no_top1"])
def test_a_retrain_study_report_names_a_damaged_result(tmp_path, capsys, damage):
    study = tmp_path / "layer"
    study.mkdir()
    (study / "study.yaml").write_text(yaml.safe_dump({"kind": "layer", "name": "l"}))
    _retrain_run(study / "runs" / "a-s0", {"run_id": "a-s0", "seed": 0}, 0.3, op="conv_3x3")
    result = study / "runs" / "a-s0" / "retrain" / "result.json"
    result.unlink()
    if damage == "fifo":
        os.mkfifo(result)
    else:
        result.write_text(
            {"cut_short": '{"top1": 0.', "not_an_object": "[1]", "no_top1": '{"epochs": 1}'}[damage]
        )
    line = _one_line(capsys, ["report", str(study), "--out", str(tmp_path / "report")])
    assert "result.json" in line and "re-run the study" in line
