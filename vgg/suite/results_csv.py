"""Results CSVs: rows keyed by what was measured, upserted so that re-running never duplicates
or loses a row, written atomically."""

from __future__ import annotations

import csv
import fcntl
import io
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from vgg.runtime.checkpoint import atomic_write_text

RESULT_KEY = ("profile", "dataset", "run", "method", "test_scales", "flip", "seed")
"""What identifies a result: the same evaluation run again replaces its row."""
MEASUREMENT_KEY = tuple(k for k in RESULT_KEY if k != "seed")
"""What identifies a measurement: its rows, one per seed and the aggregate, share it."""

MEAN_SEED = "mean"
"""The `seed` of a row that aggregates several seeds' rows (mean, std across seeds, interval over seeds and images)."""
KEY_DEFAULTS = {"seed": "0"}
"""What a key column that an older row lacks (or leaves empty) stands for: rows before seeds were seed 0's."""

RESULT_FIELDS = (
    "profile",
    "dataset",
    "dataset_images",
    "classes",
    "run",
    "seed",
    "config",
    "train_scale",
    "method",
    "test_scales",
    "flip",
    "dense_softmax",
    "top1_err",
    "top5_err",
    "top1_err_lo",
    "top1_err_hi",
    "top5_err_lo",
    "top5_err_hi",
    "top1_err_std",
    "top5_err_std",
    "seeds",
    "images",
    "wall_s",
    "epochs",
    "steps",
    "paper_length_ratio",
    "drop_epochs",
    "final_lr",
    "train_loss",
    "stopped",
    "checkpoint",
    "checkpoint_sha256",
    "normalization",
    "git_commit",
    "device",
    "precision",
    "date",
)


def read_rows(path: Path) -> list[dict[str, str]]:
    """The rows of a results CSV (none if it does not exist)."""
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        for row in reader:
            if None in row or None in row.values():  # more fields than the header, or fewer
                fields = sum(value is not None for name, value in row.items() if name is not None) + len(row.get(None, []))
                raise ValueError(
                    f"{path}, line {reader.line_num}: {fields} field{'s' if fields != 1 else ''} where its header has {len(reader.fieldnames)} (a cut or "
                    f"edited file?); restore it (e.g. git checkout {path}) or remove that line, then run the same command again"
                )
            rows.append(row)
    return rows


def row_seed(row: dict) -> str:
    """The seed a results row belongs to ("0" for rows written before seeds; "mean" for an aggregate)."""
    return str(row.get("seed") or KEY_DEFAULTS["seed"])


def shown_row(rows: list[dict]) -> dict | None:
    """Among the rows of one measurement (one per seed, and "mean"), the one a report shows: the
    aggregate over seeds where there is one, else seed 0's."""
    by_seed = {row_seed(row): row for row in rows}
    return by_seed.get(MEAN_SEED) or by_seed.get("0")


def row_key(row: dict, key: tuple[str, ...] = RESULT_KEY) -> tuple[str, ...]:
    """The values of `key` in `row`, an absent or empty column read as its `KEY_DEFAULTS` value."""
    return tuple(str(row.get(k) if row.get(k) not in (None, "") else KEY_DEFAULTS.get(k, "")) for k in key)


def upsert_rows(path: Path, rows: list[dict], key: tuple[str, ...] = RESULT_KEY, fields: tuple[str, ...] = RESULT_FIELDS) -> None:
    """Insert `rows` into the CSV at `path`, replacing rows with the same key; other rows stay in order.
    Columns: `fields` first, then any other the rows have.
    """
    with _locked(path):
        _upsert_locked(path, rows, key, fields)


def drop_other_seeds(path: Path, rows: list[dict], seeds: int) -> None:
    """Drop the rows of the measurements in `rows` that a run over `seeds` seeds did not write: the
    rows of seeds `seeds` and above and, with one seed, the aggregate. Reports show the aggregate
    where there is one (`shown_row`): one left by an earlier run with more seeds (such as the
    committed results) would show that run's nets beside this run's seed 0, from another recipe."""
    kept = {str(seed) for seed in range(seeds)} | ({MEAN_SEED} if seeds > 1 else set())
    measured = {row_key(row, MEASUREMENT_KEY) for row in rows}
    with _locked(path):
        existing = read_rows(path)
        remaining = [row for row in existing if row_key(row, MEASUREMENT_KEY) not in measured or row_seed(row) in kept]
        if len(remaining) < len(existing):
            _write_rows(path, remaining, list(existing[0]))


def replace_groups(path: Path, rows: list[dict], group: tuple[str, ...], fields: tuple[str, ...]) -> None:
    """Replace, in the CSV at `path`, every row whose `group` columns match a row of `rows` by `rows`
    (a group's old rows go, even those `rows` no longer has); other groups' rows stay in order."""
    replaced = {row_key(row, group) for row in rows}
    with _locked(path):
        existing = read_rows(path)
        kept = [row for row in existing if row_key(row, group) not in replaced]
        columns = list(dict.fromkeys([*fields, *(f for row in existing for f in row), *(f for row in rows for f in row)]))
        _write_rows(path, [*kept, *({k: "" if v is None else str(v) for k, v in row.items()} for row in rows)], columns)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Writers of the same results file (runners of different profiles) take turns under a lock file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f".{path.name}.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _upsert_locked(path: Path, rows: list[dict], key: tuple[str, ...], fields: tuple[str, ...]) -> None:
    existing = read_rows(path)
    columns = list(dict.fromkeys([*fields, *(f for row in existing for f in row), *(f for row in rows for f in row)]))
    position = {row_key(row, key): i for i, row in enumerate(existing)}
    for row in rows:
        row = {name: "" if value is None else str(value) for name, value in row.items()}
        identity = row_key(row, key)
        if identity in position:
            existing[position[identity]] = row
        else:
            position[identity] = len(existing)
            existing.append(row)
    _write_rows(path, existing, columns)


def _write_rows(path: Path, rows: list[dict], columns: list[str]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({name: row.get(name, "") for name in columns})
    atomic_write_text(path, buffer.getvalue())
