"""vgg-repro: the networks, data pipeline, training recipe and test protocols of
Simonyan & Zisserman, "Very Deep Convolutional Networks for Large-Scale Image Recognition"
(ICLR 2015).

Its names are imported on first use, so that `python -m vgg` can catch stop signals before
torch loads (`vgg/__main__.py`)."""

from importlib import import_module

_EXPORTS = {
    "CONFIGS": "vgg.nets.configs",
    "TABLE1_CONFIGS": "vgg.nets.configs",
    "VGG": "vgg.nets.models",
    "VGGSpec": "vgg.nets.models",
    "init_from_a": "vgg.nets.initialization",
    "initialize": "vgg.nets.initialization",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'vgg' has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name]), name)
