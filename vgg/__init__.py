"""vgg-repro: the networks, data pipeline, training recipe and test protocols of
Simonyan & Zisserman, "Very Deep Convolutional Networks for Large-Scale Image Recognition"
(ICLR 2015)."""

from vgg.configs import CONFIGS, TABLE1_CONFIGS
from vgg.initialization import init_from_a, initialize
from vgg.models import VGG, VGGSpec

__all__ = ["CONFIGS", "TABLE1_CONFIGS", "VGG", "VGGSpec", "init_from_a", "initialize"]
