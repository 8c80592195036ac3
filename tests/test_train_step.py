"""The training step (`vgg.training.train_step`): the probe of `--decode auto` and the SGD groups."""

import torch

from vgg.data.datasets import load_split
from vgg.data.loaders import EpochSampler, ImageDataset, make_loader
from vgg.data.normalization import get_normalization
from vgg.data.transforms import ScaleRange, TrainTransform
from vgg.nets.models import VGG
from vgg.training.train_step import probe_rates, sgd_optimizer


def test_the_auto_probe_measures_both_rates_and_leaves_the_run_as_it_was(ci_data):
    images = load_split(ci_data, "train")
    loader = make_loader(ImageDataset(images, TrainTransform(ScaleRange.parse("37"), 32)), EpochSampler(len(images)), 8, workers=0)
    model = VGG.from_spec({"config": "A", "num_classes": 4, "width": 16, "crop": 32, "batch_norm": True}, init="glorot")
    before = {key: value.clone() for key, value in model.state_dict().items()}
    rng = torch.get_rng_state()
    loader_rate, step_rate = probe_rates(model.train(), model, get_normalization("mean-rgb"), loader, torch.device("cpu"), bf16=True, batches=2)
    assert loader_rate > 0 and step_rate > 0
    assert all(torch.equal(before[key], value) for key, value in model.state_dict().items())  # weights and batch-norm statistics
    assert all(p.grad is None for p in model.parameters()) and torch.equal(torch.get_rng_state(), rng)


def test_a_new_last_layer_gets_its_own_group_at_its_rate_multiple_and_frozen_features_none():
    model = VGG.from_spec({"config": "A", "num_classes": 4, "width": 16, "crop": 32}, init="glorot")
    head = {id(p) for p in model.head.parameters()}
    plain = sgd_optimizer(model, 0.01, momentum=0.9, weight_decay=5e-4)
    assert [group["lr_mult"] for group in plain.param_groups] == [1.0] and len(plain.param_groups[0]["params"]) == len(list(model.parameters()))
    scaled = sgd_optimizer(model, 0.01, momentum=0.9, weight_decay=5e-4, head_lr_mult=10.0, freeze_features=True)
    body, new_layer = scaled.param_groups
    assert {id(p) for p in new_layer["params"]} == head and new_layer["lr_mult"] == 10.0 and body["lr_mult"] == 1.0
    assert len(body["params"]) == 4  # FC1 and FC2: the conv layers are frozen (no gradient, in no group)
    assert all(not p.requires_grad for p in model.features.parameters())
    assert (body["momentum"], body["weight_decay"]) == (0.9, 5e-4)
