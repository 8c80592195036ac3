"""The device data path (`--decode gpu`), run here on the CPU: the same scales, crop boxes, flips
and colour shifts as the CPU path for the same seeds, the same bytes on the CPU, bad files, and
training through it."""

import pytest
import torch

from tests.helpers_images import class_folder_tree, write_image
from tests.test_train import assert_same_weights, config, weights
from vgg.data.datasets import load_split
from vgg.data.device_decode import DeviceAugmenter, EncodedDataset, collate_encoded, decode_path
from vgg.data.loaders import BadImageError, EpochSampler, ImageDataset, collate
from vgg.data.transforms import ScaleRange, TrainTransform
from vgg.training.train import train


class RecordingTransform(TrainTransform):
    """A TrainTransform that remembers every crop plan it draws."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.plans = []

    def plan(self, height, width, rng):
        drawn = super().plan(height, width, rng)
        self.plans.append(drawn)
        return drawn


@pytest.fixture()
def mixed_images(tmp_path):
    """JPEGs of several sizes and one PNG (decoded on the host by the device path)."""
    root = class_folder_tree(tmp_path / "data", per_class=4)
    write_image(root / "train" / "n01" / "n01_png.JPEG", fmt="PNG", seed=99)
    return load_split(root, "train")


def both_paths(images, epoch: int, seed: int = 3, scale: str = "24:40", crop: int = 16):
    keys = [(epoch, index) for index in EpochSampler(len(images), seed=seed).rank_indices()]
    cpu_transform, device_transform = (RecordingTransform(ScaleRange.parse(scale), crop) for _ in range(2))
    cpu = collate([ImageDataset(images, cpu_transform, seed=seed)[key] for key in keys])
    encoded = EncodedDataset(images)
    device = DeviceAugmenter(device_transform, seed, "cpu")(collate_encoded([encoded[key] for key in keys]))
    return cpu, device, cpu_transform.plans, device_transform.plans


@pytest.mark.parametrize("epoch", [0, 5])
def test_both_paths_draw_the_same_scales_crops_flips_and_colour_shifts(mixed_images, epoch):
    cpu, device, cpu_plans, device_plans = both_paths(mixed_images, epoch)
    assert len(cpu_plans) == len(device_plans) == len(mixed_images)
    assert cpu_plans == device_plans  # S, crop box and flip of every image
    assert len({plan.scale for plan in cpu_plans}) > 1 and {plan.flip for plan in cpu_plans} == {True, False}
    assert torch.equal(cpu.offsets, device.offsets) and torch.equal(cpu.labels, device.labels) and torch.equal(cpu.indices, device.indices)
    assert torch.equal(cpu.images, device.images)  # on the CPU, the same kernels: the same bytes


def test_other_epochs_and_seeds_draw_other_crops(mixed_images):
    _, _, first, _ = both_paths(mixed_images, epoch=0)
    _, _, second, _ = both_paths(mixed_images, epoch=1)
    assert first != second


def test_a_bad_file_is_named_or_skipped_on_the_device_path(mixed_images, tmp_path):
    bad = mixed_images.root / "n02" / "n02_0.JPEG"
    bad.write_bytes(b"\xff\xd8 not a jpeg")
    images = load_split(mixed_images.root.parent, "train")
    batch = collate_encoded([EncodedDataset(images)[index] for index in range(len(images))])
    transform = TrainTransform(ScaleRange.parse("24"), 16)
    with pytest.raises(BadImageError, match="n02_0.JPEG.*--skip-bad-images"):
        DeviceAugmenter(transform, 0, "cpu")(batch)
    kept = DeviceAugmenter(transform, 0, "cpu", skip_bad_images=True)(batch)
    assert kept.skipped == [str(bad)] and len(kept) == len(images) - 1


def test_auto_decodes_on_the_device_only_on_cuda_when_the_cpu_loader_cannot_keep_up():
    def never() -> tuple[float, float]:
        raise AssertionError("nothing to measure off CUDA")

    assert decode_path("auto", torch.device("cpu"), never) == "cpu" and decode_path("gpu", torch.device("cpu"), never) == "gpu"
    cuda = torch.device("cuda")  # a device object only: the rule, not a GPU
    assert decode_path("auto", cuda, lambda: (100.0, 200.0)) == "gpu"  # (loader images/s, step images/s)
    assert decode_path("auto", cuda, lambda: (215.0, 200.0)) == "gpu"  # within the 10% margin
    assert decode_path("auto", cuda, lambda: (300.0, 200.0)) == "cpu" and decode_path("cpu", cuda, never) == "cpu"
    with pytest.raises(ValueError, match="--decode must be one of cpu, gpu, auto"):
        decode_path("dali", torch.device("cpu"))


def test_a_resumed_run_keeps_the_decode_path_it_started_with(ci_data, tmp_path, monkeypatch):
    """--decode auto is decided once per run (on CUDA by a measurement): a resumed run reads the choice
    from its checkpoint instead of deciding (and probing) again."""
    import signal

    import vgg.training.train
    from vgg.runtime.checkpoint import load_checkpoint
    from vgg.runtime.stop_signals import Preempted
    from vgg.training.validation import Validation

    validate = Validation.errors

    def interrupted_validation(self, *args):  # a Ctrl-C during the first epoch's validation
        signal.raise_signal(signal.SIGINT)
        return validate(self, *args)

    monkeypatch.setattr(Validation, "errors", interrupted_validation)
    with pytest.raises(Preempted):
        train(config(ci_data, decode="gpu"), tmp_path / "run")
    assert load_checkpoint(tmp_path / "run")["decode"] == "gpu"
    monkeypatch.setattr(Validation, "errors", validate)

    def no_second_decision(*args, **kwargs):
        raise AssertionError("a resumed run decided its decode path again")

    monkeypatch.setattr(vgg.training.train, "decode_path", no_second_decision)
    train(config(ci_data, decode="auto"), tmp_path / "run")  # the same run: --decode is not part of its identity
    assert load_checkpoint(tmp_path / "run")["decode"] == "gpu"


def test_training_through_the_device_path_gives_the_cpu_paths_weights(ci_data, tmp_path):
    # seed 3, not the default 0: a path that seeded its augmentations with 0 would part from the other
    train(config(ci_data, epochs=1, decode="cpu", seed=3), tmp_path / "cpu")
    train(config(ci_data, epochs=1, decode="gpu", workers=2, seed=3), tmp_path / "device")  # files cross from worker processes
    assert_same_weights(weights(tmp_path / "cpu"), weights(tmp_path / "device"))
