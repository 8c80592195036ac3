"""Opt-in TensorBoard scalars (`--tensorboard`, make TB=1): a ci run's event file holds every epoch's
row of metrics.csv and its val intervals; without the package the flag is a one-line error."""

import csv
import sys

import pytest

from vgg.evaluation.statistics import binomial_interval
from vgg.training.run_config import TrainConfig
from vgg.training.tensorboard_scalars import ROW_SCALARS, TENSORBOARD_DIR, require_tensorboard
from vgg.training.train import train


def ci_config(ci_data, **overrides) -> TrainConfig:
    fields = dict(config="A", train_scale="256", data=str(ci_data), profile="ci", init="glorot", epochs=2, workers=0, progress=False, tensorboard=True)
    return TrainConfig(**{**fields, **overrides})


def read_scalars(run_dir) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / TENSORBOARD_DIR))
    events.Reload()
    return {tag: [(event.step, event.value) for event in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_a_ci_run_writes_every_epochs_scalars(ci_data, tmp_path):
    pytest.importorskip("tensorboard")
    train(ci_config(ci_data), tmp_path / "run")
    rows = list(csv.DictReader(open(tmp_path / "run" / "metrics.csv")))
    scalars = read_scalars(tmp_path / "run")
    assert len(rows) == 2
    for column, tag in ROW_SCALARS.items():
        assert [step for step, _ in scalars[tag]] == [int(row["epoch"]) for row in rows]
        assert [value for _, value in scalars[tag]] == pytest.approx([float(row[column]) for row in rows], rel=1e-6)
    for k in ("top1", "top5"):
        low, high = scalars[f"error/val_{k}_low"], scalars[f"error/val_{k}_high"]
        expected = [binomial_interval(float(row[f"val_{k}_err"]), 24) for row in rows]  # the ci set's 24 val images
        assert [value for _, value in low] == pytest.approx([lo for lo, _ in expected], abs=1e-4)
        assert [value for _, value in high] == pytest.approx([hi for _, hi in expected], abs=1e-4)


def test_without_the_package_the_flag_is_one_line_and_no_run_folder(ci_data, tmp_path, monkeypatch, capsys):
    from vgg.cli import main

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # an import of it raises ImportError, as without the package
    with pytest.raises(ValueError, match=r"--tensorboard needs the tensorboard package .*pip install tensorboard"):
        require_tensorboard()
    out = tmp_path / "run"
    code = main(["train", "--config", "A", "--train-scale", "256", "--data", str(ci_data), "--out", str(out), "--profile", "ci", "--epochs", "1",
                 "--workers", "0", "--no-progress", "--tensorboard"])
    error = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(error) == 1 and error[0].startswith("error: --tensorboard needs the tensorboard package")
    assert not out.exists()


def test_the_wilson_interval():
    """Wilson's bounds are the two rates p at which the measured rate lies exactly z standard errors
    away: (rate - p)^2 = z^2 p (1 - p) / n (checked here by that equation, not the formula's code)."""
    for percent, images in ((20.0, 100), (3.0, 1000), (50.0, 24)):
        rate, z = percent / 100, 1.959963984540054
        for bound in binomial_interval(percent, images):
            p = bound / 100
            assert (rate - p) ** 2 == pytest.approx(z * z * p * (1 - p) / images, rel=1e-9)
    low, high = binomial_interval(20.0, 100)
    assert 13.3 < low < 13.4 and 28.8 < high < 28.9  # asymmetric around 20: pulled towards 50%
    assert binomial_interval(0.0, 24)[0] == 0.0 and binomial_interval(100.0, 24)[1] == 100.0
