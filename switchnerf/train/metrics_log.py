"""A run's training log, ``metrics.jsonl``: one JSON object per line, each with ``step``.

Lines are training records (``loss``, ``psnr``, ``time_s``, ...) and eval records
(``eval_psnr``); both carry the step after which they were measured. The log is appended
line by line (line-buffered), so a killed run leaves every complete line and at most one
partial last line.

Resume: :func:`truncate_log` keeps the records up to the checkpoint's step and drops the
rest (the steps after the checkpoint are trained again and logged again), so the log of a
run interrupted any number of times has each step once. Non-finite numbers are written as
``null`` (the file stays valid JSON lines).
"""

from __future__ import annotations

import json
from pathlib import Path

from switchnerf.io_utils import json_safe, write_bytes_atomic

LOG_FILE = "metrics.jsonl"


def read_log(path: Path) -> list[dict]:
    """The complete records of a log, in order (a partial or foreign line is left out)."""
    path = Path(path)
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(errors="replace").splitlines():
        record = _record(line)
        if record is not None:
            records.append(record)
    return records


def _record(line: str) -> dict | None:
    try:
        record = json.loads(line)
    except ValueError:
        return None
    step = record.get("step") if isinstance(record, dict) else None
    return record if isinstance(step, int) and not isinstance(step, bool) else None


def truncate_log(path: Path, step: int) -> int:
    """Keep the records of steps <= ``step`` (and drop partial lines); rewrite the file
    atomically only when something goes. Returns the number of lines dropped."""
    path = Path(path)
    if not path.is_file():
        return 0
    text = path.read_bytes().decode(errors="replace")
    lines = text.splitlines()
    kept = [line for line in lines
            if (r := _record(line)) is not None and r["step"] <= step]
    if not lines or (len(kept) == len(lines) and text.endswith("\n")):
        return 0
    write_bytes_atomic(path, "".join(line + "\n" for line in kept).encode())
    return len(lines) - len(kept)


class MetricsLog:
    """Appends records to a run's ``metrics.jsonl`` (``None`` path: a no-op log, for the
    ranks other than 0)."""

    def __init__(self, path: Path | None):
        self._file = None if path is None else open(path, "a", buffering=1)  # noqa: SIM115

    @property
    def enabled(self) -> bool:
        return self._file is not None

    def write(self, record: dict) -> None:
        """One record as one line (non-finite numbers as null)."""
        if self._file is not None:
            self._file.write(json.dumps(json_safe(record), allow_nan=False) + "\n")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
