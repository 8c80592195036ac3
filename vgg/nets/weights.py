"""Weight specs: a torchvision-format state dict on disk, or `torchvision:<model>` through
torchvision's weights API (from torch hub's cache; downloaded when online).

The configuration is inferred from the keys and shapes (`vgg.nets.torchvision_compat`), and
torchvision's mean/std normalisation comes with them. ImageNet class names come from
torchvision's weight metadata, which needs no download.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from vgg.nets.torchvision_compat import clean_state_dict, infer_spec
from vgg.runtime.checkpoint import load_tensors

TORCHVISION_PREFIX = "torchvision:"
TORCHVISION_MODELS = ("vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn")


@dataclass
class LoadedWeights:
    state_dict: dict[str, torch.Tensor]
    path: Path  # the file the weights came from
    name: str  # a short name for results rows (the file's stem)


def imagenet_categories() -> list[str]:
    """The 1000 ImageNet class names in torchvision's (sorted-wnid) order, from its metadata."""
    import torchvision  # here: importing torchvision costs every command start-up time; only these helpers need it

    return list(torchvision.models.VGG16_Weights.IMAGENET1K_V1.meta["categories"])


def _torchvision_weights(model: str):
    import torchvision  # here: see imagenet_categories

    if model not in TORCHVISION_MODELS:
        raise ValueError(f"unknown torchvision VGG {model!r}; choose one of {', '.join(TORCHVISION_MODELS)}")
    return torchvision.models.get_model_weights(model).DEFAULT


def cache_path(model: str) -> Path:
    """Where torch hub keeps (or would keep) torchvision's file for `model`."""
    weights = _torchvision_weights(model)
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)


def _download(url: str, destination: Path) -> None:
    destination.parent.mkdir(parents=True, exist_ok=True)
    torch.hub.download_url_to_file(url, str(destination), progress=False)


def load_weights(spec: str) -> LoadedWeights:
    """Resolve a weight spec to a state dict (loaded with weights_only=True)."""
    if spec.startswith(TORCHVISION_PREFIX):
        model = spec[len(TORCHVISION_PREFIX) :]
        path = cache_path(model)
        if not path.exists():
            url = _torchvision_weights(model).url
            try:
                _download(url, path)
            except Exception as error:  # offline: URLError, socket errors, proxies ...
                raise ValueError(
                    f"torchvision's {model} weights are not in the cache ({path}) and could not be downloaded "
                    f"({type(error).__name__}: {error}). On a machine with network access download {url} "
                    f"and put the file at {path} (or pass its path: --weights /path/{path.name})"
                ) from None
        name = model
    else:
        path = Path(spec)
        if not path.is_file():
            raise ValueError(f"weights file {path} does not exist (expected a torchvision-format VGG state dict, or torchvision:vgg16)")
        name = path.stem
    state_dict = load_tensors(path, "weights file", "download or copy it again")
    if not isinstance(state_dict, dict):
        raise ValueError(f"{path} does not hold a state dict")
    state_dict = clean_state_dict(state_dict)
    infer_spec(state_dict)  # a clear error now if it is not a VGG
    return LoadedWeights(state_dict, path, name)
