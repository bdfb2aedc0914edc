"""What every benchmark here measures the same way: memory peaks, the device's clock, and the
machine's own matmul limit, so that a figure can be set against what this machine can do now."""

import math
import time

import torch

from trainer.errors import TrainerError
from trainer.job.stages import peak_rss_bytes

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
PEAK_SIZE = 2048  # the square matmul that measures the machine's limit


def require_device(device: str) -> None:
    """Refuse --device cuda in one line where torch sees no GPU, before anything is measured."""
    if device == "cuda" and not torch.cuda.is_available():
        raise TrainerError("--device cuda: no CUDA device is visible to torch")


def peak_memory(device: str) -> tuple[int, str]:
    """(bytes, what they are): CUDA's peak allocation on the GPU, else the process's peak RSS."""
    if device == "cuda":
        return torch.cuda.max_memory_allocated(), "max_memory_allocated"
    return peak_rss_bytes(), "peak RSS"


def synchronize(device: str) -> None:
    """Wait for the GPU's queued work, so that a clock read after it counts that work."""
    if device == "cuda":
        torch.cuda.synchronize()


def matmul_peak_gflops(dtype: torch.dtype, device: str, size: int = PEAK_SIZE, repeats: int = 10) -> float:
    """The fastest of `repeats` [size, size] @ [size, size] matmuls in this dtype, in GFLOPS:
    what this machine can do at best, measured now, beside the figures it is compared with."""
    generator = torch.Generator().manual_seed(0)
    a, b = (torch.randn(size, size, generator=generator).to(device, dtype) for _ in range(2))
    for _ in range(2):
        a @ b  # warm up the kernels and the caches
    best = math.inf
    for _ in range(repeats):
        synchronize(device)
        started = time.perf_counter()
        a @ b
        synchronize(device)
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best / 1e9
