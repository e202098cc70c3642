"""What search and retrain run directories hold, without torch.

The CLI, the study runner and the multi-trial driver name these files and check the space before anything
heavy loads (a bad ``--space`` fails in a fraction of a second); :mod:`pflnas.train.search` and
:mod:`pflnas.train.retrain` write them.
"""

from __future__ import annotations

CHECKPOINT = "checkpoint.pt"
FOUND = "found.json"
CONFIG = "config.yaml"
METRICS = "metrics.jsonl"
EVOLUTION = "evolution.jsonl"  # one-shot strategies: every candidate scored after training
LATENCY_TABLE = "latency_table.json"
LAST, BEST, RESULT = "last.pt", "best.pt", "result.json"  # retrain: checkpoints and the final result
