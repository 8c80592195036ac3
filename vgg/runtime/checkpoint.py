"""Atomic writes of checkpoints, score files, results and reports; safe loading.

Writes go to a temporary file in the same folder, are fsynced, then renamed over the old
file, so a crash, a kill or a full disk at any moment leaves either the previous or the new
file, never a torn one; a full disk is one line (`DiskFullError`). Loading always uses
`weights_only=True`, and a damaged, foreign or unsafe file is one line saying what it is.
"""

from __future__ import annotations

import json
import errno
import os
import pickle
import re
import subprocess
import shutil
import tempfile
from datetime import datetime, timezone
from functools import cache
from pathlib import Path
from typing import Any

import torch

CHECKPOINT_NAME = "checkpoint.pt"
DONE_NAME = "DONE"
RUN_CHECKPOINT_KEYS = ("spec", "model", "run_hash", "classes", "profile")
DAMAGED = "damaged after it was written (this suite writes files atomically; a disk fault or a copy?)"
"""Why a file this suite wrote can be truncated; the advice after it depends on the file's use."""


class DiskFullError(ValueError):
    """A write failed for lack of space (or quota); the file written before, if any, is kept."""


FULL_DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


def size_text(size: float) -> str:
    """Bytes in kB below 10 MB, else in MB, so that two sizes near each other read in one unit."""
    return f"{max(1, round(size / 1e3)):,} kB" if size < 1e7 else f"{size / 1e6:,.0f} MB"


def disk_full_error(path: Path, needed: int | None) -> DiskFullError:
    """The one-line error for a write of `path` that found no space (`needed`: bytes, if known). The
    free space is measured after the failed write's part was removed, so it can exceed what the
    write needed: other writers, or the filesystem's own blocks, took the difference meanwhile."""
    try:
        free = f"{size_text(shutil.disk_usage(path.parent).free)} free now"
    except OSError:
        free = "free space unknown"
    space = f"about {size_text(needed)} to write, {free}" if needed else free
    return DiskFullError(
        f"no space left on the disk holding {path.parent} to write {path.name} ({space}); "
        f"free some space (or write elsewhere) and run the same command again: the previous {path.name}, if any, is kept"
    )


class _WriteRecorder:
    """A file object remembering the OSError of a failed write: torch.save reports one as a
    RuntimeError ("unexpected pos ...") that no longer says the disk is full."""

    def __init__(self, file) -> None:
        self._file, self.error = file, None

    def write(self, data) -> int:
        try:
            return self._file.write(data)
        except OSError as error:
            self.error = error
            raise

    def __getattr__(self, name: str):
        return getattr(self._file, name)


def _open_for_writing(handle: int):
    return os.fdopen(handle, "wb")


def atomic_write_bytes(path: Path, writer, size_hint: int | None = None) -> None:
    """Call writer(file_object) on a temp file beside `path`, fsync it, and rename it into place.
    A full disk is a `DiskFullError` (`size_hint`: the bytes to write, for its message), and
    leaves the previous file as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    file = None
    try:
        with _open_for_writing(handle) as opened:
            file = _WriteRecorder(opened)
            writer(file)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, 0o666 & ~_umask())  # mkstemp makes 0600 files; keep the usual permissions
        os.replace(temporary, path)
    except BaseException as error:
        Path(temporary).unlink(missing_ok=True)
        cause = file.error if file is not None and file.error is not None else error
        if isinstance(cause, OSError) and cause.errno in FULL_DISK_ERRNOS:
            raise disk_full_error(path, size_hint) from None
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
    atomic_write_bytes(path, lambda file: torch.save(state, file), size_hint=tensor_bytes(state))


def atomic_write_text(path: Path, text: str) -> None:
    """Write a text file atomically (reports, CSVs): a kill or a full disk leaves the previous one."""
    data = text.encode()
    atomic_write_bytes(path, lambda file: file.write(data), size_hint=len(data))


def atomic_write_figure(figure, path: Path) -> None:
    """Save a matplotlib figure as PNG atomically (100 dpi)."""
    atomic_write_bytes(path, lambda file: figure.savefig(file, format="png", dpi=100))


def append_text(path: Path, text: str) -> None:
    """Append to a log file; a full disk is a `DiskFullError` (what was appended before is kept)."""
    try:
        with open(path, "a") as handle:
            handle.write(text)
    except OSError as error:
        if error.errno in FULL_DISK_ERRNOS:
            raise disk_full_error(Path(path), len(text.encode())) from None
        raise


def tensor_bytes(value: Any) -> int:
    """The bytes of the tensors in a nested structure of dicts, lists and tuples."""
    if torch.is_tensor(value):
        return value.numel() * value.element_size()
    if isinstance(value, dict):
        return sum(tensor_bytes(item) for item in value.values())
    if isinstance(value, (list, tuple)):
        return sum(tensor_bytes(item) for item in value)
    return 0


def load_tensors(path: Path, what: str, advice: str, map_location: str | torch.device = "cpu") -> Any:
    """`torch.load(path, weights_only=True)` of an existing file; an empty, truncated or corrupt file,
    and one holding Python objects beyond tensors (which could run code when loaded), are one-line
    errors naming the file and `what` it should be; `advice` says what to do about a damaged one."""
    if path.stat().st_size == 0:
        raise ValueError(f"{what} {path} is empty (0 bytes); {advice}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        found = re.search(r"GLOBAL ([\w.]+)", str(error))  # torch's refusal of a Python object beyond tensors
        if found:
            raise ValueError(
                f"refusing to load {path}: besides tensors it holds a Python object ({found.group(1)}), and loading one can run any code; "
                f"this suite loads only tensors, numbers and strings. Use a checkpoint this suite wrote, or a plain state dict of tensors"
            ) from None
        raise ValueError(f"{what} {path} is not a PyTorch file, or is corrupt ({_unpickler_reason(error)}); {advice}") from None
    except Exception as error:  # zip, EOF and OS errors, whatever the damage
        reason = f"{type(error).__name__}: {error}".strip().splitlines()[0].rstrip(":")
        raise ValueError(f"{what} {path} is truncated or corrupt ({reason}); {advice}") from None


def _unpickler_reason(error: pickle.UnpicklingError) -> str:
    """The reason in torch's weights-only error, without its boilerplate (which suggests turning the check off)."""
    boilerplate = ("Weights only load failed", "Please file an issue", "Check the documentation")
    lines = [
        line.strip() for line in str(error).splitlines()
        if line.strip() and not line.startswith(boilerplate) and "weights_only" not in line
    ]
    return lines[0] if lines else "unreadable"


def checkpoint_file(path: Path | str) -> Path:
    """A run's checkpoint file, given the run's folder or the file itself."""
    path = Path(path)
    return path / CHECKPOINT_NAME if path.is_dir() else path


def load_checkpoint(
    path: Path | str, what: str = "checkpoint", damaged: str = f"it was {DAMAGED}: write it again", map_location: str | torch.device = "cpu"
) -> dict[str, Any]:
    """Load a file this suite wrote (`what`: a run's checkpoint, a score file) with `weights_only=True`;
    a missing, damaged (`damaged`: what to do then) or unsafe file is a clear error."""
    path = checkpoint_file(path)
    if not path.is_file():
        raise ValueError(f"{what} {path} does not exist")
    state = load_tensors(path, what, damaged, map_location)
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds a {type(state).__name__}, not a checkpoint of this suite")
    return state


def load_run_checkpoint(path: Path | str, use: str, damaged: str, advice: str | None = None) -> dict[str, Any]:
    """A training run's checkpoint: a damaged file says `damaged` (what to do), and any other file
    (a score file, a torchvision state dict, something else) is a one-line error saying what it is,
    what it was wanted for (`use`) and what to do (`advice`, default: what suits the kind found)."""
    state = load_checkpoint(path, damaged=damaged)
    if all(key in state for key in RUN_CHECKPOINT_KEYS):
        return state
    if "posteriors" in state and "image_ids" in state:
        kind, suits = "a score file (python -m vgg evaluate --save-scores writes them)", "pass it to python -m vgg fuse"
    elif state and all(torch.is_tensor(value) for value in state.values()):
        kind, suits = "a state dict of weights (torchvision's format)", "use --weights for a torchvision state dict"
    else:
        kind, suits = f"not a checkpoint of this suite (keys: {', '.join(sorted(map(str, state))[:6])})", "check the path"
    path = checkpoint_file(path)
    raise ValueError(f"{path} is {kind}, not a training run's checkpoint ({use}); {advice or suits}")


def write_done(run_dir: Path, metrics: dict[str, Any]) -> None:
    """Mark a run finished: RUN_DIR/DONE holds its final metrics as JSON."""
    atomic_write_text(Path(run_dir) / DONE_NAME, json.dumps(metrics, indent=2, sort_keys=True) + "\n")


def read_done(run_dir: Path) -> dict[str, Any] | None:
    """The final metrics of a finished run, or None if it has not finished."""
    path = Path(run_dir) / DONE_NAME
    return json.loads(path.read_text()) if path.is_file() else None


def utc_timestamp() -> str:
    """Now, in UTC, as results rows and score files record it: 2026-11-30T04:21:08Z."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# What the suite writes into its own clone: a run that rewrites them has not changed the code that ran.
GENERATED_FOLDERS = ("results", "reports")


def commit_of(root: Path) -> str:
    """The commit checked out in the git work tree `root`, with '+dirty' when tracked files other than
    the generated results/ and reports/ differ from it, or 'unknown' outside git."""
    excluded = [f":(exclude){folder}" for folder in GENERATED_FOLDERS]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ".", *excluded],
            cwd=root, capture_output=True, text=True, timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


@cache
def git_commit() -> str:
    """The commit of the code that runs (`commit_of` the suite's clone); asked of git once per process
    (the code that runs is the code imported at its start)."""
    return commit_of(Path(__file__).resolve().parents[2])  # vgg/runtime/checkpoint.py -> the clone
