"""Start-up time of the commands a new user runs first, against a bare ``python -c pass`` measured in the
same run.

    python benchmarks/startup.py [--repeats 7] [--json OUT]

Each command runs ``--repeats`` times in a fresh interpreter (``python -m pflnas ...``) after one untimed
run (the file-system cache warm); the table shows the median wall time, the ratio to ``python -c pass``
(the interpreter's own start-up, measured interleaved with the commands so that load from other work on
the machine hits both alike), and whether the command imported torch (``-X importtime``). Targets: under
1.0 s for ``pflnas --help`` and under 1.5 s for ``pflnas arch validate experiments/archs/r50.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DARTS_V2 = (
    "Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1), "
    "('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), ('dil_conv_3x3', 2)], "
    "normal_concat=[2, 3, 4, 5], reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), "
    "('max_pool_3x3', 1), ('max_pool_3x3', 0), ('skip_connect', 2), ('skip_connect', 2), "
    "('max_pool_3x3', 1)], reduce_concat=[2, 3, 4, 5])"
)
SUBCOMMANDS = ("list", "search", "arch", "profile", "retrain", "evaluate", "export", "study", "report")
SUBCOMMANDS += ("bench",)
COMMANDS: dict[str, list[str]] = {
    "pflnas --help": ["--help"],
    "pflnas --version": ["--version"],
    "pflnas arch validate r50.json": ["arch", "validate", "experiments/archs/r50.json"],
    "pflnas arch show r50.json": ["arch", "show", "experiments/archs/r50.json"],
    "pflnas arch from-darts DARTS_V2": ["arch", "from-darts", DARTS_V2],
    "pflnas list": ["list"],
    **{f"pflnas {name} --help": [name, "--help"] for name in SUBCOMMANDS},
}
TARGETS = {"pflnas --help": 1.0, "pflnas arch validate r50.json": 1.5}
BASELINE = "python -c pass"


def wall(argv: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - t0


def imports_torch(args: list[str]) -> bool:
    """Whether the command imports torch (``-X importtime`` names every module imported)."""
    argv = [sys.executable, "-X", "importtime", "-m", "pflnas", *args]
    err = subprocess.run(argv, cwd=REPO, capture_output=True, text=True).stderr
    return any(line.rsplit("|", 1)[-1].strip() == "torch" for line in err.splitlines())


def measure(repeats: int) -> dict[str, dict[str, float | bool]]:
    """Median wall time per command; the baseline is timed right before each command's every run."""
    rows: dict[str, dict[str, float | bool]] = {}
    for label, args in COMMANDS.items():
        argv = [sys.executable, "-m", "pflnas", *args]
        wall(argv)  # warm the file-system cache
        times, bases = [], []
        for _ in range(repeats):
            bases.append(wall([sys.executable, "-c", "pass"]))
            times.append(wall(argv))
        median, base = statistics.median(times), statistics.median(bases)
        rows[label] = {"median_s": median, "python_s": base, "ratio": median / base}
        rows[label]["imports_torch"] = imports_torch(args)
    return rows


def table(rows: dict[str, dict[str, float | bool]]) -> str:
    width = max(len(label) for label in rows)
    lines = [f"{'command':<{width}}  median s  x python  torch  target", "-" * (width + 36)]
    for label, row in rows.items():
        target = TARGETS.get(label)
        met = target is not None and float(row["median_s"]) < target
        verdict = "" if target is None else f"< {target:.1f} s {'ok' if met else 'MISSED'}"
        torch = "yes" if row["imports_torch"] else "no"
        lines.append(
            f"{label:<{width}}  {row['median_s']:8.3f}  {row['ratio']:8.1f}  {torch:>5}  {verdict}".rstrip()
        )
    base = statistics.median(float(r["python_s"]) for r in rows.values())
    lines.append(f"{BASELINE:<{width}}  {base:8.3f}  {1.0:8.1f}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per command (default 7)")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON")
    args = parser.parse_args()
    rows = measure(args.repeats)
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    missed = [label for label, target in TARGETS.items() if rows[label]["median_s"] >= target]
    return 1 if missed or any(r["imports_torch"] for r in rows.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
