"""What a benchmark found: a row per runtime, the machine's limit, the whole run, and a
row per data-parallel training run."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from .settings import ONNX, Settings


@dataclass
class Runtime:
    """One row: a framework in one mode (``kind`` "infer" or "train"), ONNX Runtime, a
    limit kernel (``kind`` "limit"), or a framework that could not run here (``skipped``)."""

    framework: str
    mode: str
    kind: str = "infer"
    default: bool = False
    version: str = ""
    threads: dict[str, int] = field(default_factory=dict)
    first_s: float | None = None
    seconds: list[float] = field(default_factory=list)  # every timed call
    flops: float = 0.0  # a limit kernel's floating-point operations per call
    peak_mb: float | None = None
    skipped: str | None = None

    @property
    def label(self) -> str:
        if self.kind == "limit":
            return f"limit: {self.mode}"
        if self.framework == ONNX:
            return "onnxruntime (torch's ONNX export)"
        return f"{self.framework} {self.mode}" + (" (default)" if self.default else "")

    def images_per_s(self, batch: int) -> float:
        return batch / min(self.seconds) if self.seconds else 0.0

    def median_images_per_s(self, batch: int) -> float:
        return batch / statistics.median(self.seconds) if self.seconds else 0.0


@dataclass
class Limit:
    gflops: float  # the best kernel measured, GFLOP/s
    kernel: str
    gflop_per_image: float  # 2 x the spec's multiply-adds

    @property
    def images_per_s(self) -> float:
        return self.gflops / self.gflop_per_image


@dataclass
class Bench:
    settings: Settings
    cores: int
    load: tuple[float, float]  # 1-minute load average before and after
    runtimes: list[Runtime]
    limit: Limit | None
    seconds: float


@dataclass
class Scaling:
    """Training images/s of one framework's engine with ``workers`` local workers."""

    framework: str
    workers: int
    images_per_s: float = 0.0
    first_s: float = 0.0
    threads: int = 0  # intra-op threads of each worker
    peak_mb: float = 0.0  # worker 0's
    efficiency: float | None = None  # images/s over (workers x the one-worker run's)
    failed: str | None = None
