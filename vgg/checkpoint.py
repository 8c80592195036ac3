"""Atomic checkpoint files and safe loading.

Writes go to a temporary file in the same folder, are fsynced, then renamed over the old
file, so a crash or kill at any moment leaves either the previous or the new checkpoint,
never a torn one. Loading always uses `weights_only=True`.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import torch

CHECKPOINT_NAME = "checkpoint.pt"
DONE_NAME = "DONE"


def atomic_write_bytes(path: Path, writer) -> None:
    """Call writer(file_object) on a temp file beside `path`, fsync it, and rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            writer(file)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, 0o666 & ~_umask())  # mkstemp makes 0600 files; keep the usual permissions
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """Atomically write a checkpoint (tensors, numbers, strings, lists and dicts only)."""
    atomic_write_bytes(path, lambda file: torch.save(state, file))


def load_checkpoint(path: Path | str, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with `weights_only=True`; a missing or unreadable file is a clear error."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise ValueError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises several types for truncated or foreign files
        raise ValueError(f"cannot read checkpoint {path}: {type(error).__name__}: {error}".splitlines()[0]) from None


def write_done(run_dir: Path, metrics: dict[str, Any]) -> None:
    """Mark a run finished: RUN_DIR/DONE holds its final metrics as JSON."""
    text = json.dumps(metrics, indent=2, sort_keys=True) + "\n"
    atomic_write_bytes(Path(run_dir) / DONE_NAME, lambda file: file.write(text.encode()))


def read_done(run_dir: Path) -> dict[str, Any] | None:
    """The final metrics of a finished run, or None if it has not finished."""
    path = Path(run_dir) / DONE_NAME
    return json.loads(path.read_text()) if path.is_file() else None


def git_commit() -> str:
    """The commit of the code that runs (with '+dirty' for uncommitted changes), or 'unknown'."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")
