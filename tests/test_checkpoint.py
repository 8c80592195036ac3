"""Checkpoint files: written atomically, with the usual permissions."""

from __future__ import annotations

import os
import subprocess
import stat

import pytest
import torch

from vgg.runtime.checkpoint import CHECKPOINT_NAME, checkpoint_file, commit_of, load_checkpoint, save_checkpoint


def test_a_write_that_fails_half_way_leaves_the_previous_checkpoint_and_no_temporary_file(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint({"step": torch.tensor(1)}, path)
    before = path.read_bytes()
    saves = torch.save

    def fails_half_way(state, file):
        saves(state, file)
        if isinstance(file, (str, os.PathLike)):  # a save straight to a path (not atomic): cut that file
            with open(file, "r+b") as handle:
                handle.truncate(os.path.getsize(file) // 2)
        else:
            file.truncate(file.tell() // 2)
        raise RuntimeError("killed mid-write")

    monkeypatch.setattr(torch, "save", fails_half_way)
    with pytest.raises(RuntimeError, match="killed mid-write"):
        save_checkpoint({"step": torch.tensor(2)}, path)
    assert path.read_bytes() == before
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def test_checkpoints_get_the_usual_file_permissions(tmp_path):
    save_checkpoint({"x": torch.zeros(1)}, tmp_path / "c.pt")
    mode = stat.S_IMODE((tmp_path / "c.pt").stat().st_mode)
    assert mode == 0o666 & ~_current_umask() and mode & 0o044  # group/other can read (with a usual umask)


def test_a_run_is_given_by_its_folder_or_its_checkpoint_file(tmp_path):
    run = tmp_path / "A-256"
    run.mkdir()
    assert checkpoint_file(run) == checkpoint_file(str(run / CHECKPOINT_NAME)) == run / CHECKPOINT_NAME
    assert checkpoint_file(tmp_path / "elsewhere.pt") == tmp_path / "elsewhere.pt"  # a file, there or not, is itself


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _git(root, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=root, check=True, capture_output=True)


def test_commit_of_ignores_rewritten_results_and_reports_but_not_code(tmp_path):
    for name in ("vgg/training/train.py", "results/table3.csv", "reports/table3.md"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("one\n")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "commit", "-q", "-m", "first")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True, check=True).stdout.strip()
    assert commit_of(tmp_path) == head
    (tmp_path / "results/table3.csv").write_text("a row the runner wrote\n")
    (tmp_path / "reports/table3.md").write_text("a report\n")
    assert commit_of(tmp_path) == head
    (tmp_path / "vgg/training/train.py").write_text("changed code\n")
    assert commit_of(tmp_path) == head + "+dirty"


def test_commit_of_outside_git_is_unknown(tmp_path):
    assert commit_of(tmp_path) == "unknown"
