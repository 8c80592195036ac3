"""Score files (per-image posteriors) and the fusion of several nets' (Table 6)."""

import pytest
import torch

from tests.conftest import small_net
from vgg.data.datasets import load_split
from vgg.evaluation.evaluate import evaluate
from vgg.evaluation.scores import computed_in_bf16, fuse, load_scores, save_scores
from vgg.nets.models import VGG


def test_fusion_is_the_mean_of_members_and_mismatches_are_refused(ci_data, tmp_path):
    val = load_split(ci_data, "val")
    nets = [small_net(classes=4, crop=32), small_net(classes=4, crop=32)]
    torch.manual_seed(1)
    nets[1].model = VGG("B", num_classes=4, width=16, crop=32, init="glorot")
    paths = []
    results = []
    for number, net in enumerate(nets):
        result = evaluate(net, val, "dense", [40], workers=0)
        path = tmp_path / f"member{number}.scores"
        save_scores(path, result, val, {"run": f"m{number}"})
        paths.append(path)
        results.append(result)
    fused, loaded = fuse(paths)
    assert [member["provenance"]["run"] for member in loaded] == ["m0", "m1"]
    torch.testing.assert_close(fused, (results[0].posteriors + results[1].posteriors) / 2)
    stored = load_scores(paths[0])
    assert stored["image_ids"] == val.image_ids()
    # the stored posteriors are the ones the row was computed from: the same errors, near-ties included
    assert torch.equal(stored["posteriors"], results[0].posteriors.float())
    assert 100 * (stored["posteriors"].argmax(1) != stored["labels"]).float().mean().item() == pytest.approx(results[0].top1_err, abs=1e-3)
    fewer = evaluate(nets[0], val.subset(10), "dense", [40], workers=0)
    save_scores(tmp_path / "fewer.scores", fewer, val.subset(10), {})
    with pytest.raises(ValueError, match="scores other images than"):
        fuse([paths[0], tmp_path / "fewer.scores"])
    with pytest.raises(ValueError, match="at least two"):
        fuse([paths[0]])


def test_score_files_made_in_bf16_are_recognised_for_redoing_in_fp32():
    assert computed_in_bf16({"precision": "bf16", "device": "cuda:0"})
    assert not computed_in_bf16({"precision": "fp32", "device": "cuda:0"})
    assert computed_in_bf16({"device": "cuda:0"})  # before the precision was recorded, CUDA evaluation was always bf16
    assert not computed_in_bf16({"device": "cpu"})
    assert computed_in_bf16({"precision": "fp32+bf16", "device": "cuda:0"})  # an average of parts of both
