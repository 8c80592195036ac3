"""The training arithmetic: `--precision auto` decided by a measurement (bf16 on CPUs where it is fast),
once per run (kept by its checkpoint and DONE, recorded in its identity), and bf16 training really
computing in bf16."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from vgg.runtime.checkpoint import load_checkpoint, read_done
import vgg.runtime.precision
from vgg.runtime.precision import BF16_SPEEDUP_NEEDED, autocast, cpu_bf16_speedup, resolve
from vgg.training.run_config import TrainConfig
from vgg.training.run_state import recorded_precision
from vgg.training.train import train


def config(ci_data, **overrides) -> TrainConfig:
    fields = dict(config="A", train_scale="256", data=str(ci_data), profile="ci", init="glorot", epochs=1, workers=0, progress=False)
    return TrainConfig(**{**fields, **overrides})


def test_auto_is_bf16_on_cuda_and_on_a_cpu_where_bf16_measures_fast(monkeypatch):
    assert resolve("fp32", "cuda") == "fp32" and resolve("bf16", "cpu") == "bf16"
    assert resolve("auto", "cuda") == "bf16"
    monkeypatch.setattr(vgg.runtime.precision, "cpu_bf16_speedup", lambda: BF16_SPEEDUP_NEEDED + 0.1)
    assert resolve("auto", "cpu") == "bf16"
    monkeypatch.setattr(vgg.runtime.precision, "cpu_bf16_speedup", lambda: BF16_SPEEDUP_NEEDED - 0.1)
    assert resolve("auto", "cpu") == "fp32"
    with pytest.raises(ValueError, match="precision must be one of auto, fp32, bf16"):
        resolve("fp16", "cpu")


def test_the_measurement_is_a_ratio_of_two_timings_taken_once_per_process():
    first = cpu_bf16_speedup()
    assert first > 0 and cpu_bf16_speedup() == first  # cached: one decision per process


def test_autocast_computes_in_the_precision_asked_for():
    weights, inputs = torch.randn(8, 8), torch.randn(4, 8)
    with autocast("cpu", "bf16"):
        assert (inputs @ weights).dtype == torch.bfloat16
    with autocast("cpu", "fp32"):
        assert (inputs @ weights).dtype == torch.float32
    with pytest.raises(ValueError, match="auto is resolved first"):
        autocast("cpu", "auto")


def test_fp32_is_ieee_fp32_on_cuda_too():
    """fp32 turns TF32 (cuDNN's default for convolutions) off while it computes, and restores it."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
        with autocast("cuda", "fp32"):
            assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
        assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
    finally:  # the process's flags as they were, for the tests after this one
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def test_a_runs_records_say_its_precision_and_settings_from_before_the_identity_say_fp32():
    auto = TrainConfig(config="A", train_scale="256", data="d")
    assert recorded_precision(auto, None, {"identity": {"precision": "bf16"}}).precision == "bf16"
    assert recorded_precision(auto, {"identity": {}}, {"identity": {"precision": "bf16"}}).precision == "fp32"  # the first that says
    assert recorded_precision(auto, {"run": {"config": "A"}}).precision == "fp32"  # a DONE from before identity version 2
    assert recorded_precision(auto, None, {}).precision == "auto"  # nothing recorded: the trainer decides
    assert recorded_precision(replace(auto, precision="fp32"), {"identity": {"precision": "bf16"}}).precision == "fp32"  # asked for


def test_a_run_decides_once_records_bf16_and_trains_in_it(ci_data, tmp_path, monkeypatch):
    monkeypatch.setattr(vgg.runtime.precision, "cpu_bf16_speedup", lambda: 2.0)
    done = train(config(ci_data), tmp_path / "auto")
    assert done["identity"]["precision"] == "bf16"
    assert "--precision auto: bf16 autocast" in (tmp_path / "auto" / "train.log").read_text()
    bf16 = train(config(ci_data, precision="bf16"), tmp_path / "bf16")
    assert bf16["run_hash"] == done["run_hash"]  # auto decided bf16: the same run as asking for it
    fp32 = train(config(ci_data, precision="fp32"), tmp_path / "fp32")
    assert "precision" not in fp32["identity"] and fp32["run_hash"] != done["run_hash"]
    first, second = load_checkpoint(tmp_path / "auto")["model"], load_checkpoint(tmp_path / "fp32")["model"]
    assert not torch.equal(first["features.0.weight"], second["features.0.weight"])  # other arithmetic, other weights
    torch.testing.assert_close(first["features.0.weight"], second["features.0.weight"], atol=0.02, rtol=0)  # but the same training
    # the machine now measures bf16 as slow: the finished run keeps its decision instead of becoming another run
    monkeypatch.setattr(vgg.runtime.precision, "cpu_bf16_speedup", lambda: 1.0)
    again = train(config(ci_data), tmp_path / "auto")
    assert again["run_hash"] == done["run_hash"] and read_done(tmp_path / "auto")["identity"]["precision"] == "bf16"
    assert "--precision auto: bf16, as decided when the run started" in (tmp_path / "auto" / "train.log").read_text()
    # an unfinished run (its DONE gone) resumes in the arithmetic its checkpoint recorded
    (tmp_path / "auto" / "DONE").unlink()
    resumed = train(config(ci_data), tmp_path / "auto")
    assert resumed["run_hash"] == done["run_hash"] and resumed["identity"]["precision"] == "bf16"
