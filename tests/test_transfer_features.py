"""The Appendix B descriptor: the dense view without FC3, flip averaging, stacking vs averaging
over scales, the batched form over a dataset, and late fusion."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from tests.conftest import small_net
from vgg.data.datasets import load_split
from vgg.data.loaders import read_image
from vgg.data.transforms import rescale
from vgg.nets.models import VGG, pooled_region
from vgg.nets.trained import Net
from vgg.transfer.features import descriptors, fuse_descriptors, image_descriptor, penultimate_map

FC_WIDTH = 256  # 4096 / 16


@pytest.fixture(scope="module")
def model64() -> VGG:
    torch.manual_seed(0)
    return VGG("A", num_classes=5, width=16, crop=64, init="glorot").double().eval()


@pytest.fixture(scope="module")
def net() -> Net:
    return small_net(classes=5, crop=64)


def random_image(height: int, width: int, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (3, height, width), dtype=np.uint8))


def pooled(net: Net, image: torch.Tensor) -> torch.Tensor:
    """One image's penultimate map averaged over its positions, the plain way (no flip, no norm)."""
    with torch.no_grad():
        return penultimate_map(net.model.eval(), net.normalization(image[None])).mean(dim=(2, 3))[0]


def flip_pooled(net: Net, image: torch.Tensor, scale: int) -> torch.Tensor:
    scaled = rescale(image, scale)
    return (pooled(net, scaled) + pooled(net, scaled.flip(-1))) / 2


def test_penultimate_map_at_the_crop_is_the_ordinary_fc2_activation(model64):
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        dense = penultimate_map(model64, x)
        ordinary = model64.classifier[:-1](torch.flatten(model64.features(x), 1))
    assert dense.shape == (2, FC_WIDTH, 1, 1)
    assert (ordinary >= 0).all() and (ordinary > 0).any()  # after FC2's ReLU
    torch.testing.assert_close(dense[:, :, 0, 0], ordinary, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("size", [(128, 160), (141, 175)])  # the second one is cut to its central pooled region
def test_each_position_is_fc1_fc2_on_its_window_of_the_conv_features(model64, size):
    x = torch.randn(1, 3, *size, dtype=torch.float64)
    kernel = model64.spec.fc1_kernel
    with torch.no_grad():
        dense = penultimate_map(model64, x)
        conv = model64.features(pooled_region(x))  # (1, C, 4, 5)
        rows, columns = conv.shape[-2] - kernel + 1, conv.shape[-1] - kernel + 1
        windows = torch.stack([
            model64.classifier[:-1](conv[:, :, i : i + kernel, j : j + kernel].flatten(1))[0]
            for i in range(rows) for j in range(columns)
        ])
        scores = model64.score_map(x)
        head = model64.classifier[-1]
    assert dense.shape == (1, FC_WIDTH, rows, columns) == (1, FC_WIDTH, 3, 4)
    torch.testing.assert_close(dense[0].flatten(1).T, windows, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(dense.mean(dim=(2, 3))[0], windows.mean(dim=0), rtol=1e-10, atol=1e-10)
    # and FC3 on top of it is exactly score_map
    fc3 = F.conv2d(dense, head.weight[:, :, None, None], head.bias)
    torch.testing.assert_close(fc3, scores, rtol=1e-10, atol=1e-10)


def test_penultimate_map_refuses_inputs_below_the_crop(model64):
    with pytest.raises(ValueError, match="at least the training crop"):
        penultimate_map(model64, torch.zeros(1, 3, 63, 100, dtype=torch.float64))


def test_flip_averages_the_image_and_its_mirror(net):
    image = random_image(70, 90)
    with_flip = image_descriptor(net, image, [64], flip=True)
    without = image_descriptor(net, image, [64], flip=False)
    assert with_flip.shape == without.shape == (FC_WIDTH,)
    torch.testing.assert_close(with_flip, F.normalize(flip_pooled(net, image, 64), dim=0), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(without, F.normalize(pooled(net, rescale(image, 64)), dim=0), rtol=1e-5, atol=1e-6)
    assert (with_flip - without).abs().max() > 1e-3  # the mirror counts


def test_an_image_symmetric_under_horizontal_flip_gets_the_same_descriptor_either_way(net):
    half = random_image(64, 48, seed=1)  # 64 x 96: already at Q = 64, so the rescale leaves it as it is
    symmetric = torch.cat([half, half.flip(-1)], dim=-1)
    assert torch.equal(symmetric, symmetric.flip(-1)) and not torch.equal(symmetric, symmetric.flip(-2))
    with_flip, without = (image_descriptor(net, symmetric, [64], flip=flip) for flip in (True, False))
    torch.testing.assert_close(with_flip, without, rtol=1e-5, atol=1e-6)


def test_stacking_concatenates_and_averaging_averages_the_scales(net):
    image = random_image(80, 100, seed=2)
    per_scale = [flip_pooled(net, image, scale) for scale in (64, 96)]
    stacked = image_descriptor(net, image, [64, 96], combine="stack")
    averaged = image_descriptor(net, image, [64, 96], combine="average")
    assert stacked.shape == (2 * FC_WIDTH,) and averaged.shape == (FC_WIDTH,)
    assert abs(stacked.norm().item() - 1) < 1e-6 and abs(averaged.norm().item() - 1) < 1e-6
    torch.testing.assert_close(stacked, F.normalize(torch.cat(per_scale), dim=0), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(averaged, F.normalize((per_scale[0] + per_scale[1]) / 2, dim=0), rtol=1e-5, atol=1e-6)
    assert (averaged - F.normalize(per_scale[0], dim=0)).abs().max() > 1e-3  # both scales count
    with pytest.raises(ValueError, match="combine"):
        image_descriptor(net, image, [64], combine="max")
    with pytest.raises(ValueError, match="crop"):
        image_descriptor(net, image, [48])


def write_dataset(root: Path) -> Path:
    """Images of a few sizes (some sharing a rescaled size) in class folders, PNG and JPEG."""
    sizes = {"a": [(80, 64), (64, 96), (80, 64)], "b": [(100, 70), (80, 64)], "c": [(64, 64)]}  # (width, height)
    seed = 0
    for name, shapes in sizes.items():
        folder = root / "val" / name
        folder.mkdir(parents=True)
        for i, (width, height) in enumerate(shapes):
            seed += 1
            pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"{name}{i}.{'png' if seed % 2 else 'jpg'}")
    return root


@pytest.mark.parametrize("combine", ["stack", "average"])
def test_batched_descriptors_equal_the_one_image_ones_in_dataset_order(net, tmp_path, combine):
    images = load_split(write_dataset(tmp_path / "data"), "val")
    assert len(images) == 6
    batched = descriptors(net, images, [64, 80], combine=combine, device="cpu", workers=0, batch_images=2)
    one_by_one = torch.stack([image_descriptor(net, read_image(path), [64, 80], combine) for path, _ in images.samples])
    assert batched.shape == (6, FC_WIDTH * (2 if combine == "stack" else 1))
    torch.testing.assert_close(batched, one_by_one, rtol=1e-5, atol=1e-6)
    assert (batched[0] - batched[1]).abs().max() > 1e-3  # distinct images, so the order is checked


def test_a_box_is_described_as_its_pixels_cut_out_rounded_outwards_and_clipped(net, tmp_path):
    images = load_split(write_dataset(tmp_path / "data"), "val")
    boxes = np.array([[2.7, 3.0, 40.2, 50.0], [-5.0, -5.0, 1000.0, 1000.0], [10.0, 10.0, 10.0, 10.0]] * 2)
    described = descriptors(net, images, [64], combine="raw", device="cpu", workers=0, boxes=boxes)
    for (path, _), (x0, y0, x1, y1), row in zip(images.samples, boxes, described):
        image = read_image(path)
        height, width = image.shape[-2:]
        left, top = max(0, int(np.floor(x0))), max(0, int(np.floor(y0)))
        crop = image[:, top : max(top + 1, min(height, int(np.ceil(y1)))), left : max(left + 1, min(width, int(np.ceil(x1))))]
        torch.testing.assert_close(row, flip_pooled(net, crop, 64), rtol=1e-4, atol=1e-5)  # raw: unnormalised, flip-averaged
    assert not torch.allclose(described[0], descriptors(net, images, [64], combine="raw", device="cpu", workers=0)[0])


def test_fusion_stacks_the_normalised_parts_and_normalises_again():
    first, second = torch.randn(3, 256) * 5, torch.randn(3, 512) * 0.1
    fused = fuse_descriptors(first, second)
    assert fused.shape == (3, 768)
    torch.testing.assert_close(fused.norm(dim=1), torch.ones(3))
    for half, part in ((fused[:, :256], first), (fused[:, 256:], second)):
        torch.testing.assert_close(half, F.normalize(part, dim=1) / 2**0.5)  # proportional, equal weights
    torch.testing.assert_close(fuse_descriptors(first[0], second[0]), fused[0])
