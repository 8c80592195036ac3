"""The toy target sets of Appendix B: classes the embedded set's nets never saw, in Caltech's and VOC's layouts."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from vgg.data.synthetic import SHAPES, TRANSFER_SHAPES
from vgg.data.synthetic_transfer import TransferSpec, class_name, generate_transfer, render_multi, transfer_class

TINY = TransferSpec(classes=4, per_class=3, multilabel_classes=3, trainval=6, test=4)


def tree_hash(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode() + path.read_bytes())
    return digest.hexdigest()


def test_the_transfer_classes_have_shapes_no_embedded_class_has():
    assert not set(TRANSFER_SHAPES) & set(SHAPES)
    pairs = [transfer_class(k) for k in range(40)]
    assert len(set(pairs)) == 40 and len({shape for shape, _ in pairs[:8]}) == 8
    assert class_name(0) == "001.pentagon-stripes"


def test_both_sets_are_written_in_their_layouts_deterministically(tmp_path):
    root = generate_transfer(tmp_path / "a", TINY)
    assert tree_hash(root) == tree_hash(generate_transfer(tmp_path / "b", TINY))
    assert tree_hash(root) != tree_hash(generate_transfer(tmp_path / "c", TransferSpec(**{**TINY.__dict__, "seed": 1})))
    categories = sorted(p.name for p in (root / "categories").iterdir())
    assert categories == [class_name(k) for k in range(4)] and all(len(list((root / "categories" / c).iterdir())) == 3 for c in categories)
    main = root / "multilabel" / "VOCdevkit" / "VOC2007" / "ImageSets" / "Main"
    names = (root / "multilabel" / "classes.txt").read_text().split()
    assert names == ["pentagon-stripes", "diamond-checker", "trapezoid-dots"]
    ids = (main / "trainval.txt").read_text().split()
    assert len(ids) == 6 and len((main / "test.txt").read_text().split()) == 4
    for index, image_id in enumerate(ids):  # each class file says what the image shows, as its annotation does
        _, shown, _ = render_multi(TINY, "trainval", index)
        labels = [int(dict(line.split() for line in (main / f"{name}_trainval.txt").read_text().splitlines())[image_id]) for name in names]
        assert labels == [1 if k in shown else -1 for k in range(3)] and 1 <= len(shown) <= 3
        annotation = (root / "multilabel" / "VOCdevkit" / "VOC2007" / "Annotations" / f"{image_id}.xml").read_text()
        assert sorted(names[k] for k in shown) == sorted(part.split("</name>")[0] for part in annotation.split("<name>")[1:])


def test_a_folder_of_other_parameters_is_an_error(tmp_path):
    generate_transfer(tmp_path / "t", TINY)
    with pytest.raises(ValueError, match="transfer set"):
        generate_transfer(tmp_path / "t", TransferSpec(**{**TINY.__dict__, "per_class": 4}))


def test_a_two_class_multilabel_set_draws_at_most_two_objects():
    spec = TransferSpec(classes=2, per_class=3, multilabel_classes=2, trainval=12, test=2)
    drawn = [render_multi(spec, "trainval", index)[1] for index in range(12)]
    assert all(1 <= len(shown) <= 2 and len(set(shown)) == len(shown) for shown in drawn) and any(len(shown) == 2 for shown in drawn)
