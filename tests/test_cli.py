import subprocess
import sys
from pathlib import Path

from vgg.cli import main

ROOT = Path(__file__).resolve().parent.parent


def test_python_m_vgg_params_prints_table2(capsys):
    result = subprocess.run([sys.executable, "-m", "vgg", "params"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    lines = {line.split()[0]: line.split() for line in result.stdout.splitlines()[1:]}
    assert lines["E"][1:4] == ["19", "143,667,240", "143.7"]
    assert lines["A-LRN"][2] == "132,863,336"


def test_describe_prints_layers(capsys):
    assert main(["describe", "C", "--width", "8", "--crop", "64"]) == 0
    out = capsys.readouterr().out
    assert "conv1-32" in out and "features.14" in out


def test_bad_input_is_one_line_and_exit_2(capsys):
    assert main(["describe", "F"]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: unknown VGG configuration 'F'; known configurations: A, A-LRN, B, C, D, E, B-5x5"
    )
    assert main(["params", "--width", "3"]) == 2
    assert "width 3 does not divide" in capsys.readouterr().err


def test_report_command_writes_files(tmp_path, capsys):
    assert main(["report", "table1", "table2", "--out-dir", str(tmp_path)]) == 0
    table1, table2 = ((tmp_path / name).read_text() for name in ("table1.md", "table2.md"))
    assert "| 19 weight layers " in table1 and "conv3-64<br>**LRN**" in table1
    assert "| E         | 19              | 143,667,240 " in table2


def test_train_without_data_or_profile_trains_on_the_default_profiles_dataset(monkeypatch, tmp_path):
    """`vgg train` with neither --data nor --profile: the smoke profile and its embedded dataset (was "unknown profile None")."""
    import vgg.training.train

    given = []
    monkeypatch.setattr(vgg.training.train, "train", lambda cfg, out: given.append((cfg, out)))
    main(["train", "--config", "A", "--train-scale", "256", "--out", str(tmp_path / "run")])
    (cfg, out), = given
    assert (cfg.profile, cfg.data, out) == ("smoke", "data/synthetic", tmp_path / "run")
