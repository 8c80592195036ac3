"""Checkpoint files: written atomically, with the usual permissions."""

from __future__ import annotations

import os
import stat

import pytest
import torch

from vgg.checkpoint import CHECKPOINT_NAME, checkpoint_file, load_checkpoint, save_checkpoint


def test_a_write_that_fails_half_way_leaves_the_previous_checkpoint_and_no_temporary_file(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint({"step": torch.tensor(1)}, path)
    saves = torch.save

    def fails_half_way(state, file):
        saves(state, file)
        file.truncate(file.tell() // 2)
        raise RuntimeError("killed mid-write")

    monkeypatch.setattr(torch, "save", fails_half_way)
    with pytest.raises(RuntimeError, match="killed mid-write"):
        save_checkpoint({"step": torch.tensor(2)}, path)
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
