"""Appendix A in the runner: the boxes of each localisation entry's members (saved per member beside the
score files, so that fusions and intervals are computed again without the nets), the results rows of Tables
8-10 and the paired comparisons the experiment file asks for (`[[comparison]]`, into results/comparisons.csv).

Box files live in RUNS/<profile>/scores/<member key>.boxes.pt and are reused while the member's checkpoint,
the dataset, the classes localised and `BOX_EVALUATION_VERSION` are the same.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from vgg.data.datasets import ImageList, load_split
from vgg.evaluation.scores import fuse, load_scores
from vgg.evaluation.statistics import error_interval_fields
from vgg.localisation.box_data import boxed_images, boxes_fingerprint
from vgg.localisation.protocols import (
    TOP_CLASSES, BoxPredictions, baseline_errors, centre_crop_boxes, centre_crop_errors, dense_boxes, dense_errors, pooled,
)
from vgg.nets.trained import file_sha256, load_net
from vgg.runtime.checkpoint import CHECKPOINT_NAME, git_commit, load_checkpoint, save_checkpoint, utc_timestamp
from vgg.suite.comparisons import SeedErrors, pair_rows, upsert_comparisons
from vgg.suite.localisation_plan import BoxMember, LocalisationComparison, LocalisationSpec
from vgg.suite.plan import ComparisonPair, Experiment, FusionSpec
from vgg.suite.published import localisation_paper_numbers
from vgg.suite.results_csv import upsert_rows

BOX_EVALUATION_VERSION = 1
"""Raised when the same protocol on the same checkpoint comes to compute other boxes: box files of another
version are computed again."""


@dataclass(frozen=True)
class LocalisationErrors:
    """A localisation entry's per-image errors (0/1, bool), top-1 and top-5 (Table 8: both the ground-truth
    class's), and for the centre-crop protocol the centre-half baseline's."""

    top1: np.ndarray
    top5: np.ndarray
    image_ids: list[str]
    baseline: np.ndarray | None = None

    def seed_errors(self) -> SeedErrors:
        return SeedErrors(self.top1[None], self.top5[None], self.image_ids)


class LocalisationRunner:
    """The localisation entries of one experiment, for an `ExperimentRunner` (its runs trained already)."""

    def __init__(self, runner, experiment: Experiment):
        self.runner, self.experiment = runner, experiment

    @cached_property
    def truth(self) -> tuple[ImageList, list[np.ndarray]]:
        """The val images with a box of their class, and those boxes."""
        return boxed_images(load_split(self.runner.data, "val"), self.runner.data, self.runner.log)

    @cached_property
    def top_classes(self) -> tuple[torch.Tensor, str]:
        """The top-5 classes of each boxed val image by the experiment's [classes] entry (run or fusion), and
        a short digest of them (box files of dense members depend on them)."""
        entry = self.experiment.classes
        if isinstance(entry, FusionSpec):
            self.runner.fuse(entry)
            posteriors, (first, *_) = fuse([self.runner.scores_path(member) for member in entry.members])
        else:
            self.runner.evaluate(entry)
            first = load_scores(self.runner.scores_path(entry))
            posteriors = first["posteriors"]
        position = {image_id: i for i, image_id in enumerate(first["image_ids"])}
        images, _ = self.truth
        missing = [image_id for image_id in images.image_ids() if image_id not in position]
        if missing:
            raise ValueError(f"the [classes] entry's scores lack {len(missing)} boxed val images (e.g. {missing[0]}): evaluate it on this dataset")
        rows = posteriors[[position[image_id] for image_id in images.image_ids()]]
        top = torch.sort(rows.float(), dim=1, descending=True, stable=True).indices[:, :TOP_CLASSES]
        self.classes_top5_err = round(100 * float((top != torch.from_numpy(images.samples.labels)[:, None]).all(dim=1).float().mean()), 3)
        return top, hashlib.sha256(top.numpy().tobytes()).hexdigest()[:12]

    @property
    def device(self) -> torch.device:
        return self.runner.protocol_device

    @property
    def workers(self) -> int:
        return self.runner.loader_workers

    def box_path(self, member: BoxMember, protocol: str) -> Path:
        classes = self.top_classes[1] if protocol == "dense" else ""
        return self.runner.profile_dir / "scores" / f"{member.key(protocol, classes)}.boxes.pt"

    def predictions(self, member: BoxMember, protocol: str) -> BoxPredictions:
        """A member's boxes, from its box file when that is current, else computed and saved."""
        path = self.box_path(member, protocol)
        checkpoint = self.runner.run_dir(member.run) / CHECKPOINT_NAME
        images, _ = self.truth
        scorer = self.runner.run_dir(self.runner.catalog[member.run].parent) / CHECKPOINT_NAME
        provenance = {
            "checkpoint_sha256": file_sha256(checkpoint), "dataset": self.runner.data, "version": BOX_EVALUATION_VERSION,
            "images": hashlib.sha256("\n".join(images.image_ids()).encode()).hexdigest()[:16], "boxes": boxes_fingerprint(self.runner.data),
            "scorer_sha256": file_sha256(scorer) if protocol == "dense" else "",
        }
        if path.exists():
            state = load_checkpoint(path, "box file", damaged=f"remove {path} to compute it again")
            if state.get("provenance") == provenance:
                return BoxPredictions(**state["predictions"])
        net = load_net(checkpoint=checkpoint)
        where = f"Q={','.join(map(str, member.scales))}"
        self.runner.log(f"[{member.run}] localising: {protocol} protocol at {where}")
        if protocol == "centre-crop":
            found = centre_crop_boxes(net, images, member.scales[0], self.device, workers=self.workers)
        else:
            found = dense_boxes(net, load_net(checkpoint=scorer), images, member.scales, self.top_classes[0], self.device, workers=self.workers)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_checkpoint({"predictions": found.to_dict(), "provenance": provenance}, path)
        return found

    def errors(self, spec: LocalisationSpec) -> LocalisationErrors:
        """An entry's per-image errors: its members' boxes pooled (dense), scored against the ground truth."""
        images, truth = self.truth
        parts = [self.predictions(member, spec.protocol) for member in spec.members]
        if any(part.image_ids != images.image_ids() for part in parts):
            raise ValueError(f"{spec.label}: a box file holds other images than the boxed val images of {self.runner.data}; remove it to compute it again")
        if spec.protocol == "centre-crop":
            wrong = centre_crop_errors(parts[0], truth)
            return LocalisationErrors(wrong, wrong, parts[0].image_ids, baseline_errors(parts[0].sizes, truth))
        top1, top5 = dense_errors(pooled(parts), truth)
        return LocalisationErrors(top1, top5, parts[0].image_ids)

    def row(self, spec: LocalisationSpec, errors: LocalisationErrors) -> dict:
        """The results row of an entry: errors in % with their 95% bootstrap intervals over the val images."""
        runs = [self.runner.catalog[member.run] for member in spec.members]
        row = {
            "profile": self.runner.profile.name, "dataset": self.runner.data, "dataset_images": len(errors.image_ids), "run": spec.run,
            "seed": 0, "config": runs[0].config, "train_scale": "+".join(run.train_scale for run in runs), "method": f"box-{spec.protocol}",
            "test_scales": spec.test_scales, "flip": False, "label": spec.label, "regression": "+".join(run.regression for run in runs),
            "fine_tuned": "+".join("FC layers" if run.freeze == "features" else "all layers" for run in runs),
            "top1_err": round(100 * float(errors.top1.mean()), 3), "top5_err": round(100 * float(errors.top5.mean()), 3),
            **error_interval_fields(errors.top1, errors.top5), "images": len(errors.image_ids),
            "git_commit": git_commit(), "device": self.device.type, "precision": "fp32", "date": utc_timestamp(),
        }
        if errors.baseline is not None:
            low_high = error_interval_fields(errors.baseline, errors.baseline)
            row.update(baseline_err=round(100 * float(errors.baseline.mean()), 3), baseline_err_lo=low_high["top1_err_lo"], baseline_err_hi=low_high["top1_err_hi"])
        if spec.protocol == "dense":
            row["classes_top5_err"] = self.classes_top5_err
            row["classes_from"] = self.experiment.classes.label if isinstance(self.experiment.classes, FusionSpec) else self.experiment.classes.run
        return row

    def comparison_rows(self, errors: dict[str, LocalisationErrors]) -> list[dict]:
        """The experiment's `[[comparison]]`s as comparisons.csv rows (`vgg.suite.comparisons.pair_rows`), against
        the paper's differences of the same rows (Table 8: its one error, as top-1 and top-5; Table 9: top-5 val)."""
        context = {"profile": self.runner.profile.name, "dataset": self.runner.data, "git_commit": git_commit(), "date": utc_timestamp()}
        rows = []
        for comparison in self.experiment.comparisons:
            reference = min(comparison.references, key=lambda spec: float(errors[spec.label].top5.mean()))
            pair = ComparisonPair(comparison.name, comparison.entry, reference)
            paper = {metric: self.paper_difference(comparison, metric) for metric in ("top1", "top5")}
            rows += pair_rows(pair, reference, errors[comparison.entry.label].seed_errors(), errors[reference.label].seed_errors(), context, paper)
        return rows

    def paper_difference(self, comparison: LocalisationComparison, metric: str) -> float | None:
        """The paper's entry - reference difference: Table 8's error (both metrics), else Table 9's top-5 val error;
        of several references (a fusion's members), the paper's best."""
        table = self.experiment.paper_table
        key = "value" if table == 8 else "val"
        if table != 8 and metric == "top1":
            return None
        mine = localisation_paper_numbers(table, comparison.entry.paper_row).get(key)
        theirs = [localisation_paper_numbers(table, spec.paper_row).get(key) for spec in comparison.references]
        return None if mine is None or None in theirs else round(mine - min(theirs), 1)

    def run(self, results: Path) -> list[dict]:
        """Every localisation entry's row into `results`, and the comparisons into comparisons.csv (seed 0's nets)."""
        if self.runner.seeds > 1:
            self.runner.log(f"{self.experiment.name}: localisation is evaluated for seed 0's nets only")
        errors, rows = {}, []
        for spec in self.experiment.localisations:
            errors[spec.label] = self.errors(spec)
            training = self.runner.training_summary(spec.members[0].run) if len(spec.members) == 1 else {}
            rows.append({**self.row(spec, errors[spec.label]), **training})
            upsert_rows(results, [rows[-1]])
            self.runner.log(f"[{spec.label}] {spec.protocol} localisation error: top-1 {rows[-1]['top1_err']}%, top-5 {rows[-1]['top5_err']}%")
        if self.experiment.comparisons:
            path = upsert_comparisons(self.runner.results_dir, self.comparison_rows(errors))
            self.runner.log(f"{self.experiment.name}: {len(self.experiment.comparisons)} paired comparisons in {path}")
        return rows
