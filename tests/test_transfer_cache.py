"""Descriptor files: reused when complete, resumed when an extraction was killed, computed anew for other inputs."""

from __future__ import annotations

import pytest
import torch

from tests.helpers_images import class_folder_tree
from vgg.data.datasets import load_split
from vgg.transfer.feature_cache import FeatureKey, cache_path, cached_descriptors


@pytest.fixture
def images(tmp_path):
    root = class_folder_tree(tmp_path / "data", per_class=3)
    return load_split(root, "train")


def fake_descriptors(calls: list):
    def compute(part, rows=None):
        calls.append(part.image_ids())
        return torch.tensor([[float(hash(image_id) % 97), 1.0] for image_id in part.image_ids()])

    return compute


def test_a_second_extraction_reads_the_file_and_other_inputs_compute_anew(tmp_path, images):
    key = FeatureKey.of("abc", (256, 384), "average", True, images)
    calls = []
    first = cached_descriptors(tmp_path / "cache", "voc", key, images, fake_descriptors(calls), chunk=4, log=lambda m: None)
    assert first.shape == (9, 2) and [len(c) for c in calls] == [4, 4, 1]
    again = cached_descriptors(tmp_path / "cache", "voc", key, images, fake_descriptors(calls), chunk=4, log=lambda m: None)
    assert torch.equal(again, first) and len(calls) == 3  # read, not computed
    for other in (FeatureKey.of("abd", (256, 384), "average", True, images), FeatureKey.of("abc", (256, 384), "stack", True, images),
                  FeatureKey.of("abc", (256,), "average", True, images), FeatureKey.of("abc", (256, 384), "average", False, images)):
        assert cache_path(tmp_path / "cache", "voc", other) != cache_path(tmp_path / "cache", "voc", key)
    fewer = images.subset(5)
    assert FeatureKey.of("abc", (256, 384), "average", True, fewer).digest != key.digest  # other images: another file


def test_a_killed_extraction_resumes_where_it_stopped(tmp_path, images):
    key = FeatureKey.of("abc", (256,), "stack", True, images)
    calls = []
    compute = fake_descriptors(calls)

    def dies_on_the_second_chunk(part, rows):
        if calls:
            raise KeyboardInterrupt
        return compute(part, rows)

    with pytest.raises(KeyboardInterrupt):
        cached_descriptors(tmp_path, "caltech", key, images, dies_on_the_second_chunk, chunk=4, log=lambda m: None)
    messages = []
    rows = cached_descriptors(tmp_path, "caltech", key, images, compute, chunk=4, log=messages.append)
    assert [len(c) for c in calls] == [4, 4, 1] and "resuming at image 4 of 9" in messages[0]
    assert sorted(tmp_path.glob("caltech__*")) == [cache_path(tmp_path, "caltech", key)]  # the chunks' files joined into one
    assert torch.equal(rows, fake_descriptors([])(images))


def test_a_file_whose_key_differs_from_its_name_is_refused(tmp_path, images):
    key = FeatureKey.of("abc", (256,), "stack", True, images)
    cached_descriptors(tmp_path, "x", key, images, fake_descriptors([]), log=lambda m: None)
    other = FeatureKey.of("zzz", (256,), "stack", True, images)
    cache_path(tmp_path, "x", key).rename(cache_path(tmp_path, "x", other))
    with pytest.raises(ValueError, match="other inputs than its name says"):
        cached_descriptors(tmp_path, "x", other, images, fake_descriptors([]), log=lambda m: None)
