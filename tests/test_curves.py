"""Learning curves in the results (`vgg.suite.curves`): a run's curve replaced over all its seeds,
the runs that ended at chance named, the figure drawn."""

import math

from tests.helpers_images import assert_drawn_figure
from vgg.suite.curves import CURVES_FILE, curves_section, ended_at_chance, read_curves, write_curves
from vgg.suite.results_csv import read_rows


def curve(run: str, seed: int, losses: list[float], profile: str = "smoke", dataset: str = "data/synthetic") -> list[dict]:
    return [
        {"profile": profile, "dataset": dataset, "run": run, "seed": seed, "epoch": epoch, "lr": 0.01, "train_loss": loss, "val_top1_err": 50.0, "val_top5_err": 10.0}
        for epoch, loss in enumerate(losses)
    ]


def test_a_rerun_replaces_a_runs_curve_and_reports_read_only_their_rows_seeds(tmp_path):
    write_curves(tmp_path, [*curve("A-256", 0, [3.9, 2.0, 1.0]), *curve("A-256", 1, [3.9, 2.5]), *curve("D-256", 0, [3.0, 1.5])])
    write_curves(tmp_path, curve("A-256", 0, [3.8, 1.9]))  # A's seed 0 retrained, shorter: its old epochs go, seed 1's curve stays
    rows = read_rows(tmp_path / CURVES_FILE)
    assert [(r["run"], r["seed"], r["train_loss"]) for r in rows] == [
        ("A-256", "1", "3.9"), ("A-256", "1", "2.5"), ("D-256", "0", "3.0"), ("D-256", "0", "1.5"), ("A-256", "0", "3.8"), ("A-256", "0", "1.9")
    ]
    # another profile's curve of the same run is another group: it stays
    write_curves(tmp_path, curve("A-256", 0, [2.2], profile="ci"))
    assert len(read_rows(tmp_path / CURVES_FILE)) == 7
    # a report of one seed (a table rerun with SEEDS=1) reads seed 0's curves only, in its rows' order
    one_seed = read_curves(tmp_path, "smoke", "data/synthetic", {"D-256": [0], "A-256": [0], "E-256": [0]})
    assert list(one_seed) == ["D-256", "A-256"] and list(one_seed["A-256"]) == [0]
    assert [r["train_loss"] for r in one_seed["A-256"][0]] == ["3.8", "1.9"]
    assert list(read_curves(tmp_path, "smoke", "data/synthetic", {"A-256": [0, 1]})["A-256"]) == [0, 1]


def test_runs_that_end_at_chance_are_named_in_the_report_section(tmp_path):
    chance = math.log(50)
    write_curves(tmp_path, [
        *curve("E-256-glorot", 0, [3.91, 2.0, 0.9]), *curve("E-256-glorot", 1, [3.912, 3.912, 3.912]), *curve("D-256", 0, [3.9, 3.8, 3.0]),
        *curve("B-256", 0, [3.9, float("nan")]),
    ])
    runs = {"E-256-glorot": [0, 1], "D-256": [0], "B-256": [0]}
    curves = read_curves(tmp_path, "smoke", "data/synthetic", runs)
    stuck = ended_at_chance(curves, 50)  # D-256 at 3.0 < 0.95 ln 50 = 3.72 has left chance; B-256's loss went NaN
    assert [(run, seed) for run, seed, _ in stuck] == [("E-256-glorot", 1), ("B-256", 0)] and stuck[0][2] == 3.912
    assert ended_at_chance(curves, 1) == []
    text = curves_section(tmp_path, tmp_path / "reports", "ablations", "smoke", "data/synthetic", runs, 50)
    assert "(ablations-curves.png)" in text and "E-256-glorot seed 1 (3.912)" in text and "D-256 seed" not in text
    assert f"{0.95 * chance:.2f}" in text
    assert_drawn_figure(tmp_path / "reports" / "ablations-curves.png")
    assert curves_section(tmp_path, tmp_path / "reports", "table3", "smoke", "other/data", {"D-256": [0]}, 50) == ""
