"""Training on the ci profile (CPU): determinism, exact resume, preemption, DDP, schedule, init chains, errors."""

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from tests.helpers_images import assert_drawn_figure
from vgg.evaluation.metrics import batch_sums
from vgg.nets.trained import load_net
from vgg.runtime.checkpoint import CHECKPOINT_NAME, load_checkpoint, read_done
from vgg.runtime.stop_signals import EXIT_PREEMPTED
from vgg.suite.kill_resume import kill_mid_epoch, wait_for
from vgg.training.run_config import TrainConfig, train_command
from vgg.training.train import train
from vgg.training.train_loop import NonFiniteLossError, Steps

ROOT = Path(__file__).resolve().parent.parent


def config(ci_data, **overrides) -> TrainConfig:
    fields = dict(config="A", train_scale="256", data=str(ci_data), profile="ci", init="glorot", epochs=2, workers=0, progress=False)
    fields.update(overrides)
    return TrainConfig(**fields)


def weights(run_dir: Path) -> dict:
    return load_checkpoint(run_dir)["model"]


def assert_same_weights(first: dict, second: dict, atol: float = 0.0) -> None:
    assert first.keys() == second.keys()
    for key in first:
        if atol:
            torch.testing.assert_close(first[key], second[key], atol=atol, rtol=0, msg=key)
        else:
            assert torch.equal(first[key], second[key]), key


def cli(*args: str, **kwargs) -> list[str]:
    return [sys.executable, "-m", "vgg", "train", *args]


def train_args(ci_data: Path, out: Path, *extra: str) -> list[str]:
    return cli(
        "--config", "A", "--train-scale", "256", "--data", str(ci_data), "--out", str(out), "--profile", "ci",
        "--init", "glorot", "--epochs", "3", "--workers", "1", "--no-progress", *extra,
    )


def test_a_run_is_deterministic_and_writes_its_records(ci_data, tmp_path):
    first = train(config(ci_data), tmp_path / "one")
    second = train(config(ci_data), tmp_path / "two")
    assert_same_weights(weights(tmp_path / "one"), weights(tmp_path / "two"))
    assert first["val_top1_err"] == second["val_top1_err"] and first["steps"] == 2 * 6
    assert first["images_seen"] == 12 * 16 and first["paper_length_ratio"] == pytest.approx(12 * 16 / (370_000 * 256), rel=1e-3)
    rows = list(csv.DictReader(open(tmp_path / "one" / "metrics.csv")))
    assert [int(r["epoch"]) for r in rows] == [0, 1]
    assert {"lr", "train_loss", "train_top1_err", "val_top1_err", "val_top5_err", "images_per_s", "wall_s"} <= rows[0].keys()
    assert_drawn_figure(tmp_path / "one" / "curves.png")
    checkpoint = load_checkpoint(tmp_path / "one")
    assert checkpoint["spec"]["config"] == "A" and checkpoint["spec"]["width"] == 16 and checkpoint["spec"]["crop"] == 32
    assert checkpoint["normalization"]["name"] == "mean-rgb" and checkpoint["profile"]["name"] == "ci"
    assert checkpoint["epoch"] == 2 and checkpoint["step_in_epoch"] == 0 and checkpoint["git_commit"]
    assert not any(key.startswith("module.") for key in checkpoint["model"])
    progress = json.loads((tmp_path / "one" / "PROGRESS.json").read_text())
    assert (progress["state"], progress["epoch"], progress["epochs"], len(progress["epoch_seconds"])) == ("finished", 2, 2, 2)
    assert not (tmp_path / "one" / "tensorboard").exists()  # TensorBoard only when asked for


def test_finished_run_is_skipped(ci_data, tmp_path):
    done = train(config(ci_data, epochs=1), tmp_path / "run")
    stamp = (tmp_path / "run" / "checkpoint.pt").stat().st_mtime_ns
    assert train(config(ci_data, epochs=1), tmp_path / "run") == done
    assert (tmp_path / "run" / "checkpoint.pt").stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match="finished run with other settings"):
        train(config(ci_data, epochs=1, seed=5), tmp_path / "run")


def test_sigkill_mid_epoch_then_resume_gives_the_uninterrupted_weights(ci_data, tmp_path):
    # bf16 asked for: each process's own --precision auto measurement could choose otherwise under load
    reference = subprocess.run(train_args(ci_data, tmp_path / "reference", "--precision", "bf16"), cwd=ROOT, capture_output=True, text=True)
    assert reference.returncode == 0, reference.stderr
    # the killed run reads its sums back every 3 steps, the reference only at each epoch's end (6 steps)
    killed = train_args(ci_data, tmp_path / "killed", "--checkpoint-steps", "2", "--sync-every", "3", "--precision", "bf16")
    kill_mid_epoch(killed, tmp_path / "killed", cwd=ROOT)
    resumed = subprocess.run(killed, cwd=ROOT, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stdout
    assert_same_weights(weights(tmp_path / "reference"), weights(tmp_path / "killed"))
    metrics = lambda run: [row["val_top1_err"] for row in csv.DictReader(open(run / "metrics.csv"))]
    assert metrics(tmp_path / "reference") == metrics(tmp_path / "killed")


def test_batch_sums_are_the_loss_and_hit_counts_of_the_batch():
    scores = torch.tensor([[0.1, 0.9, 0.0, 0.0, 0.0, 0.0], [0.8, 0.1, 0.05, 0.03, 0.02, 0.0], [0.0, 0.0, 0.0, 0.0, 0.1, 0.9]])
    labels = torch.tensor([1, 1, 3])  # a top-1 hit; a top-5 hit only; a label ranked 6th (ties: lower index first)
    sums = batch_sums(torch.tensor(0.5), scores, labels)
    assert sums.dtype == torch.float64 and sums.tolist() == [1.5, 1.0, 2.0, 3.0, 0.0]
    assert batch_sums(torch.tensor(float("nan")), scores, labels)[4] == 1.0


def test_training_sums_are_read_back_every_n_steps_and_the_result_does_not_depend_on_n(ci_data, tmp_path, monkeypatch):
    read_at = []
    read_back = Steps._read_back

    def counting(self, loop, preemption, progress):
        read_at.append(loop.global_step)
        return read_back(self, loop, preemption, progress)

    monkeypatch.setattr(Steps, "_read_back", counting)
    train(config(ci_data, sync_every=1), tmp_path / "every-step")
    assert read_at == list(range(1, 13))  # 2 epochs of 6 steps
    read_at.clear()
    train(config(ci_data, sync_every=4), tmp_path / "every-4")
    assert read_at == [4, 6, 8, 12]  # every 4th step and each epoch's end
    assert_same_weights(weights(tmp_path / "every-step"), weights(tmp_path / "every-4"))
    timing = ("images_per_s", "wall_s")
    rows = lambda run: [{k: v for k, v in row.items() if k not in timing} for row in csv.DictReader(open(tmp_path / run / "metrics.csv"))]
    assert rows("every-step") == rows("every-4")


def test_sigterm_checkpoints_and_exits_with_the_requeue_code(ci_data, tmp_path):
    run = tmp_path / "preempted"
    process = subprocess.Popen(train_args(ci_data, run, "--epochs", "50"), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: (run / "metrics.csv").exists() or process.poll() is not None)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == EXIT_PREEMPTED, stderr
    assert "preempted (SIGTERM): checkpoint at epoch" in stdout
    checkpoint = load_checkpoint(run)
    assert checkpoint["epoch"] >= 1 and read_done(run) is None


def test_two_gloo_processes_match_one_process_with_the_same_global_batch(ci_data, tmp_path):
    common = ["--config", "A", "--train-scale", "256", "--data", str(ci_data), "--profile", "ci", "--init", "glorot",
              "--epochs", "2", "--workers", "0", "--no-progress", "--device", "cpu", "--dropout", "0", "--batch-size", "16",
              "--precision", "fp32"]  # bf16 rounds the two processes' partial sums differently
    single = subprocess.run([sys.executable, "-m", "vgg", "train", *common, "--out", str(tmp_path / "one")], cwd=ROOT, capture_output=True, text=True)
    assert single.returncode == 0, single.stderr
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    double = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "vgg", "train", *common, "--out", str(tmp_path / "two")],
        cwd=ROOT, capture_output=True, text=True, env=env, timeout=300,
    )
    assert double.returncode == 0, double.stderr[-3000:]
    assert "2 process(es) x 1 x 8" in double.stdout
    assert_same_weights(weights(tmp_path / "one"), weights(tmp_path / "two"), atol=1e-5)


def test_gradient_accumulation_matches_the_full_batch(ci_data, tmp_path):
    # fp32: bf16 rounds the two half-batches' sums differently from the full batch's
    train(config(ci_data, epochs=1, dropout=0.0, precision="fp32"), tmp_path / "full")
    train(config(ci_data, epochs=1, dropout=0.0, accum=2, precision="fp32"), tmp_path / "accumulated")
    assert_same_weights(weights(tmp_path / "full"), weights(tmp_path / "accumulated"), atol=1e-5)


def test_lr_drops_on_plateaus_and_training_stops_after_three(ci_data, tmp_path):
    # a rate too small to change anything: val accuracy never improves after the first epoch
    done = train(config(ci_data, epochs=20, lr=1e-12, plateau_patience=1), tmp_path / "flat")
    rates = [float(row["lr"]) for row in csv.DictReader(open(tmp_path / "flat" / "metrics.csv"))]
    # abs=0: approx's default absolute tolerance, 1e-12, would take any of these rates for any other
    assert rates == pytest.approx([1e-12, 1e-12, 1e-13, 1e-14, 1e-15], rel=1e-6, abs=0)
    assert done["stopped"] == "plateau" and done["lr_drops"] == 3 and done["epochs"] == 5
    # the rate the optimizer stepped with in the last epoch, not only the schedule's record of it
    assert load_checkpoint(tmp_path / "flat")["optimizer"]["param_groups"][0]["lr"] == pytest.approx(1e-15, rel=1e-6, abs=0)


def test_a_drop_from_1e_2_to_1e_3_reaches_every_parameter_group(ci_data, tmp_path, monkeypatch):
    import vgg.training.train as training
    from vgg.recipe.profiles import get_profile

    monkeypatch.setattr(training, "get_profile", lambda name: replace(get_profile("ci"), schedule="steps", drop_deadlines=(0.5,)))
    done = train(config(ci_data, epochs=2, lr=1e-2, head_lr_mult=10.0), tmp_path / "run")
    assert done["drop_epochs"] == [0]
    body, head = load_checkpoint(tmp_path / "run")["optimizer"]["param_groups"]
    assert (body["lr"], head["lr"]) == (pytest.approx(1e-3, rel=1e-9, abs=0), pytest.approx(1e-2, rel=1e-9, abs=0))


def test_a_default_run_steps_with_the_papers_momentum_weight_decay_and_rate(ci_data, tmp_path):
    """Sect. 3.1: momentum 0.9, L2 weight decay 5e-4, learning rate 1e-2 (before any drop)."""
    train(TrainConfig(config="A", train_scale="256", data=str(ci_data), profile="ci", epochs=1, workers=0, progress=False), tmp_path / "run")
    groups = load_checkpoint(tmp_path / "run")["optimizer"]["param_groups"]
    assert [(g["momentum"], g["weight_decay"], g["lr"], g["nesterov"], g["dampening"]) for g in groups] == [(0.9, 5e-4, 1e-2, False, 0)]
    assert len(groups[0]["params"]) == 2 * 11  # every weight and bias of A's 8 conv and 3 FC layers


def test_momentum_weight_decay_and_the_heads_rate_multiple_reach_the_optimizer(ci_data, tmp_path):
    train(config(ci_data, epochs=1, lr=0.02, momentum=0.8, weight_decay=1e-4, head_lr_mult=10.0), tmp_path / "run")
    body, head = load_checkpoint(tmp_path / "run")["optimizer"]["param_groups"]
    assert (body["momentum"], body["weight_decay"], head["momentum"], head["weight_decay"]) == (0.8, 1e-4, 0.8, 1e-4)
    assert (body["lr"], head["lr"]) == pytest.approx((0.02, 0.2))
    assert len(head["params"]) == 2  # the last layer's weight and bias


SCHEDULE_GUARDS = {
    # a flat run (lr 1e-12: a plateau from the second epoch on) of 4 epochs, under a profile that asks
    "for 90% of the way from chance before any drop": (
        dict(near_chance=0.9, plateau_threshold=0.5), 1, [1e-12] * 4, ("plateau, but the lr holds", 3),
        lambda done: done["lr_drops"] == 0 and done["stopped"] == "max_epochs",
    ),
    "for no first drop before 3 of 4 epochs": (
        dict(drop_not_before=(0.75,)), 1, [1e-12, 1e-12, 1e-12, 1e-13], ("; no drop 1 before 3 epochs)", 1),
        lambda done: done["drop_epochs"][0] == 2,
    ),
    "for a drop by half of the epochs, with a patience the curve never reaches": (
        dict(drop_deadlines=(0.5,)), 10, [1e-12, 1e-12, 1e-13, 1e-13], ("(drop 1 is due after 2 of 4 epochs)", 1),
        lambda done: done["lr_drops"] == 1 and done["drop_epochs"] == done["deadline_drop_epochs"] == [1] and done["stopped"] == "max_epochs",
    ),
}


@pytest.mark.parametrize("guard", SCHEDULE_GUARDS)
def test_the_profiles_schedule_guards_act_in_training(guard, ci_data, tmp_path, monkeypatch):
    import vgg.training.train as training
    from vgg.recipe.profiles import get_profile

    changes, patience, expected_rates, (line, count), check_done = SCHEDULE_GUARDS[guard]
    monkeypatch.setattr(training, "get_profile", lambda name: replace(get_profile("ci"), **changes))
    done = train(config(ci_data, epochs=4, lr=1e-12, plateau_patience=patience), tmp_path / "flat")
    rates = [float(row["lr"]) for row in csv.DictReader(open(tmp_path / "flat" / "metrics.csv"))]
    assert rates == pytest.approx(expected_rates, rel=1e-6, abs=0) and check_done(done)
    assert (tmp_path / "flat" / "train.log").read_text().count(line) == count


def test_an_fc_only_fine_tune_of_a_parent_run_keeps_its_conv_layers(ci_data, tmp_path):
    # the ILSVRC submission's multi-scale D: fine-tuned from D-384 on its FC layers only (Sect. 4.4)
    train(config(ci_data, epochs=1), tmp_path / "A-256")
    parent = weights(tmp_path / "A-256")
    done = train(config(ci_data, train_scale="256:512", init=f"from:{tmp_path / 'A-256'}", freeze="features", epochs=1), tmp_path / "A-fc")
    tuned = weights(tmp_path / "A-fc")
    assert all(torch.equal(tuned[key], parent[key]) for key in parent if key.startswith("features."))
    assert all(not torch.equal(tuned[key], parent[key]) for key in parent if key.startswith("classifier.") and key.endswith("weight"))
    assert done["steps"] > 0
    # the command line used under torchrun and SLURM carries it
    assert "--freeze features" in " ".join(train_command(config(ci_data, freeze="features", init="from:x"), tmp_path / "x"))


def test_a_frozen_fine_tune_killed_mid_epoch_resumes_to_the_uninterrupted_weights(ci_data, tmp_path):
    train(config(ci_data, epochs=1), tmp_path / "A-256")
    frozen = lambda out: cli(
        "--config", "A", "--train-scale", "384", "--data", str(ci_data), "--out", str(out), "--profile", "ci", "--init", f"from:{tmp_path / 'A-256'}",
        "--freeze", "features", "--epochs", "3", "--workers", "1", "--no-progress", "--checkpoint-steps", "2",
        "--precision", "bf16",  # each process's own --precision auto measurement could choose otherwise under load
    )
    reference = subprocess.run(frozen(tmp_path / "reference"), cwd=ROOT, capture_output=True, text=True)
    assert reference.returncode == 0, reference.stderr
    kill_mid_epoch(frozen(tmp_path / "killed"), tmp_path / "killed", cwd=ROOT)
    resumed = subprocess.run(frozen(tmp_path / "killed"), cwd=ROOT, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stdout
    assert_same_weights(weights(tmp_path / "reference"), weights(tmp_path / "killed"))
    assert_same_weights({k: v for k, v in weights(tmp_path / "killed").items() if k.startswith("features.")},
                        {k: v for k, v in weights(tmp_path / "A-256").items() if k.startswith("features.")})


def test_freeze_and_lrn_settings_are_checked(ci_data, tmp_path):
    with pytest.raises(ValueError, match="--freeze features trains the FC layers of a trained net"):
        train(config(ci_data, freeze="features"), tmp_path / "random-frozen")
    with pytest.raises(ValueError, match="--lrn-alpha applies to configurations with LRN \\(A-LRN\\); A has none"):
        train(config(ci_data, lrn_alpha=1e-4), tmp_path / "A-alpha")
    train(config(ci_data, config="A-LRN", lrn_alpha=1e-4, epochs=1), tmp_path / "A-LRN")
    model = load_net(checkpoint=tmp_path / "A-LRN").model
    lrn = [module for module in model.features if isinstance(module, torch.nn.LocalResponseNorm)]
    assert model.spec.lrn_alpha == 1e-4 and [module.alpha for module in lrn] == [1e-4]


@pytest.fixture(scope="module")
def parent_b(ci_data, tmp_path_factory) -> Path:
    """A finished one-epoch ci run of B: a parent that deeper nets may not start from."""
    run = tmp_path_factory.mktemp("parents") / "B"
    train(config(ci_data, epochs=1, config="B"), run)
    return run


def _torn(run: Path, parent: Path) -> None:
    run.mkdir()
    (run / "checkpoint.pt").write_bytes(b"PK\x03\x04 not really a checkpoint")


def _unfinished_copy(run: Path, parent: Path) -> None:
    shutil.copytree(parent, run)
    (run / "DONE").unlink()


BAD_RUNS = {  # what is wrong: (the run's settings, how its folder is prepared, the error)
    "a parent neither A nor of the same configuration": (dict(config="D", init="from:{B}"), None, "same configuration \\(fine-tuning\\) or a net A; .* is B"),
    "a parent that does not exist": (dict(config="D", init="from:{nowhere}"), None, "does not exist"),
    "a parent of another width": (dict(config="B", profile="smoke", init="from:{B}", epochs=1), None, "cannot fine-tune .* width=8"),
    "a torn checkpoint in the run folder": ({}, _torn, "checkpoint .*/checkpoint.pt is truncated or corrupt"),
    "another run's checkpoint in the run folder": (
        dict(config="D", epochs=1), _unfinished_copy, "holds the checkpoint of an unfinished run with other settings \\(config B -> D"
    ),
    "an unknown init": (dict(init="kaiming"), None, "--init must be random, paper, glorot or from:RUN, got .kaiming."),
    "an accumulation that does not divide the batch": (dict(accum=3), None, "does not split evenly over 1 process\\(es\\) x 3"),
}


@pytest.mark.parametrize("case", BAD_RUNS)
def test_bad_parents_checkpoints_and_settings_are_clear_errors(case, ci_data, parent_b, tmp_path):
    overrides, prepare, error = BAD_RUNS[case]
    overrides = {key: value.format(B=parent_b, nowhere=tmp_path / "nowhere") if isinstance(value, str) else value for key, value in overrides.items()}
    run = tmp_path / "run"
    if prepare is not None:
        prepare(run, parent_b)
    with pytest.raises(ValueError, match=error):
        train(config(ci_data, **overrides), run)


def test_nan_stops_at_once_keeping_the_last_good_checkpoint(ci_data, tmp_path):
    run = tmp_path / "diverges"
    with pytest.raises(NonFiniteLossError, match=r"NaN or infinite at step \d+ .* learning rate 1e\+06; training stopped. The last good checkpoint"):
        train(config(ci_data, lr=1e6, epochs=3, checkpoint_steps=1), run)
    kept = load_checkpoint(run)
    assert all(torch.isfinite(value).all() for value in kept["model"].values() if value.is_floating_point())
    assert read_done(run) is None


def test_nan_before_any_checkpoint_does_not_promise_one(ci_data, tmp_path):
    run = tmp_path / "diverges"
    with pytest.raises(NonFiniteLossError, match="training stopped. No checkpoint had been written yet: the run starts again from its beginning"):
        train(config(ci_data, lr=1e6, epochs=3, sync_every=1), run)
    assert not (run / CHECKPOINT_NAME).exists()


def test_the_per_epoch_validation_is_the_centre_crop_protocol_at_the_single_test_scale(ci_data, tmp_path):
    """Training's validation (rescale to Q, central crop, no flip, the run's normalisation) gives the
    errors of evaluate's centre-crop protocol, and feeds the net exactly what that protocol feeds it."""
    from vgg.data.datasets import load_split
    from vgg.runtime.distributed import DistributedContext
    from vgg.evaluation.evaluate import evaluate
    from vgg.nets.models import VGG
    from vgg.nets.trained import Net
    from vgg.data.normalization import get_normalization
    from vgg.recipe.profiles import get_profile
    from vgg.training.validation import Validation

    done = train(config(ci_data, epochs=1, seed=3), tmp_path / "run")
    val_images = load_split(str(ci_data), "val")
    result = evaluate(load_net(checkpoint=tmp_path / "run"), val_images, "centre-crop", [256], flip=False, workers=0)
    assert (done["val_top1_err"], done["val_top5_err"]) == (pytest.approx(result.top1_err, abs=1e-3), pytest.approx(result.top5_err, abs=1e-3))
    profile, normalization = get_profile("ci"), get_normalization("mean-rgb")
    assert f"val (24 images, centre crop at Q={profile.size(256)})" in (tmp_path / "run" / "train.log").read_text()  # Q = S = 256
    # what the net is fed: the same images, rescaled, cropped and normalised alike, and nothing else (no mirrors)

    class Recording(VGG):
        def forward(self, x):
            self.inputs.append(x.detach().clone())
            return super().forward(x)

    model = Recording("A", num_classes=4, width=profile.width, crop=profile.crop, init="glorot")
    model.inputs = []
    validation = Validation(val_images, None, profile.size(256), profile.crop, normalization, DistributedContext(), batch=8, workers=0)
    errors = validation.errors(model, torch.device("cpu"))
    fed_in_training, model.inputs = torch.cat(model.inputs), []
    net = Net(model, normalization, profile, tmp_path / "untrained.pt", "untrained", "256", val_images.classes)
    evaluated = evaluate(net, val_images, "centre-crop", [256], flip=False, workers=0)
    fed_in_evaluation = torch.cat(model.inputs)
    assert fed_in_training.shape == fed_in_evaluation.shape == (len(val_images), 3, profile.crop, profile.crop)
    by_sum = lambda batch: batch[batch.flatten(1).sum(1).argsort()]  # noqa: E731 (the same images, in any order)
    torch.testing.assert_close(by_sum(fed_in_training), by_sum(fed_in_evaluation), rtol=0, atol=1e-5)
    assert errors[0] == pytest.approx(evaluated.top1_err) and errors[2] == len(val_images)
