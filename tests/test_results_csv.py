"""Results CSVs (vgg.suite.results_csv): rows upserted by their key, seed-aware."""

from vgg.suite.results_csv import read_rows, upsert_rows


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
