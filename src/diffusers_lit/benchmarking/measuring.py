"""Timers, the matmul rate (the FLOP floor's denominator), peak activation memory and the machine measured on.

Peak memory is the peak of bytes held by tensors allocated during the forward, above what was held before it
(weights and inputs excluded): on CUDA `torch.cuda.max_memory_allocated`, on CPU the allocation and free events
recorded by `torch.profiler` (profile_memory=True), summed in time order. Both count tensor bytes requested from
PyTorch's allocator, not the process's resident size.
"""

import os
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from ..hardware import cpu_matmul_flags, cpu_model


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_fn(
    fn: Callable[[], Any], repeats: int = 3, warmup: int = 1, device: str | torch.device = "cpu"
) -> list[float]:
    """Wall-clock seconds of `repeats` calls of `fn` after `warmup` calls (device synchronised around each)."""
    device = torch.device(device)
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def measure_matmul_rate(
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    shape: tuple[int, int, int] = (4096, 1152, 1152),
    repeats: int = 5,
) -> float:
    """FLOP/s of an (m, k) @ (k, n) product (default: 4,096 tokens through an XL-width linear), median of repeats."""
    device = torch.device(device)
    m, k, n = shape
    a = torch.randn(m, k, device=device, dtype=dtype)
    b = torch.randn(k, n, device=device, dtype=dtype)
    inner = 50 if device.type == "cuda" else 1  # a GPU product takes microseconds: time a batch of them

    def products() -> None:
        for _ in range(inner):
            torch.mm(a, b)

    with torch.inference_mode():
        times = time_fn(products, repeats=repeats, warmup=2, device=device)
    return 2 * m * k * n * inner / statistics.median(times)


def peak_memory(fn: Callable[[], Any], device: str | torch.device = "cpu") -> int:
    """Peak bytes of tensors allocated while `fn` runs, above those held before (see the module docstring)."""
    device = torch.device(device)
    if device.type == "cuda":
        synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = prof.profiler.kineto_results.events()
    deltas = sorted((e.start_ns(), e.nbytes()) for e in events if e.name() == "[memory]")
    held = peak = 0
    for _, nbytes in deltas:
        held += nbytes
        peak = max(peak, held)
    return peak


def machine_info(device: torch.device) -> dict[str, Any]:
    """What the numbers were measured on."""
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
    }
    try:
        import diffusers

        info["diffusers"] = diffusers.__version__
    except ImportError:
        pass
    info["cpu_model"] = cpu_model() or platform.processor() or platform.machine()
    info["cpu_instruction_sets"] = cpu_matmul_flags()
    info["device_name"] = torch.cuda.get_device_name(device) if device.type == "cuda" else info["cpu_model"]
    if hasattr(os, "getloadavg"):
        info["load_average_start"] = os.getloadavg()
    return info
