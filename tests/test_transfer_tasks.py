"""Appendix B's datasets as tasks, and the pieces the runner joins: persons mapped to their images' descriptors,
scale subsets of the cached descriptors, paired differences, held-out groups, and the runner's input errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers_images import write_image
from vgg.transfer.datasets import VOC_ACTIONS
from vgg.transfer.features import combine_raw, combine_scales
from vgg.transfer.protocols import held_out_rows, multilabel_map, paired_difference
from vgg.transfer.tasks import load_task


def action_tree(root: Path) -> Path:
    """VOC2012 actions whose persons are listed out of image order: (c, 1), (a, 1), (c, 2), (b, 1), (a, 2)."""
    voc = root / "VOCdevkit" / "VOC2012"
    persons = [("c", 1), ("a", 1), ("c", 2), ("b", 1), ("a", 2)]
    for split in ("train", "val"):
        (voc / "ImageSets" / "Action").mkdir(parents=True, exist_ok=True)
        (voc / "ImageSets" / "Action" / f"{split}.txt").write_text("a\nb\nc\n")
        for k, action in enumerate(VOC_ACTIONS[:10]):
            lines = "".join(f"{i} {n} {1 if (j + k) % 3 == 0 else -1}\n" for j, (i, n) in enumerate(persons))
            (voc / "ImageSets" / "Action" / f"{action}_{split}.txt").write_text(lines)
    (voc / "Annotations").mkdir(parents=True, exist_ok=True)
    for seed, image_id in enumerate("abc"):
        write_image(voc / "JPEGImages" / f"{image_id}.jpg", seed=seed)
        boxes = "".join(f"<object><name>person</name><bndbox><xmin>{1 + n}</xmin><ymin>1</ymin><xmax>{10 + n}</xmax><ymax>12</ymax>"
                        "</bndbox></object>" for n in range(2))
        (voc / "Annotations" / f"{image_id}.xml").write_text(f"<annotation>{boxes}</annotation>")
    return voc


def test_each_person_points_at_its_own_image_and_box(tmp_path):
    action_tree(tmp_path)
    task = load_task("VOC2012-ACTION", tmp_path)
    assert task.parts["train"].images.image_ids() == ["c.jpg", "a.jpg", "b.jpg"]  # each image once, in first-listed order
    assert task.image_rows["train"].tolist() == [0, 1, 0, 2, 1]
    boxes = task.parts["train-boxes"]
    assert boxes.images.image_ids() == ["c.jpg", "a.jpg", "c.jpg", "b.jpg", "a.jpg"] and boxes.boxes[2].tolist() == [1, 0, 11, 12]
    assert task.sizes["train"] == 5 and task.sizes["classes"] == 10


def test_a_scale_subset_of_raw_descriptors_equals_describing_those_scales_alone():
    raw = torch.rand(2, 3 * 4)  # 2 images, scales (256, 384, 512), 4 channels each
    per_scale = raw.reshape(2, 3, 4)
    for combine in ("stack", "average"):
        chosen = combine_raw(raw, (256, 384, 512), (512, 256), combine)
        expected = torch.stack([combine_scales([per_scale[i, 2], per_scale[i, 0]], combine) for i in range(2)])
        assert torch.allclose(chosen, expected)
    with pytest.raises(ValueError, match=r"scales \[640\] are not all among the extracted"):
        combine_raw(raw, (256, 384, 512), (640,), "stack")


def test_held_out_groups_stay_whole():
    groups = np.repeat(np.arange(10), 3)
    fit, held = held_out_rows(30, seed=0, groups=groups)
    assert len(held) == 6 and not set(groups[fit]) & set(groups[held]) and sorted([*fit, *held]) == list(range(30))


def test_a_paired_difference_of_a_result_with_itself_is_zero_and_needs_the_same_items():
    rng = np.random.default_rng(0)
    labels = np.where(rng.random((60, 3)) > 0.6, 1, -1)
    features = np.concatenate([labels + rng.normal(0, 1.5, labels.shape), rng.normal(size=(60, 5))], axis=1)
    result = multilabel_map(features[:30], labels[:30], features[30:], labels[30:], 2007, resamples=200)
    assert paired_difference(result, result, resamples=200) == (0.0, 0.0, 0.0)
    grouped = multilabel_map(features[:30], labels[:30], features[30:], labels[30:], 2007, resamples=200, test_groups=np.arange(30) // 2)
    assert grouped.value == result.value and grouped.outputs.sizes == (15,)  # the images are resampled, not the persons
    with pytest.raises(ValueError, match="needs two results on the same test images"):
        paired_difference(result, grouped)
