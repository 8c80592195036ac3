"""Appendix B's dataset readers (VOC classification, VOC-2012 actions, Caltech-101/256) and Caltech's splits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.helpers_images import write_image
from vgg.transfer.datasets import (
    VOC_ACTIONS,
    VOC_CLASSES,
    TransferLayoutError,
    caltech_splits,
    read_caltech,
    read_voc_action,
    read_voc_classification,
)

VOC_IDS = ("000001", "000002", "000003")


def voc_tree(root: Path, year: int = 2007, split: str = "trainval") -> Path:
    """root/VOCdevkit/VOC{year} with 3 images: image i is labelled 1 for class i, 0 (difficult) for class
    i + 3, -1 for the others."""
    voc = root / "VOCdevkit" / f"VOC{year}"
    main = voc / "ImageSets" / "Main"
    main.mkdir(parents=True)
    (main / f"{split}.txt").write_text("".join(f"{i}\n" for i in VOC_IDS))
    for c, name in enumerate(VOC_CLASSES):
        rows = [f"{i} {1 if c == k else 0 if c == k + 3 else -1:2d}\n" for k, i in enumerate(VOC_IDS)]
        (main / f"{name}_{split}.txt").write_text("".join(rows))
    for k, image_id in enumerate(VOC_IDS):
        write_image(voc / "JPEGImages" / f"{image_id}.jpg", seed=k)
    return voc


def one_line_error(call, *names: str) -> str:
    with pytest.raises(TransferLayoutError) as caught:
        call()
    message = str(caught.value)
    assert "\n" not in message and all(name in message for name in names), message
    return message


def test_voc_classification(tmp_path: Path) -> None:
    voc = voc_tree(tmp_path)
    for root in (tmp_path, tmp_path / "VOCdevkit", voc):
        data = read_voc_classification(root, 2007, "trainval")
        assert data.root == voc and data.ids == VOC_IDS and data.labels.shape == (3, 20)
        assert data.paths == tuple(voc / "JPEGImages" / f"{i}.jpg" for i in VOC_IDS)
    expected = np.full((3, 20), -1)
    for k in range(3):
        expected[k, k], expected[k, k + 3] = 1, 0
    assert (data.labels == expected).all()


def test_voc_classification_missing_pieces(tmp_path: Path) -> None:
    one_line_error(lambda: read_voc_classification(tmp_path, 2007, "trainval"), "VOC2007", str(tmp_path))
    voc = voc_tree(tmp_path)
    main = voc / "ImageSets" / "Main"
    read = lambda: read_voc_classification(tmp_path, 2007, "trainval")  # noqa: E731
    one_line_error(lambda: read_voc_classification(tmp_path, 2007, "test"), str(main), "test.txt")
    (voc / "JPEGImages" / "000002.jpg").unlink()
    one_line_error(read, str(voc / "JPEGImages"), "000002.jpg")
    write_image(voc / "JPEGImages" / "000002.jpg")
    (main / "dog_trainval.txt").write_text("000001 -1\n000002 -1\n")  # an id short
    one_line_error(read, "dog_trainval.txt", "000003")
    (main / "dog_trainval.txt").write_text("000001 -1\n000002 -1\n000003 2\n")
    one_line_error(read, "dog_trainval.txt", "000003 2")
    (main / "dog_trainval.txt").unlink()
    one_line_error(read, str(main), "dog_trainval.txt")


def voc_action_tree(root: Path, split: str = "trainval") -> Path:
    """VOC2012 with image a (persons 1 and 2) and image b (a chair, then person 2); a/1 jumps, a/2 and b/2
    do none of the 10 actions except b/2, which reads."""
    voc = root / "VOC2012"
    action = voc / "ImageSets" / "Action"
    action.mkdir(parents=True)
    (action / f"{split}.txt").write_text("a\nb\n")
    positive = {"jumping": ("a", 1), "reading": ("b", 2)}
    for name in VOC_ACTIONS[:10]:
        rows = [f"{i} {n} {1 if positive.get(name) == (i, n) else -1:2d}\n" for i, n in (("a", 1), ("a", 2), ("b", 2))]
        (action / f"{name}_{split}.txt").write_text("".join(rows))
    boxes = {
        "a": [("person", (2, 3, 10, 12)), ("person", (1, 1, 4, 5))],
        "b": [("chair", (3, 3, 6, 6)), ("person", (5, 6, 7, 8))],
    }
    for image_id, objects in boxes.items():
        xml = "".join(
            f"<object><name>{name}</name><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin><xmax>{b[2]}</xmax>"
            f"<ymax>{b[3]}</ymax></bndbox></object>"
            for name, b in objects
        )
        (voc / "Annotations").mkdir(exist_ok=True)
        (voc / "Annotations" / f"{image_id}.xml").write_text(f"<annotation>{xml}</annotation>")
        write_image(voc / "JPEGImages" / f"{image_id}.jpg")
    return voc


def test_voc_action(tmp_path: Path) -> None:
    voc = voc_action_tree(tmp_path)
    data = read_voc_action(tmp_path, "trainval")
    assert data.root == voc and data.ids == ("a", "a", "b") and data.object_indices.tolist() == [1, 2, 2]
    assert data.paths == (voc / "JPEGImages" / "a.jpg",) * 2 + (voc / "JPEGImages" / "b.jpg",)
    assert data.boxes.tolist() == [[1, 2, 10, 12], [0, 0, 4, 5], [4, 5, 7, 8]]  # 1-based inclusive corners -> continuous 0-based
    assert data.labels.shape == (3, 11) and set(np.unique(data.labels)) <= {-1, 1}
    jumping, reading, other = (VOC_ACTIONS.index(name) for name in ("jumping", "reading", "other"))
    assert data.labels[:, jumping].tolist() == [1, -1, -1] and data.labels[:, reading].tolist() == [-1, -1, 1]
    assert data.labels[:, other].tolist() == [-1, 1, -1]  # derived: no other_trainval.txt in the release
    (voc / "ImageSets" / "Action" / "other_trainval.txt").write_text("a 1 -1\na 2 -1\nb 2 1\n")
    assert read_voc_action(voc, "trainval").labels[:, other].tolist() == [-1, -1, 1]  # read when present


def test_voc_action_missing_pieces(tmp_path: Path) -> None:
    voc = voc_action_tree(tmp_path)
    action = voc / "ImageSets" / "Action"
    read = lambda: read_voc_action(tmp_path, "trainval")  # noqa: E731
    (voc / "Annotations" / "b.xml").write_text("<annotation><object><bndbox/></object></annotation>")
    one_line_error(read, "b.xml", "no object 2")
    (voc / "Annotations" / "b.xml").unlink()
    one_line_error(read, str(voc / "Annotations"), "b.xml")
    (voc / "JPEGImages" / "a.jpg").unlink()
    one_line_error(read, str(voc / "JPEGImages"), "a.jpg")
    (action / "phoning_trainval.txt").write_text("a 1 -1\nb 2 -1\n")
    one_line_error(read, "phoning_trainval.txt", "line 2")
    (action / "phoning_trainval.txt").unlink()
    one_line_error(read, str(action), "phoning_trainval.txt")
    (action / "trainval.txt").write_text("a\n")
    one_line_error(read, "jumping_trainval.txt", "b")
    (action / "trainval.txt").unlink()
    one_line_error(read, str(action), "trainval.txt")


def caltech_tree(root: Path, kind: int, sizes: dict[str, int]) -> Path:
    folder = root / f"{kind}_ObjectCategories"
    for c, (name, size) in enumerate(sizes.items()):
        for i in range(size):
            write_image(folder / name / f"image_{i:04d}.jpg", seed=c)
    return folder


CALTECH101 = {"accordion": 14, "BACKGROUND_Google": 20, "Faces": 16}


def test_caltech_readers(tmp_path: Path) -> None:
    folder = caltech_tree(tmp_path / "c101", 101, CALTECH101)
    (folder / "Faces" / "notes.txt").write_text("not an image")
    for root in (tmp_path / "c101", folder):
        data = read_caltech(root, 101)
        assert data.root == folder and data.classes == ("BACKGROUND_Google", "Faces", "accordion")
        assert np.bincount(data.labels).tolist() == [20, 16, 14] and len(data.paths) == 50
        assert all(path.parent.name == data.classes[label] for path, label in zip(data.paths, data.labels))
    folder256 = caltech_tree(tmp_path / "c256", 256, {"257.clutter": 3, "001.ak47": 2})
    (folder256 / "001.ak47" / "greg").mkdir()  # a stray folder inside a class: not an image
    data = read_caltech(tmp_path / "c256", 256)
    assert data.classes == ("001.ak47", "257.clutter") and data.labels.tolist() == [0, 0, 1, 1, 1]


def test_caltech_missing_pieces(tmp_path: Path) -> None:
    caltech_tree(tmp_path / "c256", 256, {"001.ak47": 2})
    one_line_error(lambda: read_caltech(tmp_path / "c256", 101), "101_ObjectCategories", str(tmp_path / "c256"))
    one_line_error(lambda: read_caltech(tmp_path / "absent", 101), "101_ObjectCategories")
    (tmp_path / "c256" / "256_ObjectCategories" / "ak47").mkdir()
    one_line_error(lambda: read_caltech(tmp_path / "c256", 256), "ak47", "NNN.name")
    (tmp_path / "c256" / "256_ObjectCategories" / "ak47").rmdir()
    (tmp_path / "c256" / "256_ObjectCategories" / "002.bat").mkdir()
    one_line_error(lambda: read_caltech(tmp_path / "c256", 256), "002.bat", "no images")


def test_caltech_split_protocol(tmp_path: Path) -> None:
    data = read_caltech(caltech_tree(tmp_path, 101, CALTECH101), 101)
    splits = caltech_splits(data, train_per_class=10, test_per_class=3, seed=7)
    assert [split.index for split in splits] == [0, 1, 2]
    for split in splits:
        for part, count in ((split.fit, 8), (split.held_out, 2), (split.test, 3)):  # 20% of 10 held out
            assert np.bincount(data.labels[part], minlength=3).tolist() == [count] * 3
        everything = np.concatenate([split.fit, split.held_out, split.test])
        assert len(set(everything.tolist())) == len(everything)  # fit, held out and test disjoint
        assert split.train.tolist() == sorted(split.fit.tolist() + split.held_out.tolist())
    assert not all(np.array_equal(splits[0].train, split.train) for split in splits[1:])
    again = caltech_splits(data, 10, 3, seed=7)
    assert all(np.array_equal(a.fit, b.fit) and np.array_equal(a.test, b.test) for a, b in zip(splits, again))
    other = caltech_splits(data, 10, 3, seed=8)
    assert not all(np.array_equal(a.train, b.train) for a, b in zip(splits, other))
    rest = caltech_splits(data, 10, None, seed=7, splits=1)[0]  # Caltech-256's protocol: all the rest to test
    assert np.bincount(data.labels[rest.test]).tolist() == [10, 6, 4]
    assert len(caltech_splits(data, 4, 1, seed=0)[0].held_out) == 3  # round(0.8) = 1 per class
    with pytest.raises(ValueError, match="class accordion .* 14 images, fewer than the 15"):
        caltech_splits(data, 14, None, seed=0)
