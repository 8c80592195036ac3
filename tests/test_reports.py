from pathlib import Path

import pytest

from vgg.suite.reports import render, render_table1, render_table2, write_report

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name", ["table1", "table2"])
def test_committed_report_matches_the_code(name):
    committed = (ROOT / "reports" / f"{name}.md").read_text()
    assert committed == render(name), f"reports/{name}.md is stale: run make {name}"


def table_rows(markdown: str) -> list[list[str]]:
    lines = [line for line in markdown.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]


def test_table1_columns_follow_the_configurations():
    rows = table_rows(render_table1())
    assert rows[0] == ["11 weight layers", "11 weight layers", "13 weight layers", "16 weight layers", "16 weight layers", "19 weight layers"]
    block1, block3 = rows[2], rows[6]
    assert block1[:3] == ["conv3-64", "conv3-64<br>**LRN**", "conv3-64<br>**conv3-64**"]
    assert block3[3] == "conv3-256<br>conv3-256<br>**conv1-256**"
    assert block3[5] == "conv3-256<br>conv3-256<br>conv3-256<br>**conv3-256**"
    assert rows[-4:] == [["FC-4096"] * 6, ["FC-4096"] * 6, ["FC-1000"] * 6, ["soft-max"] * 6]
    assert sum(row == ["maxpool"] * 6 for row in rows) == 5


def test_table2_rows_hold_exact_counts_beside_the_paper():
    rows = {row[0]: row for row in table_rows(render_table2())}
    assert rows["D"] == ["D", "16", "138,357,544", "138", "138", "15.470", "15.47"]
    assert rows["C"] == ["C", "16", "133,638,952", "134", "134", "11.771", "-"]
    assert rows["B-5x5"][4] == "-"


def test_write_report_and_unknown_report(tmp_path):
    path = write_report("table1", tmp_path / "out")
    assert path.read_text() == render_table1()
    with pytest.raises(ValueError, match="unknown report 'table9'"):
        render("table9")
