import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vgg.data.datasets import load_split
from vgg.data.synthetic import MAX_CLASSES, SynthSpec, class_definition, ensure_synthetic_boxes, generate, wnid
from vgg.localisation.annotations import (
    BoxAnnotationsError,
    ObjectBox,
    boxes_for_images,
    load_boxes,
    read_kaggle_solution,
)

ROOT = Path(__file__).resolve().parent.parent
TINY = SynthSpec(classes=3, train_per_class=4, val_per_class=2, seed=0)


def tree_hash(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def test_same_seed_gives_byte_identical_trees_whatever_the_workers(tmp_path):
    one = generate(tmp_path / "one", TINY, workers=1)
    two = generate(tmp_path / "two", TINY, workers=2)
    other_seed = generate(tmp_path / "three", SynthSpec(classes=3, train_per_class=4, val_per_class=2, seed=1), workers=1)
    assert tree_hash(one) == tree_hash(two)
    assert tree_hash(one) != tree_hash(other_seed)


def test_layout_balance_sizes_and_labels(tmp_path):
    root = generate(tmp_path / "synthetic", TINY)
    train, val = load_split(root, "train"), load_split(root, "val")
    assert train.layout == "class folders" and train.classes == tuple(wnid(i) for i in range(3))
    for images, per_class in ((train, 4), (val, 2)):
        labels = [label for _, label in images.samples]
        assert [labels.count(c) for c in range(3)] == [per_class] * 3
        for path, _ in images.samples:
            with Image.open(path) as image:
                assert image.format == "JPEG" and image.mode == "RGB"
                width, height = image.size
            assert TINY.min_side <= min(width, height) <= TINY.max_side
            assert 3 / 4 - 0.02 <= width / height <= 4 / 3 + 0.02
    assert (root / "classes.txt").read_text().splitlines()[0] == f"{wnid(0)}\tdisc with stripes"


def test_classes_are_distinct_shape_texture_pairs():
    pairs = [class_definition(i) for i in range(MAX_CLASSES)]
    assert len(set(pairs)) == MAX_CLASSES
    assert MAX_CLASSES == 50 and len({shape for shape, _ in pairs[:10]}) == 10  # the first ten differ in shape
    assert len({texture for _, texture in pairs[:5]}) == 5  # and the first five in texture
    assert sorted(wnid(i) for i in range(12)) == [wnid(i) for i in range(12)]


def test_regeneration_is_a_no_op_and_conflicts_are_errors(tmp_path):
    root = generate(tmp_path / "s", TINY)
    before = tree_hash(root)
    assert generate(root, TINY) == root and tree_hash(root) == before
    with pytest.raises(ValueError, match="other parameters"):
        generate(root, SynthSpec(classes=4, train_per_class=4, val_per_class=2))
    # a set from an older generator (its synthetic.json has no version) is not silently reused
    description = json.loads((root / "synthetic.json").read_text())
    (root / "synthetic.json").write_text(json.dumps({k: v for k, v in description.items() if k != "generator"}))
    with pytest.raises(ValueError, match="another version of this suite"):
        generate(root, TINY)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "file").write_text("x")
    with pytest.raises(ValueError, match="is not a synthetic dataset"):
        generate(tmp_path / "junk", TINY)
    with pytest.raises(ValueError, match="--classes must be between 2 and 50"):
        SynthSpec(classes=51)


def test_cli_generates_the_dataset(tmp_path):
    out = tmp_path / "cli"
    command = [sys.executable, "-m", "vgg", "data", "synth", "--out", str(out), "--classes", "2", "--train-per-class", "2", "--val-per-class", "1"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert len(load_split(out, "train")) == 4 and len(load_split(out, "val")) == 2


def test_one_image_in_ten_holds_a_small_object(monkeypatch):
    import vgg.data.synthetic as synthetic

    fractions = []
    paste = synthetic._paste

    def recording_paste(canvas, rng, shape, texture, size):
        if shape != "blob":  # the class's object, not a distractor
            fractions.append(size / min(canvas.shape[:2]))
        return paste(canvas, rng, shape, texture, size)

    monkeypatch.setattr(synthetic, "_paste", recording_paste)
    spec = SynthSpec(classes=10, train_per_class=30, val_per_class=1, min_side=32, max_side=48)
    for index in range(300):
        synthetic.render(spec, "train", index % 10, index // 10)
    small = [f for f in fractions if f < synthetic.OBJECT_SIZE[0]]
    assert 15 <= len(small) <= 45  # 10% of 300 (binomial sd 5.2)
    assert all(synthetic.SMALL_OBJECT_SIZE[0] <= f for f in small) and max(fractions) <= synthetic.OBJECT_SIZE[1]


@pytest.mark.parametrize("sides", [(8, 64), (64, 48)])
def test_image_sides_are_checked(sides):
    with pytest.raises(ValueError, match="32 <= min_side <= max_side"):
        SynthSpec(min_side=sides[0], max_side=sides[1])


def test_a_spec_in_words():
    assert SynthSpec(classes=4, train_per_class=24, val_per_class=6).describe() == "4 classes, 24 train and 6 val images a class, sides 64-192 px, seed 0"


# The boxes (Appendix A's localisation): `LOC_{train,val}_solution.csv` beside the images.

OBJECT_MARK = 1e9
"""A texture value no drawn pixel reaches: pixels of the object's mask above 0.5 are above half of it."""


def test_generated_set_has_one_box_of_its_class_per_image_inside_it(tmp_path):
    root = generate(tmp_path / "s", TINY, workers=1)
    for split in ("train", "val"):
        images = load_split(root, split)
        boxes = read_kaggle_solution(root / f"LOC_{split}_solution.csv")
        assert load_boxes(root, split) == boxes
        found, missing = boxes_for_images(images.image_ids(), boxes)
        assert missing == 0 and len(boxes) == len(images)
        for (path, label), entry in zip(images.samples, found):
            (only,) = entry
            x0, y0, x1, y1 = only.box
            with Image.open(path) as image:
                width, height = image.size
            assert only.wnid == wnid(label) == path.parent.name
            assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
            assert x1 - x0 >= 3 and y1 - y0 >= 3


def test_box_is_the_tight_box_of_the_object_pixels_drawn(monkeypatch):
    import vgg.data.synthetic as synthetic

    spec = SynthSpec(classes=10, train_per_class=3, val_per_class=1, min_side=32, max_side=96, seed=5)
    images = [("train", index % 10, index // 10) for index in range(30)] + [("val", 6, 0), ("val", 8, 0)]
    boxes = [synthetic.render(spec, *image)[1] for image in images]
    texture, paste, marking = synthetic._texture, synthetic._paste, [False]

    def marking_texture(rng, name, size):
        drawn = texture(rng, name, size)  # the random stream is consumed as ever
        return np.full_like(drawn, OBJECT_MARK) if marking[0] else drawn

    def marking_paste(canvas, rng, shape, name, size):
        marking[0] = shape != "blob"  # the class's object, not a distractor
        return paste(canvas, rng, shape, name, size)

    monkeypatch.setattr(synthetic, "_texture", marking_texture)
    monkeypatch.setattr(synthetic, "_paste", marking_paste)
    for image, box in zip(images, boxes):
        canvas, drawn_box = synthetic._draw(spec, *image)
        rows, columns = np.nonzero(canvas[..., 0] > OBJECT_MARK / 2)
        assert drawn_box == box == (columns.min(), rows.min(), columns.max(), rows.max()), image
        xmin, ymin, xmax, ymax = box
        assert synthetic.object_box(spec, *image) == ObjectBox(wnid(image[1]), (xmin, ymin, xmax + 1, ymax + 1))


def test_ensure_synthetic_boxes_rewrites_missing_csvs_identically_and_touches_no_image(tmp_path):
    root = generate(tmp_path / "s", TINY, workers=1)
    csvs = {split: root / f"LOC_{split}_solution.csv" for split in ("train", "val")}
    written = {split: path.read_bytes() for split, path in csvs.items()}
    images = {path: (path.stat().st_mtime_ns, path.read_bytes()) for path in root.rglob("*.JPEG")}
    for path in csvs.values():
        path.unlink()
    assert ensure_synthetic_boxes(root, workers=2) == root
    assert {split: path.read_bytes() for split, path in csvs.items()} == written
    assert {path: (path.stat().st_mtime_ns, path.read_bytes()) for path in root.rglob("*.JPEG")} == images
    kept = csvs["train"].stat().st_mtime_ns
    csvs["val"].unlink()
    ensure_synthetic_boxes(root, workers=1)  # only the missing one is written
    assert csvs["val"].read_bytes() == written["val"] and csvs["train"].stat().st_mtime_ns == kept
    names = [".complete", *(path.name for path in csvs.values()), "classes.txt", "synthetic.json", "train", "val"]
    assert sorted(p.name for p in root.iterdir()) == names  # no temporary file left behind


def test_ensure_synthetic_boxes_refuses_what_is_not_a_complete_synthetic_set_of_this_version(tmp_path):
    (tmp_path / "imagenet" / "train").mkdir(parents=True)
    with pytest.raises(BoxAnnotationsError, match=f"{tmp_path / 'imagenet'} is not a complete synthetic set"):
        ensure_synthetic_boxes(tmp_path / "imagenet")
    root = generate(tmp_path / "s", TINY, workers=1)
    (root / "LOC_val_solution.csv").unlink()
    description = json.loads((root / "synthetic.json").read_text())
    (root / "synthetic.json").write_text(json.dumps({**description, "generator": 2}))
    with pytest.raises(BoxAnnotationsError, match="drawn by version 2 of the synthetic generator"):
        ensure_synthetic_boxes(root)
    (root / "synthetic.json").write_text(json.dumps(description))
    (root / "val" / wnid(1) / f"{wnid(1)}_00001.JPEG").unlink()
    with pytest.raises(BoxAnnotationsError, match=f"lacks .*{wnid(1)}_00001.JPEG"):
        ensure_synthetic_boxes(root)


def test_images_are_byte_identical_to_those_drawn_before_the_boxes():
    # sha256 of the JPEGs as the generator drew them before it computed boxes (same GENERATOR_VERSION):
    # computing the box must not change any image byte, nor consume the random stream differently.
    import vgg.data.synthetic as synthetic

    expected = {
        ("train", 0, 0): "0ddfbc8cb9a18559f020427bbc539941362a3e4cfe55ceba00c35cea98c96806",
        ("val", 2, 1): "09a913c7273601ee229f99d53f86ca8106979b0094d26dec0723aef280fa49c9",
    }
    for image, digest in expected.items():
        jpeg, _ = synthetic.render(TINY, *image)
        assert hashlib.sha256(jpeg).hexdigest() == digest
        assert synthetic.render(TINY, *image)[0] == jpeg
