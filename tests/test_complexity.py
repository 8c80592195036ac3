import pytest

from vgg.nets.complexity import format_summary, summarize
from vgg.nets.models import VGGSpec

# torchvision's documented GFLOPS (= multiply-accumulates) for vgg11/13/16/19 at 224x224.
TORCHVISION_GMACS = {"A": 7.61, "B": 11.31, "D": 15.47, "E": 19.63}


@pytest.mark.parametrize("config, gmacs", TORCHVISION_GMACS.items())
def test_macs_per_224_image_match_torchvision_documentation(config, gmacs):
    assert summarize(VGGSpec(config)).macs / 1e9 == pytest.approx(gmacs, abs=0.005)


def test_macs_of_a_tiny_net_counted_by_hand():
    spec = VGGSpec("A", num_classes=10, width=64, crop=32)  # channels 1, 2, 4, 4, 8, 8, 8, 8; FC 64
    expected_convs = (
        32 * 32 * 9 * 3 * 1
        + 16 * 16 * 9 * 1 * 2
        + 8 * 8 * 9 * (2 * 4 + 4 * 4)
        + 4 * 4 * 9 * (4 * 8 + 8 * 8)
        + 2 * 2 * 9 * (8 * 8 + 8 * 8)
    )
    expected_fc = 8 * 64 + 64 * 64 + 64 * 10
    assert summarize(spec).macs == expected_convs + expected_fc


def test_summary_shapes_follow_the_pools_and_params_add_up():
    summary = summarize(VGGSpec("D"))
    shapes = {row.name: row.output_shape for row in summary.layers}
    assert shapes["features.0"] == (64, 224, 224)
    assert shapes["features.30"] == (512, 7, 7)  # the last max-pool
    assert shapes["classifier.6"] == (1000,)
    assert sum(row.params for row in summary.layers) == summary.params == 138_357_544


def test_describe_text_lists_layers_and_totals():
    text = format_summary(summarize(VGGSpec("A-LRN", width=8, crop=64)))
    assert "VGG-A-LRN: 11 weight layers, width 1/8, crop 64" in text
    assert "LRN(size=5, alpha=0.0005, beta=0.75, k=2)" in text
    assert text.splitlines()[-1] == "total: 1,051,800 parameters, 11,227,136 multiply-accumulates per image"
