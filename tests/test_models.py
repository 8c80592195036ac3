import pytest
import torch
from torch import nn

from tests.conftest import meta_model
from vgg.nets.configs import CONFIGS
from vgg.nets.models import LRN_ALPHA_ALEXNET, LRN_ALPHA_PER_N, VGG, LocalResponseNorm, pooled_region

PAPER_COUNTS = {
    "A": 132_863_336,
    "A-LRN": 132_863_336,
    "B": 133_047_848,
    "C": 133_638_952,
    "D": 138_357_544,
    "E": 143_667_240,
}
# torchvision's documented num_params of vgg11_bn, vgg13_bn, vgg16_bn, vgg19_bn.
BATCH_NORM_COUNTS = {"A": 132_868_840, "B": 133_053_736, "D": 138_365_992, "E": 143_678_248}


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", PAPER_COUNTS)
def test_exact_parameter_counts_of_table2(name):
    assert n_params(meta_model(config=name)) == PAPER_COUNTS[name]


@pytest.mark.parametrize("name", BATCH_NORM_COUNTS)
def test_batch_norm_parameter_counts_match_torchvision_bn_models(name):
    assert n_params(meta_model(config=name, batch_norm=True)) == BATCH_NORM_COUNTS[name]


def test_width_divides_channels_and_fc_and_crop_sets_fc1_inputs():
    model = meta_model(config="D", width=8, crop=64, num_classes=10)
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [8, 8, 16, 16, 32, 32, 32, 64, 64, 64, 64, 64, 64]
    fc = [m for m in model.classifier if isinstance(m, nn.Linear)]
    assert [(f.in_features, f.out_features) for f in fc] == [(64 * 2 * 2, 512), (512, 512), (512, 10)]


def test_head_is_fc_relu_dropout_fc_relu_dropout_fc():
    model = meta_model(config="A", dropout=0.5)
    kinds = [type(m) for m in model.classifier]
    assert kinds == [nn.Linear, nn.ReLU, nn.Dropout, nn.Linear, nn.ReLU, nn.Dropout, nn.Linear]
    assert all(m.p == 0.5 for m in model.classifier if isinstance(m, nn.Dropout))


@pytest.mark.parametrize("name", list(CONFIGS))
def test_every_conv_is_followed_by_relu_and_preserves_size(name):
    model = meta_model(config=name, batch_norm=True)
    layers = list(model.features)
    for position, layer in enumerate(layers):
        if isinstance(layer, nn.Conv2d):
            assert layer.stride == (1, 1) and layer.padding == (layer.kernel_size[0] // 2,) * 2
            assert isinstance(layers[position + 1], nn.BatchNorm2d)
            assert isinstance(layers[position + 2], nn.ReLU)
    pools = [m for m in layers if isinstance(m, nn.MaxPool2d)]
    assert len(pools) == 5 and all(p.kernel_size == 2 and p.stride == 2 for p in pools)


def test_c_1x1_convs_have_no_padding():
    convs = [m for m in meta_model(config="C").features if isinstance(m, nn.Conv2d)]
    one_by_one = [c for c in convs if c.kernel_size == (1, 1)]
    assert len(one_by_one) == 3 and all(c.padding == (0, 0) for c in one_by_one)


def test_lrn_sits_after_the_first_conv_relu_and_before_the_first_pool():
    layers = list(meta_model(config="A-LRN").features)
    assert [type(m) for m in layers[:4]] == [nn.Conv2d, nn.ReLU, LocalResponseNorm, nn.MaxPool2d]
    lrn = layers[2]
    assert (lrn.size, lrn.alpha, lrn.beta, lrn.k) == (5, LRN_ALPHA_ALEXNET, 0.75, 2.0)
    assert sum(isinstance(m, nn.LocalResponseNorm) for m in layers) == 1
    assert not any(isinstance(m, nn.LocalResponseNorm) for m in meta_model(config="A").features)


@pytest.mark.parametrize("channels, size", [(8, 5), (9, 5), (64, 5), (9, 4)])
def test_our_lrn_equals_torchs_in_value_and_gradient(channels, size):
    torch.manual_seed(0)
    x = (torch.randn(3, channels, 6, 5) * 40).contiguous(memory_format=torch.channels_last)
    ours, theirs = x.clone().requires_grad_(), x.clone().requires_grad_()
    outputs = [lrn(inp) for lrn, inp in ((LocalResponseNorm(size, 5e-4, 0.75, 2.0), ours), (nn.LocalResponseNorm(size, 5e-4, 0.75, 2.0), theirs))]
    torch.testing.assert_close(outputs[0], outputs[1], rtol=1e-5, atol=1e-5)
    weights = torch.randn_like(x)
    for output in outputs:
        (output * weights).sum().backward()
    torch.testing.assert_close(ours.grad, theirs.grad, rtol=1e-5, atol=1e-6)
    assert LocalResponseNorm(5).state_dict() == {}  # no parameters or buffers: state dicts load as before


def test_default_lrn_reproduces_the_alexnet_formula():
    # AlexNet (Krizhevsky et al. 2012, Sect. 3.3): b = a / (k + 1e-4 * sum of a^2 over 5 neighbouring channels)^0.75, k = 2
    x = torch.rand(2, 9, 4, 4) * 20
    squares = nn.functional.pad(x.pow(2), (0, 0, 0, 0, 2, 2))
    window_sum = sum(squares[:, i : i + 9] for i in range(5))
    expected = x / (2.0 + 1e-4 * window_sum).pow(0.75)
    default = VGG("A-LRN", width=8, crop=32).features[2]
    torch.testing.assert_close(default(x), expected)
    # a hand-computed value: one channel of 30 among four zero ones, 30 / (2 + 1e-4 * 900)^0.75
    single = torch.zeros(1, 5, 1, 1)
    single[0, 2] = 30.0
    assert default(single)[0, 2, 0, 0].item() == pytest.approx(30.0 / 2.09**0.75, rel=1e-6)
    other_reading = VGG("A-LRN", width=8, crop=32, lrn_alpha=LRN_ALPHA_PER_N).features[2]
    torch.testing.assert_close(other_reading(x), x / (2.0 + 1e-4 / 5 * window_sum).pow(0.75))
    assert not torch.allclose(other_reading(x), expected)


def assert_dense_equals_forward(model: VGG) -> None:
    model.eval()
    x = torch.randn(2, 3, model.spec.crop, model.spec.crop)
    with torch.no_grad():
        plain, dense = model(x), model.dense(x)
    assert_close_relative(dense, plain)


def assert_close_relative(actual: torch.Tensor, expected: torch.Tensor, tolerance: float = 1e-5) -> None:
    """Equal to within `tolerance` of the largest expected magnitude (deep nets' logits are tiny)."""
    scale = expected.abs().max()
    assert scale > 0
    torch.testing.assert_close(actual / scale, expected / scale, rtol=0, atol=tolerance)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CONFIGS))
def test_dense_equals_forward_at_the_crop_size_full_width(name):
    assert_dense_equals_forward(VGG(name, init="glorot"))


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("batch_norm", [False, True])
def test_dense_equals_forward_at_the_crop_size_smoke_width(name, batch_norm):
    assert_dense_equals_forward(VGG(name, width=8, crop=64, init="glorot", batch_norm=batch_norm))


@pytest.mark.parametrize("size, grid", [((224, 224), (1, 1)), ((256, 256), (2, 2)), ((384, 384), (6, 6)), ((256, 416), (2, 7))])
def test_dense_score_map_shape(size, grid):
    model = VGG("D", width=8, crop=224, num_classes=7).eval()
    with torch.no_grad():
        scores = model.score_map(torch.randn(1, 3, *size))
        assert scores.shape == (1, 7, *grid)
        torch.testing.assert_close(model.dense(torch.randn(1, 3, *size)).shape, torch.Size([1, 7]))


def test_dense_score_map_cells_are_the_fc_head_on_feature_windows():
    # Cell (i, j) of the map is the FC head applied to the (crop/32)^2 window at (i, j) of the
    # feature map: FC-as-conv, not the net on a zero-padded crop (Sect. 3.2's boundary point).
    model = VGG("A", width=8, crop=64, init="glorot").eval()
    x = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        scores = model.score_map(x)
        features = model.features(x)
        assert scores.shape[-2:] == (2, 3) and features.shape[-2:] == (3, 4)
        for i in range(2):
            for j in range(3):
                window = features[..., i : i + 2, j : j + 2]
                expected = model.classifier(torch.flatten(window, 1))[0]
                assert_close_relative(scores[0, :, i, j], expected)


def test_dense_uses_the_live_weights():
    model = VGG("A", width=8, crop=64, init="glorot").eval()
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        before = model.dense(x)
        model.classifier[0].weight.mul_(2)
        after = model.dense(x)
    assert not torch.allclose(before, after)
    assert not any("dense" in name for name, _ in model.named_parameters())


def test_dense_input_smaller_than_crop_is_a_clear_error():
    model = VGG("A", width=8, crop=64)
    with pytest.raises(ValueError, match=r"at least the training crop 64x64, got 48x80"):
        model.dense(torch.randn(1, 3, 48, 80))


def test_forward_on_a_non_crop_size_points_to_dense():
    model = VGG("A", width=8, crop=64)
    with pytest.raises(ValueError, match=r"built for 64x64 crops but got a 96x96 input; use \.dense"):
        model(torch.randn(1, 3, 96, 96))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"width": 3}, "width 3 does not divide the 64 channels"),
        ({"width": 128}, "width 128 does not divide the 64 channels"),
        ({"width": 0}, "width must be a positive integer"),
        ({"crop": 100}, "crop must be a positive multiple of 32"),
        ({"crop": 0}, "crop must be a positive multiple of 32"),
        ({"num_classes": 0}, "num_classes must be a positive integer"),
        ({"config": "Z"}, "unknown VGG configuration 'Z'"),
        ({"init": "kaiming"}, "unknown init scheme 'kaiming'"),
    ],
)
def test_bad_construction_arguments_are_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        meta_model(**kwargs)


def test_dense_reads_the_centre_of_an_input_that_is_not_a_multiple_of_32():
    # At 73 (the smoke profile's Q = 256) the pools read 64 pixels a side: the central 64, as the
    # centre crop does, not the top-left 64 that floor pooling alone would keep.
    model = VGG("A", width=8, crop=64, init="glorot").eval()
    x = torch.randn(1, 3, 73, 110)
    with torch.no_grad():
        dense = model.score_map(x)
        assert dense.shape[-2:] == (1, 2)
        assert_close_relative(dense, model.score_map(x[..., 4:68, 7:103]))
        assert not torch.allclose(dense, model.score_map(x[..., :64, :96]))
    assert pooled_region(x).shape[-2:] == (64, 96)
    assert pooled_region(torch.zeros(2, 3, 96, 128)).shape[-2:] == (96, 128)
