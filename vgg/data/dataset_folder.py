"""Writing a dataset folder that a command derives (the synthetic set, a Fashion-MNIST export, a
held-out split) once and atomically: it is filled in a sibling staging folder and renamed into place
at the end, so an interrupted write leaves nothing that looks complete, and a second run with the
same parameters finds it done.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path


def write_once(out: Path, description_file: str, description: dict, fill: Callable[[Path], None], what: str) -> Path:
    """`out`, written by `fill(staging)` with `description` saved as `description_file` beside the
    files. An `out` that holds the same description is kept as it is; one holding another (`what`
    with other parameters, or from another version of this suite), or a non-empty folder without
    one, is an error that says to remove it."""
    out = Path(out)
    if (out / description_file).exists():
        existing = json.loads((out / description_file).read_text())
        if existing == description:
            return out
        raise ValueError(f"{out} already holds {what} with other parameters or from another version of this suite ({existing}, wanted {description}); remove it first")
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"{out} exists and is not {what} (or not a complete one); remove it or choose another --out")
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    fill(staging)
    (staging / description_file).write_text(json.dumps(description, indent=2) + "\n")
    if out.exists():
        out.rmdir()
    staging.rename(out)
    return out
