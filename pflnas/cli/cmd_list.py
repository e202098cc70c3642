"""``pflnas list``: what a user can name on the command line, one line each, read from the registries.

Spaces, ops, strategies, retrain recipes and presets come from the same registries the commands use (the
space YAMLs, the op and strategy registries, the recipe and preset folders), so the listing cannot drift
from what the commands accept. Nothing here imports torch.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

SUBJECTS = ("spaces", "ops", "strategies", "recipes", "presets")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("list")
    p.add_argument(
        "subject",
        nargs="?",
        choices=SUBJECTS,
        metavar="|".join(SUBJECTS),
        help="what to list (default: all of them)",
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    subjects = [args.subject] if args.subject else list(SUBJECTS)
    for i, subject in enumerate(subjects):
        rows = LISTERS[subject]()
        if len(subjects) > 1:
            print(("\n" if i else "") + f"{subject}:")
        width = max(len(name) for name, _ in rows)
        for name, what in rows:
            print(f"  {name:<{width}}  {what}".rstrip())
    return 0


def space_rows() -> list[tuple[str, str]]:
    from pflnas.spaces import list_spaces, load_space

    rows = []
    for name in list_spaces():
        space = load_space(name)
        rows.append((name, f"{space.description or space.kind}"))
    return rows


def op_rows() -> list[tuple[str, str]]:
    from pflnas.ops import get_op, list_ops

    rows = []
    for name in list_ops():
        spec = get_op(name)
        free = sorted(spec.param_free_strides & spec.strides)
        if spec.is_zero:
            kind = "no connection"
        elif not free:
            kind = "trainable"
        elif free == sorted(spec.strides):
            kind = "parameter-free"
        else:
            kind = f"parameter-free at stride {', '.join(map(str, free))} only"
        where = ", ".join(spec.contexts())
        strides = "" if spec.strides == {1, 2} else f", stride {', '.join(map(str, sorted(spec.strides)))}"
        rows.append((name, f"{kind} [{where}{strides}]: {spec.description}"))
    return rows


def strategy_rows() -> list[tuple[str, str]]:
    from pflnas.strategies import strategy_infos

    return [(info.name, info.description) for info in strategy_infos()]


def recipe_rows() -> list[tuple[str, str]]:
    from pflnas.train.recipe import list_recipes, recipe_layer

    return [(name, str(recipe_layer(name).get("source", ""))) for name in list_recipes()]


def preset_rows() -> list[tuple[str, str]]:
    from pflnas.config.presets import list_presets, preset_path

    return [(name, leading_comment(preset_path(name))) for name in list_presets()]


def leading_comment(path: Path) -> str:
    """The first sentence of a YAML file's opening comment (a preset says what it is there)."""
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("# ").strip())
    text = " ".join(lines)
    end = text.find(". ")
    return text if end < 0 else text[: end + 1]


LISTERS: dict[str, Callable[[], list[tuple[str, str]]]] = {
    "spaces": space_rows,
    "ops": op_rows,
    "strategies": strategy_rows,
    "recipes": recipe_rows,
    "presets": preset_rows,
}
