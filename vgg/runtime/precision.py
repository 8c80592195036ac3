"""The arithmetic of training and evaluation: IEEE fp32, or bf16 autocast where the device computes
bf16 fast.

`auto` is decided where the run starts, once: bf16 on CUDA (tensor cores); on the CPU, bf16 when
a measured convolution step runs at least `BF16_SPEEDUP_NEEDED` times faster in bf16 than in
fp32 (CPUs with bf16 units, such as AVX512-BF16 or AMX, run it about 2x faster; CPUs without
them emulate it and run it slower), fp32 otherwise. The margin on either side of the threshold
is wide, so the same machine decides the same way each time; a run's checkpoint keeps the
decision, and its identity records it (bf16 changes the arithmetic).
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from contextlib import ContextDecorator
from functools import cache

import torch
import torch.nn.functional as F

PRECISIONS = ("fp32", "bf16")
CHOICES = ("auto", *PRECISIONS)
BF16_SPEEDUP_NEEDED = 1.3
"""bf16 must beat fp32 by this factor on the CPU for `auto` to choose it."""
_PROBE_REPEATS = 3


def _probe_seconds(dtype: torch.dtype | None) -> float:
    """Best-of seconds of one forward and backward pass of a small VGG-like conv stack (two 3x3
    convs of 64 channels on 32x32 maps, batch 16, channels-last) under `dtype` autocast (None: fp32)."""
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(16, 64, 32, 32, generator=generator).contiguous(memory_format=torch.channels_last).requires_grad_()
    weights = [(torch.randn(64, 64, 3, 3, generator=generator) * 0.05).requires_grad_() for _ in range(2)]
    best = float("inf")
    for _ in range(_PROBE_REPEATS + 1):  # the first call warms up (oneDNN picks and caches its kernels)
        started = time.perf_counter()
        with torch.autocast("cpu", dtype=dtype) if dtype is not None else nullcontext():
            hidden = F.relu(F.conv2d(inputs, weights[0], padding=1))
            output = F.conv2d(hidden, weights[1], padding=1)
        output.float().square().mean().backward()
        best = min(best, time.perf_counter() - started)
    return best


@cache
def cpu_bf16_speedup() -> float:
    """How many times faster the probe runs in bf16 than in fp32 on this CPU (measured once per process)."""
    return _probe_seconds(None) / _probe_seconds(torch.bfloat16)


def resolve(precision: str, device: torch.device | str) -> str:
    """`precision` with `auto` decided for `device`: bf16 on CUDA, on the CPU bf16 if it measured
    fast there (`cpu_bf16_speedup`), fp32 otherwise; fp32 and bf16 are returned as they are."""
    if precision not in CHOICES:
        raise ValueError(f"precision must be one of {', '.join(CHOICES)}, got {precision!r}")
    if precision != "auto":
        return precision
    kind = torch.device(device).type
    if kind == "cuda":
        return "bf16"
    return "bf16" if kind == "cpu" and cpu_bf16_speedup() >= BF16_SPEEDUP_NEEDED else "fp32"


def describe_auto(device: torch.device | str) -> str:
    """Why `auto` decided as it did on `device`, for a log line."""
    kind = torch.device(device).type
    if kind != "cpu":
        return f"bf16 autocast on {kind}"
    speedup = cpu_bf16_speedup()
    chosen = "bf16 autocast" if speedup >= BF16_SPEEDUP_NEEDED else "fp32"
    return f"{chosen}: a bf16 conv step measured {speedup:.2f}x the fp32 one on this CPU (bf16 from {BF16_SPEEDUP_NEEDED}x)"


class FullFP32(ContextDecorator):
    """A reusable context (or function decorator) in which CUDA convolutions and matrix products run in IEEE
    fp32, not TF32 (cuDNN's default for convolutions), restoring the previous settings on exit."""

    def __enter__(self) -> None:
        self._saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False

    def __exit__(self, *exc: object) -> None:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = self._saved


def autocast(device: torch.device | str, precision: str):
    """A reusable context that computes in `precision` (fp32 or bf16) on `device`; fp32 is IEEE fp32
    on CUDA too (`FullFP32`: TF32 off)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be fp32 or bf16 here (auto is resolved first), got {precision!r}")
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16) if precision == "bf16" else FullFP32()
