"""search, study, report, retrain, bench and profile give what they gave when recorded (tests/_recorded.py).

Numbers match to a relative 1e-5 (CPU kernels may differ in the last bits between machines); names, choices
and counts match exactly. A deliberate change of results is re-recorded with ``python tests/_recorded.py``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import _recorded
import pytest

RTOL, ATOL = 1e-5, 1e-7


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str) and value not in ("", "nan", "inf", "-inf"):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def differences(got: Any, want: Any, where: str = "") -> list[str]:
    """Every place where ``got`` differs from ``want`` (numbers with a tolerance), as readable lines."""
    if isinstance(want, dict) and isinstance(got, dict):
        out = [f"{where}: keys {sorted(set(got) ^ set(want))} differ"] if set(got) != set(want) else []
        for key in sorted(set(got) & set(want)):
            out += differences(got[key], want[key], f"{where}/{key}")
        return out
    if isinstance(want, list) and isinstance(got, list):
        if len(got) != len(want):
            return [f"{where}: {len(got)} items, recorded {len(want)}"]
        return [
            line for i, (g, w) in enumerate(zip(got, want)) for line in differences(g, w, f"{where}[{i}]")
        ]
    g, w = _number(got), _number(want)
    if g is not None and w is not None and type(got) is type(want):
        if math.isclose(g, w, rel_tol=RTOL, abs_tol=ATOL) or (math.isnan(g) and math.isnan(w)):
            return []
    elif got == want:
        return []
    return [f"{where}: got {got!r}, recorded {want!r}"]


@pytest.fixture(scope="module")
def recorded() -> dict[str, Any]:
    return json.loads(_recorded.RECORD.read_text())


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> str:
    return _recorded.tiny_archive(tmp_path_factory.mktemp("recorded-data"))


def _same(got: Any, want: Any) -> None:
    lines = differences(got, want)
    assert not lines, "\n".join(lines[:20])


def test_the_comparison_catches_a_changed_choice_and_a_drifted_number():
    want = {"cells": [["max_pool_3x3", 0]], "loss": 2.5, "csv": "0.25"}
    assert not differences({"cells": [["max_pool_3x3", 0]], "loss": 2.5 * (1 + 1e-7), "csv": "0.25"}, want)
    assert differences({"cells": [["sep_conv_3x3", 0]], "loss": 2.5, "csv": "0.25"}, want)
    assert differences({"cells": [["max_pool_3x3", 0]], "loss": 2.51, "csv": "0.25"}, want)
    assert differences({"cells": [["max_pool_3x3", 0]], "loss": 2.5, "csv": "0.26"}, want)
    assert differences({"cells": [], "loss": 2.5, "csv": "0.25"}, want)


def test_search_gives_the_recorded_found_json_and_metrics(source, tmp_path, recorded):
    _same(_recorded.record_search(source, tmp_path), recorded["search"])


def test_study_and_report_give_the_recorded_runs_and_tables(source, tmp_path, recorded):
    _same(_recorded.record_study(source, tmp_path), recorded["study"])


def test_retrain_gives_the_recorded_curve(source, tmp_path, recorded):
    _same(_recorded.record_retrain(source, tmp_path), recorded["retrain"])


def test_bench_gives_the_recorded_cells(tmp_path, recorded):
    _same(_recorded.record_bench(tmp_path), recorded["bench"])


def test_profile_gives_the_recorded_counts(recorded):
    _same(_recorded.record_profile(), recorded["profile"])


def test_the_record_is_not_empty(recorded):
    assert set(recorded["search"]) == set(_recorded.STRATEGIES)
    assert all(r["found"]["cells"] and r["metrics"] for r in recorded["search"].values())
    assert len(recorded["study"]["found"]) == 4 and recorded["study"]["report"]["share_by_cell_type"]
    assert Path(_recorded.RECORD).is_file()
