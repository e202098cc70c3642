"""The tables of docs/results/nb201/README.md, from stored ``pflnas bench nb201`` reports (no search is run):

1. every strategy over seeds: t-intervals, chance beside every parameter-free share, the budget;
2. regret side by side with the published NAS-Bench-201 numbers (Dong & Yang, ICLR 2020, Table 5);
3. rank tests between strategies that share a budget (Mann-Whitney U, two-sided, seeds as units);
4. the one-shot budget against the NAS-Bench-201 search protocol (images through the weight step).

    python benchmarks/nb201_report.py docs/results/nb201/results.json docs/results/nb201/oneshot.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from scipy.stats import mannwhitneyu

from pflnas.bench.nb201 import load_nb201_table
from pflnas.bench.runner import oneshot_images
from pflnas.bench.summary import markdown_table, summarize

# NAS-Bench-201 (ICLR 2020) Table 5, CIFAR-10 test accuracy (%): mean, std. Multi-trial rows: 500 runs that
# select on the validation accuracy of the 25k/25k cifar10-valid split (12-epoch training) under a 12,000 s
# simulated budget; weight-sharing rows: 3 runs of the search on the 25k/25k split.
PUBLISHED = {
    "REA": (93.92, 0.30),
    "RS": (93.70, 0.36),
    "REINFORCE": (93.85, 0.37),
    "BOHB": (93.61, 0.52),
    "DARTS-V1": (54.30, 0.00),
    "GDAS": (93.61, 0.09),
    "RSPS": (87.66, 1.69),
}
NB201_OPTIMUM = 94.37
MATCH = {"evolution": "REA", "random": "RS", "darts": "DARTS-V1", "gdas": "GDAS", "spos_random": "RSPS"}
NB201_WEIGHT_IMAGES = {"darts": 50 * 25_000, "gdas": 240 * 25_000}  # epochs x weight-half images
PAIRS = [("spos", "spos_random"), ("evolution", "random")]


def load_summaries(paths: list[Path]) -> list[dict[str, Any]]:
    table = load_nb201_table()
    stats = table.stats(0.01)
    out = []
    for path in paths:
        report = json.loads(path.read_text(encoding="utf-8"))
        for s in report["strategies"]:
            quality = s.get("signal_quality") if s.get("signal_quality", {}).get("measured") else None
            out.append(summarize(table, s["settings"], s["runs"], stats, quality))
    return out


def published_table(summaries: list[dict[str, Any]], best: float) -> str:
    lines = [
        f"| strategy | selection | regret here (pp, vs {best:.2f}) | NAS-Bench-201 row | NB201 test accuracy "
        f"| NB201 regret (pp, vs {NB201_OPTIMUM}) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for s in summaries:
        row = MATCH.get(s["strategy"])
        r = s["regret"]
        here = f"{r['mean']:.2f}" + (f" [{r['ci95'][0]:.2f}, {r['ci95'][1]:.2f}]" if r["ci95"] else "")
        if row is None:
            lines.append(f"| {s['strategy']} | {s['selection']} | {here} | (none) | | |")
            continue
        mean, std = PUBLISHED[row]
        lines.append(
            f"| {s['strategy']} | {s['selection']} | {here} | {row} | {mean:.2f} ± {std:.2f} "
            f"| {NB201_OPTIMUM - mean:.2f} |"
        )
    return "\n".join(lines)


def rank_tests(summaries: list[dict[str, Any]]) -> list[str]:
    lines = []
    for a, b in PAIRS:
        for sa in (s for s in summaries if s["strategy"] == a):
            same = [s for s in summaries if s["strategy"] == b and s["selection"] == sa["selection"]]
            sb = same[0] if same else None
            if sb is None:
                continue
            xa, xb = ([r["accuracy"] for r in s["runs"]] for s in (sa, sb))
            test = mannwhitneyu(xa, xb, alternative="two-sided")
            lines.append(
                f"- {a} vs {b} ({sa['selection']}): test accuracy {sa['accuracy']['mean']:.2f} vs "
                f"{sb['accuracy']['mean']:.2f}, Mann-Whitney U = {test.statistic:.0f}, p = {test.pvalue:.2f} "
                f"({len(xa)} + {len(xb)} seeds)"
            )
    return lines


def budget_lines(summaries: list[dict[str, Any]]) -> list[str]:
    lines = []
    for s in summaries:
        if s["strategy"] in NB201_WEIGHT_IMAGES:
            ours = oneshot_images(s["settings"]["config"])
            theirs = NB201_WEIGHT_IMAGES[s["strategy"]]
            lines.append(
                f"- {s['strategy']}: {ours:,} images through the weight step here vs {theirs:,} in the "
                f"NAS-Bench-201 protocol: {theirs / ours:.0f}x fewer"
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reports", type=Path, nargs="+", help="summary.json files of pflnas bench nb201")
    args = parser.parse_args()
    table = load_nb201_table()
    summaries = load_summaries(args.reports)
    print(markdown_table(summaries, table, table.stats(0.01)))
    print(published_table(summaries, table.best_accuracy()), end="\n\n")
    print("\n".join(rank_tests(summaries)), end="\n\n")
    print("\n".join(budget_lines(summaries)))


if __name__ == "__main__":
    main()
