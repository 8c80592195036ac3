"""The test protocols of Sect. 3.2 on small nets, and their evaluation over a dataset."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from tests.conftest import small_net
from tests.helpers_images import image_bytes
from vgg.data.datasets import load_split
from vgg.data.loaders import read_image
from vgg.data.normalization import PAPER_MEAN_RGB
from vgg.data.transforms import ScaleRange, rescale
from vgg.evaluation.evaluate import average_results, evaluate
from vgg.evaluation.metrics import topk_correct
from vgg.evaluation.protocols import Batcher, Protocol, grid_crops, grid_positions
from vgg.evaluation.scores import load_scores
from vgg.nets.trained import Net, load_net
from vgg.runtime.precision import FullFP32
from vgg.suite.results_csv import read_rows, upsert_rows

ROOT = Path(__file__).resolve().parent.parent


def image(height: int, width: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (3, height, width), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def plain_posteriors(net: Net, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return F.softmax(net.model.eval()(PAPER_MEAN_RGB(images)), dim=1)


def test_dense_at_the_crop_size_is_the_plain_forward_pass():
    net = small_net()
    x = image(64, 64)
    dense = Protocol.of_net(net, "dense", flip=False).dense(x)
    torch.testing.assert_close(dense, plain_posteriors(net, x[None])[0], rtol=1e-5, atol=1e-6)


def test_the_centre_crop_protocol_scores_the_central_crop_alone():
    net = small_net()
    x = image(80, 100)  # crop 64: the central crop is rows 8-71, columns 18-81
    protocol = Protocol.of_net(net, "centre-crop", flip=False)
    posteriors = protocol.posteriors([x])
    torch.testing.assert_close(posteriors, plain_posteriors(net, x[None, :, 8:72, 18:82])[0], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(posteriors, plain_posteriors(net, x[None, :, :64, :64])[0], rtol=1e-3, atol=1e-4)  # not a corner


def test_evaluation_precision_is_fp32_without_tf32_unless_bf16_is_asked_for():
    net = small_net()
    x = image(80, 100)
    fp32, bf16 = Protocol.of_net(net, "dense"), Protocol.of_net(net, "dense", precision="bf16")
    assert (fp32.precision, bf16.precision) == ("fp32", "bf16")
    assert not torch.equal(fp32.dense(x), bf16.dense(x))  # bf16 autocast on the CPU too: other rounding
    torch.testing.assert_close(fp32.dense(x), bf16.dense(x), rtol=0, atol=0.05)
    with pytest.raises(ValueError, match="precision must be one of auto, fp32, bf16"):
        Protocol.of_net(net, "dense", precision="fp16")
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
    try:
        with FullFP32():
            assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
        assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def test_flip_averages_the_posteriors_of_the_image_and_its_mirror():
    net = small_net()
    x = image(96, 128)
    protocol = Protocol.of_net(net, "dense", flip=False)
    expected = (protocol.dense(x) + protocol.dense(x.flip(-1))) / 2
    torch.testing.assert_close(Protocol.of_net(net, "dense", flip=True).dense(x), expected, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(protocol.dense(x), protocol.dense(x.flip(-1)))


def test_dense_softmax_before_or_after_the_spatial_average():
    net = small_net()
    x = image(128, 160)
    with torch.no_grad():
        maps = net.model.eval().score_map(PAPER_MEAN_RGB(x[None]))
    after = F.softmax(maps.mean(dim=(2, 3)), dim=1)[0]
    before = F.softmax(maps, dim=1).mean(dim=(2, 3))[0]
    torch.testing.assert_close(Protocol.of_net(net, "dense", flip=False).dense(x), after, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(Protocol.of_net(net, "dense", flip=False, dense_softmax="before-average").dense(x), before, rtol=1e-5, atol=1e-6)
    assert maps.shape[-2:] == (3, 4) and not torch.allclose(after, before)


def test_crop_grid_has_25_distinct_positions_with_corners_and_centre():
    assert grid_positions(256, 224) == [0, 8, 16, 24, 32]
    x = image(256, 320)
    crops = grid_crops(x, 224)
    assert crops.shape == (25, 3, 224, 224)
    rows, columns = grid_positions(256, 224), grid_positions(320, 224)
    positions = {(top, left) for top in rows for left in columns}
    assert len(positions) == 25
    corners_and_centre = [(0, 0), (0, 96), (32, 0), (32, 96), (16, 48)]
    for top, left in corners_and_centre:
        assert (top, left) in positions
        assert any(torch.equal(crop, x[:, top : top + 224, left : left + 224]) for crop in crops)


class CountingModel(torch.nn.Module):
    """Wraps a VGG and records the batch sizes of plain forward and of dense passes."""

    def __init__(self, model):
        super().__init__()
        self.model, self.batches, self.dense_batches = model, [], []
        self.spec = model.spec

    def forward(self, x):
        self.batches.append(x.shape[0])
        return self.model(x)

    def score_map(self, x):
        self.dense_batches.append(x.shape[0])
        return self.model.score_map(x)


def test_multi_crop_is_50_crops_per_scale_in_one_batch_each():
    net = small_net()
    counting = CountingModel(net.model)
    net.model = counting
    protocol = Protocol.of_net(net, "multi-crop")
    posteriors = protocol.posteriors([image(64, 80), image(80, 100), image(96, 120)])
    assert counting.batches == [50, 50, 50]  # 150 crops over three scales, one forward per scale
    assert posteriors.shape == (6,) and abs(float(posteriors.sum()) - 1) < 1e-5


def test_multi_crop_posteriors_are_the_mean_over_crops_and_mirrors():
    net = small_net()
    x = image(72, 90)
    crops = grid_crops(x, 64)
    expected = plain_posteriors(net, torch.cat([crops, crops.flip(-1)])).mean(dim=0)
    torch.testing.assert_close(Protocol.of_net(net, "multi-crop").multi_crop(x), expected, rtol=1e-5, atol=1e-6)


def test_multi_scale_and_combination_average_posteriors():
    net = small_net()
    scaled = [image(64, 70, 1), image(80, 90, 2)]
    dense, crops = Protocol.of_net(net, "dense"), Protocol.of_net(net, "multi-crop")
    dense_mean = (dense.dense(scaled[0]) + dense.dense(scaled[1])) / 2
    crop_mean = (crops.multi_crop(scaled[0]) + crops.multi_crop(scaled[1])) / 2
    torch.testing.assert_close(dense.posteriors(scaled), dense_mean)
    torch.testing.assert_close(Protocol.of_net(net, "multi-crop+dense").posteriors(scaled), (dense_mean + crop_mean) / 2)


def test_multi_crop_plus_dense_from_its_parts_equals_evaluating_it(ci_data):
    net, val = small_net(classes=4, crop=32), load_split(ci_data, "val").subset(6)
    parts = [evaluate(net, val, method, [40, 48], workers=0) for method in ("dense", "multi-crop")]
    direct = evaluate(net, val, "multi-crop+dense", [40, 48], workers=0)
    combined = average_results(parts)
    assert torch.equal(combined.posteriors, direct.posteriors) and combined.image_ids == direct.image_ids
    assert (combined.top1_err, combined.top5_err) == (direct.top1_err, direct.top5_err)
    with pytest.raises(ValueError, match="different images"):
        average_results([parts[0], evaluate(net, val.subset(3), "dense", [40], workers=0)])


MIXED_SIZES = [(60, 80), (80, 60), (90, 120), (64, 64), (70, 100), (120, 90), (45, 60), (100, 70), (66, 88)]
"""Source images: 3:4 (four of them), 4:3 (two), 1:1, 7:10 and 10:7, so some rescaled sizes repeat and some do not."""


def batched_against_one_by_one(net, method, scales, flip=True, dense_softmax="after-average", **limits):
    """Each image's posteriors from a Batcher (keyed in reverse, fed in dataset order) and from `Protocol.posteriors`."""
    protocol = Protocol.of_net(net, method, flip, dense_softmax)
    scaled = [[rescale(image(h, w, seed), q) for q in scales] for seed, (h, w) in enumerate(MIXED_SIZES)]
    batcher, done = Batcher(protocol, **limits), []
    for number, images in enumerate(scaled):
        done += batcher.add(len(scaled) - number, images)
        assert batcher.waiting <= limits.get("pending", 256)
    done += batcher.finish()
    assert sorted(key for key, _ in done) == list(range(1, len(scaled) + 1)) and not batcher.images
    batched = torch.stack([posteriors for _, posteriors in sorted(done, key=lambda item: -item[0])])
    return batched, torch.stack([protocol.posteriors(images) for images in scaled])


@pytest.mark.parametrize("dense_softmax", ["after-average", "before-average"])
@pytest.mark.parametrize("flip", [True, False])
@pytest.mark.parametrize("scales", [[64], [64, 72, 80]])
def test_batched_dense_equals_dense_one_image_at_a_time(dense_softmax, flip, scales):
    net = small_net()
    counting = net.model = CountingModel(net.model)
    batched, one_by_one = batched_against_one_by_one(net, "dense", scales, flip, dense_softmax, batch_images=3)
    one_at_a_time = len(MIXED_SIZES) * len(scales)  # the passes of Protocol.posteriors, recorded last
    batched_passes = counting.dense_batches[:-one_at_a_time]
    assert (batched - one_by_one).abs().max() < 1e-5 and batched.shape == (len(MIXED_SIZES), 6)
    assert len(batched_passes) < one_at_a_time and max(batched_passes) == 3 * (2 if flip else 1)


@pytest.mark.parametrize("method", ["centre-crop", "multi-crop+dense", "multi-crop"])
def test_batched_centre_crop_and_combinations_equal_one_image_at_a_time(method):
    net = small_net()
    counting = net.model = CountingModel(net.model)
    batched, one_by_one = batched_against_one_by_one(net, method, [64, 80])
    assert (batched - one_by_one).abs().max() < 1e-5
    if method == "centre-crop":  # the 9 x 2 central crops, of one size whatever the scale, in one pass (then 18 of one)
        assert counting.batches == [2 * 18] + [2] * 18


def test_batches_are_bounded_in_images_pixels_and_waiting_images():
    net = small_net()
    batched, one_by_one = batched_against_one_by_one(net, "dense", [64, 72], batch_images=32, pending=4)
    assert (batched - one_by_one).abs().max() < 1e-5
    counting = net.model = CountingModel(net.model)
    batched, one_by_one = batched_against_one_by_one(net, "dense", [64], batch_images=32, batch_pixels=2 * 64 * 85)
    assert (batched - one_by_one).abs().max() < 1e-5
    assert max(counting.dense_batches[: -len(MIXED_SIZES)]) == 2 * 2  # two 64x85 images fill the pixel budget


def test_evaluate_puts_interleaved_sizes_back_in_dataset_order(tmp_path):
    """Tall and wide images alternate in dataset order; batched by size, the tall ones are done first."""
    for number in range(10):
        size = (70, 52) if number % 2 else (52, 70)  # PIL's (width, height)
        path = tmp_path / "val" / ("a" if number < 5 else "b") / f"{number:02d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(image_bytes(fmt="PNG", size=size, seed=number))
    val = load_split(tmp_path, "val")
    net = small_net(classes=2, crop=32)
    for method in ("dense", "centre-crop"):
        result = evaluate(net, val, method, [40, 48], workers=0)
        protocol = Protocol.of_net(net, method)
        expected = torch.stack([protocol.posteriors([rescale(read_image(path), q) for q in (40, 48)]) for path, _ in val.samples])
        assert result.image_ids == val.image_ids() == [f"{'a' if n < 5 else 'b'}/{n:02d}.png" for n in range(10)]
        assert (result.posteriors - expected).abs().max() < 1e-5 and result.labels.tolist() == [0] * 5 + [1] * 5
        assert (result.posteriors[:-1] - result.posteriors[1:]).abs().amax(dim=1).min() > 1e-4  # distinct rows: a swap shows


@pytest.mark.parametrize(
    "train_scale, single, multi",
    [("256", 256, (224, 256, 288)), ("384", 384, (352, 384, 416)), ("256:512", 384, (256, 384, 512))],
)
def test_scale_sets_are_the_papers(train_scale, single, multi):
    scale = ScaleRange.parse(train_scale)
    assert scale.single_test_scale == single and scale.multi_test_scales == multi


def test_topk_on_hand_made_scores_with_ties():
    scores = torch.tensor([[0.1, 0.7, 0.2], [0.5, 0.5, 0.0], [0.2, 0.3, 0.5], [1.0, 0.0, 0.0]])
    labels = torch.tensor([1, 1, 0, 2])
    # row 0 hits at top-1; row 1's tie between classes 0 and 1 goes to the lower index, so it hits
    # only at top-2; row 2 misses both; row 3's tie between 1 and 2 ranks 1 first, so top-2 misses
    assert topk_correct(scores, labels, ks=(1, 2)) == [1, 2]
    assert topk_correct(scores, labels, ks=(3,)) == [4]


def test_results_rows_are_upserted_not_duplicated(tmp_path):
    path = tmp_path / "results.csv"
    row = {"profile": "smoke", "dataset": "d", "run": "A-256", "method": "dense", "test_scales": "256", "flip": True, "top1_err": 50}
    upsert_rows(path, [row, {**row, "run": "B-256", "top1_err": 40}])
    upsert_rows(path, [{**row, "top1_err": 45}])
    rows = read_rows(path)
    assert [(r["run"], r["top1_err"]) for r in rows] == [("A-256", "45"), ("B-256", "40")]


def test_evaluate_command_writes_a_row_with_provenance(ci_data, ci_checkpoint, tmp_path):
    out = tmp_path / "results.csv"
    command = [sys.executable, "-m", "vgg", "evaluate", "--checkpoint", str(ci_checkpoint), "--data", str(ci_data), "--method",
               "multi-crop+dense", "--scales", "224,256,288", "--out", str(out), "--workers", "0", "--save-scores", str(tmp_path / "s.pt")]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    (row,) = read_rows(out)
    assert row["config"] == "A" and row["train_scale"] == "256" and row["method"] == "multi-crop+dense"
    assert row["test_scales"] == "224|256|288" and row["profile"] == "ci" and row["images"] == "24" and row["dataset_images"] == "24"
    assert len(row["checkpoint_sha256"]) == 16 and row["git_commit"] and row["device"] == "cpu" and row["date"]
    assert row["seed"] == "0" and row["precision"] == "fp32"
    scores = load_scores(tmp_path / "s.pt")  # the row's errors are those of the per-image posteriors it saved
    top1, top5 = topk_correct(scores["posteriors"], scores["labels"])
    assert (float(row["top1_err"]), float(row["top5_err"])) == (round(100 - 100 * top1 / 24, 3), round(100 - 100 * top5 / 24, 3))
    for metric in ("top1", "top5"):  # the 95% bootstrap interval over the 24 val images
        assert float(row[f"{metric}_err_lo"]) <= float(row[f"{metric}_err"]) <= float(row[f"{metric}_err_hi"])
    assert f"top-1 error {float(row['top1_err']):.2f}% [{float(row['top1_err_lo']):.2f}, {float(row['top1_err_hi']):.2f}]" in result.stdout


def test_two_gloo_processes_give_the_same_errors_and_scores(ci_data, ci_checkpoint, tmp_path):
    common = ["-m", "vgg", "evaluate", "--checkpoint", str(ci_checkpoint), "--data", str(ci_data), "--limit", "11",
              "--method", "multi-crop+dense", "--scales", "224,256", "--workers", "0", "--device", "cpu"]
    single = subprocess.run([sys.executable, *common, "--save-scores", str(tmp_path / "one.pt"), "--out", str(tmp_path / "one.csv")], cwd=ROOT, capture_output=True, text=True)
    assert single.returncode == 0, single.stderr
    double = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *common,
         "--save-scores", str(tmp_path / "two.pt"), "--out", str(tmp_path / "two.csv")],
        cwd=ROOT, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300,
    )
    assert double.returncode == 0, double.stderr[-3000:]
    one, two = load_scores(tmp_path / "one.pt"), load_scores(tmp_path / "two.pt")
    assert one["image_ids"] == two["image_ids"] and len(one["image_ids"]) == 11
    torch.testing.assert_close(one["posteriors"].float(), two["posteriors"].float(), atol=2e-3, rtol=0)
    rows = read_rows(tmp_path / "one.csv"), read_rows(tmp_path / "two.csv")
    assert [(r["top1_err"], r["top5_err"], r["images"]) for r in rows[0]] == [(r["top1_err"], r["top5_err"], r["images"]) for r in rows[1]]


def test_bad_evaluation_input_is_a_clear_error(ci_data, ci_checkpoint):
    net = load_net(checkpoint=ci_checkpoint)
    val = load_split(ci_data, "val")
    with pytest.raises(ValueError, match="below the training crop"):
        evaluate(net, val, "dense", [100], workers=0)  # 100 paper px -> 14 px at ci scale
    with pytest.raises(ValueError, match="unknown method 'ten-crop'"):
        evaluate(net, val, "ten-crop", [256], workers=0)
    with pytest.raises(ValueError, match="exactly one of --checkpoint"):
        load_net()
    with pytest.raises(ValueError, match="weights file .* does not exist .*torchvision:vgg16"):
        load_net(weights="/nonexistent/vgg16.pth")


def test_evaluate_runs_the_net_in_eval_mode_on_mean_subtracted_pixels(ci_data, tmp_path):
    """Dropout left on, or the mean-RGB subtraction left out, used to be caught only because the
    reference helpers of other tests differed: here what evaluate feeds the net is recorded and
    computed independently, and dropout (0.5) would make two evaluations differ."""
    from vgg.recipe.profiles import get_profile
    from vgg.nets.models import VGG
    from vgg.data.transforms import centre_crop

    class Recording(VGG):
        def forward(self, x):
            self.seen.append((self.training, x.detach().clone()))
            return super().forward(x)

    profile = get_profile("ci")
    images = load_split(ci_data, "val").subset(6)
    model = Recording("A", num_classes=len(images.classes), width=profile.width, crop=profile.crop, dropout=0.5, init="glorot")
    model.seen = []
    net = Net(model, PAPER_MEAN_RGB, profile, tmp_path / "net.pt", "net", "256", images.classes)
    first = evaluate(net, images, "centre-crop", [256], flip=False, workers=0)
    seen, model.seen = model.seen, []
    second = evaluate(net, images, "centre-crop", [256], flip=False, workers=0)
    assert not any(training for training, _ in seen)
    assert torch.equal(first.posteriors, second.posteriors)
    fed = torch.cat([inputs for _, inputs in seen])
    mean = torch.tensor(PAPER_MEAN_RGB.mean).view(3, 1, 1)
    expected = torch.stack([centre_crop(rescale(read_image(path), profile.size(256)), profile.crop).float() - mean for path, _ in images.samples])
    by_sum = lambda batch: batch[batch.flatten(1).sum(1).argsort()]  # noqa: E731 (the same images, in any order)
    torch.testing.assert_close(by_sum(fed), by_sum(expected), rtol=0, atol=1e-4)
