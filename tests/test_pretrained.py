"""torchvision's weights under the paper's protocols (`vgg.suite.pretrained`), end to end on the ci data."""

import subprocess
import sys
from pathlib import Path

import torch
import torchvision

from vgg.suite.results_csv import read_rows


ROOT = Path(__file__).resolve().parent.parent


def test_make_pretrained_end_to_end_on_ci_data(tmp_path, ci_data):
    weights_dir = tmp_path / "weights"
    weights_dir.mkdir()
    torch.manual_seed(0)
    torch.save(torchvision.models.vgg11(weights=None, num_classes=4).state_dict(), weights_dir / "vgg11-random.pth")
    (weights_dir / "notes.pt").write_bytes(b"not weights")
    results = tmp_path / "results"
    run = subprocess.run([sys.executable, "-m", "vgg", "pretrained", "--weights-dir", str(weights_dir), "--data", str(ci_data),
                          "--results", str(results), "--limit", "1", "--workers", "0"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "skipping notes.pt" in run.stdout
    rows = {(row["method"], row["test_scales"]): float(row["wall_s"]) for row in read_rows(results / "pretrained.csv")}
    # multi-crop+dense averages its parts' posteriors instead of evaluating them again
    assert abs(rows[("multi-crop+dense", "256|384|512")] - rows[("dense", "256|384|512")] - rows[("multi-crop", "256|384|512")]) <= 0.011
    report = subprocess.run([sys.executable, "-m", "vgg", "report", "pretrained", "--results", str(results), "--out-dir", str(tmp_path / "reports")],
                            cwd=ROOT, capture_output=True, text=True)
    assert report.returncode == 0, report.stderr
    text = (tmp_path / "reports" / "pretrained.md").read_text()
    assert text.startswith("> **Not ImageNet (4 classes)") and "## vgg11-random (configuration A)" in text
    assert "| dense, Q = 256 (Table 3, S = 256) " in text and "29.6" in text  # the paper's A at S = Q = 256
    assert "torchvision docs (vgg11)" in text and "31.0" in text  # 100 - 69.020
