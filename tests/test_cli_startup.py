"""Fast start-up: help texts, listings and record checks never import torch or timm, and every flag's help
shows its default. Each command runs in a fresh interpreter that reports what it imported (wall time is
measured by benchmarks/startup.py, not asserted here)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest
from test_models import DARTS_V2

from pflnas.cli.main import COMMANDS, HelpFormatter, build_parser

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "timm", "torchvision", "matplotlib", "pandas", "optuna")
# main() as `python -m pflnas` runs it, then the heavy modules it left imported, as JSON on the last line
PROBE = """
import json, sys
from pflnas.cli.main import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
sys.stdout.flush()
print(json.dumps({"code": code, "heavy": [m for m in HEAVY if m in sys.modules]}))
""".replace("HEAVY", repr(HEAVY))

LIGHT_COMMANDS = [
    ["--help"],
    ["--version"],
    *([name, "--help"] for name in COMMANDS),
    ["arch", "show", "--help"],
    ["arch", "from-darts", "--help"],
    ["bench", "nb201", "--help"],
    ["arch", "validate", "experiments/archs/r50.json"],
    ["arch", "show", "experiments/archs/r50.json"],
    ["arch", "show", "experiments/archs/darts_v2.json"],
    ["arch", "validate", "experiments/archs/vit_s_max.json"],
    ["arch", "from-darts", DARTS_V2],
    ["list"],
    *(["list", subject] for subject in ("spaces", "ops", "strategies", "recipes", "presets")),
]


def probe(argv: list[str]) -> tuple[dict, str, str]:
    res = subprocess.run(
        [sys.executable, "-c", PROBE, *argv], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    *out, last = res.stdout.rstrip("\n").split("\n")
    return json.loads(last), "\n".join(out), res.stderr


@pytest.mark.parametrize("argv", LIGHT_COMMANDS, ids=lambda a: " ".join(a)[:40])
def test_command_runs_without_importing_torch(argv):
    result, out, err = probe(argv)
    assert result["code"] in (0, None), err
    assert result["heavy"] == [], f"pflnas {' '.join(argv)} imported {result['heavy']}"
    assert out.strip()  # it said something


def test_search_without_a_space_is_refused_before_torch_loads(tmp_path):
    result, out, err = probe(["search", "--out", str(tmp_path / "run")])
    assert result == {"code": 2, "heavy": []}
    assert len(err.splitlines()) == 1 and "--space" in err
    assert not (tmp_path / "run").exists()


def _options(parser: argparse.ArgumentParser, prog: str):
    """Every (command, option action) of ``parser`` and its subcommands."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _options(sub, f"{prog} {name}")
        elif action.option_strings and action.default is not argparse.SUPPRESS:
            yield prog, action


OPTIONS = list(_options(build_parser(), "pflnas"))


@pytest.mark.parametrize("prog, action", OPTIONS, ids=[f"{p} {a.option_strings[-1]}" for p, a in OPTIONS])
def test_every_flag_has_a_help_line_with_its_default(prog, action):
    text = (HelpFormatter(prog)._get_help_string(action) or "").lower()
    assert action.help, f"{prog} {action.option_strings} has no help"
    assert action.required or "default" in text or text.startswith("required"), (prog, text)


def test_the_formatter_shows_values_switches_and_repeatables():
    parser = build_parser(["profile"])
    text = " ".join(subprocess_free_help(parser, "profile").split())
    assert "--warmup N untimed passes first; default 10" in text  # the help's own words are kept
    assert "--no-speed parameters and MACs only (fast) (default: off)" in text
    assert "(repeatable) (default: none)" in text


def subprocess_free_help(parser: argparse.ArgumentParser, name: str) -> str:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name].format_help()


def test_only_the_named_subcommand_gets_its_flags():
    parser = build_parser(["arch"])
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert len(sub.choices["arch"]._actions) > 1  # -h and its actions
    assert [a.dest for a in sub.choices["search"]._actions] == ["help"]  # listed only
    assert set(sub.choices) == set(COMMANDS)


def test_space_and_preset_help_list_the_registries():
    from pflnas.config.presets import list_presets
    from pflnas.spaces import list_spaces

    helps = {a.dest: a.help for p, a in OPTIONS if p == "pflnas search"}
    assert all(name in helps["space"] for name in list_spaces()) and len(list_spaces()) >= 6
    assert all(name in helps["preset"] for name in list_presets()) and "pcdarts" in helps["preset"]


def test_top_level_help_speaks_to_a_user(capsys):
    from pflnas.cli.main import main

    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "parameter-free" in out and "found.json" in out
    for start in ("pflnas list spaces", "pflnas search --space cell_v1", "pflnas arch show"):
        assert start in out
    assert all(name in out for name in COMMANDS)
    assert "add_parser" not in out and "PflnasError" not in out  # not the developer docstring
