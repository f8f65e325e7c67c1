"""The per-request records file: one JSON line per finished request, in the run's folder.

It is the raw data behind every summary number (and what tests join against the
emulator's ground truth by request_id). Writes are buffered; `close` flushes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness.timing import TimingRecord


class RecordsFile:
    def __init__(self, path: Path, labels: dict[str, Any]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.written = 0
        self._labels = labels
        self._file = path.open("a", encoding="utf-8", buffering=1 << 16)

    def write(self, record: TimingRecord) -> None:
        self._file.write(json.dumps({**self._labels, **record.as_dict()}, separators=(",", ":")))
        self._file.write("\n")
        self.written += 1

    def flush(self) -> None:
        if not self._file.closed:
            self._file.flush()

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()


def read_records(path: Path) -> list[dict[str, Any]]:
    """Every record of a records file; ValueError names the first bad line."""
    records = []
    with path.open(encoding="utf-8") as file:
        for number, line in enumerate(file, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"line {number} is not JSON ({error.msg})") from None
            if not isinstance(record, dict):
                raise ValueError(f"line {number} is not a JSON object")
            records.append(record)
    return records
