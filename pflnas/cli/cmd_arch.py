"""``pflnas arch``: show, validate, import and generate architecture records (found.json)."""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pflnas.arch.chance import chance_share
from pflnas.arch.darts_genotype import architecture_from_genotype
from pflnas.arch.homogeneous import homogeneous_architecture
from pflnas.arch.record import Architecture, load_architecture, save_architecture
from pflnas.cli.paths import check_out_file
from pflnas.config.loader import deep_merge, parse_override
from pflnas.errors import ConfigError
from pflnas.ops import PARAM_FREE, get_op
from pflnas.spaces import load_space

Action = Callable[[argparse.Namespace], int]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("arch")
    actions = p.add_subparsers(dest="arch_command", metavar="ACTION")
    actions.required = True

    show = actions.add_parser("show", help="print a readable summary of a found.json")
    show.add_argument("file", type=Path, metavar="FILE")
    show.set_defaults(action=_show)

    validate = actions.add_parser("validate", help="check a found.json; exit 0 if it is valid, 2 if not")
    validate.add_argument("file", type=Path, metavar="FILE")
    validate.set_defaults(action=_validate)

    imp = actions.add_parser(
        "from-darts", help="turn a DARTS genotype string into a found.json (shared normal/reduce cells)"
    )
    imp.add_argument(
        "genotype", help="Genotype(normal=[...], normal_concat=..., reduce=[...], reduce_concat=...)"
    )
    imp.add_argument(
        "--out", type=Path, metavar="FILE", help="where to write the record (default: print it to stdout)"
    )
    imp.add_argument("--space", default="darts", help="a DARTS-cell space holding the ops")
    imp.add_argument("--force", action="store_true", help="overwrite FILE if it exists")
    imp.set_defaults(action=_from_darts)

    hom = actions.add_parser(
        "homogeneous", help="write the found.json of a space in which every edge or block uses one op"
    )
    hom.add_argument("--space", required=True, help="space name or YAML path")
    hom.add_argument("--op", required=True, help="the op every kept edge / block uses")
    hom.add_argument(
        "--reduce-op",
        help="op for reduction cells / downsampling blocks (default: --op; required for identity)",
    )
    hom.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="space.KEY=VALUE",
        help="space override, repeatable (default: none)",
    )
    hom.add_argument("--out", type=Path, required=True, metavar="FILE", help="where to write the record")
    hom.add_argument("--force", action="store_true", help="overwrite FILE if it exists")
    hom.set_defaults(action=_homogeneous)

    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    action: Action = args.action
    return action(args)


# --- actions ------------------------------------------------------------------------------------------
def _show(args: argparse.Namespace) -> int:
    print(format_architecture(load_architecture(args.file), str(args.file)))
    return 0


def _validate(args: argparse.Namespace) -> int:
    arch = load_architecture(args.file)
    body = (
        _count(len(arch.blocks), "block choice")
        if arch.space.is_block
        else f"{_count(len(arch.cells), 'cell')}, {_count(len(arch.kept_edges()), 'kept edge')}"
    )
    print(
        f"ok: {args.file}: space {arch.space.name} ({arch.space.kind}, {arch.space.alpha_mode} alphas), "
        f"{body}, parameter-free share {_share(arch)}"
    )
    return 0


def _from_darts(args: argparse.Namespace) -> int:
    out: Path | None = args.out
    if out is not None:
        _check_out(out, args.force)
    arch = architecture_from_genotype(args.genotype, args.space)
    summary = f"space {arch.space.name}, {len(arch.kept_edges())} edges, parameter-free share {_share(arch)}"
    if out is None:  # the record on stdout (pipe it to a file); the summary on stderr
        print(json.dumps(arch.to_dict(), indent=2))
        print(f"found.json of {summary}", file=sys.stderr)
        return 0
    save_architecture(arch, out)
    print(f"wrote {out}: {summary}")
    return 0


def _homogeneous(args: argparse.Namespace) -> int:
    _check_out(args.out, args.force)
    space = load_space(args.space)
    changes: dict[str, Any] = {}
    for item in args.set:
        override = parse_override(item)
        if set(override) != {"space"} or not isinstance(override["space"], dict):
            raise ConfigError(f"--set {item!r}: only space.KEY=VALUE overrides apply here")
        changes = deep_merge(changes, override["space"])
    if changes:
        space = space.replace(**changes)
    arch = homogeneous_architecture(space, args.op, args.reduce_op)
    save_architecture(arch, args.out)
    print(f"wrote {args.out}: space {space.name}, {arch.op_counts()}, parameter-free share {_share(arch)}")
    return 0


def _check_out(out: Path, force: bool) -> None:
    check_out_file(out, "--out", force=force, example="found.json")


# --- the readable summary -----------------------------------------------------------------------------
def _share(arch: Architecture) -> str:
    """The share beside its chance rate (uniformly random weights under the strategy's derivation rule)."""
    share = arch.param_free_share()
    chance = chance_share(arch.space, arch.provenance.get("strategy"))
    return "n/a" if math.isnan(share) else f"{share:.3f}, chance {chance:.3f}"


def _edge_note(arch: Architecture, cell_type: str, source: int, op: str) -> str:
    spec = get_op(op)
    if spec.is_zero:
        return "no connection"
    stride = arch.space.edge_stride(cell_type, source)
    notes = [f"stride {stride}"] if stride != 1 else []
    if spec.role(stride) == PARAM_FREE:
        notes.append("parameter-free")
    return ", ".join(notes)


def _short(value: Any, width: int = 70) -> str:
    if isinstance(value, dict):
        return f"{{{len(value)} keys}}"
    if isinstance(value, list):
        return f"[{len(value)} items]"
    text = value if isinstance(value, str) else repr(value)
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def _block_lines(arch: Architecture) -> list[str]:
    space = arch.space
    sites = {s.name: s for s in space.sites()}
    lines = [
        f"  space        {space.name} ({space.kind}): {len(sites)} blocks, ops {', '.join(space.ops)}",
        f"  alphas       {space.alpha_mode}; {len(arch.blocks)} block choices",
        "",
    ]
    width = max(len(b.op) for b in arch.blocks)
    for b in arch.blocks:
        stride = space.type_stride(b.type)
        where = f"stage {sites[b.name].stage}" if b.name in sites else f"every {b.type} block"
        notes = [where] + ([f"stride {stride}"] if stride != 1 else [])
        if get_op(b.op).role(stride) == PARAM_FREE:
            notes.append("parameter-free")
        lines.append(f"  {b.name:<8} {b.op:<{width}}  {', '.join(notes)}")
    return lines


def format_architecture(arch: Architecture, title: str = "architecture") -> str:
    """A readable multi-line summary: space, every cell's edges (``node <- source: op``) or every block's
    op, op counts, the parameter-free share and the provenance."""
    space = arch.space
    if space.is_block:
        return _format_blocks(arch, title)
    nodes = f"{space.inputs + space.nodes} nodes ({space.inputs} input, {space.nodes} intermediate)"
    lines = [
        title,
        f"  space        {space.name} ({space.kind}): {nodes}, ops {', '.join(space.ops)}",
        f"  alphas       {space.alpha_mode}; search network of {space.layers} layers, "
        f"{_count(len(arch.cells), 'record cell')}, {_count(len(arch.kept_edges()), 'kept edge')}",
        "",
    ]
    width = max((len(e.op) for _, e in arch.kept_edges()), default=0)
    for cell in arch.cells:
        lines.append(f"  {_cell_title(cell.name, cell.type)}")
        for e in cell.edges:
            note = _edge_note(arch, cell.type, e.source, e.op)
            lines.append(f"    {e.node} <- {e.source}: {e.op:<{width}}  {note}".rstrip())
        nodes = " ".join(map(str, cell.concat))
        lines.append(
            f"    output: concat of nodes {nodes}" if len(cell.concat) > 1 else f"    output: node {nodes}"
        )
    return "\n".join(lines + _summary_lines(arch, "kept edges with an op", "edges"))


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _cell_title(name: str, cell_type: str) -> str:
    """``cell3 (reduction cell)``; a shared group says which cells of the network share it."""
    kind = "reduction" if cell_type == "reduce" else "normal"
    if name == "cell":  # NB201's one group: every searched cell (its reductions are fixed blocks)
        return "the cell (shared by every cell of the network)"
    if name == cell_type:  # DARTS shared alphas: one normal and one reduction group
        return f"{kind} cell (shared by every {kind} cell of the network)"
    return f"{name} ({kind} cell)"


def _format_blocks(arch: Architecture, title: str) -> str:
    return "\n".join([title, *_block_lines(arch), *_summary_lines(arch, "block choices", "blocks")])


def _summary_lines(arch: Architecture, counted_as: str, labelled: str) -> list[str]:
    """Op counts, the parameter-free tally, recorded probabilities and the provenance."""
    counted = [d for d in arch.decisions() if not get_op(d.op).is_zero]
    free = sum(get_op(d.op).role(d.stride) == PARAM_FREE for d in counted)
    counts = sorted(arch.op_counts().items(), key=lambda kv: (-kv[1], kv[0]))
    probs = f"{len(arch.probabilities)} {labelled}" if arch.probabilities else "none recorded"
    return [
        "",
        f"  op counts    {', '.join(f'{op} {n}' for op, n in counts)}",
        f"  param-free   {free} of {len(counted)} {counted_as} (share {_share(arch)})",
        f"  probabilities  {probs}",
        *_provenance_lines(arch),
    ]


def _provenance_lines(arch: Architecture) -> list[str]:
    lines = []
    if arch.provenance:
        lines.append("  provenance")
        lines += [f"    {key}: {_short(value)}" for key, value in arch.provenance.items()]
    else:
        lines.append("  provenance   none recorded")
    return lines
