import pytest

from vgg.nets.configs import CONFIGS, TABLE1_CONFIGS, ConvSpec, LRNSpec, get_config, parse_token, parsed_blocks, weight_layers


def test_table1_has_the_six_configurations_in_order():
    assert list(TABLE1_CONFIGS) == ["A", "A-LRN", "B", "C", "D", "E"]


@pytest.mark.parametrize(
    "name, depth", [("A", 11), ("A-LRN", 11), ("B", 13), ("C", 16), ("D", 16), ("E", 19), ("B-5x5", 8)]
)
def test_weight_layers_as_the_paper_counts_them(name, depth):
    assert weight_layers(name) == depth


def test_every_configuration_has_five_blocks_with_widths_64_to_512():
    for name in CONFIGS:
        blocks = parsed_blocks(name)
        assert len(blocks) == 5
        widths = [{spec.channels for spec in block if isinstance(spec, ConvSpec)} for block in blocks]
        assert widths == [{64}, {128}, {256}, {512}, {512}], name


def test_c_has_1x1_convs_as_the_last_conv_of_blocks_3_to_5():
    blocks = parsed_blocks("C")
    for number, block in enumerate(blocks, start=1):
        kernels = [spec.kernel for spec in block]
        assert kernels == ([3, 3, 1] if number >= 3 else [3, 3])


def test_lrn_only_in_a_lrn_after_the_first_conv():
    for name in CONFIGS:
        lrn_positions = [(b, i) for b, block in enumerate(parsed_blocks(name)) for i, s in enumerate(block) if isinstance(s, LRNSpec)]
        assert lrn_positions == ([(0, 1)] if name == "A-LRN" else []), name


def test_b_5x5_replaces_each_pair_of_b_3x3_convs_by_one_5x5():
    b_blocks, shallow_blocks = parsed_blocks("B"), parsed_blocks("B-5x5")
    for b_block, shallow_block in zip(b_blocks, shallow_blocks):
        assert [s.kernel for s in b_block] == [3, 3]
        assert shallow_block == [ConvSpec(kernel=5, channels=b_block[0].channels)]
    assert shallow_block[0].padding == 2


def test_unknown_configuration_and_token_are_clear_errors():
    with pytest.raises(ValueError, match="unknown VGG configuration 'F'.*A, A-LRN, B, C, D, E"):
        get_config("F")
    with pytest.raises(ValueError, match="unknown layer token 'conv-64'"):
        parse_token("conv-64")
