"""Trained nets loaded for use (evaluate, predict, fine-tuning's source): from one of our run
checkpoints or from a weight spec (`vgg.nets.weights`), with where each came from: its run,
training scale, classes, dataset, seed, and whether its training had finished.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from vgg.data.normalization import TORCHVISION, Normalization
from vgg.nets.models import VGG, VGGSpec
from vgg.nets.torchvision_compat import vgg_from_torchvision_state_dict
from vgg.nets.weights import load_weights
from vgg.recipe.profiles import Profile, load_profiles
from vgg.runtime.checkpoint import DAMAGED, checkpoint_file, load_run_checkpoint, read_done


@dataclass
class Net:
    """A trained net ready to evaluate, with where it came from."""

    model: VGG
    normalization: Normalization
    profile: Profile
    source: Path
    run: str
    train_scale: str
    classes: tuple[str, ...] | None
    data_dir: str | None = None  # the dataset a checkpoint was trained on
    seed: int | None = None  # the training seed of our checkpoints (None: published weights)
    training: str = ""  # our checkpoints: "finished", or "unfinished" (mid-run: preempted, killed, still training)
    regression: str = "none"  # a box regressor's (Appendix A: scr, pcr): its outputs are boxes, not class scores

    def sha256(self) -> str:
        """The first 16 hex digits of its file's SHA-256 (`file_sha256`)."""
        return file_sha256(self.source)


def file_sha256(path: Path) -> str:
    """The first 16 hex digits of a file's SHA-256: which checkpoint a score file was made from."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def load_net(checkpoint: Path | str | None = None, weights: Path | str | None = None) -> Net:
    """A net from one of our checkpoints, or from a weight spec (`vgg.nets.weights`: a torchvision-format
    state dict file, or torchvision:vgg16)."""
    if (checkpoint is None) == (weights is None):
        raise ValueError("give exactly one of --checkpoint (our runs) and --weights (a torchvision-format state dict or torchvision:NAME)")
    if checkpoint is not None:
        path = checkpoint_file(checkpoint)
        state = load_run_checkpoint(
            path, "--checkpoint takes a run folder or its checkpoint.pt", damaged=f"it was {DAMAGED}: remove {path.parent} and train that run again"
        )
        model = VGG.from_spec(VGGSpec(**state["spec"]))
        model.load_state_dict(state["model"])
        profile = Profile.from_dict(state["profile"])
        return Net(
            model, Normalization.from_dict(state["normalization"]), profile, path, path.parent.name, state["train_scale"],
            tuple(state["classes"]), state["run"].get("data"), int(state["run"].get("seed", 0)),
            "finished" if training_finished(state, path.parent) else "unfinished", state["run"].get("regression", "none"),
        )
    loaded = load_weights(str(weights))
    model = vgg_from_torchvision_state_dict(loaded.state_dict)
    return Net(model, TORCHVISION, profile_for_crop(model.spec.crop), loaded.path, loaded.name, "unknown", None)


def training_finished(state: dict, run_dir: Path) -> bool:
    """Whether a checkpoint is of a finished run: its folder's DONE is of the same run, or (a copied
    checkpoint) it was saved at an epoch's end after the last epoch or the schedule's stop."""
    done = read_done(run_dir)
    if done is not None and done.get("run_hash") == state.get("run_hash"):
        return True
    at_the_end = state["epoch"] >= state.get("max_epochs", float("inf")) or state["schedule"].get("finished", False)
    return state["step_in_epoch"] == 0 and at_the_end


def unfinished_warning(checkpoint: Path) -> str:
    """The warning line for scoring the checkpoint of an unfinished run."""
    return (
        f"warning: {checkpoint} is the checkpoint of an unfinished run (no DONE beside it: preempted, killed or still "
        f"training): these errors are of a partly trained net; the results row says training=unfinished"
    )


def default_dataset(net: Net, data: str | None) -> str:
    """The dataset to evaluate `net` on: `data` when given, else the one the net was trained on (our
    checkpoints record it), else its profile's default."""
    if data:
        return data
    if net.data_dir:
        if not Path(net.data_dir).is_dir():
            raise ValueError(
                f"{net.run} was trained on {net.data_dir}, which is not a folder from here; pass --data DIR "
                "(the dataset moved, or the path was relative to another working directory)"
            )
        return net.data_dir
    if not net.profile.data:
        raise ValueError("pass --data DIR (the net's profile has no default dataset)")
    return net.profile.data


def profile_for_crop(crop: int) -> Profile:
    """The profile whose crop is `crop` (torchvision's weights: 224, the paper profile)."""
    for profile in load_profiles().values():
        if profile.crop == crop:
            return profile
    raise ValueError(f"no profile has a {crop} px crop; add one to experiments/profiles.toml")
