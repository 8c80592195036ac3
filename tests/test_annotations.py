from __future__ import annotations

from pathlib import Path

import pytest

from vgg.localisation.annotations import (
    BoxAnnotationsError,
    ObjectBox,
    boxes_for_images,
    find_box_source,
    load_boxes,
    read_kaggle_solution,
    read_xml_folder,
    write_kaggle_solution,
)


def annotation_xml(filename: str, objects: list[tuple[str, tuple]], size: tuple[int, int] = (500, 375)) -> str:
    """An ILSVRC devkit annotation; each object is (wnid, (xmin, ymin, xmax, ymax)), or (wnid, ()) for no bndbox."""
    parts = []
    for name, corners in objects:
        box = "".join(f"<{key}>{value}</{key}>" for key, value in zip(("xmin", "ymin", "xmax", "ymax"), corners))
        bndbox = f"<bndbox>{box}</bndbox>" if corners else ""
        parts.append(f"<object><name>{name}</name><pose>Unspecified</pose><difficult>0</difficult>{bndbox}</object>")
    return (
        f"<annotation><folder>x</folder><filename>{filename}</filename><source><database>ILSVRC_2012</database>"
        "</source>"
        f"<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size><segmented>0</segmented>"
        f"{''.join(parts)}</annotation>"
    )


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_xml_reader_train_nested_and_val_flat_with_inclusive_to_continuous_boxes(tmp_path):
    train = tmp_path / "Annotations" / "CLS-LOC" / "train"
    write(train / "n01440764" / "n01440764_10026.xml",
          annotation_xml("n01440764_10026", [("n01440764", (10, 20, 19, 39)), ("n01440764", (0, 0, 99, 49))]))
    write(train / "n01443537" / "n01443537_7.xml", annotation_xml("n01443537_7", [("n01443537", (5, 6, 5, 6))]))
    boxes = read_xml_folder(train)
    assert boxes == {
        "n01440764_10026": (ObjectBox("n01440764", (10, 20, 20, 40)), ObjectBox("n01440764", (0, 0, 100, 50))),
        "n01443537_7": (ObjectBox("n01443537", (5, 6, 6, 7)),),  # a one-pixel box is one pixel wide
    }
    val = tmp_path / "Annotations" / "CLS-LOC" / "val"
    first = [("n01751748", (111, 108, 362, 336))]
    write(val / "ILSVRC2012_val_00000001.xml", annotation_xml("ILSVRC2012_val_00000001", first))
    write(val / "ILSVRC2012_val_00000002.xml", annotation_xml("ILSVRC2012_val_00000002", []))  # no object: left out
    assert read_xml_folder(val) == {"ILSVRC2012_val_00000001": (ObjectBox("n01751748", (111, 108, 363, 337)),)}
    assert load_boxes(tmp_path, "val") == read_xml_folder(val)


def test_csv_reader_several_boxes_an_empty_prediction_and_the_conversion(tmp_path):
    path = write(tmp_path / "LOC_val_solution.csv", (
        "ImageId,PredictionString\n"
        "ILSVRC2012_val_00008726,n02119789 255 142 454 329 n02119789 44 21 322 295 \n"
        "ILSVRC2012_val_00000003,n01440764 10 0 19 9\n"
        "ILSVRC2012_val_00000004,\n"
    ))
    boxes = read_kaggle_solution(path)
    assert boxes == {
        "ILSVRC2012_val_00008726": (
            ObjectBox("n02119789", (255, 142, 455, 330)),
            ObjectBox("n02119789", (44, 21, 323, 296)),
        ),
        "ILSVRC2012_val_00000003": (ObjectBox("n01440764", (10, 0, 20, 10)),),  # xmin 10, xmax 19: x0 10, x1 20
    }
    assert load_boxes(tmp_path, "val") == boxes


def test_write_read_round_trip_sorted_and_atomic(tmp_path):
    boxes = {
        "n2_00001": (ObjectBox("n2", (3.0, 4.0, 10.0, 12.0)),),
        "n1_00000": (ObjectBox("n1", (0.0, 0.0, 1.0, 1.0)), ObjectBox("n3", (5.0, 6.0, 7.0, 8.0))),
    }
    path = tmp_path / "LOC_train_solution.csv"
    path.write_text("stale")
    write_kaggle_solution(path, boxes)
    assert path.read_text().splitlines() == [
        "ImageId,PredictionString", "n1_00000,n1 0 0 0 0 n3 5 6 6 7", "n2_00001,n2 3 4 9 11"
    ]
    assert read_kaggle_solution(path) == boxes
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left behind


@pytest.mark.parametrize(
    ("objects", "wrong"),
    [
        ([("n1", ())], "lacks its bndbox"),
        ([("n1", (1, 2, "", 4))], "xmax is not a number"),
        ([("n1", (1, 2, "abc", 4))], "xmax is not a number"),
        ([("n1", (1, 2, 3))], "ymax is not a number"),
        ([("n1", (1, 2, 3, 4)), ("n1", (9, 2, 3, 4))], "object 2: box of n1 has xmax < xmin"),
        ([("", (1, 2, 3, 4))], "lacks its name"),
    ],
)
def test_malformed_xml_names_the_file(tmp_path, objects, wrong):
    path = write(tmp_path / "val" / "ILSVRC2012_val_00000009.xml", annotation_xml("x", objects))
    with pytest.raises(BoxAnnotationsError, match=wrong) as caught:
        read_xml_folder(tmp_path / "val")
    assert str(path) in str(caught.value)


def test_unparsable_xml_names_the_file(tmp_path):
    path = write(tmp_path / "a.xml", "<annotation><object>")
    with pytest.raises(BoxAnnotationsError, match="is not valid XML") as caught:
        read_xml_folder(tmp_path)
    assert str(path) in str(caught.value)


@pytest.mark.parametrize(
    ("row", "wrong"),
    [
        ("img,n1 1 2 3", "PredictionString has 4 fields, not groups of 5"),
        ("img,n1 1 2 3 4 n2", "PredictionString has 6 fields"),
        ("img,n1 1 two 3 4", "ymin is not a number"),
        ("img,n1 1 2 3 nan", "ymax is not a number"),
        ("img,n1 5 2 3 4", "box of n1 has xmax < xmin"),
        ("img,n1 1 5 3 4", "ymax < ymin"),
        ("ok,n1 1 2 3 4\nok,n1 1 2 3 4", "image ok is listed twice"),
    ],
)
def test_malformed_csv_names_the_file_and_line(tmp_path, row, wrong):
    path = write(tmp_path / "LOC_val_solution.csv", f"ImageId,PredictionString\n{row}\n")
    with pytest.raises(BoxAnnotationsError, match=wrong) as caught:
        read_kaggle_solution(path)
    assert f"{path} line {row.count(chr(10)) + 2}" in str(caught.value)


def test_csv_without_kaggle_columns(tmp_path):
    path = write(tmp_path / "boxes.csv", "id,boxes\na,b\n")
    with pytest.raises(BoxAnnotationsError, match="lacks the ImageId and PredictionString columns"):
        read_kaggle_solution(path)


def test_find_box_source_order_and_missing_layout_message(tmp_path):
    kaggle_full = tmp_path / "ILSVRC" / "Annotations" / "CLS-LOC" / "train"
    devkit = tmp_path / "Annotations" / "CLS-LOC" / "train"
    csv_file = tmp_path / "LOC_train_solution.csv"
    with pytest.raises(BoxAnnotationsError) as caught:
        find_box_source(tmp_path, "train")
    message = str(caught.value)
    assert "\n" not in message and str(tmp_path) in message and "train boxes" in message
    assert all(str(place) in message for place in (csv_file, devkit, kaggle_full))
    assert "python -m vgg data synth-boxes --data DIR" in message and "ILSVRC CLS-LOC" in message
    kaggle_full.mkdir(parents=True)
    assert find_box_source(tmp_path, "train") == kaggle_full
    devkit.mkdir(parents=True)
    assert find_box_source(tmp_path, "train") == devkit
    csv_file.write_text("ImageId,PredictionString\n")
    assert find_box_source(tmp_path, "train") == csv_file
    with pytest.raises(BoxAnnotationsError, match="no val boxes"):
        find_box_source(tmp_path, "val")  # the train split's boxes are not val's


def test_boxes_for_images_looks_up_file_stems_and_counts_the_missing():
    boxes = {
        "n01440764_10026": (ObjectBox("n01440764", (1, 2, 3, 4)),),
        "ILSVRC2012_val_00000001": (ObjectBox("n01751748", (5, 6, 7, 8)),),
    }
    ids = ["n01440764/n01440764_10026.JPEG", "n01440764/n01440764_99.JPEG", "ILSVRC2012_val_00000001.JPEG", "x/y.png"]
    found, missing = boxes_for_images(ids, boxes)
    assert found == [boxes["n01440764_10026"], None, boxes["ILSVRC2012_val_00000001"], None]
    assert missing == 2
    assert boxes_for_images([], boxes) == ([], 0)
