import numpy as np
import pytest
import torch
from torchvision import transforms as T

from vgg.data.normalization import PAPER_MEAN_RGB, TORCHVISION, get_normalization
from vgg.data.transforms import (
    IMAGENET_PCA_EIGENVALUES,
    IMAGENET_PCA_EIGENVECTORS,
    CentreCropTransform,
    ScaleRange,
    TestTransform,
    TrainTransform,
    centre_crop,
    colour_offset,
    rescale,
)
from vgg.recipe.paper import PAPER


def ramp_image(height: int, width: int) -> torch.Tensor:
    """Red channel rises linearly left to right (0..250), green top to bottom: positions are readable."""
    xs = torch.linspace(0, 250, width).expand(height, width)
    ys = torch.linspace(0, 250, height)[:, None].expand(height, width)
    return torch.stack([xs, ys, torch.full((height, width), 128.0)]).round().to(torch.uint8)


def horizontal_slope(crop: torch.Tensor) -> float:
    """Red value change per output pixel, fitted on the middle row (avoids the borders)."""
    row = crop[0, crop.shape[1] // 2, 4:-4].double()
    return float(np.polyfit(np.arange(len(row)), row.numpy(), 1)[0])


def test_scale_range_parsing_and_errors():
    assert ScaleRange.parse("256") == ScaleRange(256, 256) and not ScaleRange.parse(256).jittered
    assert ScaleRange.parse("256:512") == ScaleRange(256, 512) and ScaleRange.parse("256:512").jittered
    for bad in ("256-512", "a", "1:2:3", "512:256", "0"):
        with pytest.raises(ValueError):
            ScaleRange.parse(bad)
    with pytest.raises(ValueError, match="S=48 must be at least the crop size 64"):
        TrainTransform(ScaleRange(48, 48), crop=64)


@pytest.mark.parametrize("height, width, shorter", [(64, 128, 96), (128, 64, 96), (375, 500, 256), (500, 375, 73), (90, 90, 300)])
def test_rescale_makes_the_shorter_side_exactly_s_and_keeps_the_aspect(height, width, shorter):
    out = rescale(torch.zeros(3, height, width, dtype=torch.uint8), shorter)
    assert min(out.shape[1:]) == shorter
    assert abs(out.shape[1] / out.shape[2] - height / width) < 1 / shorter + 1e-9


def test_train_transform_rescales_to_s_before_cropping():
    # A 64x128 image rescaled to S=96 is scaled by 1.5: the red ramp's slope per pixel shrinks by 1.5.
    image = ramp_image(64, 128)
    transform = TrainTransform(ScaleRange(96, 96), crop=64, flip=False, colour_shift_std=0)
    crop, offset = transform(image, np.random.default_rng(0))
    assert crop.shape == (3, 64, 64) and crop.dtype == torch.uint8
    assert horizontal_slope(crop) == pytest.approx(250 / 127 / 1.5, rel=0.03)
    assert torch.equal(offset, torch.zeros(3))


@pytest.mark.parametrize("scale", [ScaleRange(256, 256), ScaleRange(384, 384), ScaleRange(256, 512)])
@pytest.mark.parametrize("height, width", [(375, 500), (500, 333), (224, 224)])
def test_crop_plan_rescales_the_shorter_side_to_s(scale, height, width):
    transform = TrainTransform(scale, crop=224)
    for seed in range(50):
        plan = transform.plan(height, width, np.random.default_rng(seed))
        assert scale.low <= plan.scale <= scale.high
        assert min(plan.rescaled) == plan.scale
        # the source region that becomes the 224 crop is 224 rescaled pixels wide, to within half a source pixel
        assert abs(plan.side - 224 * min(height, width) / plan.scale) <= 0.5
        assert 0 <= plan.top <= height - plan.side and 0 <= plan.left <= width - plan.side


def test_jittered_s_draws_stay_in_range_and_reach_both_ends():
    scale = ScaleRange(70, 74)
    draws = [scale.sample(np.random.default_rng([0, i])) for i in range(500)]
    assert set(draws) == {70, 71, 72, 73, 74}
    # and the transform really uses the drawn S: slopes span the range's scale factors
    image = ramp_image(64, 128)
    transform = TrainTransform(ScaleRange(64, 128), crop=64, flip=False, colour_shift_std=0)
    implied = [250 / 127 / horizontal_slope(transform(image, np.random.default_rng(i))[0]) * 64 for i in range(60)]
    assert min(implied) >= 64 * 0.97 and max(implied) <= 128 * 1.03
    assert min(implied) < 75 and max(implied) > 117


def test_random_crops_cover_the_image():
    image = ramp_image(64, 200)  # S = 64: no rescale, crops 64x64 anywhere along x in [0, 136]
    transform = TrainTransform(ScaleRange(64, 64), crop=64, flip=False, colour_shift_std=0)
    lefts = [int(transform(image, np.random.default_rng(i))[0][0, 0, 0]) for i in range(300)]
    assert min(lefts) <= 5 and max(lefts) >= 165  # red value at the crop's left edge ~ 250 * left / 199


def test_flip_mirrors_about_half_of_the_crops():
    image = ramp_image(64, 64)
    transform = TrainTransform(ScaleRange(64, 64), crop=64, flip=True, colour_shift_std=0)
    crops = [transform(image, np.random.default_rng(i))[0] for i in range(400)]
    flipped = [bool(torch.equal(c, image.flip(-1))) for c in crops]
    assert all(torch.equal(c, image) or f for c, f in zip(crops, flipped))
    assert 160 <= sum(flipped) <= 240  # p = 0.5 (binomial, +-4 sd)


def test_colour_shift_is_one_rgb_offset_per_image():
    image = ramp_image(64, 64)
    transform = TrainTransform(ScaleRange(64, 64), crop=64, flip=False)
    crop, offset = transform(image, np.random.default_rng(3))
    # the offset is sum_i alpha_i lambda_i p_i: its alphas, read back in the PCA basis, are draws of N(0, 0.1)
    alphas = np.linalg.solve(IMAGENET_PCA_EIGENVECTORS, offset.double().numpy()) / IMAGENET_PCA_EIGENVALUES
    assert offset.shape == (3,) and np.all(np.abs(alphas) > 1e-6) and np.all(np.abs(alphas) < 5 * PAPER.colour_shift_std)
    shifted = PAPER_MEAN_RGB(crop[None], offset[None])
    plain = PAPER_MEAN_RGB(crop[None])
    difference = (shifted - plain)[0]
    for channel in range(3):
        torch.testing.assert_close(difference[channel], torch.full((64, 64), float(offset[channel])))


def test_colour_offsets_have_the_pca_covariance():
    rng = np.random.default_rng(0)
    offsets = np.stack([colour_offset(rng) for _ in range(20000)])
    expected = IMAGENET_PCA_EIGENVECTORS @ np.diag((PAPER.colour_shift_std * IMAGENET_PCA_EIGENVALUES) ** 2) @ IMAGENET_PCA_EIGENVECTORS.T
    empirical = np.cov(offsets.T)
    assert np.abs(offsets.mean(0)).max() < 0.1
    np.testing.assert_allclose(empirical, expected, atol=0.03 * np.abs(expected).max())
    # the dominant direction is the first eigenvector (intensity), with variance (0.1 * 55.46)^2
    values, vectors = np.linalg.eigh(empirical)
    assert values[-1] == pytest.approx((0.1 * 0.2175 * 255) ** 2, rel=0.05)
    assert abs(vectors[:, -1] @ IMAGENET_PCA_EIGENVECTORS[:, 0]) > 0.999


def test_test_transform_rescales_only():
    image = ramp_image(60, 90)
    out, offset = TestTransform(120)(image, np.random.default_rng(0))
    assert out.shape == (3, 120, 180) and torch.equal(offset, torch.zeros(3))
    assert horizontal_slope(out) == pytest.approx(250 / 89 / 2, rel=0.03)


def test_mean_rgb_normalisation_subtracts_the_mean_pixel_only():
    image = torch.tensor([124, 117, 104], dtype=torch.uint8).view(1, 3, 1, 1).expand(1, 3, 4, 4)
    out = PAPER_MEAN_RGB(image)
    torch.testing.assert_close(out[0, :, 0, 0], torch.tensor([0.32, 0.221, 0.061]), atol=1e-4, rtol=0)


def test_torchvision_normalisation_matches_totensor_normalize():
    image = torch.randint(0, 256, (3, 16, 20), dtype=torch.uint8)
    reference = T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])(image.float() / 255)
    torch.testing.assert_close(TORCHVISION(image[None])[0], reference, atol=1e-5, rtol=1e-5)
    assert get_normalization("torchvision") is TORCHVISION
    with pytest.raises(ValueError, match="unknown normalisation 'bgr'"):
        get_normalization("bgr")


def test_the_centre_crop_is_central_and_validation_takes_it_after_the_rescale():
    image = ramp_image(70, 101)
    crop = centre_crop(image, 32)
    assert crop.shape == (3, 32, 32) and torch.equal(crop, image[:, 19:51, 34:66])  # (70 - 32) // 2, (101 - 32) // 2
    cropped, offset = CentreCropTransform(48, 32)(image, np.random.default_rng(0))
    assert torch.equal(cropped, centre_crop(rescale(image, 48), 32)) and not offset.any()


def test_a_fixed_s_is_rescaled_once_and_its_crops_are_slices_of_that_image():
    """The paper's order for a fixed S: rescale the image to S (`prepare`, which a caching loader runs
    once), then crop; a jittered S draws a new S per crop, so its image stays as decoded."""
    image = ramp_image(64, 128)
    fixed = TrainTransform(ScaleRange(96, 96), crop=64, flip=False, colour_shift_std=0)
    prepared = fixed.prepare(image)
    assert tuple(prepared.shape) == (3, 96, 192) and torch.equal(prepared, rescale(image, 96))
    for seed in range(20):
        plan = fixed.plan(96, 192, np.random.default_rng(seed))
        crop, _ = fixed.augment(prepared, np.random.default_rng(seed))
        assert plan.side == 64 and torch.equal(crop, prepared[:, plan.top : plan.top + 64, plan.left : plan.left + 64])
    assert TrainTransform(ScaleRange(64, 128), crop=64).prepare(image) is image
