"""``metrics.jsonl``: one JSON object per epoch, appended and flushed; truncated to the resume point."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pflnas.utils_io import atomic_write_text, read_regular_text


class MetricsLog:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    def append(self, record: dict[str, Any]) -> None:
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def read(self) -> list[dict[str, Any]]:
        if not os.path.lexists(self.path):
            return []
        rows = []
        for line in read_regular_text(self.path, "metrics log").splitlines():  # never a FIFO's hang
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a torn last line from a crash
        return rows

    def truncate_to(self, epochs_done: int) -> None:
        """Keep only records of epochs ``< epochs_done`` (called on resume)."""
        rows = [r for r in self.read() if r.get("epoch", 0) < epochs_done]
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in rows))
