"""vgg-repro: the networks, data pipeline, training recipe and test protocols of
Simonyan & Zisserman, "Very Deep Convolutional Networks for Large-Scale Image Recognition"
(ICLR 2015).

Its names are imported on first use, so that `python -m vgg` can catch stop signals before
torch loads (`vgg/__main__.py`)."""

from importlib import import_module

_EXPORTS = {
    "CONFIGS": "vgg.configs",
    "TABLE1_CONFIGS": "vgg.configs",
    "VGG": "vgg.models",
    "VGGSpec": "vgg.models",
    "init_from_a": "vgg.initialization",
    "initialize": "vgg.initialization",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'vgg' has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name]), name)
