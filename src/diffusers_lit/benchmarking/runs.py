"""The benchmark's two runners (every block and model in turn; blocks in interleaved rounds) and the command."""

import os
import statistics
import sys
from collections.abc import Callable, Sequence
from typing import Any

import torch

from ..choices import DTYPES
from ..hardware import default_device
from ..models.linear_attention import check_backend
from .flops import block_flops, model_flops, tokens_of_resolution
from .measuring import machine_info, measure_matmul_rate, peak_memory, time_fn
from .models import build, compile_target, make_runner
from .options import ARCHS, BENCH_SIZES, MODEL_ARCHS
from .report import write_results


def _start(device: str, dtype: str, linear_attention_backend: str, **settings: Any) -> dict[str, Any]:
    """The checks and the "meta" of a run: the machine and the run's settings."""
    check_backend(linear_attention_backend, torch.device(device))
    meta = machine_info(torch.device(device))
    meta.update(device=device, dtype=dtype, linear_attention_backend=linear_attention_backend, **settings)
    return meta


def _finish(meta: dict[str, Any], rows: list[dict[str, Any]], rates: list[float]) -> dict[str, Any]:
    """A run's results: its rows and its meta with the matmul rates measured and the load at the end."""
    meta["matmul_rates_flops"] = rates
    meta["matmul_rate_flops"] = statistics.median(rates)
    meta["matmul_shape"] = [4096, 1152, 1152]
    if hasattr(os, "getloadavg"):
        meta["load_average_end"] = os.getloadavg()
    return {"meta": meta, "rows": rows}


def _row(size: str, arch: str, scope: str, resolution: int, meta: dict[str, Any]) -> dict[str, Any]:
    """What a result row is of."""
    return dict(
        size=size,
        arch=arch,
        scope=scope,
        resolution=resolution,
        tokens=tokens_of_resolution(resolution),
        batch=meta["batch"],
        device=meta["device"],
        dtype=meta["dtype"],
        compiled=meta["compile"],
    )


def run_benchmark(
    sizes: Sequence[str] = ("XL",),
    archs: Sequence[str] = ARCHS,
    resolutions: Sequence[int] = (256, 512, 1024, 2048),
    batch: int = 1,
    device: str = "cpu",
    dtype: str = "fp32",
    repeats: int = 3,
    warmup: int = 1,
    whole_model_max_tokens: int = 1024,
    whole_model: bool = True,
    memory: bool = True,
    compile: bool = False,
    linear_attention_backend: str = "torch",
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """
    Time (median of `repeats` after `warmup`) and measure the peak memory of every (size, arch, resolution) block,
    and of the whole model: measured up to `whole_model_max_tokens` tokens, above that derived as
    T(the model with one block) + (depth - 1) * T(block), its memory as the one-block model's (an inference forward
    frees each block's activations before the next). Returns {"meta": ..., "rows": [...]}.
    """
    unknown = [a for a in archs if a not in ARCHS] + [s for s in sizes if s not in BENCH_SIZES]
    if unknown:
        raise ValueError(f"Unknown archs or sizes {unknown}; archs: {ARCHS}, sizes: {sorted(BENCH_SIZES)}.")
    meta = _start(
        device, dtype, linear_attention_backend, batch=batch, repeats=repeats, warmup=warmup, compile=compile
    )
    torch_device, torch_dtype = torch.device(device), getattr(torch, DTYPES[dtype])
    rates = [measure_matmul_rate(torch_device, torch_dtype)]
    log(f"matmul rate {rates[0] / 1e9:.1f} GFLOP/s ({dtype}, {device})")
    timing = dict(
        batch=batch,
        device=torch_device,
        dtype=torch_dtype,
        repeats=repeats,
        warmup=warmup,
        memory=memory,
        compile=compile,
    )
    rows: list[dict[str, Any]] = []
    for size_name in sizes:
        size = BENCH_SIZES[size_name]
        for arch in archs:
            for resolution in resolutions:
                tokens = tokens_of_resolution(resolution)
                model = build(arch, size, resolution, 1, torch_device, torch_dtype, linear_attention_backend)
                block = {
                    **_row(size_name, arch, "block", resolution, meta),
                    "flops": block_flops(arch, size, tokens, batch),
                }
                block.update(
                    _measure(model, "block", arch=arch, resolution=resolution, **timing), provenance="measured"
                )
                log(_describe(block))
                rows.append(block)
                if whole_model and arch in MODEL_ARCHS:
                    row = {
                        **_row(size_name, arch, "model", resolution, meta),
                        "flops": model_flops(arch, size, tokens, batch),
                    }
                    if tokens <= whole_model_max_tokens:
                        full = build(arch, size, resolution, None, torch_device, torch_dtype, linear_attention_backend)
                        row.update(
                            _measure(full, "model", arch=arch, resolution=resolution, **timing), provenance="measured"
                        )
                        del full
                    else:
                        one = _measure(model, "model", arch=arch, resolution=resolution, **timing)
                        row["latency_s"] = one["latency_s"] + (size.depth - 1) * block["latency_s"]
                        row["times_s"] = []
                        row["peak_bytes"] = one.get("peak_bytes")
                        row["provenance"] = "derived: T(1-block model) + (depth - 1) * T(block)"
                    log(_describe(row))
                    rows.append(row)
                del model
            rates.append(measure_matmul_rate(torch_device, torch_dtype))
    matmul_rate = statistics.median(rates)
    for row in rows:
        row["floor_s"] = row["flops"] / matmul_rate
        row["over_floor"] = row["latency_s"] / row["floor_s"]
    return _finish(meta, rows, rates)


def run_interleaved(
    sizes: Sequence[str] = ("XL",),
    archs: Sequence[str] = ARCHS,
    resolutions: Sequence[int] = (1024, 2048),
    batch: int = 1,
    device: str = "cpu",
    dtype: str = "fp32",
    repeats: int = 5,
    warmup: int = 1,
    memory: bool = True,
    compile: bool = False,
    linear_attention_backend: str = "torch",
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """
    Blocks only, in rounds: each round times one forward of every arch and one matmul-rate measurement, so that
    on a shared machine every arch and the floor see the same load. Latency: median over rounds; the floor of a
    row uses the median rate of the rounds at its resolution. Same return format as `run_benchmark`.
    """
    meta = _start(
        device,
        dtype,
        linear_attention_backend,
        batch=batch,
        repeats=repeats,
        warmup=warmup,
        compile=compile,
        interleaved=True,
    )
    torch_device, torch_dtype = torch.device(device), getattr(torch, DTYPES[dtype])
    rows: list[dict[str, Any]] = []
    all_rates: list[float] = []
    for size_name in sizes:
        size = BENCH_SIZES[size_name]
        for resolution in resolutions:
            models = {
                arch: build(arch, size, resolution, 1, torch_device, torch_dtype, linear_attention_backend)
                for arch in archs
            }
            runners = {
                arch: make_runner(arch, models[arch], resolution, batch, "block", torch_device, torch_dtype)
                for arch in archs
            }
            if compile:
                for arch, model in models.items():
                    compile_target(arch, model, "block").compile()
            times: dict[str, list[float]] = {arch: [] for arch in archs}
            rates = []
            with torch.inference_mode():
                for run in runners.values():
                    time_fn(run, repeats=0, warmup=warmup, device=torch_device)
                for _ in range(repeats):
                    rates.append(measure_matmul_rate(torch_device, torch_dtype, repeats=3))
                    for arch, run in runners.items():
                        times[arch] += time_fn(run, repeats=1, warmup=0, device=torch_device)
                rate = statistics.median(rates)
                all_rates += rates
                for arch, run in runners.items():
                    row = _row(size_name, arch, "block", resolution, meta)
                    row.update(
                        flops=block_flops(arch, size, row["tokens"], batch),
                        latency_s=statistics.median(times[arch]),
                        times_s=times[arch],
                        provenance="measured",
                        matmul_rate_flops=rate,
                        peak_bytes=peak_memory(run, torch_device) if memory else None,
                    )
                    row["floor_s"] = row["flops"] / rate
                    row["over_floor"] = row["latency_s"] / row["floor_s"]
                    log(_describe(row))
                    rows.append(row)
            del models, runners
    return _finish(meta, rows, all_rates)


def _measure(model, scope, *, arch, resolution, batch, device, dtype, repeats, warmup, memory, compile):
    """Latency (median of `repeats` after `warmup`), the times and the peak memory of one runner of `model`."""
    runner = make_runner(arch, model, resolution, batch, scope, device, dtype)
    if compile:
        compile_target(arch, model, scope).compile()
    with torch.inference_mode():
        times = time_fn(runner, repeats=repeats, warmup=warmup, device=device)
        result = {"latency_s": statistics.median(times), "times_s": times}
        if memory:
            result["peak_bytes"] = peak_memory(runner, device)
    return result


def _describe(row: dict[str, Any]) -> str:
    memory = f"{row['peak_bytes'] / 2**20:9.1f} MiB" if row.get("peak_bytes") is not None else ""
    where = f"{row['size']:>4} {row['arch']:>8} {row['scope']:>5} {row['resolution']:>5}px {row['tokens']:>6} tok"
    return f"{where} {row['latency_s'] * 1e3:10.1f} ms {row['flops'] / 1e9:10.1f} GFLOP {memory} {row['provenance']}"


def bench_main(args) -> dict[str, Any]:
    """Run the benchmark from parsed `add_bench_arguments` options and write its results."""
    if args.threads:
        torch.set_num_threads(args.threads)
    common = dict(
        sizes=args.sizes,
        archs=args.archs,
        resolutions=args.resolutions,
        batch=args.batch,
        device=args.device or default_device(),
        dtype=args.dtype,
        repeats=args.repeats,
        warmup=args.warmup,
        memory=not args.no_memory,
        compile=args.compile,
        linear_attention_backend=args.linear_attention_backend,
    )
    if args.interleave:
        results = run_interleaved(**common)
    else:
        results = run_benchmark(
            **common, whole_model_max_tokens=args.whole_model_max_tokens, whole_model=not args.no_whole_model
        )
    command = " ".join(["diffusers-lit bench"] + sys.argv[2:]) if "bench" in sys.argv[1:2] else " ".join(sys.argv)
    for path in write_results(results, args.output_dir, command=command, plots=not args.no_plots):
        print(f"wrote {path}")
    return results
