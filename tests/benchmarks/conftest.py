"""Benchmarks report throughput as a ratio against a reference measured in the same run.

Each benchmark sets `benchmark.extra_info["items"]` (images per round) and the reference
of its group sets `benchmark.extra_info["reference"] = True`; the summary prints
items/s and the ratio to the group's reference. No timing is ever asserted.
"""

from __future__ import annotations

from collections import defaultdict

import pytest
import torch


@pytest.fixture
def one_thread():
    """Measure per core, as a DataLoader worker runs (one intra-op thread)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def pytest_terminal_summary(terminalreporter, config):
    session = getattr(config, "_benchmarksession", None)
    benchmarks = [b for b in getattr(session, "benchmarks", []) if b.stats is not None] if session else []
    if not benchmarks:
        return
    groups = defaultdict(list)
    for bench in benchmarks:
        groups[bench.group].append(bench)
    terminalreporter.section("throughput ratios (same run)")
    for group, members in sorted(groups.items(), key=lambda item: str(item[0])):
        references = [b for b in members if b.extra_info.get("reference")]
        reference_rate = references[0].extra_info.get("items", 1) / references[0].stats.mean if references else None
        for bench in members:
            rate = bench.extra_info.get("items", 1) / bench.stats.mean
            ratio = f"{rate / reference_rate:5.2f}x reference" if reference_rate else "(no reference)"
            terminalreporter.write_line(f"{group}: {bench.name:<60} {rate:10.1f} items/s  {ratio}")
