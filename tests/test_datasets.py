import csv
import io
import multiprocessing
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.helpers_images import class_folder_tree, image_bytes, write_image
from vgg.data.datasets import DatasetLayoutError, Samples, load_split
from vgg.data.loaders import BadImageError, read_image

WNIDS = ("n01440764", "n01443537", "n01484850")


def test_class_folders_are_indexed_in_sorted_order(tmp_path):
    class_folder_tree(tmp_path, classes=("n02", "n01", "n03"))
    (tmp_path / "train" / "n01" / "notes.txt").write_text("not an image")
    train = load_split(tmp_path, "train")
    assert train.layout == "class folders" and train.classes == ("n01", "n02", "n03")
    assert [(p.parent.name, label) for p, label in train.samples][::3] == [("n01", 0), ("n02", 1), ("n03", 2)]
    assert train.ignored_files == 1 and "1 non-image files ignored" in train.describe()
    assert len(load_split(tmp_path, "val")) == 9


def test_extensions_in_any_case(tmp_path):
    for name in ("a.JPEG", "b.jpg", "c.Jpeg", "d.PNG"):
        write_image(tmp_path / "train" / "cls" / name, fmt="PNG" if name.lower().endswith("png") else "JPEG")
    (tmp_path / "val" / "cls").mkdir(parents=True)
    write_image(tmp_path / "val" / "cls" / "e.jpeg")
    assert len(load_split(tmp_path, "train")) == 4


def flat_imagenet(root, with_train=True):
    if with_train:
        for wnid in WNIDS:
            write_image(root / "train" / wnid / f"{wnid}_1.JPEG")
    truth = [3, 1, 2, 1]  # ILSVRC2012 IDs of the val images in file order
    for number in range(1, len(truth) + 1):
        write_image(root / "val" / f"ILSVRC2012_val_{number:08d}.JPEG", seed=number)
    return truth


def test_flat_val_labelled_by_kaggle_csv(tmp_path):
    flat_imagenet(tmp_path)
    with open(tmp_path / "LOC_val_solution.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["ImageId", "PredictionString"])
        for number, wnid in zip(range(1, 5), (WNIDS[2], WNIDS[0], WNIDS[1], WNIDS[0])):
            writer.writerow([f"ILSVRC2012_val_{number:08d}", f"{wnid} 1 2 3 4 {wnid} 5 6 7 8"])
    val = load_split(tmp_path, "val")
    assert val.layout == "ImageNet flat val, labels from LOC_val_solution.csv"
    assert [label for _, label in val.samples] == [2, 0, 1, 0]


def devkit_files(truth):
    from scipy.io import savemat

    dtype = [("ILSVRC2012_ID", "O"), ("WNID", "O"), ("words", "O"), ("num_children", "O")]
    synsets = np.array(
        [(1, WNIDS[0], "tench", 0), (2, WNIDS[1], "goldfish", 0), (3, WNIDS[2], "shark", 0), (1001, "n00001740", "entity", 3)],
        dtype=dtype,
    )
    meta = io.BytesIO()
    savemat(meta, {"synsets": synsets})
    return {"data/meta.mat": meta.getvalue(), "data/ILSVRC2012_validation_ground_truth.txt": "".join(f"{t}\n" for t in truth).encode()}


@pytest.mark.parametrize("packed", [True, False])
def test_flat_val_labelled_by_the_devkit(tmp_path, packed):
    truth = flat_imagenet(tmp_path)
    files = devkit_files(truth)
    if packed:
        with tarfile.open(tmp_path / "ILSVRC2012_devkit_t12.tar.gz", "w:gz") as archive:
            for name, data in files.items():
                info = tarfile.TarInfo(f"ILSVRC2012_devkit_t12/{name}")
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
    else:
        for name, data in files.items():
            (tmp_path / "ILSVRC2012_devkit_t12" / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / "ILSVRC2012_devkit_t12" / name).write_bytes(data)
    val = load_split(tmp_path, "val")
    assert val.classes == WNIDS
    assert [label for _, label in val.samples] == [t - 1 for t in truth]  # IDs 1..3 are the sorted wnids here


def test_kaggle_layout(tmp_path):
    flat_imagenet(tmp_path / "ILSVRC" / "Data" / "CLS-LOC")
    (tmp_path / "LOC_val_solution.csv").write_text(
        "ImageId,PredictionString\n" + "".join(f"ILSVRC2012_val_{n:08d},{WNIDS[n % 3]} 0 0 1 1\n" for n in range(1, 5))
    )
    assert load_split(tmp_path, "train").layout == "Kaggle ImageNet"
    assert [label for _, label in load_split(tmp_path, "val").samples] == [1, 2, 0, 1]


@pytest.mark.parametrize(
    "make, split, message",
    [
        (lambda root: class_folder_tree(root) and __import__("shutil").rmtree(root / "val"), "val", "has no val/ folder"),
        (lambda root: (root / "train" / "n01").mkdir(parents=True), "train", r"class folder .*n01 has no images"),
        (lambda root: flat_imagenet(root), "val", "flat folder of images but no labels were found"),
        (lambda root: (root / "train").mkdir(parents=True), "train", "holds neither class folders nor images"),
        (
            lambda root: class_folder_tree(root) and write_image(root / "val" / "n99" / "x.JPEG"),
            "val",
            "class folders missing from .*train: n99",
        ),
    ],
)
def test_layout_errors_name_the_path_and_list_accepted_layouts(tmp_path, make, split, message):
    root = tmp_path / "data"
    if make is not None:
        root.mkdir()
        make(root)
    if message == "does not exist":
        root = tmp_path / "missing"
    with pytest.raises(DatasetLayoutError, match=message) as error:
        load_split(root, split)
    assert "accepted layouts:" in str(error.value) and "ImageNet official" in str(error.value)


def test_csv_without_a_label_for_an_image(tmp_path):
    flat_imagenet(tmp_path)
    (tmp_path / "LOC_val_solution.csv").write_text(f"ImageId,PredictionString\nILSVRC2012_val_00000001,{WNIDS[0]} 0 0 1 1\n")
    with pytest.raises(DatasetLayoutError, match="has no label for .*ILSVRC2012_val_00000002"):
        load_split(tmp_path, "val")


@pytest.mark.parametrize(
    "mode, fmt",
    [("L", "JPEG"), ("CMYK", "JPEG"), ("P", "PNG"), ("RGBA", "PNG"), ("LA", "PNG"), ("I;16", "PNG"), ("RGB", "PNG")],
)
def test_every_image_mode_becomes_rgb(tmp_path, mode, fmt):
    path = tmp_path / "image.JPEG"  # PNGs too carry a .JPEG name, as one ImageNet file does
    path.write_bytes(image_bytes(mode, fmt))
    image = read_image(path)
    assert image.shape == (3, 18, 24) and image.dtype == torch.uint8
    expected = np.asarray(Image.open(path).convert("RGB")) if mode != "I;16" else None
    if expected is not None:
        assert np.abs(image.permute(1, 2, 0).numpy().astype(int) - expected.astype(int)).max() <= 1


@pytest.mark.parametrize("content", [image_bytes()[:300], b"not an image at all"])
def test_corrupt_or_truncated_images_name_the_file_and_the_skip_option(tmp_path, content):
    path = tmp_path / "broken.JPEG"
    path.write_bytes(content)
    with pytest.raises(BadImageError, match=r"cannot decode image .*broken\.JPEG.*--skip-bad-images"):
        read_image(path)


def _private_dirty_kb() -> int:
    with open("/proc/self/smaps_rollup") as rollup:
        return next(int(line.split()[1]) for line in rollup if line.startswith("Private_Dirty:"))


def _read_every_sample(samples, queue) -> None:
    before = _private_dirty_kb()
    for index in range(len(samples)):
        path, label = samples[index]  # what a loader worker does for each image
    queue.put((_private_dirty_kb() - before) / 1024)


@pytest.mark.skipif(not Path("/proc/self/smaps_rollup").exists(), reason="needs Linux's /proc/self/smaps_rollup")
def test_loader_workers_share_the_sample_list_instead_of_copying_it(tmp_path):
    """A forked worker reading every sample of a 400k-image list: a tuple of (Path, int) pairs costs it
    ~120 MB of private copies (reference counts written page by page), the numpy-backed list a few MB."""
    class_folder_tree(tmp_path, classes=("n02", "n01"))
    small = load_split(tmp_path, "train")
    assert isinstance(small.samples, Samples) and small.samples.relative_paths.dtype.kind == "S"
    count = 400_000
    names = np.array([f"n{i // 1300:08d}/n{i // 1300:08d}_{i}.JPEG".encode() for i in range(count)])
    samples = Samples(tmp_path / "train", names, np.arange(count) // 1300)
    assert samples[count - 1] == (tmp_path / "train" / f"n00000307/n00000307_{count - 1}.JPEG", 307)
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    worker = context.Process(target=_read_every_sample, args=(samples, queue))
    worker.start()
    copied_mb = queue.get(timeout=120)
    worker.join()
    assert copied_mb < 30, f"a worker copied {copied_mb:.0f} MB of the sample list"
