"""`make pretrained`: every torchvision-format VGG weight file in a folder, under the paper's
test protocols (experiments/pretrained.toml), into results/pretrained.csv and
reports/pretrained.md beside the paper's numbers."""

from __future__ import annotations

import csv
from pathlib import Path

from tabulate import tabulate

from vgg.data.datasets import load_split
from vgg.evaluation.evaluate import average_results, evaluate, provenance_row
from vgg.evaluation.protocols import averaged_parts
from vgg.evaluation.scores import EvalResult
from vgg.nets.trained import load_net
from vgg.nets.weights import load_weights
from vgg.suite.plan import EXPERIMENTS_DIR, read_toml
from vgg.suite.published import PAPER_DIR, number, paper_numbers_for
from vgg.suite.report_parts import delta, fmt, ours_cell
from vgg.suite.results_csv import read_rows, upsert_rows

PROTOCOLS_FILE = EXPERIMENTS_DIR / "pretrained.toml"
TORCHVISION_DOCS = PAPER_DIR / "torchvision_weights.csv"
WEIGHT_SUFFIXES = (".pth", ".pt")


def weight_files(directory: Path | str, log=print) -> list[Path]:
    """The VGG state dicts in `directory` (other files are named and passed over)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ValueError(f"WEIGHTS_DIR {directory} is not a folder (put torchvision's vgg*.pth files in one)")
    found = []
    for path in sorted(p for p in directory.iterdir() if p.suffix in WEIGHT_SUFFIXES):
        try:
            load_weights(str(path))
        except ValueError as error:
            log(f"skipping {path.name}: {error}")
            continue
        found.append(path)
    if not found:
        raise ValueError(f"no torchvision-format VGG weight files (*.pth, *.pt) in {directory}")
    return found


def protocols() -> list[dict]:
    return read_toml(PROTOCOLS_FILE)["protocol"]


def run_pretrained(weights_dir: Path | str, data: str, results: Path, limit: int | None = None, workers: int | None = None, log=print) -> list[dict]:
    """Evaluate every weight file under every protocol; rows are upserted into `results`.
    A protocol that is an average of others (`vgg.evaluation.protocols.averaged_parts`: several scales,
    multi-crop+dense) averages their posteriors, each part evaluated once per weight file and kept
    in memory while a later protocol needs it: dense over {256, 384, 512} evaluates only Q = 512
    after dense at 256 and 384, and multi-crop+dense evaluates nothing."""
    val = load_split(data, "val")
    images = val.subset(limit)
    wanted: set[tuple] = set()

    def want_parts(method: str, scales: tuple[int, ...], flip: bool) -> None:
        for part in averaged_parts(method, scales):
            wanted.add((*part, flip))
            want_parts(*part, flip)

    for protocol in protocols():
        want_parts(protocol["method"], tuple(protocol["scales"]), bool(protocol.get("flip", True)))
    rows = []
    for path in weight_files(weights_dir, log):
        net = load_net(weights=str(path))
        kept: dict[tuple, EvalResult] = {}

        def result_of(method: str, scales: tuple[int, ...], flip: bool) -> EvalResult:
            if (method, scales, flip) in kept:
                return kept[(method, scales, flip)]
            parts = averaged_parts(method, scales)
            result = average_results([result_of(*part, flip) for part in parts]) if parts else evaluate(net, images, method, list(scales), flip, workers=workers)
            if (method, scales, flip) in wanted:
                kept[(method, scales, flip)] = result
            return result

        for protocol in protocols():
            method, scales, flip = protocol["method"], list(protocol["scales"]), bool(protocol.get("flip", True))
            result = result_of(method, tuple(scales), flip)
            row = {**provenance_row(net, data, method, scales, flip, "after-average", result, len(val)), "label": protocol["label"]}
            upsert_rows(results, [row])
            rows.append(row)
            log(f"{path.name} ({net.model.config}{'+BN' if net.model.spec.batch_norm else ''}): {protocol['label']}: top-1 {row['top1_err']}%, top-5 {row['top5_err']}%")
    return rows


def _torchvision_documented() -> dict[str, tuple[float, float]]:
    with open(TORCHVISION_DOCS, newline="") as handle:
        return {row["model"]: (100 - float(row["acc1"]), 100 - float(row["acc5"])) for row in csv.DictReader(handle)}


def render_pretrained(results: Path, dataset: str | None = None) -> str:
    """reports/pretrained.md: one table per weight file, ours beside the paper's (or torchvision's) numbers."""
    rows = read_rows(results)
    if not rows:
        raise ValueError(f"no results in {results}: run make pretrained WEIGHTS_DIR=... DATA=... first")
    datasets = sorted({row["dataset"] for row in rows})
    if dataset is None and len(datasets) > 1:
        raise ValueError(f"{results} holds results for several datasets ({', '.join(datasets)}); pass --data")
    dataset = str(Path(dataset)) if dataset else datasets[0]
    rows = [row for row in rows if row["dataset"] == dataset]
    documented = _torchvision_documented()
    classes = {row.get("classes", "") for row in rows}
    lines = []
    if classes != {"1000"}:
        lines += [f"> **Not ImageNet ({', '.join(sorted(classes))} classes): these numbers test the pipeline only and are not comparable with the paper's.**", ""]
    lines += [
        f"# {read_toml(PROTOCOLS_FILE)['title']}",
        "",
        read_toml(PROTOCOLS_FILE)["description"],
        "",
        f"- dataset: `{dataset}` ({', '.join(sorted({r['images'] for r in rows}))} val images evaluated)",
        f"- commit: {', '.join(sorted({r['git_commit'] for r in rows}))}; device: {', '.join(sorted({r['device'] for r in rows}))}",
        f"- date: {min(r['date'] for r in rows)} to {max(r['date'] for r in rows)}",
        "- errors in % with our [95% bootstrap interval over the val images]; Δ = ours - reference; the reference is the "
        "paper's net of the same configuration trained at the S named in the protocol, or torchvision's documented centre-crop figure",
        "",
    ]
    for run in dict.fromkeys(row["run"] for row in rows):
        mine = [row for row in rows if row["run"] == run]
        config = mine[0]["config"]
        table = []
        for protocol in protocols():
            test_scales = "|".join(map(str, protocol["scales"]))
            row = next((r for r in mine if r["method"] == protocol["method"] and r["test_scales"] == test_scales), None)
            ours1, ours5 = (number(row["top1_err"]), number(row["top5_err"])) if row else (None, None)
            if protocol.get("paper") == "torchvision":
                model = next((name for name in documented if run.startswith(name + "-") or run == name), None)
                ref1, ref5 = documented.get(model, (None, None)) if model else (None, None)
                source = f"torchvision docs ({model})" if model else "-"
            else:
                ref = paper_numbers_for(config, protocol["paper_train_scale"], test_scales, protocol["method"])
                ref1, ref5, source = ref.top1, ref.top5, f"paper, {config} S={protocol['paper_train_scale']}"
            table.append([protocol["label"], ours_cell(row, "top1"), fmt(ref1), delta(ours1, ref1), ours_cell(row, "top5"), fmt(ref5), delta(ours5, ref5), source])
        lines += [f"## {run} (configuration {config})", ""]
        lines.append(tabulate(table, headers=["protocol", "top-1 ours", "top-1 ref", "Δ", "top-5 ours", "top-5 ref", "Δ", "reference"], tablefmt="github", disable_numparse=True))
        lines.append("")
    return "\n".join(lines)
