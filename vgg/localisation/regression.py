"""The localisation net's head and loss (Appendix A): the last FC predicts a box instead of class scores.

Single-class regression (SCR) predicts one box, shared by every class (4 outputs); per-class regression
(PCR) one box per class (4 x classes outputs), of which the ground-truth class's is trained and, at test
time, the class being localised is read. A box is (centre x, centre y, width, height) relative to the crop
(`vgg.localisation.boxes.encode`), and the loss is the Euclidean one the paper names, Caffe's
`EuclideanLoss`: half the squared distance, averaged over the images that have a target in their crop.
"""

from __future__ import annotations

import torch

from vgg.localisation.boxes import decode, iou

REGRESSIONS = ("scr", "pcr")
BOX_OUTPUTS = 4
IOU_CORRECT = 0.5
"""A box is correct when its IoU with a ground-truth box exceeds 0.5 (the ILSVRC rule, Appendix A)."""


def check_regression(regression: str) -> str:
    """`regression` if it is scr or pcr, else a clear error."""
    if regression not in REGRESSIONS:
        raise ValueError(f"--regression must be one of {', '.join(REGRESSIONS)} (or none for class scores), got {regression!r}")
    return regression


def head_outputs(regression: str, classes: int) -> int:
    """The last layer's width: 4 for SCR, 4 x `classes` for PCR."""
    return BOX_OUTPUTS if check_regression(regression) == "scr" else BOX_OUTPUTS * classes


def predicted_boxes(outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Each row's box for its class: (N, 4) from (N, 4) outputs (SCR) or (N, 4 x classes) outputs (PCR)."""
    if outputs.shape[1] == BOX_OUTPUTS:
        return outputs
    per_class = outputs.view(outputs.shape[0], -1, BOX_OUTPUTS)
    return per_class[torch.arange(outputs.shape[0], device=outputs.device), labels]


def has_target(targets: torch.Tensor) -> torch.Tensor:
    """Which rows have a target box (a crop that cut every box of its image away has NaNs)."""
    return torch.isfinite(targets).all(dim=1)


def euclidean_loss(predicted: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Half the squared distance between predicted and target boxes, averaged over the rows with a
    target (0, with a gradient, when none has one)."""
    valid = has_target(targets)
    squared = (predicted.float() - torch.where(valid[:, None], targets, 0.0)).pow(2).sum(dim=1)
    return 0.5 * (squared * valid).sum() / valid.sum().clamp(min=1)


def correct_boxes(predicted: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per row, whether the predicted box has IoU > 0.5 with the target (False without a target)."""
    overlap = iou(decode(predicted.float(), 1.0), decode(torch.nan_to_num(targets), 1.0))
    return (overlap > IOU_CORRECT) & has_target(targets)


def box_sums(loss: torch.Tensor, predicted: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """A batch's share of training's running sums, laid out as classification's
    (`vgg.evaluation.metrics.batch_sums`): [loss x images, correct boxes, correct boxes, images with a
    target, 1 if the loss is not finite], float64 on the device, without a host sync."""
    images = has_target(targets).sum().double()
    hits = correct_boxes(predicted, targets).sum().double()
    loss = loss.detach().double()
    return torch.stack([loss * images, hits, hits, images, (~torch.isfinite(loss)).double()])
