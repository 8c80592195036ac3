"""Killing a training run mid-epoch, to check that resuming it gives the uninterrupted weights
(the tests on the CPU, `make gpu-check` on CUDA)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from vgg.runtime.checkpoint import CHECKPOINT_NAME, load_checkpoint, read_done


def wait_for(predicate: Callable[[], bool], timeout: float = 120.0) -> None:
    """Poll `predicate` every 50 ms until it holds; TimeoutError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        time.sleep(0.05)


def mid_epoch_checkpoint(run_dir: Path) -> bool:
    """Whether the run folder holds a readable checkpoint from inside an epoch."""
    path = Path(run_dir) / CHECKPOINT_NAME
    if not path.exists():
        return False
    try:
        return load_checkpoint(path)["step_in_epoch"] > 0
    except ValueError:  # being written
        return False


def kill_mid_epoch(command: list[str], run_dir: Path, cwd: Path | None = None, env: dict | None = None) -> int:
    """Start a training command, SIGKILL it once it has written a mid-epoch checkpoint, and return
    the global step that checkpoint holds. Raises if the run finished before it could be killed."""
    victim = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: mid_epoch_checkpoint(run_dir) or victim.poll() is not None)
    finally:
        victim.kill()
        victim.wait()
    if read_done(run_dir) is not None:
        raise RuntimeError(f"{run_dir}: the run finished before it could be killed")
    return int(load_checkpoint(Path(run_dir) / CHECKPOINT_NAME)["global_step"])
