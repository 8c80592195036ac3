import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from vgg.data.datasets import load_split
from vgg.data.synthetic import MAX_CLASSES, SynthSpec, class_definition, generate, wnid

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
        paste(canvas, rng, shape, texture, size)

    monkeypatch.setattr(synthetic, "_paste", recording_paste)
    spec = SynthSpec(classes=10, train_per_class=30, val_per_class=1, min_side=32, max_side=48)
    for index in range(300):
        synthetic.render_image(spec, "train", index % 10, index // 10)
    small = [f for f in fractions if f < synthetic.OBJECT_SIZE[0]]
    assert 15 <= len(small) <= 45  # 10% of 300 (binomial sd 5.2)
    assert all(synthetic.SMALL_OBJECT_SIZE[0] <= f for f in small) and max(fractions) <= synthetic.OBJECT_SIZE[1]


@pytest.mark.parametrize("sides", [(8, 64), (64, 48)])
def test_image_sides_are_checked(sides):
    with pytest.raises(ValueError, match="32 <= min_side <= max_side"):
        SynthSpec(min_side=sides[0], max_side=sides[1])


def test_a_spec_in_words():
    assert SynthSpec(classes=4, train_per_class=24, val_per_class=6).describe() == "4 classes, 24 train and 6 val images a class, sides 64-192 px, seed 0"
