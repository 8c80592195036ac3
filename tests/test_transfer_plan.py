"""Appendix B's experiment entries: what the files say, checked, with an error naming what is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from vgg.suite.plan import load_catalog, load_experiment

NETS = '''
[[transfer_net]]
name = "Net-D"
weights = "vgg16"
run = "D-256-512"
'''
SET = '''
[[transfer_set]]
dataset = "toy-categories"
scales = [256, 384, 512]
combine = "stack"
'''


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "transfer.toml"
    path.write_text('title = "t"\npaper_table = 11\n' + text)
    return path


def test_the_experiment_files_hold_the_papers_settings():
    table11, table12 = load_experiment("table11"), load_experiment("table12")
    sets = {s.dataset: s.setting for s in table11.transfer.sets}
    assert sets["VOC2007"].scales == sets["VOC2012"].scales == (256, 384, 512, 640, 768) and sets["VOC2007"].combine == "average"
    assert sets["CALTECH101"].scales == sets["CALTECH256"].scales == (256, 384, 512) and sets["CALTECH256"].combine == "stack"
    nets = {net.name: net for net in table11.transfer.nets}
    assert (nets["Net-D"].weights, nets["Net-E"].weights) == ("vgg16", "vgg19") and nets["Net-D & Net-E"].stack == ("Net-D", "Net-E")
    assert nets["Net-D, random weights"].random == "Net-D"
    assert [c.paper_sign for c in table11.transfer.comparisons] == [1.0, 0.3]
    assert table12.transfer.sets[0].features == ("image", "image+box")
    assert [net.name for net in table12.transfer.nets if net.row] == ["Net-D & Net-E", "Net-D, random weights"]


@pytest.mark.parametrize("text, message", [
    (NETS + SET.replace("toy-categories", "VOC2009"), r"unknown dataset; choose one of VOC2007, VOC2012"),
    (NETS + SET.replace('"stack"', '"max"'), r"combine = 'max'; choose average or stack"),
    (NETS + SET + 'features = ["image+box"]\n', r"image\+box features need person boxes: an action dataset"),
    (NETS.replace('run = "D-256-512"\n', "") + SET, r"give both its published weights"),
    (NETS.replace('"vgg16"', '"vgg16_bn"') + SET, r"weights = 'vgg16_bn'; choose vgg16 or vgg19"),
    (NETS.replace('"D-256-512"', '"D-999"') + SET, r"run 'D-999' is not a run of runs.toml"),
    (NETS + '[[transfer_net]]\nname = "fused"\nstack = ["Net-D", "Net-X"]\n' + SET, r"names 'Net-X', which is not an earlier \[\[transfer_net\]\]"),
    (NETS + SET + '[[transfer_comparison]]\nname = "c"\nnet = "Net-D"\ndatasets = ["VOC2007"]\nentry = { scales = [256], combine = "stack" }\n'
     'reference = { scales = [256], combine = "average" }\n', r"dataset 'VOC2007' is not a \[\[transfer_set\]\] of this file"),
    (SET, r"needs both \[\[transfer_net\]\] and \[\[transfer_set\]\]"),
])
def test_a_wrong_entry_is_a_clear_error(tmp_path, text, message):
    with pytest.raises(ValueError, match=message):
        load_experiment(write(tmp_path, text), load_catalog())
