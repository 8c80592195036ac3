"""`make gpu-check` at toy sizes on the CPU: every section runs and reports figures, so the GPU
script cannot rot where no GPU is at hand."""

import math
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from vgg.suite.gpu_check import format_rate

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT_S = 600  # about 1 min alone on 2 cores; CI runs it beside the other tests


def test_the_gpu_check_runs_at_tiny_sizes_and_reports_every_section(tmp_path):
    out = tmp_path / "gpu.md"
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    command = [sys.executable, "-X", "faulthandler", "-m", "vgg", "gpu-check", "--size", "tiny", "--out", str(out), "--work-dir", str(tmp_path)]
    with subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) as check:
        try:
            stdout, stderr = check.communicate(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            check.send_signal(signal.SIGABRT)  # faulthandler prints where every thread was
            stdout, stderr = check.communicate()
            pytest.fail(f"the tiny gpu-check ran past {TIMEOUT_S} s; where it was:\n{stderr[-6000:]}\nits last output:\n{stdout[-2000:]}")
    result = subprocess.CompletedProcess(command, check.returncode, stdout, stderr)
    assert result.returncode == 0, result.stderr[-3000:]
    text = out.read_text()
    assert text.startswith("# GPU check (tiny CPU run: not GPU figures)") and "- torch: " in text and "- torchvision: " in text
    cells = lambda line: [cell.strip() for cell in line.strip().strip("|").split("|")]
    rows = {row[0]: row for row in (cells(line) for line in text.splitlines() if line.startswith("| ") and "---" not in line)}
    for name in ("VGG-A", "VGG-D compiled", "VGG-E", "VGG-D, largest batch that fits (of 8)", "torchvision vgg16 fp32", "torchvision vgg16 bf16 autocast", "VGG-D trainer"):
        assert float(rows[name][3]) > 0, name  # images/s
    data_rows = [line for line in text.splitlines() if line.startswith("| CPU loader") or line.startswith("| device path")]
    assert len(data_rows) == 4 and all(float(cells(line)[2]) > 0 for line in data_rows)
    assert float(rows["VGG-D dense, Q=256,288,320, flips"][1]) > 0 and float(rows["VGG-D multi-crop, Q=256,288,320, flips"][1]) > 0
    losses = [(float(a), float(b)) for a, b in re.findall(r"^\| \d+ \| ([\d.]+) \| ([\d.]+) \|$", text, flags=re.M)]
    assert len(losses) == 3 and all(math.isfinite(a) and abs(a - b) < 0.05 for a, b in losses)  # bf16 tracks fp32
    for method in ("dense", "multi-crop"):  # on the CPU: the same path; bf16 autocast runs on the CPU too
        assert rows[f"{method}, device fp32 vs CPU fp32"][1] == "100.0%" and f"{method}, device bf16 vs device fp32" in rows
    assert re.search(r"killed after step \d+ and resumed; weights equal to the uninterrupted run's: yes", text)
    targets = text[text.index("## Targets"):text.index("## (b)")]
    assert len([line for line in targets.splitlines() if line.startswith("| ") and line.endswith((" yes |", " no |"))]) == 4
    assert targets.split("\n", 2)[2].strip() in result.stdout  # the one table it prints


def test_make_gpu_check_does_not_create_the_venv():
    makefile = (ROOT / "Makefile").read_text()
    rule = next(line for line in makefile.splitlines() if line.startswith("gpu-check:"))
    assert "$(STAMP)" not in rule and "PY=python3" in rule


def test_rates_below_ten_images_a_second_keep_three_significant_digits():
    # bf16 autocast on a CPU without bf16 units runs the tiny check at hundredths of an image a second
    assert format_rate(0.0312) == "0.0312" and float(format_rate(0.0312)) > 0
    assert format_rate(1146.23) == "1146.2" and format_rate(7.456) == "7.46"
