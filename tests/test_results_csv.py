"""Results CSVs (vgg.suite.results_csv): rows upserted by their key, seed-aware."""

import re

import pytest

from vgg.suite.results_csv import drop_other_seeds, read_rows, shown_row, upsert_rows


def test_upsert_keys_replace_only_the_same_evaluation(tmp_path):
    path = tmp_path / "t.csv"
    base = {"profile": "smoke", "dataset": "d", "run": "A-256", "method": "dense", "test_scales": "256", "flip": "True", "top1_err": "50"}
    others = [{**base, name: value} for name, value in (("profile", "paper"), ("dataset", "d2"), ("run", "B-256"), ("method", "multi-crop"),
                                                         ("test_scales", "224|256|288"), ("flip", "False"), ("seed", "1"))]
    upsert_rows(path, [base, *others])
    upsert_rows(path, [{**base, "top1_err": "49"}])
    rows = read_rows(path)
    assert len(rows) == 8 and rows[0]["top1_err"] == "49" and [r["top1_err"] for r in rows[1:]] == ["50"] * 7
    # a row from before seeds (no seed column) is seed 0's; other seeds and the mean are rows of their own
    old = tmp_path / "old.csv"
    old.write_text("profile,dataset,run,method,test_scales,flip,top1_err\nsmoke,d,A-256,dense,256,True,50\n")
    upsert_rows(old, [{**base, "seed": 0, "top1_err": "48"}, {**base, "seed": 1, "top1_err": "47"}, {**base, "seed": "mean", "top1_err": "47.5"}])
    assert [(r["seed"], r["top1_err"]) for r in read_rows(old)] == [("0", "48"), ("1", "47"), ("mean", "47.5")]


def test_a_run_over_fewer_seeds_drops_the_rows_it_did_not_write(tmp_path):
    # committed 3-seed rows, then a 1-seed run of another recipe: the report must show that run's seed 0,
    # not the committed aggregate
    path = tmp_path / "t.csv"
    a = {"profile": "smoke", "dataset": "d", "run": "A-256", "method": "dense", "test_scales": "256", "flip": "True"}
    b = {**a, "run": "B-256"}
    upsert_rows(path, [{**row, "seed": seed, "top1_err": "17"} for row in (a, b) for seed in ("0", "1", "2", "mean")])
    fresh = {**a, "seed": "0", "top1_err": "26"}
    upsert_rows(path, [fresh])
    assert shown_row([r for r in read_rows(path) if r["run"] == "A-256"])["top1_err"] == "17"  # what the bug showed
    drop_other_seeds(path, [fresh], seeds=1)
    rows = read_rows(path)
    assert [(r["run"], r["seed"]) for r in rows if r["run"] == "A-256"] == [("A-256", "0")]
    assert shown_row([r for r in rows if r["run"] == "A-256"])["top1_err"] == "26"
    assert len([r for r in rows if r["run"] == "B-256"]) == 4  # measurements the run did not make stay
    # two seeds keep seeds 0 and 1 and their aggregate, and drop seed 2
    drop_other_seeds(path, [{**b, "seed": "0"}, {**b, "seed": "1"}, {**b, "seed": "mean"}], seeds=2)
    assert sorted(r["seed"] for r in read_rows(path) if r["run"] == "B-256") == ["0", "1", "mean"]


@pytest.mark.parametrize("line, fields", [("ci,A-256", 2), ("garbage", 1), ("ci,A-256,50.0,extra", 4)])
def test_a_cut_or_garbage_line_in_a_results_csv_is_an_error_naming_it(tmp_path, line, fields):
    path = tmp_path / "table3.csv"
    path.write_text(f"profile,run,top1_err\nci,B-256,40.0\n{line}\n")
    message = f"{path}, line 3: {fields} field{'s' if fields > 1 else ''} where its header has 3 (a cut or edited file?)"
    with pytest.raises(ValueError, match=re.escape(message)):
        read_rows(path)
    with pytest.raises(ValueError, match=re.escape(message)):
        upsert_rows(path, [{"profile": "ci", "run": "C-256", "top1_err": 30.0}])
    assert path.read_text().endswith(f"{line}\n")  # nothing rewritten
