"""Results CSVs: rows keyed by what was measured, upserted so that re-running never duplicates
or loses a row, written atomically."""

from __future__ import annotations

import csv
import fcntl
import io
from pathlib import Path

from vgg.checkpoint import atomic_write_bytes

RESULT_KEY = ("profile", "dataset", "run", "method", "test_scales", "flip")
"""What identifies a result: the same evaluation run again replaces its row."""

RESULT_FIELDS = (
    "profile",
    "dataset",
    "dataset_images",
    "classes",
    "run",
    "config",
    "train_scale",
    "method",
    "test_scales",
    "flip",
    "dense_softmax",
    "top1_err",
    "top5_err",
    "images",
    "wall_s",
    "checkpoint",
    "checkpoint_sha256",
    "normalization",
    "git_commit",
    "device",
    "date",
)


def read_rows(path: Path) -> list[dict[str, str]]:
    """The rows of a results CSV (none if it does not exist)."""
    path = Path(path)
    if not path.exists():
        return []
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def upsert_rows(path: Path, rows: list[dict], key: tuple[str, ...] = RESULT_KEY) -> None:
    """Insert `rows` into the CSV at `path`, replacing rows with the same key; other rows stay in order.

    Writers of the same file (runners of different profiles) take turns under a lock file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f".{path.name}.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _upsert_locked(path, rows, key)


def _upsert_locked(path: Path, rows: list[dict], key: tuple[str, ...]) -> None:
    existing = read_rows(path)
    fields = list(dict.fromkeys([*RESULT_FIELDS, *(f for row in existing for f in row), *(f for row in rows for f in row)]))
    position = {tuple(str(row.get(k, "")) for k in key): i for i, row in enumerate(existing)}
    for row in rows:
        row = {name: "" if value is None else str(value) for name, value in row.items()}
        identity = tuple(row.get(k, "") for k in key)
        if identity in position:
            existing[position[identity]] = row
        else:
            position[identity] = len(existing)
            existing.append(row)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in existing:
        writer.writerow({name: row.get(name, "") for name in fields})
    atomic_write_bytes(path, lambda file: file.write(buffer.getvalue().encode()))
