"""Which processes are alive, read from /proc (Linux): for tests that a command leaves none behind."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from vgg.suite.kill_resume import wait_for


def _live_processes() -> list[tuple[int, int, int]]:
    """(pid, parent pid, process group) of every live, not zombie, process."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # ended while listed
            continue
        if fields[0] != "Z":
            found.append((int(stat.parent.name), int(fields[1]), int(fields[2])))
    return found


def processes_in_group(group: int) -> list[int]:
    """The live processes of process group `group`."""
    return [pid for pid, _, pgrp in _live_processes() if pgrp == group]


def children_of(parent: int) -> list[int]:
    """The live child processes of `parent`."""
    return [pid for pid, ppid, _ in _live_processes() if ppid == parent]


@contextmanager
def group_killed_at_the_end(process: subprocess.Popen) -> Iterator[subprocess.Popen]:
    """`process` (started with start_new_session=True); whatever of its group is left at the end is killed."""
    try:
        yield process
    finally:
        for pid in processes_in_group(process.pid):
            os.kill(pid, signal.SIGKILL)


def sigkill_leaves_no_process(process: subprocess.Popen, within: float) -> None:
    """SIGKILL `process`; every process of its group must end within `within` seconds."""
    process.kill()
    process.wait(timeout=10)
    wait_for(lambda: not processes_in_group(process.pid), timeout=within)
