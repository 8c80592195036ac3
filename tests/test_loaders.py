import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers_images import class_folder_tree
from tests.helpers_processes import children_of, group_killed_at_the_end, sigkill_leaves_no_process
from vgg.data.datasets import load_split
from vgg.data.loaders import BadImageError, EpochSampler, ImageDataset, collate, iterate_epoch, make_loader
from vgg.data.transforms import ScaleRange, TestTransform, TrainTransform


@pytest.fixture
def train_images(tmp_path):
    return load_split(class_folder_tree(tmp_path, per_class=4), "train")


def train_dataset(images, **kwargs):
    return ImageDataset(images, TrainTransform(ScaleRange(16, 24), crop=16), seed=7, **kwargs)


def batches_by_index(loader):
    out = {}
    for batch in iterate_epoch(loader):
        for position, index in enumerate(batch.indices.tolist()):
            out[index] = (batch.images[position], batch.offsets[position], int(batch.labels[position]))
    return out


def test_two_process_split_covers_every_index_once_and_pads_only_when_asked():
    ranks = [EpochSampler(11, seed=3, rank=r, world_size=2) for r in range(2)]
    split = [[index for _, index in sampler] for sampler in ranks]
    assert len(split[0]) == len(split[1]) == 6
    assert set(split[0] + split[1]) == set(range(11))  # every index, plus one repeated as padding
    unpadded = [[index for _, index in EpochSampler(11, seed=3, rank=r, world_size=2, pad=False)] for r in range(2)]
    assert sorted(unpadded[0] + unpadded[1]) == list(range(11)) and [len(u) for u in unpadded] == [6, 5]
    single = [index for _, index in EpochSampler(11, seed=3, pad=False)]
    assert single[0::2] == unpadded[0] and single[1::2] == unpadded[1]  # one permutation, dealt out


def test_epochs_reshuffle_and_start_skips_for_resume():
    sampler = EpochSampler(20, seed=0)
    sampler.set_epoch(0)
    first = list(sampler)
    sampler.set_epoch(1)
    second = list(sampler)
    assert {e for e, _ in first} == {0} and {e for e, _ in second} == {1}
    assert [i for _, i in first] != [i for _, i in second]
    sampler.set_epoch(1, start=15)
    assert list(sampler) == second[15:] and len(sampler) == 5
    with pytest.raises(ValueError, match="rank 2 is not in"):
        EpochSampler(5, rank=2, world_size=2)


def test_augmentations_depend_on_seed_epoch_and_index_only(train_images):
    dataset = train_dataset(train_images)
    sampler = EpochSampler(len(dataset), seed=1)
    in_process = batches_by_index(make_loader(dataset, sampler, batch_size=5, workers=0))
    with_workers = batches_by_index(make_loader(dataset, sampler, batch_size=3, workers=2))
    ranks = {}
    for rank in range(2):
        ranks.update(batches_by_index(make_loader(dataset, EpochSampler(len(dataset), seed=1, rank=rank, world_size=2), 4, workers=0)))
    assert in_process.keys() == with_workers.keys() == ranks.keys() == set(range(12))
    for index, (image, offset, label) in in_process.items():
        for other in (with_workers, ranks):
            assert torch.equal(image, other[index][0]) and torch.equal(offset, other[index][1]) and label == other[index][2]
    sampler.set_epoch(1)
    next_epoch = batches_by_index(make_loader(dataset, sampler, batch_size=5, workers=0))
    assert any(not torch.equal(in_process[i][0], next_epoch[i][0]) for i in range(12))


class WorkerPids(torch.utils.data.Dataset):
    """Each item is the process id of the process that loads it."""

    def __len__(self) -> int:
        return 12

    def __getitem__(self, index: int) -> int:
        return os.getpid()


def test_the_loader_keeps_its_worker_processes_across_epochs():
    loader = make_loader(WorkerPids(), EpochSampler(12), batch_size=4, workers=2, device="cpu", collate_fn=set)
    first_epoch, second_epoch = set().union(*loader), set().union(*loader)
    assert len(first_epoch) == 2 and os.getpid() not in first_epoch  # two worker processes load the batches
    assert second_epoch == first_epoch  # the same two: no start-up cost per epoch (or per validation)


ENDS_WITH_A_LIVE_LOADER = """
import gc, torch
from vgg.data.loaders import EpochSampler, make_loader
class Items(torch.utils.data.Dataset):
    def __len__(self): return 16
    def __getitem__(self, key): return 0
gc.disable()  # so that nothing collects the cycle below before exit
loader = make_loader(Items(), EpochSampler(16), batch_size=4, workers=2, device="cpu", collate_fn=len)
iterator = iter(loader)
next(iterator)  # workers started, mid-epoch
cycle = [loader]
cycle.append(cycle)
print("done")
"""


def test_a_process_ending_with_a_persistent_loader_alive_exits():
    # multiprocessing's exit hook would SIGTERM the workers (which ignore it) and join them forever
    result = subprocess.run([sys.executable, "-c", ENDS_WITH_A_LIVE_LOADER], cwd=Path(__file__).resolve().parent.parent,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == "done", result.stderr[-2000:]


LIVE_LOADER_THEN_WAIT = """
import sys, time, torch
from vgg.data.loaders import EpochSampler, make_loader
class Items(torch.utils.data.Dataset):
    def __len__(self): return 16
    def __getitem__(self, key): return 0
loader = make_loader(Items(), EpochSampler(16), batch_size=4, workers=2, device="cpu", collate_fn=len)
next(iter(loader))
print("ready", flush=True)
time.sleep(600)
"""


def test_loader_workers_end_at_once_when_their_process_is_killed():
    """torch's workers look for their parent every 5 s; under the runner they held its lock as long."""
    command = [sys.executable, "-c", LIVE_LOADER_THEN_WAIT]
    root = Path(__file__).resolve().parent.parent
    with group_killed_at_the_end(subprocess.Popen(command, cwd=root, start_new_session=True, stdout=subprocess.PIPE, text=True)) as process:
        assert process.stdout.readline().strip() == "ready"
        assert len(children_of(process.pid)) == 2
        sigkill_leaves_no_process(process, within=2)


def test_the_loader_gives_uint8_batches_with_their_colour_offsets(train_images):
    loader = make_loader(train_dataset(train_images), EpochSampler(12), batch_size=4, workers=2, device="cpu")
    batch = next(iter(loader))
    assert batch.images.shape == (4, 3, 16, 16) and batch.images.dtype == torch.uint8 and batch.offsets.shape == (4, 3)


def test_test_transform_dataset_gives_rescaled_images(train_images):
    dataset = ImageDataset(train_images, TestTransform(36))
    image, label, offset, index = dataset[5]
    assert min(image.shape[1:]) == 36 and index == 5 and label == train_images.samples[5][1]


def test_a_bad_image_stops_the_run_naming_the_file(train_images):
    broken = train_images.samples[4][0]
    broken.write_bytes(broken.read_bytes()[:200])
    loader = make_loader(train_dataset(train_images), EpochSampler(12, shuffle=False), batch_size=6, workers=1)
    with pytest.raises(BadImageError, match=rf"{broken.name}.*--skip-bad-images"):
        list(iterate_epoch(loader))


def test_skip_bad_images_skips_counts_and_lists_them(train_images):
    broken = [train_images.samples[i][0] for i in (1, 9)]
    for path in broken:
        path.write_bytes(b"garbage")
    loader = make_loader(train_dataset(train_images, skip_bad_images=True), EpochSampler(12, shuffle=False), batch_size=6, workers=1)
    messages = []
    seen = sum(len(batch) for batch in iterate_epoch(loader, log=messages.append))
    assert seen == 10
    assert len(messages) == 1 and messages[0].startswith("skipped 2 unreadable image(s) this epoch")
    assert all(str(path) in messages[0] for path in broken)


def test_collate_of_only_skipped_samples_is_an_empty_batch():
    from vgg.data.loaders import SkippedImage

    batch = collate([SkippedImage("a.JPEG")])
    assert len(batch) == 0 and batch.skipped == ["a.JPEG"]


def test_cached_decoding_reads_each_image_once_and_gives_the_same_samples(ci_data, monkeypatch):
    import vgg.data.loaders as loaders

    images = load_split(ci_data, "train").subset(4)
    transform = TrainTransform(ScaleRange.parse("40"), 32)
    plain, cached = ImageDataset(images, transform, seed=3), ImageDataset(images, transform, seed=3, cache_decoded=True)
    reads = []
    original = loaders.read_image
    monkeypatch.setattr(loaders, "read_image", lambda path: reads.append(path) or original(path))
    for epoch in range(3):
        for index in range(len(images)):
            expected, got = plain[(epoch, index)], cached[(epoch, index)]
            for a, b in zip(expected, got, strict=True):
                assert torch.equal(torch.as_tensor(a), torch.as_tensor(b))
    assert len(reads) == 3 * len(images) + len(images)  # the plain dataset every epoch, the cached one once per image


def test_the_run_seed_changes_the_augmentation_of_the_same_image_and_epoch(train_images):
    transform = TrainTransform(ScaleRange(16, 24), crop=16)
    first, other = (ImageDataset(train_images, transform, seed=seed) for seed in (0, 1))
    assert any(not torch.equal(first[(0, index)][0], other[(0, index)][0]) for index in range(len(train_images)))
    assert all(torch.equal(first[(0, index)][0], first[(0, index)][0]) for index in range(3))  # and the seed alone decides


WORKER_HOOKS = """
import sys
from vgg.runtime.stop_signals import ignore_stop_signals
ignore_stop_signals()  # what a loader worker runs first
for error in (ConnectionResetError(104, "Connection reset by peer"), EOFError(), KeyError("a real bug")):
    try:
        raise error
    except BaseException:
        sys.excepthook(*sys.exc_info())  # how multiprocessing's resource sharer reports its thread's errors
"""


def test_a_loader_worker_prints_no_connection_error_traceback_when_its_parent_stops():
    """After a Ctrl-C during evaluate, 3 of 8 tries printed a worker's ConnectionResetError or EOFError
    traceback (its resource sharer's connection to the stopped main process) under the stop's line."""
    result = subprocess.run([sys.executable, "-c", WORKER_HOOKS], cwd=Path(__file__).resolve().parent.parent, capture_output=True, text=True, timeout=60)
    assert "ConnectionResetError" not in result.stderr and "EOFError" not in result.stderr
    assert "KeyError: 'a real bug'" in result.stderr  # other errors are still reported
