"""What search and retrain run directories hold (file names, the code's git commit for provenance), without
torch.

The CLI, the study runner and the multi-trial driver name these files without importing torch;
:mod:`pflnas.train.search` and :mod:`pflnas.train.retrain` write them.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

CHECKPOINT = "checkpoint.pt"
FOUND = "found.json"
CONFIG = "config.yaml"
METRICS = "metrics.jsonl"
EVOLUTION = "evolution.jsonl"  # one-shot strategies: every candidate scored after training
LATENCY_TABLE = "latency_table.json"
LAST, BEST, RESULT = "last.pt", "best.pt", "result.json"  # retrain: checkpoints and the final result


def git_commit() -> str | None:
    """The commit of the pflnas checkout that runs (None outside a git checkout), for run provenance."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None
