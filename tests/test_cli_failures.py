"""The failure modes the command line (`vgg.cli`, `python -m vgg`) promises to handle: each ends
with one clear line (no traceback), the documented exit status (2 bad input, 75 preemption, 130
Ctrl-C), and nothing already written lost. One test per promise, in the order of README's "When
things go wrong"."""

from __future__ import annotations

import csv
import errno
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from tests.conftest import meta_model
from tests.helpers_processes import children_of, group_killed_at_the_end, processes_in_group, sigkill_leaves_no_process
from vgg.cli import main
from vgg.data.datasets import ImageList, Samples, missing_classes_warning
from vgg.data.loaders import BadImageError, bad_image_error, read_image
from vgg.data.normalization import PAPER_MEAN_RGB
from vgg.data.transforms import MAX_SCALE
from vgg.evaluation.protocols import check_test_scales, dense_memory_bytes
from vgg.nets.trained import Net
from vgg.recipe.profiles import get_profile
from vgg.runtime.checkpoint import CHECKPOINT_NAME, DAMAGED, load_checkpoint, read_done
from vgg.runtime.stop_signals import EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_PREEMPTED, Preempted, StopRequests
from vgg.suite.kill_resume import wait_for

ROOT = Path(__file__).resolve().parent.parent


def train_argv(data: Path, out: Path, *extra: str) -> list[str]:
    return [
        "train", "--config", "A", "--train-scale", "256", "--data", str(data), "--out", str(out), "--profile", "ci",
        "--init", "glorot", "--epochs", "2", "--no-progress", *extra,
    ]


def corrupt(path: Path) -> str:
    """Overwrite an image with bytes no decoder reads; the decoder's one-line complaint."""
    path.write_bytes(b"not an image")
    with pytest.raises(BadImageError) as caught:
        read_image(path)
    return str(caught.value)


@pytest.fixture
def data(ci_data, tmp_path) -> Path:
    """A copy of the ci dataset that a test may damage."""
    return Path(shutil.copytree(ci_data, tmp_path / "data"))


@pytest.fixture(scope="module")
def trained_run(ci_data, tmp_path_factory) -> Path:
    """A finished one-epoch ci run of A."""
    out = tmp_path_factory.mktemp("runs") / "A-256"
    assert main(train_argv(ci_data, out, "--epochs", "1", "--workers", "0")) == 0
    return out


def first_image(data: Path, split: str) -> Path:
    return sorted((data / split).glob("*/*"))[0]


@pytest.fixture(scope="module")
def scores(trained_run, tmp_path_factory) -> Path:
    """The net's score file (evaluate --save-scores)."""
    path = tmp_path_factory.mktemp("scores") / "A-256.pt"
    assert main(["evaluate", "--checkpoint", str(trained_run), "--workers", "0", "--save-scores", str(path)]) == 0
    return path


@pytest.fixture
def results(tmp_path) -> Path:
    """A results CSV written before the failing command."""
    path = tmp_path / "results.csv"
    path.write_text(ROWS)
    return path


@pytest.fixture
def image(ci_data) -> Path:
    return next((ci_data / "val").rglob("*.JPEG"))


def error_of(capsys, argv: list[str]) -> str:
    """The whole stderr of a command that must exit with 2 (bad input)."""
    assert main(argv) == EXIT_BAD_INPUT
    return capsys.readouterr().err


def fails_with(capsys, argv: list[str], line: str) -> None:
    """The command exits with 2 and its whole stderr is `error: <line>`."""
    assert error_of(capsys, argv) == f"error: {line}\n"


Q_100000_ON_CI = (
    "test scale 100000 is above the limit of 1024 (paper units; the paper tests at 224 to 512): densely evaluating "
    "one 4:3 image at Q = 100000 (14286 px on the ci profile) takes about 18.2 GB; pass --max-scale 100000 to allow it"
)
"""14286 x 19048 px x (3 bytes + 2 maps x 2 flips x 4 channels x 4 bytes) = 18.2 GB."""
SCORES_HINT = "(python -m vgg evaluate --save-scores FILE writes them)"
ROWS = "profile,run,top1_err\nci,A-256,50.0\n"


# ----- 1. unreadable training images skipped with --skip-bad-images -------------------------------
def test_skipped_training_images_are_listed_every_epoch_and_counted_in_the_metrics(data, tmp_path, capsys):
    bad = first_image(data, "train")
    corrupt(bad)  # replaces a good image: every epoch's batches then cover every image, the bad one too
    run = tmp_path / "run"
    assert main(train_argv(data, run, "--workers", "0", "--skip-bad-images")) == 0
    listing = [f"skipped 1 unreadable image(s) in epoch {epoch} (--skip-bad-images):\n  {bad}" for epoch in (0, 1)]
    out, log = capsys.readouterr().out, (run / "train.log").read_text()
    assert all(out.count(text) == 1 and log.count(text) == 1 for text in listing)
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert [row["skipped_images"] for row in rows] == ["1", "1"]


def test_file_and_class_names_that_are_not_utf8_are_read_and_listed(data, tmp_path, capsys):
    """A Latin-1 byte made valid images 'undecodable' (torchvision's reader takes only UTF-8 names), and
    the skip list then failed to write."""
    folder = first_image(data, "train").parent
    good, bad = sorted(folder.iterdir())[:2]
    os.rename(good, os.fsencode(folder) + b"/caf\xe9_good.JPEG")
    os.rename(bad, os.fsencode(folder) + b"/caf\xe9_bad.JPEG")
    corrupt(Path(os.fsdecode(os.fsencode(folder) + b"/caf\xe9_bad.JPEG")))
    for split in ("train", "val"):
        os.rename(os.fsencode(data / split) + b"/n90000001", os.fsencode(data / split) + b"/n9000000\xe9")
    run = tmp_path / "run"
    assert main(train_argv(data, run, "--workers", "1", "--skip-bad-images", "--epochs", "1")) == 0
    listed = f"skipped 1 unreadable image(s) in epoch 0 (--skip-bad-images):\n  {folder}/caf\\xe9_bad.JPEG\n"
    assert listed in capsys.readouterr().out and listed in (run / "train.log").read_text()
    assert main(["evaluate", "--checkpoint", str(run), "--workers", "1"]) == 0


def png_file(width: int, height: int, rows: bytes) -> bytes:
    """A PNG (8-bit RGB) declaring width x height, with `rows` (filter bytes and pixels) as its image data."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def jpeg_declaring(width: int, height: int) -> bytes:
    """A valid 8 x 8 JPEG whose frame header is rewritten to declare width x height (an image bomb)."""
    import io
    import struct

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(buffer, "JPEG")
    data = bytearray(buffer.getvalue())
    frame = data.find(b"\xff\xc0")
    data[frame + 5 : frame + 9] = struct.pack(">HH", height, width)
    return bytes(data)


BOMB_REASON = (
    "it declares 30000 x 30000 pixels, above the limit of 89,478,485 (--max-image-pixels N raises it). Replace or remove the "
    "file, or pass --skip-bad-images to skip unreadable images (they are counted and listed at the end of each epoch)"
)


@pytest.mark.parametrize("kind", ["JPEG", "PNG"])
def test_an_image_bomb_is_refused_before_it_is_decoded(tmp_path, kind):
    path = tmp_path / f"bomb.{kind.lower()}"
    path.write_bytes(jpeg_declaring(30000, 30000) if kind == "JPEG" else png_file(30000, 30000, b"\x00" * 1000))
    with pytest.raises(BadImageError) as caught:
        read_image(path)
    assert str(caught.value) == f"cannot decode image {path}: {BOMB_REASON}"


def test_max_image_pixels_raises_the_limit_for_the_command_only(tmp_path, capsys, trained_run, monkeypatch):
    image = tmp_path / "wide.png"
    image.write_bytes(png_file(64, 40, (b"\x00" + b"\x80" * 64 * 3) * 40))  # 2,560 pixels
    monkeypatch.setenv("VGG_MAX_IMAGE_PIXELS", "2000")
    assert main(["predict", str(image), "--checkpoint", str(trained_run)]) == EXIT_BAD_INPUT
    assert "it declares 64 x 40 pixels, above the limit of 2,000 (--max-image-pixels N raises it)" in capsys.readouterr().err
    assert main(["predict", str(image), "--checkpoint", str(trained_run), "--max-image-pixels", "3000"]) == 0
    assert os.environ["VGG_MAX_IMAGE_PIXELS"] == "2000"


def test_a_png_with_too_little_image_data_is_a_bad_image_not_a_crash(data, tmp_path, capsys):
    """libpng under torchvision's decoder segfaulted on it (exit 139; --skip-bad-images did not help)."""
    bad = first_image(data, "train")
    bad.write_bytes(png_file(1000, 1000, b"\x00" * 100))
    run = tmp_path / "run"
    assert main(train_argv(data, run, "--workers", "1", "--skip-bad-images", "--epochs", "1")) == 0
    assert f"skipped 1 unreadable image(s) in epoch 0 (--skip-bad-images):\n  {bad}\n" in capsys.readouterr().out


# ----- 2. errors raised in loader workers -------------------------------------------------------
def test_a_bad_training_image_read_by_a_loader_worker_is_one_line(data, tmp_path, capsys):
    reason = corrupt(first_image(data, "train"))
    fails_with(capsys, train_argv(data, tmp_path / "run", "--workers", "1"), reason)


def test_a_bad_val_image_read_by_a_loader_worker_in_evaluate_is_one_line(trained_run, data, capsys):
    reason = corrupt(first_image(data, "val"))
    fails_with(capsys, ["evaluate", "--checkpoint", str(trained_run), "--data", str(data), "--workers", "1"], reason)


def test_a_run_that_errors_with_a_loader_worker_exits_and_leaves_no_process(data, tmp_path):
    """The main process used to wait forever at exit for a worker that ignored the SIGTERM sent to it
    (a bad image, a full disk or an out-of-range scale, with the default worker count or 1)."""
    corrupt(first_image(data, "train"))
    command = [sys.executable, "-m", "vgg", *train_argv(data, tmp_path / "run", "--workers", "1")]
    started = subprocess.Popen(command, cwd=ROOT, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with group_killed_at_the_end(started) as process:  # hung: nothing left behind for the next test
        _, stderr = process.communicate(timeout=180)
        assert process.returncode == EXIT_BAD_INPUT, stderr[-3000:]
        assert stderr.splitlines()[-1].startswith("error: "), stderr[-3000:]
        wait_for(lambda: not processes_in_group(process.pid), timeout=10)


def test_a_data_generation_killed_with_sigkill_leaves_no_worker_behind(tmp_path):
    """Its 2 workers lived on for over 10 minutes (under the runner, holding the runs folder's lock)."""
    command = [sys.executable, "-m", "vgg", "data", "synth", "--out", str(tmp_path / "set"), "--train-per-class", "100", "--workers", "2"]
    with group_killed_at_the_end(subprocess.Popen(command, cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)) as process:
        wait_for(lambda: len(children_of(process.pid)) == 2, timeout=120)
        sigkill_leaves_no_process(process, within=3)
    assert not (tmp_path / "set").exists()


# ----- 3. test scales, bounded before anything is allocated ---------------------------------------
def test_evaluate_refuses_a_test_scale_above_the_limit_naming_the_memory_and_the_flag(trained_run, results, capsys):
    fails_with(capsys, ["evaluate", "--checkpoint", str(trained_run), "--scales", "256,100000", "--out", str(results)], Q_100000_ON_CI)
    assert results.read_text() == ROWS


def test_predict_refuses_a_test_scale_above_the_limit(trained_run, image, capsys):
    fails_with(capsys, ["predict", str(image), "--checkpoint", str(trained_run), "--scales", "100000"], Q_100000_ON_CI)


def test_test_scales_must_be_positive(trained_run, image, capsys):
    line = "test scale 0 is not positive: give the shorter image side in paper units, e.g. 256,384,512"
    fails_with(capsys, ["evaluate", "--checkpoint", str(trained_run), "--scales", "256,0"], line)
    fails_with(capsys, ["predict", str(image), "--checkpoint", str(trained_run), "--scales", "0"], line)


def test_max_scale_raises_the_limit_for_evaluate_and_predict(trained_run, image, capsys):
    too_large = (
        "test scale 1100 is above the limit of 1024 (paper units; the paper tests at 224 to 512): densely evaluating "
        "one 4:3 image at Q = 1100 (157 px on the ci profile) takes about 2 MB; pass --max-scale 1100 to allow it"
    )
    evaluate = ["evaluate", "--checkpoint", str(trained_run), "--scales", "1100", "--limit", "4", "--workers", "0"]
    fails_with(capsys, evaluate, too_large)
    assert main([*evaluate, "--max-scale", "1100"]) == 0
    assert "at Q=1100" in capsys.readouterr().out
    predict = ["predict", str(image), "--checkpoint", str(trained_run), "--scales", "1100"]
    fails_with(capsys, predict, too_large)
    assert main([*predict, "--max-scale", "1100"]) == 0
    assert capsys.readouterr().out.startswith(f"{image}: ")


@pytest.mark.parametrize(
    "scale, line",
    [
        ("100000", "training scale 100000 is above the limit of 1024 (paper units; the paper trains at 256 to 512): every "
                   "training image is rescaled to it, and memory grows as its square; pass --max-scale 100000 to allow it"),
        ("256:2000", "training scale 256:2000 is above the limit of 1024 (paper units; the paper trains at 256 to 512): every "
                     "training image is rescaled to it, and memory grows as its square; pass --max-scale 2000 to allow it"),
        ("100", "training scale 100 is below the crop of 224 (paper units): S is the shorter side an image is rescaled to "
                "before a 224 crop is taken from it; give S >= 224, e.g. 256 or 256:512"),
    ],
)
def test_train_refuses_a_training_scale_out_of_bounds_before_the_run_folder_exists(ci_data, tmp_path, capsys, scale, line):
    argv = train_argv(ci_data, tmp_path / "run", "--workers", "1")
    argv[argv.index("--train-scale") + 1] = scale
    fails_with(capsys, argv, line)
    assert not (tmp_path / "run").exists()


def test_max_scale_raises_the_training_scale_limit(ci_data, tmp_path, capsys):
    argv = train_argv(ci_data, tmp_path / "run", "--epochs", "1", "--workers", "0")
    argv[argv.index("--train-scale") + 1] = "1100"
    assert main(argv) == EXIT_BAD_INPUT
    assert main([*argv, "--max-scale", "1100"]) == 0
    assert "at S=1100 (pixels 157)" in capsys.readouterr().out


def test_the_paper_scales_pass_and_the_memory_estimate_is_the_first_block_at_full_resolution():
    net = Net(meta_model(config="D"), PAPER_MEAN_RGB, get_profile("paper"), Path("net.pt"), "net", "256:512", None)
    check_test_scales(net, [224, 256, 288, 352, 384, 416, 512])  # every Q of the paper (the runner's)
    assert MAX_SCALE == 1024
    # 512 x 682 px: 3 bytes of image + 2 maps x 2 (mirror) x 64 channels x 4 bytes per pixel
    assert dense_memory_bytes(net, 512) == 512 * 682 * (3 + 2 * 2 * 64 * 4) == 358_611_968


# ----- 4. a full disk -----------------------------------------------------------------------------
class FullDisk:
    """A file whose writes fail with ENOSPC once `room` bytes are written (the patched writer of
    `vgg.runtime.checkpoint`'s atomic writes)."""

    def __init__(self, handle: int, room: int):
        self.file, self.room = os.fdopen(handle, "wb"), room

    def write(self, data) -> int:
        self.room -= len(data)
        if self.room < 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        return self.file.write(data)

    def __getattr__(self, name):
        return getattr(self.file, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.file.close()


def full_disk_for(monkeypatch, name: str, after: int = 0) -> None:
    """Writes of files called `name` find the disk full, after `after` of them succeeded."""
    import vgg.runtime.checkpoint

    opened = vgg.runtime.checkpoint._open_for_writing
    calls = {"n": 0}

    def open_for_writing(handle: int):
        if Path(os.readlink(f"/proc/self/fd/{handle}")).name.startswith(f".{name}."):
            calls["n"] += 1
            if calls["n"] > after:
                return FullDisk(handle, room=0)
        return opened(handle)

    monkeypatch.setattr(vgg.runtime.checkpoint, "_open_for_writing", open_for_writing)


NO_SPACE = r"no space left on the disk holding {folder} to write {name} \(about [\d,]+ [kM]B to write, [\d,]+ [kM]B free now\); free some space \(or write elsewhere\) and run the same command again: the previous {name}, if any, is kept"


def test_a_full_disk_error_gives_the_size_and_the_free_space_in_one_unit(tmp_path, monkeypatch):
    """'needed about 902 kB, 1 MB free' read as a contradiction."""
    from vgg.runtime.checkpoint import disk_full_error

    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9 - 1_045_000, 1_045_000))
    assert "(about 902 kB to write, 1,045 kB free now)" in str(disk_full_error(tmp_path / "metrics.csv", 902_000))
    assert "(about 640 MB to write, 1,045 kB free now)" in str(disk_full_error(tmp_path / "checkpoint.pt", 640_000_000))


def test_a_full_disk_while_checkpointing_is_one_line_and_keeps_the_previous_checkpoint(ci_data, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    full_disk_for(monkeypatch, CHECKPOINT_NAME, after=1)  # the end of epoch 0 is saved, the end of epoch 1 is not
    error = error_of(capsys, train_argv(ci_data, run, "--workers", "0"))
    assert re.fullmatch("error: " + NO_SPACE.format(folder=re.escape(str(run)), name=re.escape(CHECKPOINT_NAME)) + "\n", error), error
    assert load_checkpoint(run)["epoch"] == 1 and read_done(run) is None
    assert not list(run.glob(".checkpoint.pt.*"))  # no temporary file left behind


def test_a_full_disk_while_writing_results_and_reports_keeps_the_previous_files(tmp_path, monkeypatch):
    from vgg.runtime.checkpoint import DiskFullError
    from vgg.suite.reports import write_report
    from vgg.suite.results_csv import upsert_rows

    results = tmp_path / "table3.csv"
    upsert_rows(results, [{"profile": "ci", "run": "A-256", "top1_err": 50.0}])
    report = write_report("table1", tmp_path, "ci", tmp_path, None)
    before = results.read_bytes(), report.read_bytes()
    full_disk_for(monkeypatch, results.name)
    full_disk_for(monkeypatch, report.name)
    with pytest.raises(DiskFullError, match=NO_SPACE.format(folder=re.escape(str(tmp_path)), name=results.name)):
        upsert_rows(results, [{"profile": "ci", "run": "B-256", "top1_err": 40.0}])
    with pytest.raises(DiskFullError, match=NO_SPACE.format(folder=re.escape(str(tmp_path)), name=report.name)):
        write_report("table1", tmp_path, "ci", tmp_path, None)
    assert (results.read_bytes(), report.read_bytes()) == before


# ----- 5. Ctrl-C ----------------------------------------------------------------------------------
def test_ctrl_c_checkpoints_prints_one_line_and_exits_130(ci_data, tmp_path):
    """SIGINT to the whole process group, as a terminal sends it (the loader worker gets it too)."""
    run = tmp_path / "run"
    command = [sys.executable, "-m", "vgg", *train_argv(ci_data, run, "--epochs", "50", "--workers", "1")]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    wait_for(lambda: (run / "metrics.csv").exists() or process.poll() is not None)
    os.killpg(process.pid, signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == EXIT_INTERRUPTED and stderr == ""
    last = stdout.splitlines()[-1]
    assert re.fullmatch(r"interrupted \(Ctrl-C\): checkpoint at epoch \d+, step \d+; exit 130 \(run the same command to resume\)", last)
    epoch, step = map(int, re.findall(r"\d+", last)[:2])
    checkpoint = load_checkpoint(run)
    assert (checkpoint["epoch"], checkpoint["step_in_epoch"]) == (epoch, step) and epoch >= 1 and read_done(run) is None
    assert len(list(csv.DictReader(open(run / "metrics.csv")))) == epoch  # the finished epochs' rows are kept


def test_a_second_ctrl_c_stops_at_once_and_other_signals_wait_for_the_checkpoint(monkeypatch):
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)  # stopping at once quiets them for the process's end
    monkeypatch.setattr(threading, "excepthook", threading.excepthook)
    before = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}  # a shell's background job starts with SIGINT ignored
    with StopRequests() as stop:
        stop.deferred = True
        signal.raise_signal(signal.SIGTERM)
        signal.raise_signal(signal.SIGTERM)  # preemption is never hurried: the checkpoint comes first
        assert stop.raised and stop.exit_code == EXIT_PREEMPTED
        signal.raise_signal(signal.SIGINT)
        assert stop.exit_code == EXIT_INTERRUPTED
        with pytest.raises(Preempted) as stopped:
            signal.raise_signal(signal.SIGINT)
    assert (stopped.value.exit_code, stopped.value.saved) == (EXIT_INTERRUPTED, False)
    assert not isinstance(stopped.value, Exception)  # code under way with `except Exception` lets it through
    assert {signum: signal.getsignal(signum) for signum in before} == before  # the previous handlers are back


# ----- 6. preemption during start-up --------------------------------------------------------------
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1])
def test_preemption_while_the_dataset_is_listed_exits_75_with_nothing_to_save(ci_data, tmp_path, monkeypatch, capsys, signum):
    import vgg.training.train

    listed = vgg.training.train.load_split

    def slow_listing(data, split):
        signal.raise_signal(signum)  # what SLURM sends while a large dataset is being listed
        return listed(data, split)

    monkeypatch.setattr(vgg.training.train, "load_split", slow_listing)
    run = tmp_path / "run"
    assert main(train_argv(ci_data, run, "--workers", "0")) == EXIT_PREEMPTED
    name = signal.Signals(signum).name
    line = f"preempted ({name}) during start-up, before training began: nothing to save; exit 75 (run the same command to start again)"
    captured = capsys.readouterr()
    assert captured.out == f"{line}\n" and captured.err == ""
    assert not (run / CHECKPOINT_NAME).exists()


def test_preemption_while_a_checkpoint_loads_is_not_taken_for_a_damaged_file(trained_run, ci_data, tmp_path, monkeypatch, capsys):
    """The resumed checkpoint of a large net takes a while to load: a signal then must not read as
    "truncated or corrupt" (which would tell the user to remove a good checkpoint)."""
    run = copy_run(trained_run, tmp_path)
    (run / "DONE").unlink()
    before = (run / CHECKPOINT_NAME).read_bytes()
    loads = torch.load

    def slow_load(*args, **kwargs):
        signal.raise_signal(signal.SIGTERM)
        return loads(*args, **kwargs)

    monkeypatch.setattr(torch, "load", slow_load)
    assert main(train_argv(ci_data, run, "--epochs", "1", "--workers", "0")) == EXIT_PREEMPTED
    line = "preempted (SIGTERM) during start-up, before training began: nothing to save; exit 75 (run the same command to start again)"
    assert capsys.readouterr().out.splitlines()[-1] == line
    assert (run / CHECKPOINT_NAME).read_bytes() == before


def test_a_stop_asked_during_the_last_validation_stops_the_command_after_the_run_is_done(ci_data, tmp_path, monkeypatch, capsys):
    """Nothing is left to checkpoint, but the command (e.g. a runner with more runs to train) stops."""
    from vgg.training.validation import Validation

    validate, validations = Validation.errors, []

    def interrupted_validation(self, *args):
        validations.append(1)
        if len(validations) == 2:  # the run's last epoch (--epochs 2)
            signal.raise_signal(signal.SIGINT)
        return validate(self, *args)

    monkeypatch.setattr(Validation, "errors", interrupted_validation)
    run = tmp_path / "run"
    assert main(train_argv(ci_data, run, "--workers", "0")) == EXIT_INTERRUPTED
    assert capsys.readouterr().out.splitlines()[-1] == "interrupted (Ctrl-C): the run had finished (DONE written); exit 130"
    assert read_done(run) is not None


def test_preemption_while_python_starts_exits_75(tmp_path):
    """Before torch is imported: `python -m vgg` catches the signals first."""
    process = subprocess.Popen([sys.executable, "-m", "vgg", "params"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: _catches_sigterm(process.pid), timeout=30)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == EXIT_PREEMPTED
    assert stderr == "preempted (SIGTERM): stopped at once, exit 75; files are written atomically, so each is whole or absent: run the same command to go on\n"


SIGTERM_DURING_NUMPYS_IMPORT = """
import os, runpy, signal, sys
def send_once(event, args):
    if event == "import" and args[0] == "numpy._core._add_newdocs" and not getattr(send_once, "sent", False):
        send_once.sent = True
        os.kill(os.getpid(), signal.SIGTERM)
sys.addaudithook(send_once)
sys.argv = ["vgg", "params"]
runpy.run_module("vgg", run_name="__main__", alter_sys=True)
"""


def test_a_stop_signal_during_an_import_is_not_lost(tmp_path):
    """A handler raising inside numpy's import was caught there: the signal was lost (the run trained on) or
    left numpy half-imported (a RecursionError traceback, exit 1). The signal now waits for the import to end."""
    result = subprocess.run([sys.executable, "-c", SIGTERM_DURING_NUMPYS_IMPORT], cwd=ROOT, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == EXIT_PREEMPTED, result.stderr[-3000:]
    assert result.stderr == "preempted (SIGTERM): stopped at once, exit 75; files are written atomically, so each is whole or absent: run the same command to go on\n"


def _catches_sigterm(pid: int) -> bool:
    """Whether process `pid` has a handler for SIGTERM (bit 15 of SigCgt in /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (signal.SIGTERM - 1) & 1)
    return False


# ----- 7. damaged or foreign checkpoint files -----------------------------------------------------
def copy_run(trained_run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(trained_run, tmp_path / "run"))


def test_a_truncated_checkpoint_says_so_and_what_to_do(trained_run, ci_data, tmp_path, capsys):
    run = copy_run(trained_run, tmp_path)
    (run / "DONE").unlink()
    checkpoint = run / CHECKPOINT_NAME
    checkpoint.write_bytes(checkpoint.read_bytes()[:5000])
    error = error_of(capsys, train_argv(ci_data, run, "--epochs", "1", "--workers", "0"))
    advice = f"it was {DAMAGED}: move it out of {run}, then run the same command to train the run from its start"
    assert re.fullmatch(rf"error: checkpoint {re.escape(str(checkpoint))} is truncated or corrupt \(\w+: [^\n]+\); {re.escape(advice)}\n", error), error
    # the advice followed: the run starts again, and its metrics are not appended to the earlier start's
    earlier = (run / "metrics.csv").read_text()
    checkpoint.rename(tmp_path / "damaged.pt")
    assert main(train_argv(ci_data, run, "--epochs", "1", "--workers", "0")) == 0
    assert [row["epoch"] for row in csv.DictReader(open(run / "metrics.csv"))] == ["0"]
    assert (run / "metrics-earlier-start.csv").read_text() == earlier


def test_an_empty_checkpoint_says_so_and_what_to_do(trained_run, tmp_path, capsys):
    run = copy_run(trained_run, tmp_path)
    (run / CHECKPOINT_NAME).write_bytes(b"")
    line = f"checkpoint {run / CHECKPOINT_NAME} is empty (0 bytes); it was {DAMAGED}: remove {run} and train that run again"
    fails_with(capsys, ["evaluate", "--checkpoint", str(run), "--workers", "0"], line)


def test_a_torchvision_state_dict_passed_as_checkpoint_points_to_weights(trained_run, tmp_path, capsys):
    weights = tmp_path / "vgg11.pth"
    torch.save(load_checkpoint(trained_run)["model"], weights)
    fails_with(
        capsys,
        ["evaluate", "--checkpoint", str(weights), "--workers", "0"],
        f"{weights} is a state dict of weights (torchvision's format), not a training run's checkpoint "
        "(--checkpoint takes a run folder or its checkpoint.pt); use --weights for a torchvision state dict"
    )


def test_a_score_file_in_a_run_folder_is_named_as_one(trained_run, ci_data, tmp_path, capsys):
    run = copy_run(trained_run, tmp_path)
    (run / "DONE").unlink()
    assert main(["evaluate", "--checkpoint", str(trained_run), "--workers", "0", "--save-scores", str(run / CHECKPOINT_NAME)]) == 0
    capsys.readouterr()
    fails_with(
        capsys,
        train_argv(ci_data, run, "--epochs", "1", "--workers", "0"),
        f"{run / CHECKPOINT_NAME} is a score file (python -m vgg evaluate --save-scores writes them), not a training run's "
        f"checkpoint (the run's own checkpoint, to resume from); move it out of {run}, then run the same command to train the run from its start"
    )


# ----- 8. checkpoints that hold code ------------------------------------------------------------
class RunsACommand:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_checkpoint_holding_code_is_refused_plainly_without_advice_to_disable_the_check(tmp_path, capsys):
    marker, planted = tmp_path / "it-ran", tmp_path / "checkpoint.pt"
    torch.save({"spec": {}, "model": RunsACommand(marker)}, planted)
    fails_with(
        capsys,
        ["evaluate", "--checkpoint", str(planted), "--workers", "0"],
        f"refusing to load {planted}: besides tensors it holds a Python object (posix.system), and loading one can run any code; "
        "this suite loads only tensors, numbers and strings. Use a checkpoint this suite wrote, or a plain state dict of tensors"
    )
    assert not marker.exists()


# ----- 9. errors that named the wrong problem --------------------------------------------------
def test_a_missing_dataset_is_named_before_a_runs_folder_with_other_settings(trained_run, tmp_path, capsys):
    runs = tmp_path / "runs"
    shutil.copytree(trained_run, runs / "ci" / "A-256")
    missing = tmp_path / "nonexistent"
    line = f"data folder {missing} does not exist: check the path, or pass --data DIR (make: DATA=DIR)"
    fails_with(capsys, ["run", "table3", "--profile", "ci", "--data", str(missing), "--runs", str(runs), "--no-progress"], line)


def test_a_runs_folder_with_other_settings_names_them_in_makes_terms(trained_run, ci_data, tmp_path, capsys):
    runs = tmp_path / "runs"
    run = Path(shutil.copytree(trained_run, runs / "ci" / "A-256"))
    error = error_of(capsys, ["run", "table3", "--profile", "ci", "--data", str(ci_data), "--runs", str(runs), "--no-progress", "--workers", "0"])
    assert re.fullmatch(
        rf"error: {re.escape(str(run))} holds a finished run with other settings \((\S+ \S+ -> \S+, )*epochs 1 -> \(default\)(, \S+ \S+ -> \S+)*\); "
        rf"remove {re.escape(str(run))}, or train into another folder \(vgg train --out DIR; make \.\.\. RUNS=DIR, or vgg run --runs DIR\)\n",
        error,
    ), error


def test_fuse_names_a_missing_score_file_and_what_writes_them(scores, tmp_path, results, capsys):
    missing = tmp_path / "B-256.pt"
    fails_with(capsys, ["fuse", str(scores), str(missing), "--out", str(results)], f"score file {missing} does not exist {SCORES_HINT}")
    fails_with(capsys, ["fuse", str(scores), str(tmp_path)], f"score file {tmp_path} is a folder, not a file {SCORES_HINT}")
    assert results.read_text() == ROWS


def test_fuse_refuses_a_score_file_given_twice(scores, results, capsys):
    once_more = "a fusion averages distinct nets, so give each score file once"
    fails_with(capsys, ["fuse", str(scores), str(scores), "--out", str(results)], f"score file {scores} is given twice: {once_more}")
    other_path = scores.parent / ".." / scores.parent.name / scores.name
    fails_with(capsys, ["fuse", str(scores), str(other_path)], f"score files {scores} and {other_path} are the same file: {once_more}")
    copy = Path(shutil.copy(scores, results.parent / "copy.pt"))
    fails_with(capsys, ["fuse", str(scores), str(copy), "--out", str(results)], f"score files {scores} and {copy} hold identical posteriors "
               "(one net evaluated the same way, or a copy): a fusion averages distinct evaluations, so give each once")
    assert results.read_text() == ROWS


def test_a_missing_synthetic_folder_of_a_profile_says_how_to_generate_exactly_it(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    line = (
        "data folder data/synthetic-ci does not exist: it is the ci profile's synthetic set; generate it with "
        "`python -m vgg data synth --out data/synthetic-ci --classes 4 --train-per-class 24 --val-per-class 6` "
        "(make table3 PROFILE=ci does it too)"
    )
    fails_with(capsys, ["data", "inspect", "--data", "data/synthetic-ci"], line)


def test_a_synthetic_set_whose_generation_did_not_finish_is_refused_by_train_and_run(ci_data, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(ci_data, "data/synthetic-ci")
    Path("data/synthetic-ci/.complete").unlink()
    line = (
        "data folder data/synthetic-ci is a synthetic set whose generation did not finish (no .complete): remove it and "
        "generate it again with `python -m vgg data synth --out data/synthetic-ci --classes 4 --train-per-class 24 "
        "--val-per-class 6` (make table3 PROFILE=ci does it too)"
    )
    fails_with(capsys, train_argv(Path("data/synthetic-ci"), tmp_path / "run", "--workers", "0"), line)
    fails_with(capsys, ["run", "table3", "--profile", "ci", "--runs", str(tmp_path / "runs"), "--results", str(tmp_path / "results")], line)
    shutil.copytree("data/synthetic-ci", "elsewhere")
    fails_with(capsys, train_argv(Path("elsewhere"), tmp_path / "run", "--workers", "0"), line.replace(
        "data/synthetic-ci is", "elsewhere is").split(" with `")[0] + " with `python -m vgg data synth --out ...`")


def test_another_missing_data_folder_says_to_check_the_path(tmp_path, capsys):
    missing = tmp_path / "imagenet"
    line = f"data folder {missing} does not exist: check the path, or pass --data DIR (make: DATA=DIR)"
    fails_with(capsys, ["data", "inspect", "--data", str(missing)], line)


def test_predict_names_a_missing_image(trained_run, image, tmp_path, capsys):
    missing = tmp_path / "cat.jpg"
    fails_with(capsys, ["predict", str(image), str(missing), "--checkpoint", str(trained_run)], f"image {missing} does not exist")


def test_predict_refuses_a_folder(trained_run, tmp_path, capsys):
    line = f"image {tmp_path} is a folder: pass image files (JPEG or PNG), e.g. {tmp_path}/*.jpg"
    fails_with(capsys, ["predict", str(tmp_path), "--checkpoint", str(trained_run)], line)


def test_predict_on_a_bad_image_does_not_advise_skip_bad_images(trained_run, tmp_path, capsys):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(RuntimeError) as decoder:
        torchvision.io.decode_image(torchvision.io.read_file(str(bad)))
    reason = str(decoder.value).strip().splitlines()[-1]
    reason = re.sub(r"^decode_image, \S+:\d+, ", "", reason).rstrip(".")  # without the build path of torchvision's source
    line = f"cannot decode image {bad}: {reason}. Replace the file, or leave it out of the command"
    fails_with(capsys, ["predict", str(bad), "--checkpoint", str(trained_run)], line)


def test_bad_image_error_keeps_its_default_advice():
    assert str(bad_image_error("x.jpg", RuntimeError("truncated"))) == (
        "cannot decode image x.jpg: truncated. Replace or remove the file, or pass --skip-bad-images "
        "to skip unreadable images (they are counted and listed at the end of each epoch)"
    )
    decoder = RuntimeError("decode_image, /__w/vision/torchvision/csrc/io/image/cpu/decode_image.cpp:61, Unsupported image file.")
    assert str(bad_image_error("x.jpg", decoder, "Replace it")) == "cannot decode image x.jpg: Unsupported image file. Replace it"


# ----- 10. surprises that were silent -------------------------------------------------------------
def test_evaluating_an_unfinished_run_warns_and_the_results_row_says_so(trained_run, tmp_path, capsys):
    from vgg.runtime.checkpoint import save_checkpoint

    run = copy_run(trained_run, tmp_path)
    (run / "DONE").unlink()
    state = load_checkpoint(run)
    save_checkpoint({**state, "epoch": 0, "step_in_epoch": 3}, run / CHECKPOINT_NAME)  # as a preempted run leaves it
    results = tmp_path / "results.csv"
    assert main(["evaluate", "--checkpoint", str(run), "--workers", "0", "--out", str(results)]) == 0
    warning = (
        f"warning: {run / CHECKPOINT_NAME} is the checkpoint of an unfinished run (no DONE beside it: preempted, killed or still "
        "training): these errors are of a partly trained net; the results row says training=unfinished"
    )
    assert capsys.readouterr().out.splitlines()[0] == warning
    assert [row["training"] for row in csv.DictReader(open(results))] == ["unfinished"]


def test_a_class_without_val_images_is_named_in_training_and_evaluation(data, tmp_path, capsys):
    shutil.rmtree(data / "val" / "n90000003")
    run = tmp_path / "run"
    assert main(train_argv(data, run, "--epochs", "1", "--workers", "0")) == 0
    warning = "warning: 1 of 4 classes has no val images (n90000003): its val error is not measured"
    assert warning in capsys.readouterr().out.splitlines() and warning in (run / "train.log").read_text().splitlines()
    assert main(["evaluate", "--checkpoint", str(run), "--workers", "0"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == warning


def val_split(classes: int, labels: list[int]) -> ImageList:
    names = tuple(f"n{index:02d}" for index in range(classes))
    paths = np.array([f"{names[label]}/{i}.JPEG".encode() for i, label in enumerate(labels)], dtype=np.bytes_)
    return ImageList("val", "class folders", names, Samples(Path("val"), paths, np.array(labels)), 0)


def test_classes_without_val_images_are_named_in_one_warning_line():
    val = val_split(4, [0, 0, 3])
    assert val.classes_without_images() == ["n01", "n02"]
    assert missing_classes_warning(val) == "warning: 2 of 4 classes have no val images (n01, n02): their val error is not measured"
    assert missing_classes_warning(val_split(4, [0, 1, 3])) == "warning: 1 of 4 classes has no val images (n02): its val error is not measured"
    assert missing_classes_warning(val_split(4, [0, 1, 2, 3])) is None


def test_the_warning_lists_at_most_ten_classes():
    assert missing_classes_warning(val_split(13, [12])) == (
        "warning: 12 of 13 classes have no val images (n00, n01, n02, n03, n04, n05, n06, n07, n08, n09, ...): "
        "their val error is not measured"
    )
