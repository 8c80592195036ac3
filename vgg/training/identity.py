"""What identifies a training run, so that a finished run is reused exactly when it is the run asked for.

A run's identity (version 3) is its settings (`TrainConfig`'s fields above `workers`) with two
paths replaced by content, plus the recipe its profile gives it:
- the dataset by its content (`dataset_fingerprint`: class lists, image counts, the names and
  sizes of a sample of files), so that moving the dataset does not change it;
- the parent of an `init="from:RUN"` run by the parent's own run hash (from its `DONE`), so that
  moving the runs folder does not change it, and retraining the parent does;
- `recipe`: every profile value that shapes training (schedule, epochs, guards, batch, widths ...)
  and, for nets with LRN, the model's LRN default, so that a changed recipe is never silently reused.

Versions: 1 had the settings with their paths and no recipe; 2 added the recipe; 3 marks two
changes of what the same recipe computes: the training crops of a fixed S are cut from the image
rescaled to S (the paper's order; `vgg.data.transforms`), where they were resized from the source's
region, and drop deadlines round to the nearest epoch, where they rounded up (`vgg.training.schedule`). A
run of another version is another run.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import MISSING
from dataclasses import fields as dataclass_fields
from functools import lru_cache
from pathlib import Path

from vgg.data.datasets import DatasetLayoutError, ImageList, load_split
from vgg.nets.configs import has_lrn
from vgg.nets.models import VGGSpec
from vgg.recipe.profiles import Profile
from vgg.runtime.checkpoint import checkpoint_file, read_done

IDENTITY_VERSION = 3
NOT_RECIPE = ("name", "description", "data", "synthetic", "cache_decoded", "eval_precision", "transfer_data", "transfer_synthetic")
"""Profile fields that do not change what training computes (where, how fast, how it is evaluated)."""
FINGERPRINT_FILES = 256
"""Files per split whose names and sizes enter a dataset's fingerprint (evenly spaced, in sorted order)."""


def digest(value: object) -> str:
    """A 16-hex-digit hash of a JSON-serialisable value."""
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


BOX_RECIPE = ("box_train_images", "box_lr")
"""Profile fields that shape box regressors only (Appendix A): in their recipe, and no other run's."""


def recipe(profile: Profile, config: str, lrn_alpha: float | None = None, boxes: bool = False) -> dict:
    """The profile's values that shape training, and the model defaults a run of `config` does not
    set (the LRN constant, for configurations with LRN). Settings left at their default are left
    out, so that a new profile setting (with a default that keeps the old behaviour) changes no
    run's identity."""
    defaults = {f.name: f.default for f in dataclass_fields(Profile) if f.default is not MISSING}
    values = {
        key: list(value) if isinstance(value, tuple) else value
        for key, value in profile.to_dict().items()
        if key not in NOT_RECIPE and (key not in defaults or value != defaults[key]) and (boxes or key not in BOX_RECIPE)
    }
    if has_lrn(config):
        values["lrn_alpha"] = VGGSpec.lrn_alpha if lrn_alpha is None else lrn_alpha
    return values


@lru_cache(maxsize=8)
def _fingerprint(resolved: str, modified: float) -> str:
    return splits_fingerprint([load_split(resolved, split) for split in ("train", "val")])


def splits_fingerprint(splits: list[ImageList]) -> str:
    """`dataset_fingerprint` of a dataset's train and val lists already loaded (a trainer lists them
    anyway: listing ImageNet twice costs minutes on a network file system)."""
    parts = []
    for images in splits:
        step = max(1, len(images) // FINGERPRINT_FILES)
        names = [os.fsdecode(images.samples.relative_paths[i]) for i in range(0, len(images), step)]
        files = [[name, (images.root / name).stat().st_size] for name in names]
        parts.append({"classes": list(images.classes), "images": len(images), "files": files})
    return digest(parts)


def dataset_fingerprint(data: str) -> str:
    """A dataset by its content: its class lists, image counts and the names and sizes of a sample of
    its files, whatever folder holds it. A folder that cannot be read as a dataset is identified by its
    absolute path (training it fails later with the reason)."""
    path = Path(data).resolve()
    try:
        return _fingerprint(str(path), path.stat().st_mtime)
    except (OSError, DatasetLayoutError):
        return f"path:{path}"


def parent_run_hash(init: str) -> str:
    """`from:RUN` (a run folder or its checkpoint) as `from:<the parent's run hash>`; a parent that has
    not finished (no DONE) as `from:unfinished:<its folder>`, which no finished child can match."""
    path = Path(init[len("from:") :])
    run_dir = checkpoint_file(path).parent if path.suffix else path  # no suffix: a run folder, even one not there (yet)
    done = read_done(run_dir)
    if done is None or "run_hash" not in done:
        return f"from:unfinished:{run_dir.resolve()}"
    return f"from:{done['run_hash']}"


def run_identity(settings: dict, profile: Profile, lrn_alpha: float | None = None, splits: list[ImageList] | None = None) -> dict:
    """The identity (`IDENTITY_VERSION`) of a run with these settings (`TrainConfig.settings()`) on `profile`;
    `lrn_alpha`, the run's own LRN constant if it sets one, goes into the recipe in place of the default."""
    identity = {
        **settings, "data": dataset_fingerprint(settings["data"]) if splits is None else splits_fingerprint(splits), "recipe": recipe(profile, settings["config"], lrn_alpha, settings.get("regression", "none") != "none"),
        "identity_version": IDENTITY_VERSION,
    }
    if settings.get("regression", "none") != "none":
        from vgg.localisation.box_data import boxes_fingerprint  # only box runs read annotations

        identity["boxes"] = boxes_fingerprint(settings["data"])
    init = settings.get("init") or ""
    if init.startswith("from:"):
        identity["init"] = parent_run_hash(init)
    return identity


def format_differences(changed: dict) -> str:
    """`differences` for people: "epochs 2 -> 3, lr (default) -> 0.1"."""
    shown = lambda value: "(default)" if value is None else value
    return ", ".join(f"{key} {shown(old)} -> {shown(new)}" for key, (old, new) in changed.items())


def differences(stored: dict, current: dict) -> dict:
    """{key: (stored, current)} for the keys whose values differ, recipe keys named `recipe.KEY`."""
    changed = {}
    for key in sorted(stored.keys() | current.keys()):
        old, new = stored.get(key), current.get(key)
        if key == "recipe" and isinstance(old, dict) and isinstance(new, dict):
            changed.update({f"recipe.{k}": v for k, v in differences(old, new).items()})
        elif old != new:
            changed[key] = (old, new)
    return changed
