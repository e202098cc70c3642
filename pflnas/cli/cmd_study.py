"""``pflnas study``: run a grid of searches described in a YAML file; re-running it continues it."""

from __future__ import annotations

import argparse
import contextlib
import shlex
from pathlib import Path

from pflnas.config.loader import read_yaml
from pflnas.errors import ConfigError
from pflnas.rundir import check_new, claim_new


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "study",
        description="Run every search of a study file; complete runs are skipped, interrupted ones resumed.",
    )
    p.add_argument("file", metavar="FILE.yaml", help="study file, e.g. experiments/studies/quick.yaml")
    p.add_argument("--out", metavar="DIR", help="study directory (default: runs/study-<name>)")
    p.add_argument("--jobs", type=int, metavar="N", help="runs at a time (default: the file's jobs)")
    p.add_argument(
        "--batch-seeds",
        type=int,
        metavar="N",
        help="the most seeds of an arm run as one grouped search (darts, darts2, pcdarts on cell spaces), "
        "to cap its memory; 1: one search per seed (default: the file's batch_seeds, else all of an arm's)",
    )
    p.add_argument("--dry-run", action="store_true", help="print each run's status and command; run nothing")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a different study.yaml in --out; complete runs that still match are kept",
    )
    p.add_argument(
        "--data-dir",
        metavar="DIR",
        help="passed to every search (default: $PFLNAS_DATA, else the cache dir)",
    )
    p.add_argument(
        "--device", metavar="DEV", help="passed to every search: auto, cpu, cuda or cuda:N (default: auto)"
    )
    p.set_defaults(run=run)


def _claim(out: Path, dry_run: bool) -> contextlib.AbstractContextManager:
    """A study continues in its folder, so ``--out`` may hold a study pflnas wrote, never other files; the
    folder is locked while the study runs (a dry run only checks it)."""
    if dry_run:
        check_new(out, "study", reuse=True)
        return contextlib.nullcontext()
    return claim_new(out, "study", reuse=True)


def run(args: argparse.Namespace) -> int:
    from pflnas.study import StudyOptions, load_study, run_study  # torch loads with the study runners
    from pflnas.study.layer import load_layer_study, run_layer_study
    from pflnas.study.runner import default_out
    from pflnas.study.swap import load_swap_study, run_swap_study

    if args.data_dir is not None and not args.data_dir.strip():  # "" would drop the flag: other data
        raise ConfigError("--data-dir is empty; give the folder or archive of the data, or leave it out")
    data = read_yaml(args.file)
    if args.batch_seeds is not None and data.get("kind", "search") != "search":
        raise ConfigError(
            f"--batch-seeds groups the searches of a search study; this is a {data['kind']} study"
        )
    if data.get("kind", "search") == "layer":  # retrain homogeneous networks (pflnas.study.layer)
        layer = load_layer_study(data, args.file)
        out = Path(args.out) if args.out else Path("runs") / f"study-{layer.name}"
        with _claim(out, args.dry_run):
            return run_layer_study(layer, out, args.data_dir, args.device, args.dry_run, args.overwrite)
    if data.get("kind") == "swap":  # found networks vs single-choice counterfactuals (pflnas.study.swap)
        plan = load_swap_study(data, args.file)
        out = Path(args.out) if args.out else Path("runs") / f"study-{plan.study.name}"
        flags = dict(data_dir=args.data_dir, device=args.device, jobs=args.jobs)
        with _claim(out, args.dry_run):
            return run_swap_study(plan, out, **flags, dry_run=args.dry_run, overwrite=args.overwrite)
    study = load_study(args.file)
    jobs = study.jobs if args.jobs is None else args.jobs
    if jobs < 1:
        raise ConfigError(f"--jobs must be >= 1, got {jobs}")
    batch = study.batch_seeds if args.batch_seeds is None else args.batch_seeds
    if batch is not None and batch < 1:
        raise ConfigError(f"--batch-seeds must be >= 1 (1: one search per seed), got {batch}")
    out = Path(args.out) if args.out else default_out(study)
    again = ["pflnas", "study", args.file, "--out", str(out)]
    flags = {"--jobs": args.jobs, "--batch-seeds": args.batch_seeds, "--data-dir": args.data_dir}
    for flag, value in {**flags, "--device": args.device}.items():
        if value is not None:
            again += [flag, str(value)]
    options = StudyOptions(
        out=out,
        jobs=jobs,
        data_dir=args.data_dir,
        device=args.device,
        overwrite=args.overwrite,
        dry_run=args.dry_run,
        batch_seeds=batch,
        rerun=shlex.join(again),
    )
    with _claim(out, args.dry_run):
        return run_study(study, options)
