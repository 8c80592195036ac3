"""Appendix B in the runner: each transfer net's descriptors of each dataset's images (cached on disk), the SVM
protocols' results rows (Tables 11 and 12) and the paired comparisons of scale settings
(results/transfer_comparisons.csv).

Nets: at the paper profile, torchvision's weights of configurations D and E (`vgg16`, `vgg19`, trained by
torchvision's recipe, not the paper's released Caffe nets: a file of `--weights-dir`, else torchvision's cache); at the others, the suite's own runs (trained when missing). Datasets:
the roots given (`--transfer-data VOC2007=DIR ...`) and, at a profile with `transfer_data`, the toy sets generated
there. Descriptors are extracted once per (net, dataset part) at every scale any row or comparison needs, kept
per scale unnormalised in RUNS/<profile>/features/ (`vgg.transfer.feature_cache`), and combined (stacked or
averaged over any subset of the scales) when scored.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import cache, cached_property
from pathlib import Path

import numpy as np
import torch

from vgg.data.synthetic_transfer import TransferSpec, generate_transfer
from vgg.nets.models import VGG
from vgg.nets.trained import Net, file_sha256, load_net
from vgg.runtime.checkpoint import CHECKPOINT_NAME, git_commit, utc_timestamp
from vgg.suite.comparisons import is_provisional, verdict
from vgg.suite.plan import Experiment
from vgg.suite.results_csv import upsert_rows
from vgg.suite.transfer_plan import TRANSFER_COMPARISONS_FILE, WEIGHTS_PROFILE, Setting, TransferComparison, TransferNet, TransferSet
from vgg.transfer.feature_cache import FeatureKey, cached_descriptors
from vgg.transfer.features import RAW, combine_raw, descriptors, fuse_descriptors
from vgg.transfer.protocols import TransferResult, paired_difference
from vgg.transfer.tasks import DATASETS, ROOT_OPTIONS, LoadedTask, load_task

TRANSFER_KEY = ("profile", "transfer_set", "dataset", "net", "test_scales", "combine", "features")
"""What identifies a row of results/table11.csv and table12.csv."""
TRANSFER_FIELDS = (
    "profile", "transfer_set", "dataset", "net", "paper_row", "weights", "weights_sha256", "test_scales", "combine", "flip", "features",
    "metric", "value", "value_lo", "value_hi", "value_std", "per_split", "chosen_c", "train_images", "test_images", "classes", "chance",
    "git_commit", "device", "date",
)  # fmt: skip
COMPARISON_KEY = ("profile", "transfer_set", "dataset", "comparison", "net")
COMPARISON_FIELDS = (
    "profile", "transfer_set", "dataset", "comparison", "net", "entry", "reference", "metric", "diff", "diff_lo", "diff_hi",
    "paper_diff", "paper_says", "verdict", "provisional", "entry_value", "reference_value", "test_images", "git_commit", "date",
)  # fmt: skip


def slug(text: str) -> str:
    """A file-name-safe form of a name ("Net-D & Net-E" -> "Net-D-Net-E")."""
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-")


def state_sha256(model: torch.nn.Module) -> str:
    """The first 16 hex digits of the SHA-256 of a model's parameters and buffers, in order: a net made in memory."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


@dataclass
class Extractor:
    """A net that describes images, and what its descriptors are keyed by."""

    net: Net
    sha256: str
    source: str  # the weights file, run folder or "random init"


class TransferRunner:
    """The transfer entries of one experiment, for an `ExperimentRunner` (its runs trained already)."""

    def __init__(self, runner, experiment: Experiment):
        self.runner, self.experiment, self.plan = runner, experiment, experiment.transfer
        self.nets = {net.name: net for net in experiment.transfer.nets}

    # ----- what is evaluated ----------------------------------------------------------
    @property
    def published(self) -> bool:
        """Whether the nets are torchvision's (the paper profile) rather than the suite's runs."""
        return self.runner.profile.name == WEIGHTS_PROFILE

    @cached_property
    def roots(self) -> dict[str, Path]:
        """Each dataset of the experiment that can be evaluated here, and its root: the toy sets at a profile that
        has them (generated when absent), the others where their root was given."""
        found, given = {}, self.runner.transfer_roots
        unknown = sorted(set(given) - set(ROOT_OPTIONS))
        if unknown:
            raise ValueError(f"unknown transfer dataset {unknown[0]}; give the roots of {', '.join(ROOT_OPTIONS)} (e.g. VOC2007=/data/VOCdevkit)")
        toy = self.runner.profile.transfer_data
        for spec in self.plan.sets:
            dataset = DATASETS[spec.dataset]
            if dataset.toy and toy:
                found[spec.dataset] = self.toy_root
            elif not dataset.toy and dataset.root_option in given:
                found[spec.dataset] = Path(given[dataset.root_option])
        if not found:
            options = sorted({DATASETS[s.dataset].root_option for s in self.plan.sets} - {""})
            raise ValueError(f"{self.experiment.name}: no dataset to evaluate at the {self.runner.profile.name} profile; give the root of one of "
                             f"{', '.join(options)} (make {self.experiment.name} {options[0]}=DIR, or --transfer-data {options[0]}=DIR)")
        skipped = [s.dataset for s in self.plan.sets if s.dataset not in found and not DATASETS[s.dataset].toy]
        if skipped:
            self.runner.log(f"{self.experiment.name}: not evaluating {', '.join(skipped)} (no root given: "
                            f"{', '.join(sorted({DATASETS[d].root_option + '=DIR' for d in skipped}))})")
        return found

    @cached_property
    def toy_root(self) -> Path:
        """The profile's toy transfer sets, generated when absent."""
        return generate_transfer(Path(self.runner.profile.transfer_data), TransferSpec(**self.runner.profile.transfer_synthetic))

    @cache
    def task(self, dataset: str) -> LoadedTask:
        task = load_task(dataset, self.roots[dataset])
        self.runner.log(f"{self.experiment.name}: {dataset} from {task.root}: {task.sizes}")
        return task

    # ----- nets ---------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.runner.protocol_device

    def weights_file(self, name: str) -> str:
        """torchvision's `name` (vgg16, vgg19): `name-*.pth` (or `name.pth`) in --weights-dir, else torchvision's cache."""
        folder = self.runner.weights_dir
        if not folder:
            return f"torchvision:{name}"
        found = sorted(p for p in Path(folder).glob(f"{name}*.pt*") if re.fullmatch(rf"{name}(-[0-9a-f]+)?\.pth?", p.name))
        if not found:
            raise ValueError(f"no {name} weights in {folder} (expected torchvision's {name}-*.pth, e.g. {name}-397923af.pth)")
        return str(found[0])

    @cache
    def extractor(self, name: str) -> Extractor:
        """The net of a `weights`/`run` or `random` entry, loaded (or initialised) once."""
        net = self.nets[name]
        if net.random:
            base = self.extractor(net.random).net
            torch.manual_seed(0)
            model = VGG.from_spec(base.model.spec, init=self.runner.profile.random_init)
            random = Net(model, base.normalization, base.profile, Path("random"), f"{net.random} (random init)", "none", None)
            return Extractor(random, state_sha256(model), f"{net.random}'s architecture, random init ({self.runner.profile.random_init}, seed 0)")
        if self.published:
            source = self.weights_file(net.weights)
            loaded = load_net(weights=source)
            return Extractor(loaded, loaded.sha256(), str(loaded.source))
        checkpoint = self.runner.run_dir(net.run) / CHECKPOINT_NAME
        return Extractor(load_net(checkpoint=checkpoint), file_sha256(checkpoint), str(checkpoint.parent))

    def members(self, name: str) -> tuple[str, ...]:
        """The nets whose descriptors make `name`'s: itself, or the nets it stacks."""
        return self.nets[name].stack or (name,)

    # ----- descriptors --------------------------------------------------------------
    def scales_needed(self, dataset: str) -> tuple[int, ...]:
        """Every scale (paper units) a row or comparison on `dataset` uses, sorted: extracted in one pass."""
        spec = next(s for s in self.plan.sets if s.dataset == dataset)
        settings = [spec.setting] + [s for c in self.plan.comparisons if dataset in c.datasets for s in (c.entry, c.reference)]
        return tuple(sorted({q for setting in settings for q in setting.scales}))

    @cache
    def raw(self, member: str, dataset: str, part: str) -> torch.Tensor:
        """A single net's raw per-scale descriptors of a part (`RAW`), from the cache or extracted."""
        extractor, task = self.extractor(member), self.task(dataset)
        images, boxes = task.parts[part].images, task.parts[part].boxes
        scales = self.scales_needed(dataset)
        pixels = [self.runner.profile.size(q) for q in scales]
        key = FeatureKey.of(extractor.sha256, pixels, RAW, True, images, boxes)

        def compute(chunk, rows: range) -> torch.Tensor:
            if rows.start == 0:
                self.runner.log(f"[{member}] {dataset} {part}: descriptors of {len(images)} {'boxes' if boxes is not None else 'images'} at Q = {list(scales)}")
            chosen = None if boxes is None else boxes[rows.start : rows.stop]
            return descriptors(extractor.net, chunk, pixels, RAW, True, self.device, self.runner.loader_workers, boxes=chosen)

        # named by net and split only: datasets sharing images (the toy multi-label and action sets) share the file
        name = "__".join(map(slug, (member, images.split + ("-boxes" if boxes is not None else ""))))
        return cached_descriptors(self.runner.profile_dir / "features", name, key, images, compute, log=self.runner.log)

    def part_descriptors(self, net: str, dataset: str, part: str, setting: Setting) -> np.ndarray:
        """A net's L2-normalised descriptors of a part under `setting` (a stack: its members' stacked)."""
        pixels = [self.runner.profile.size(q) for q in self.scales_needed(dataset)]
        chosen = [self.runner.profile.size(q) for q in setting.scales]
        parts = [combine_raw(self.raw(member, dataset, part), pixels, chosen, setting.combine) for member in self.members(net)]
        return fuse_descriptors(*parts).numpy()

    def features(self, net: str, dataset: str, setting: Setting, kind: str) -> dict[str, np.ndarray]:
        """The descriptors `score` takes, by part: each image's; for actions each person's image descriptor, and
        with "image+box" its box's stacked on it."""
        task = self.task(dataset)
        found = {}
        for part in (p for p in task.parts if not p.endswith("-boxes")):
            image = self.part_descriptors(net, dataset, part, setting)
            if part in task.image_rows:
                image = image[task.image_rows[part]]
                if kind == "image+box":
                    boxes = self.part_descriptors(net, dataset, f"{part}-boxes", setting)
                    image = fuse_descriptors(torch.from_numpy(image), torch.from_numpy(boxes)).numpy()
            found[part] = image
        return found

    @cache
    def result(self, net: str, dataset: str, setting: Setting, kind: str) -> TransferResult:
        return self.task(dataset).score(self.features(net, dataset, setting, kind))

    # ----- rows ---------------------------------------------------------------------
    def row(self, net: TransferNet, spec: TransferSet, kind: str, result: TransferResult) -> dict:
        """A results row: the score (%) with its 95% bootstrap interval over the test images, the spread over
        splits (Caltech), the C chosen, and where the descriptors came from."""
        task = self.task(spec.dataset)
        extractors = [self.extractor(member) for member in self.members(net.name)]
        return {
            "profile": self.runner.profile.name, "transfer_set": spec.dataset, "dataset": str(task.root), "net": net.name,
            "paper_row": net.paper_row, "weights": " + ".join(e.source for e in extractors), "weights_sha256": "+".join(e.sha256 for e in extractors),
            "test_scales": "|".join(map(str, spec.setting.scales)), "combine": spec.setting.combine, "flip": True, "features": kind,
            "metric": task.dataset.metric, "value": round(result.value, 3), "value_lo": round(result.low, 3), "value_hi": round(result.high, 3),
            "value_std": "" if result.std is None else round(result.std, 3), "per_split": " ".join(f"{v:.2f}" for v in result.per_split),
            "chosen_c": " ".join(f"{c:g}" for c in result.chosen_c), "train_images": task.sizes["train"], "test_images": task.sizes["test"],
            "classes": task.sizes["classes"], "chance": task.sizes["chance"], "git_commit": git_commit(), "device": self.device.type, "date": utc_timestamp(),
        }

    def comparison_rows(self, comparison: TransferComparison) -> list[dict]:
        """The comparison on each of its datasets evaluated here: entry - reference with its paired interval."""
        rows = []
        for dataset in (d for d in comparison.datasets if d in self.roots):
            kind = next(s for s in self.plan.sets if s.dataset == dataset).features[0]
            entry, reference = (self.result(comparison.net, dataset, setting, kind) for setting in (comparison.entry, comparison.reference))
            diff, low, high = paired_difference(entry, reference)
            paper = comparison.paper_sign
            rows.append({
                "profile": self.runner.profile.name, "transfer_set": dataset, "dataset": str(self.task(dataset).root), "comparison": comparison.name,
                "net": comparison.net, "entry": comparison.entry.text, "reference": comparison.reference.text, "metric": self.task(dataset).dataset.metric,
                "diff": round(diff, 3), "diff_lo": round(low, 3), "diff_hi": round(high, 3),
                "paper_diff": "" if comparison.paper_difference is None else comparison.paper_difference, "paper_says": comparison.paper,
                "verdict": verdict(low, high, paper), "provisional": is_provisional(1), "entry_value": round(entry.value, 3),
                "reference_value": round(reference.value, 3), "test_images": self.task(dataset).sizes["test"], "git_commit": git_commit(), "date": utc_timestamp(),
            })
        return rows

    def run(self, results: Path) -> list[dict]:
        """Every (net, dataset, features) row into `results`, and the comparisons into transfer_comparisons.csv."""
        rows = []
        for spec in self.plan.sets:
            if spec.dataset not in self.roots:
                continue
            for net in (net for net in self.plan.nets if net.row):
                for kind in spec.features:
                    result = self.result(net.name, spec.dataset, spec.setting, kind)
                    rows.append(self.row(net, spec, kind, result))
                    upsert_rows(results, [rows[-1]], key=TRANSFER_KEY, fields=TRANSFER_FIELDS)
                    spread = f" +- {result.std:.1f}" if result.std is not None else ""
                    self.runner.log(f"[{net.name}] {spec.dataset} ({kind}): {rows[-1]['metric']} {result.value:.1f}{spread} "
                                    f"[{result.low:.1f}, {result.high:.1f}], C = {rows[-1]['chosen_c']}")
        compared = [row for comparison in self.plan.comparisons for row in self.comparison_rows(comparison)]
        if compared:
            path = self.runner.results_dir / TRANSFER_COMPARISONS_FILE
            upsert_rows(path, compared, key=COMPARISON_KEY, fields=COMPARISON_FIELDS)
            self.runner.log(f"{self.experiment.name}: {len(compared)} paired comparisons in {path}")
        return rows
