"""Which processes are alive, read from /proc (Linux): for tests that a command leaves none behind."""

from __future__ import annotations

from pathlib import Path


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
