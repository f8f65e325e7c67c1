"""The per-request records file: one JSON line per finished request, in the run's folder
(`requests.jsonl.gz`, gzip-compressed as it grows: harness/compressed.py).

It is the raw data behind every summary number (and what tests join against the
emulator's ground truth by request_id). Records are kept as they come and written `BATCH`
at a time (serialized and compressed in one go: cheaper per line than one line at each
request's end, as `make bench` measures); `flush` makes every
record written so far readable, `close` ends the file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness.compressed import open_lines, read_lines
from harness.jsonbytes import json_bytes
from harness.timing import TimingRecord

RECORDS_FILE = "requests.jsonl.gz"
BATCH = 64


class RecordsFile:
    """The records of a run's finished requests (a record does not change once written)."""

    def __init__(self, path: Path, labels: dict[str, Any]) -> None:
        self.path = path
        self.written = 0
        self._labels = labels
        self._file = open_lines(path)
        self._pending: list[TimingRecord] = []

    def write(self, record: TimingRecord) -> None:
        self._pending.append(record)
        self.written += 1
        if len(self._pending) >= BATCH:
            self._write_pending()

    def _write_pending(self) -> None:
        labels, pending = self._labels, self._pending
        if pending and not self._file.closed:
            self._file.write(b"".join([json_bytes({**labels, **record.as_dict()}) + b"\n" for record in pending]))
            pending.clear()

    def flush(self) -> None:
        self._write_pending()
        if not self._file.closed:
            self._file.flush()

    def close(self) -> None:
        self._write_pending()
        if not self._file.closed:
            self._file.close()


def read_records(path: Path) -> list[dict[str, Any]]:
    """Every complete record of a records file (plain or gzip, finished or still growing);
    ValueError names the first bad line."""
    records = []
    for number, line in enumerate(read_lines(path), 1):
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
