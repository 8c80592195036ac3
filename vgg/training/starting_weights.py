"""Where a run's net gets its first weights (Sect. 3.1), in one vocabulary for every caller.

An `InitSource` is one of:
- `random`: the profile's random init (paper: N(0, 0.01^2); smoke, ci: Glorot uniform);
- `paper` or `glorot`: that random init whatever the profile;
- `from:RUN`: a finished run of this suite (its folder or checkpoint.pt). A net A gives a deeper
  net its first four conv layers and its three FC layers, the rest random (the paper's way to
  start B-E); a net of the same configuration gives every layer (fine-tuning it);
- `weights:SPEC`: trained weights (`vgg.nets.weights`: torchvision:NAME, a torchvision-format file, or
  checkpoint:RUN) for every layer but the last, which is new and sized to this dataset
  (fine-tuning on other classes).

The same words are used everywhere: `init` in experiments/runs.toml (where `from:` names a run
of the catalogue, which the suite turns into its folder), `--init` of `train` (random, paper,
glorot, from:RUN) and `--weights` of `train` and `finetune` (the SPEC of `weights:`).
`TrainConfig` keeps the parent run in `init` and the weights in `weights`, as the run hashes of
existing runs were computed from those two fields.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from vgg.data.normalization import Normalization
from vgg.nets.configs import A_CONFIGS, has_lrn
from vgg.nets.initialization import init_from_a
from vgg.nets.models import FREEZE_CHOICES, VGG, VGGSpec, is_head
from vgg.nets.trained import Net, load_net
from vgg.recipe.paper import PAPER
from vgg.recipe.profiles import Profile
from vgg.runtime.checkpoint import DAMAGED, checkpoint_file, load_run_checkpoint, read_done

RANDOM, PARENT_PREFIX, WEIGHTS_PREFIX, CHECKPOINT_PREFIX = "random", "from:", "weights:", "checkpoint:"
RANDOM_SCHEMES = ("paper", "glorot")
"""Random inits by name; `random` is the profile's (its `random_init`)."""


def init_words(parent: str = "RUN") -> str:
    """The words `--init` (and runs.toml, with `parent="<run id>"`) takes, for messages."""
    return f"{RANDOM}, {', '.join(RANDOM_SCHEMES)} or {PARENT_PREFIX}{parent}"


INIT_WORDS = init_words()


@dataclass(frozen=True)
class InitSource:
    """Where a net's first weights come from: `kind` is "random", "parent" or "weights"; `scheme`
    the random init's (None: the profile's); `where` the parent run or the weight spec."""

    kind: str
    scheme: str | None = None
    where: str | None = None

    @classmethod
    def parse(cls, text: str | None) -> InitSource:
        """`random` (or None), `paper`, `glorot`, `from:RUN` or `weights:SPEC`."""
        if text is None or text == RANDOM:
            return cls("random")
        if text in RANDOM_SCHEMES:
            return cls("random", scheme=text)
        for prefix, kind in ((PARENT_PREFIX, "parent"), (WEIGHTS_PREFIX, "weights")):
            if text.startswith(prefix) and len(text) > len(prefix):
                return cls(kind, where=text[len(prefix) :])
        raise ValueError(f"init must be {INIT_WORDS} (or {WEIGHTS_PREFIX}SPEC), got {text!r}")

    @classmethod
    def of_run(cls, init: str | None, weights: str | None) -> InitSource:
        """The source of a run given its `--init` and `--weights` (`TrainConfig.init`, `.weights`)."""
        if weights is None:
            return cls.parse(init)
        if init is not None:
            raise ValueError("fine-tuning from --weights replaces --init: give one of them")
        return cls("weights", where=weights)


def normalized_init(init: str | None) -> str | None:
    """`TrainConfig.init` as stored: None for the profile's random init (`random` or None), checked."""
    try:
        source = InitSource.parse(init)
    except ValueError:
        raise ValueError(f"--init must be {INIT_WORDS}, got {init!r}") from None
    if source.kind == "weights":
        raise ValueError(f"--init takes {INIT_WORDS}; trained weights are given with --weights SPEC, not --init {init}")
    return None if init == RANDOM else init


@dataclass
class FirstWeights:
    """A run's net with its first weights, and whether it fine-tunes a trained net (the profile's
    finetune_* recipe then applies)."""

    model: VGG
    fine_tune: bool


@dataclass
class NetOptions:
    """What a run says about its net besides its source: `vgg.training.run_config.TrainConfig`'s model fields."""

    config: str
    batch_norm: bool
    dropout: float
    lrn_alpha: float | None
    freeze: str
    head_lr_mult: float


def first_weights(
    source: InitSource, options: NetOptions, profile: Profile, normalization: Normalization, classes: tuple[str, ...],
    log: Callable[[str], None], outputs: int | None = None,
) -> FirstWeights:
    """The net of a run's start, initialised from `source`, for a dataset of `classes`. `outputs`: the last
    layer's width when it is not one score per class (a box regressor's, Appendix A); its parent, a classification
    net of the same configuration, then gives every other layer."""
    check_net_options(options, source)
    outputs_given, outputs = outputs is not None, len(classes) if outputs is None else outputs
    spec = VGGSpec(
        options.config, num_classes=outputs, width=profile.width, crop=profile.crop, batch_norm=options.batch_norm,
        dropout=options.dropout, lrn_alpha=VGGSpec.lrn_alpha if options.lrn_alpha is None else options.lrn_alpha,
    )
    scheme = source.scheme or profile.random_init
    trained = weights_net(source.where, profile, normalization) if source.kind == "weights" else None
    if trained is not None:
        spec = VGGSpec(**{**trained.model.spec.to_dict(), "num_classes": outputs, "dropout": options.dropout})
    model = VGG.from_spec(spec, init=scheme, init_std=profile.init_std)
    fine_tune = source.kind == "weights"
    if trained is not None:
        _copy_all_but_head(model, trained.model, options, source, log)
    elif source.kind == "parent":
        fine_tune = _copy_from_parent(model, Path(source.where), classes, profile, normalization, options, log, new_head=outputs_given)
    if options.freeze == "features" and not fine_tune:
        raise ValueError(
            "--freeze features trains the FC layers of a trained net: fine-tune one (--init from:RUN of the same "
            "configuration, or vgg finetune --weights/--checkpoint), not a net from random init or from A"
        )
    return FirstWeights(model, fine_tune)


def check_net_options(options: NetOptions, source: InitSource) -> None:
    """The run's freeze and LRN settings, checked before any network is built."""
    if options.freeze not in FREEZE_CHOICES:
        raise ValueError(f"--freeze must be one of {', '.join(FREEZE_CHOICES)}, got {options.freeze!r}")
    if options.lrn_alpha is not None:
        if not has_lrn(options.config):
            raise ValueError(f"--lrn-alpha applies to configurations with LRN (A-LRN); {options.config} has none")
        if source.kind == "weights":
            raise ValueError("--lrn-alpha cannot change the LRN of a net fine-tuned from --weights: it keeps the source's")


def weights_net(spec: str, profile: Profile, normalization: Normalization) -> Net:
    """The trained net of a weight spec (checkpoint:RUN or `vgg.nets.weights`'), checked against the run's
    profile and normalisation."""
    net = load_net(checkpoint=spec[len(CHECKPOINT_PREFIX) :]) if spec.startswith(CHECKPOINT_PREFIX) else load_net(weights=spec)
    if net.model.spec.crop != profile.crop:
        raise ValueError(
            f"{spec} was trained at a {net.model.spec.crop} px crop but the {profile.name} profile crops "
            f"{profile.crop} px; use the profile of that crop (torchvision's weights: --profile paper)"
        )
    if net.normalization != normalization:
        raise ValueError(f"{spec} expects the {net.normalization.name} normalisation, not {normalization.name}")
    return net


def _copy_all_but_head(model: VGG, trained: VGG, options: NetOptions, source: InitSource, log: Callable[[str], None]) -> None:
    """Every layer from the trained net but the last, which is new (sized from this dataset, or a box regressor's)."""
    state = {key: value for key, value in trained.state_dict().items() if not is_head(key)}
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and all(is_head(key) for key in missing), (missing, unexpected)
    # The new layer starts small (N(0, 0.01^2), as torchvision and the paper init FC layers): a
    # Glorot-sized head on a trained net's large activations saturates the soft-max at once.
    with torch.no_grad():
        model.head.weight.normal_(0.0, PAPER.init_std)
        model.head.bias.zero_()
    what = "the FC layers only (features frozen)" if options.freeze == "features" else "every layer"
    log(f"fine-tuning VGG-{model.config} from {source.where}: every layer but a new last layer of {model.spec.num_classes} outputs "
        f"comes from the weights; training {what}, the new layer at {options.head_lr_mult:g}x the learning rate")


def _copy_from_parent(
    model: VGG, path: Path, classes: tuple[str, ...], profile: Profile, normalization: Normalization, options: NetOptions, log: Callable[[str], None],
    new_head: bool = False,
) -> bool:
    """Initialise from a parent run; True when fine-tuning a net of the same configuration."""
    folder = checkpoint_file(path).parent
    parent_state = load_run_checkpoint(
        path, "--init from: takes the folder of a finished run", damaged=f"it was {DAMAGED}: remove {folder} and train that run again",
        advice="a torchvision state dict starts a run through python -m vgg finetune --weights",
    )
    if read_done(folder) is None:
        raise ValueError(f"{path} has not finished training (no DONE file): finish it first (rerun its command to resume it)")
    parent_spec = VGGSpec(**parent_state["spec"])
    if tuple(parent_state["classes"]) != classes:
        theirs, ours = tuple(parent_state["classes"]), classes
        differing = next((f"{a} vs {b}" for a, b in zip(theirs, ours) if a != b), f"{len(theirs)} vs {len(ours)} classes")
        raise ValueError(f"{path} was trained on other classes than this run's dataset ({differing}): train the parent on this dataset")
    if parent_state["normalization"] != normalization.to_dict():
        raise ValueError(f"{path} was trained with normalisation {parent_state['normalization']['name']}, not {normalization.name}")
    parent = VGG.from_spec(parent_spec)
    parent.load_state_dict(parent_state["model"])
    if parent_spec.config == model.config and new_head:  # a box regressor: a new last layer
        if replace(parent_spec, num_classes=model.spec.num_classes) != model.spec:
            raise ValueError(f"cannot fine-tune from {path}: its network is {parent_spec}, this run's is {model.spec}")
        _copy_all_but_head(model, parent, options, InitSource("parent", where=str(path)), log)
        return True
    if parent_spec.config == model.config:
        if parent_spec != model.spec:
            raise ValueError(f"cannot fine-tune from {path}: its network is {parent_spec}, this run's is {model.spec}")
        model.load_state_dict(parent.state_dict())
        log(f"initialised every layer from {path} (fine-tuning, default lr {profile.finetune_lr})")
        return True
    if parent_spec.config not in A_CONFIGS:
        raise ValueError(f"--init from: takes a net of the same configuration (fine-tuning) or a net A; {path} is {parent_spec.config}")
    copied = init_from_a(model, parent, std=profile.init_std, scheme=profile.random_init)
    log(f"initialised {len(copied)} tensors (first four conv and three FC layers) from A at {path}; the rest {profile.random_init} init")
    return False
