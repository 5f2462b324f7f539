"""The machine's limit: single kernels in PyTorch, timed in the rounds like the runtimes,
and the spec's work per image that turns their GFLOP/s into images/s."""

from __future__ import annotations

from collections.abc import Callable

from .. import spec
from .results import Limit, Runtime
from .settings import Settings

KERNELS = {
    "conv": "a 3x3 conv, 128 -> 192 channels at 28 x 28 (inception3b's 3x3 branch at 224), channels-last",
    "gemm": "a 2048 x 2048 x 2048 matrix product",
}


def kernel(s: Settings, name: str) -> tuple[float, Callable[[], object]]:
    """(floating-point operations, a call) of one of the :data:`KERNELS`, in PyTorch on
    every core under inference mode: a bound on what any runtime reaches here."""
    import torch

    torch.set_grad_enabled(False)
    if name == "conv":
        images = torch.randn(s.batch, 128, 28, 28).contiguous(memory_format=torch.channels_last)
        weight = torch.randn(192, 128, 3, 3).contiguous(memory_format=torch.channels_last)
        return 2.0 * s.batch * 28 * 28 * 192 * 128 * 9, lambda: torch.nn.functional.conv2d(images, weight, padding=1)
    matrix = torch.randn(2048, 2048)
    return 2.0 * 2048**3, lambda: matrix @ matrix


def gflop_per_image(s: Settings) -> float:
    """2 x the spec's multiply-adds for one image of the benchmarked model (no aux heads)."""
    return 2 * sum(r.macs for r in spec.layer_counts(spec.resolve(s.variant), s.size)) / 1e9


def limit(s: Settings, rows: list[Runtime]) -> Limit | None:
    """The best GFLOP/s a single kernel reached in the rounds."""
    measured = {r.mode: r.flops / min(r.seconds) / 1e9 for r in rows if r.kind == "limit" and r.seconds}
    if not measured:
        return None
    best = max(measured, key=lambda k: measured[k])
    return Limit(measured[best], KERNELS[best], gflop_per_image(s))
