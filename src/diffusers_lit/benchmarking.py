"""Speed and memory of LiT against diffusers' DiT, PixArt and Sana transformers, measured against the FLOP floor.

Architectures ("arch"), all at the same width and depth (a size of `BENCH_SIZES`), at equal token counts:
- "lit": a LiT block in the DiT layout (`LiTTransformer2DModel`, "ada_norm_zero").
- "dit": diffusers' `DiTTransformer2DModel` block (softmax self-attention through SDPA).
- "lit-attn" / "dit-attn": the self-attention alone of those two blocks.
- "lit-t2i": a LiT block in the PixArt layout (linear self-attention + softmax cross-attention).
- "pixart": diffusers' `PixArtTransformer2DModel` block.
- "sana": diffusers' `SanaTransformer2DModel` block (ReLU linear attention, Mix-FFN), with Sana's head dim 32.

FLOPs count 2 per multiply-add of every matrix product and convolution; element-wise work (norms, activations,
divisions, softmax) is not counted. The floor of a row is its FLOPs divided by the matrix-multiply rate measured in
the same run (on the same device and dtype), so measured / floor says how far from matmul speed a row runs.

Peak memory is the peak of bytes held by tensors allocated during the forward, above what was held before it
(weights and inputs excluded): on CUDA `torch.cuda.max_memory_allocated`, on CPU the allocation and free events
recorded by `torch.profiler` (profile_memory=True), summed in time order. Both count tensor bytes requested from
PyTorch's allocator, not the process's resident size.
"""

import contextlib
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .bench_options import ARCHS, BENCH_SIZES, MODEL_ARCHS, TEXT_ARCHS, BenchSize
from .choices import DTYPES
from .hardware import cpu_matmul_flags, cpu_model, default_device
from .models.linear_attention import check_backend

PATCH, IN_CHANNELS, OUT_CHANNELS = 2, 4, 8  # latent diffusion with learned sigma, as DiT / PixArt
TEXT_TOKENS = 300  # PixArt-Sigma's and Sana's caption length
CAPTION_CHANNELS = {"lit-t2i": 4096, "pixart": 4096, "sana": 2304}  # T5-XXL, Gemma-2-2B
SANA_HEAD_DIM = 32
DWC_KERNEL = 5


def tokens_of_resolution(resolution: int) -> int:
    """Pixels per side -> tokens: an 8x VAE and patch 2 (256 px -> 256 tokens, 2048 px -> 16,384)."""
    return (resolution // 8 // PATCH) ** 2


# --------------------------------------------------------------------------------------------------- FLOPs


def block_flops(arch: str, size: BenchSize, tokens: int, batch: int = 1, text_tokens: int = TEXT_TOKENS) -> int:
    """FLOPs (2 per multiply-add) of one forward of a block (or of its self-attention, for "*-attn")."""
    n, w, t = tokens, size.width, text_tokens
    lit_attn = 8 * n * w * w + 4 * n * w * (w // size.lit_heads) + 2 * n * w + 2 * DWC_KERNEL**2 * n * w
    softmax_attn = 8 * n * w * w + 4 * n * n * w  # projections + QK^T + PV
    cross_attn = 4 * n * w * w + 4 * t * w * w + 4 * n * t * w  # q, out of the image; k, v of the text; scores
    ff = 16 * n * w * w  # 4x GELU MLP
    modulation = 2 * w * 6 * w  # adaLN-Zero: SiLU -> linear(D, 6D)
    timestep_mlp = 2 * (256 * w + w * w)  # the sinusoid -> D -> D embedder (DiT repeats it in every block)
    if arch == "lit-attn":
        flops = lit_attn
    elif arch == "dit-attn":
        flops = softmax_attn
    elif arch == "lit":
        flops = lit_attn + ff + modulation
    elif arch == "dit":
        flops = softmax_attn + ff + modulation + timestep_mlp
    elif arch == "lit-t2i":
        flops = lit_attn + cross_attn + ff
    elif arch == "pixart":
        flops = softmax_attn + cross_attn + ff
    elif arch == "sana":
        hidden = int(2.5 * w)  # GLUMBConv: 1x1 to 2 * hidden, depth-wise 3x3, gate, 1x1 back
        sana_attn = 8 * n * w * w + 4 * n * w * (SANA_HEAD_DIM + 1)  # V padded with a row of ones
        flops = sana_attn + cross_attn + 2 * n * w * 2 * hidden + 2 * 9 * n * 2 * hidden + 2 * n * hidden * w
    else:
        raise ValueError(f"Unknown arch {arch!r}; choose one of {ARCHS}.")
    return batch * flops


def model_flops(arch: str, size: BenchSize, tokens: int, batch: int = 1, text_tokens: int = TEXT_TOKENS) -> int:
    """FLOPs of a whole-model forward: `depth` blocks, patch embedding, conditioning and final layer."""
    if arch not in MODEL_ARCHS:
        raise ValueError(f"{arch!r} has no whole model; choose one of {MODEL_ARCHS}.")
    n, w = tokens, size.width
    patches = 2 * n * w * PATCH * PATCH * IN_CHANNELS + 2 * n * w * PATCH * PATCH * OUT_CHANNELS  # embed + unembed
    timestep_mlp = 2 * (256 * w + w * w)
    if arch in ("lit", "dit"):
        extra = patches + timestep_mlp + 2 * w * 2 * w  # shared embedder (LiT) or block 0's (DiT); final adaLN
    else:
        caption = CAPTION_CHANNELS[arch]
        extra = patches + timestep_mlp + 2 * w * 6 * w + 2 * text_tokens * (caption * w + w * w)  # adaln_single
    return size.depth * block_flops(arch, size, tokens, batch, text_tokens) + batch * extra


# --------------------------------------------------------------------------------------------------- measuring


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


# --------------------------------------------------------------------------------------------------- models


def build_model(arch: str, size: BenchSize, resolution: int, num_layers: int | None = None) -> nn.Module:
    """A randomly initialised whole model of `arch` (a model arch, or the model an "*-attn" arch comes from)."""
    from diffusers import DiTTransformer2DModel, PixArtTransformer2DModel, SanaTransformer2DModel

    from .models.transformer_lit import LiTTransformer2DModel

    layers = size.depth if num_layers is None else num_layers
    latent = resolution // 8
    common = dict(
        num_attention_heads=size.heads,
        attention_head_dim=size.head_dim,
        in_channels=IN_CHANNELS,
        num_layers=layers,
        sample_size=latent,
        patch_size=PATCH,
    )
    base = arch.removesuffix("-attn")
    if base == "lit":
        return LiTTransformer2DModel(**common, linear_attention_heads=size.lit_heads, dwc_kernel_size=DWC_KERNEL)
    if base == "dit":
        return DiTTransformer2DModel(**common, out_channels=OUT_CHANNELS)
    text = dict(cross_attention_dim=size.width, caption_channels=CAPTION_CHANNELS.get(arch), out_channels=OUT_CHANNELS)
    if arch == "lit-t2i":
        return LiTTransformer2DModel(
            **common,
            **text,
            norm_type="ada_norm_single",
            norm_eps=1e-6,
            use_additional_conditions=False,
            linear_attention_heads=size.lit_heads,
            dwc_kernel_size=DWC_KERNEL,
        )
    if arch == "pixart":
        return PixArtTransformer2DModel(**common, **text, use_additional_conditions=False)
    if arch == "sana":
        return SanaTransformer2DModel(
            in_channels=IN_CHANNELS,
            out_channels=OUT_CHANNELS,
            num_attention_heads=size.width // SANA_HEAD_DIM,
            attention_head_dim=SANA_HEAD_DIM,
            num_layers=layers,
            num_cross_attention_heads=size.heads,
            cross_attention_head_dim=size.head_dim,
            cross_attention_dim=size.width,
            caption_channels=CAPTION_CHANNELS["sana"],
            sample_size=latent,
            patch_size=PATCH,
        )
    raise ValueError(f"Unknown arch {arch!r}; choose one of {ARCHS}.")


@contextlib.contextmanager
def _quiet_diffusers():
    """Silence diffusers' warnings about casting float32 modules, which these randomly built models do not have."""
    from diffusers.utils import logging as diffusers_logging

    verbosity = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()
    try:
        yield
    finally:
        diffusers_logging.set_verbosity(verbosity)


def _build(arch, size, resolution, num_layers, device: torch.device, dtype: torch.dtype, backend: str) -> nn.Module:
    """`build_model` initialised on `device`, cast to `dtype`, in eval mode; LiT's linear attention by `backend`."""
    with _quiet_diffusers(), device:
        model = build_model(arch, size, resolution, num_layers).to(device=device, dtype=dtype).eval()
    if hasattr(model, "set_linear_attention_backend"):
        model.set_linear_attention_backend(backend)
    return model


def make_runner(
    arch: str,
    model: nn.Module,
    resolution: int,
    batch: int = 1,
    scope: str = "block",
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
) -> Callable[[], torch.Tensor]:
    """
    A zero-argument forward of `model`'s first block (`scope="block"`; its self-attention for "*-attn" archs) or of
    the whole model (`scope="model"`) on random inputs of `resolution` pixels: (B, N, D) tokens for blocks,
    (B, 4, latent, latent) latents for models.
    """
    gen = torch.Generator().manual_seed(seed)
    side = resolution // 8 // PATCH
    tokens = side * side

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen).to(device=device, dtype=dtype)

    width = model.config.num_attention_heads * model.config.attention_head_dim
    timestep = torch.full((batch,), 500, device=device)
    text = rand(batch, TEXT_TOKENS, width) if arch in TEXT_ARCHS else None
    if scope == "model":
        latents = rand(batch, IN_CHANNELS, side * PATCH, side * PATCH)
        if arch in ("lit", "dit"):
            labels = torch.arange(batch, device=device) % 1000
            return lambda: model(latents, timestep=timestep, class_labels=labels).sample
        caption = rand(batch, TEXT_TOKENS, CAPTION_CHANNELS[arch])
        if arch == "sana":
            return lambda: model(latents, encoder_hidden_states=caption, timestep=timestep).sample
        extra = {"added_cond_kwargs": {"resolution": None, "aspect_ratio": None}} if arch == "pixart" else {}
        return lambda: model(latents, encoder_hidden_states=caption, timestep=timestep, **extra).sample
    if scope != "block":
        raise ValueError(f"`scope` must be 'block' or 'model', got {scope!r}.")

    block = model.transformer_blocks[0]
    hidden = rand(batch, tokens, width)
    if arch == "lit-attn":
        return lambda: block.attn1(hidden, side, side)
    if arch == "dit-attn":
        return lambda: block.attn1(hidden)
    if arch == "lit":
        conditioning = rand(batch, width)
        return lambda: block(hidden, conditioning, side, side)
    if arch == "dit":
        labels = torch.arange(batch, device=device) % 1000
        return lambda: block(hidden, timestep=timestep, class_labels=labels)
    modulation = rand(batch, 6 * width)
    if arch == "lit-t2i":
        return lambda: block(hidden, modulation, side, side, encoder_hidden_states=text)
    if arch == "pixart":
        return lambda: block(hidden, encoder_hidden_states=text, timestep=modulation)
    if arch == "sana":
        return lambda: block(hidden, encoder_hidden_states=text, timestep=modulation, height=side, width=side)
    raise ValueError(f"Unknown arch {arch!r}; choose one of {ARCHS}.")


# --------------------------------------------------------------------------------------------------- the run


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
    torch_device, torch_dtype = torch.device(device), getattr(torch, DTYPES[dtype])
    unknown = [a for a in archs if a not in ARCHS] + [s for s in sizes if s not in BENCH_SIZES]
    if unknown:
        raise ValueError(f"Unknown archs or sizes {unknown}; archs: {ARCHS}, sizes: {sorted(BENCH_SIZES)}.")
    check_backend(linear_attention_backend, torch_device)
    meta = machine_info(torch_device)
    meta.update(
        device=device,
        dtype=dtype,
        batch=batch,
        repeats=repeats,
        warmup=warmup,
        compile=compile,
        linear_attention_backend=linear_attention_backend,
    )
    rates: list[float] = []

    def rate() -> float:
        rates.append(measure_matmul_rate(torch_device, torch_dtype))
        return rates[-1]

    rows: list[dict[str, Any]] = []
    log(f"matmul rate {rate() / 1e9:.1f} GFLOP/s ({dtype}, {device})")
    for size_name in sizes:
        size = BENCH_SIZES[size_name]
        for arch in archs:
            for resolution in resolutions:
                tokens = tokens_of_resolution(resolution)
                model = _build(arch, size, resolution, 1, torch_device, torch_dtype, linear_attention_backend)
                scopes = ["block"] + (["model"] if whole_model and arch in MODEL_ARCHS else [])
                for scope in scopes:
                    row = dict(
                        size=size_name,
                        arch=arch,
                        scope=scope,
                        resolution=resolution,
                        tokens=tokens,
                        batch=batch,
                        device=device,
                        dtype=dtype,
                        compiled=compile,
                    )
                    if scope == "block":
                        row["flops"] = block_flops(arch, size, tokens, batch)
                        row.update(
                            _measure(
                                arch,
                                model,
                                resolution,
                                batch,
                                "block",
                                torch_device,
                                torch_dtype,
                                repeats,
                                warmup,
                                memory,
                                compile,
                            )
                        )
                        row["provenance"] = "measured"
                    elif tokens <= whole_model_max_tokens:
                        full = _build(
                            arch, size, resolution, None, torch_device, torch_dtype, linear_attention_backend
                        )
                        row["flops"] = model_flops(arch, size, tokens, batch)
                        row.update(
                            _measure(
                                arch,
                                full,
                                resolution,
                                batch,
                                "model",
                                torch_device,
                                torch_dtype,
                                repeats,
                                warmup,
                                memory,
                                compile,
                            )
                        )
                        row["provenance"] = "measured"
                        del full
                    else:
                        one = _measure(
                            arch,
                            model,
                            resolution,
                            batch,
                            "model",
                            torch_device,
                            torch_dtype,
                            repeats,
                            warmup,
                            memory,
                            compile,
                        )
                        block = rows[-1]  # the block row of this (arch, resolution), just measured
                        row["flops"] = model_flops(arch, size, tokens, batch)
                        row["latency_s"] = one["latency_s"] + (size.depth - 1) * block["latency_s"]
                        row["times_s"] = []
                        row["peak_bytes"] = one.get("peak_bytes")
                        row["provenance"] = "derived: T(1-block model) + (depth - 1) * T(block)"
                    log(_describe(row))
                    rows.append(row)
                del model
            rate()
    matmul_rate = statistics.median(rates)
    for row in rows:
        row["floor_s"] = row["flops"] / matmul_rate
        row["over_floor"] = row["latency_s"] / row["floor_s"]
    meta["matmul_rates_flops"] = rates
    meta["matmul_rate_flops"] = matmul_rate
    meta["matmul_shape"] = [4096, 1152, 1152]
    if hasattr(os, "getloadavg"):
        meta["load_average_end"] = os.getloadavg()
    return {"meta": meta, "rows": rows}


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
    torch_device, torch_dtype = torch.device(device), getattr(torch, DTYPES[dtype])
    check_backend(linear_attention_backend, torch_device)
    meta = machine_info(torch_device)
    meta.update(
        device=device,
        dtype=dtype,
        batch=batch,
        repeats=repeats,
        warmup=warmup,
        compile=compile,
        linear_attention_backend=linear_attention_backend,
        interleaved=True,
    )
    rows: list[dict[str, Any]] = []
    all_rates: list[float] = []
    for size_name in sizes:
        size = BENCH_SIZES[size_name]
        for resolution in resolutions:
            tokens = tokens_of_resolution(resolution)
            models = {
                arch: _build(arch, size, resolution, 1, torch_device, torch_dtype, linear_attention_backend)
                for arch in archs
            }
            runners = {
                arch: make_runner(arch, models[arch], resolution, batch, "block", torch_device, torch_dtype)
                for arch in archs
            }
            if compile:
                for arch, model in models.items():
                    _compile_target(arch, model, "block").compile()
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
                    row = dict(
                        size=size_name,
                        arch=arch,
                        scope="block",
                        resolution=resolution,
                        tokens=tokens,
                        batch=batch,
                        device=device,
                        dtype=dtype,
                        compiled=compile,
                        flops=block_flops(arch, size, tokens, batch),
                        latency_s=statistics.median(times[arch]),
                        times_s=times[arch],
                        provenance="measured",
                        matmul_rate_flops=rate,
                    )
                    row["peak_bytes"] = peak_memory(run, torch_device) if memory else None
                    row["floor_s"] = row["flops"] / rate
                    row["over_floor"] = row["latency_s"] / row["floor_s"]
                    log(_describe(row))
                    rows.append(row)
            del models, runners
    meta["matmul_rates_flops"] = all_rates
    meta["matmul_rate_flops"] = statistics.median(all_rates)
    meta["matmul_shape"] = [4096, 1152, 1152]
    if hasattr(os, "getloadavg"):
        meta["load_average_end"] = os.getloadavg()
    return {"meta": meta, "rows": rows}


def _compile_target(arch: str, model: nn.Module, scope: str) -> nn.Module:
    """What a runner of `make_runner` calls: the model, its first block, or that block's self-attention."""
    if scope == "model":
        return model
    block = model.transformer_blocks[0]
    return block.attn1 if arch.endswith("-attn") else block


def _measure(arch, model, resolution, batch, scope, device, dtype, repeats, warmup, memory, compile):
    runner = make_runner(arch, model, resolution, batch, scope, device, dtype)
    if compile:
        _compile_target(arch, model, scope).compile()
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


# --------------------------------------------------------------------------------------------------- reporting


def results_markdown(results: dict[str, Any], command: str | None = None) -> str:
    """A markdown report of `run_benchmark`'s results: machine, command, one table per size and scope."""
    meta, rows = results["meta"], results["rows"]
    lines = [
        f"Device: {meta['device_name']} ({meta['device']}, {meta['threads']} threads), dtype {meta['dtype']}, "
        f"batch {meta['batch']}, torch {meta['torch']}, diffusers {meta.get('diffusers', '?')}, LiT's linear "
        f"attention by its {meta.get('linear_attention_backend', 'torch')!r} backend.",
        f"Matmul rate (median of {len(meta['matmul_rates_flops'])} measurements of a "
        f"{'x'.join(map(str, meta['matmul_shape']))} product in this run): "
        f"{meta['matmul_rate_flops'] / 1e9:.1f} GFLOP/s; latency: median of {meta['repeats']} after "
        f"{meta['warmup']} warm-up; load average at start / end: {meta.get('load_average_start')} / "
        f"{meta.get('load_average_end')}.",
    ]
    if meta.get("interleaved"):
        lines.append(
            "Interleaved: each round timed one forward of every arch and one matmul-rate measurement; a row's floor "
            "uses the median rate of its resolution's rounds."
        )
    if command:
        lines.append(f"Command: `{command}`")
    for size in dict.fromkeys(r["size"] for r in rows):
        for scope in ("block", "model"):
            selected = [r for r in rows if r["size"] == size and r["scope"] == scope]
            if not selected:
                continue
            lines += ["", f"**{size}, {'one block' if scope == 'block' else 'whole model'}**", ""]
            lines.append("| arch | px | tokens | GFLOP | floor (ms) | latency (ms) | measured / floor | peak MiB | |")
            lines.append("|---|---|---|---|---|---|---|---|---|")
            for r in selected:
                memory = f"{r['peak_bytes'] / 2**20:.1f}" if r.get("peak_bytes") is not None else "-"
                origin = "measured" if r["provenance"] == "measured" else "derived"
                lines.append(
                    f"| {r['arch']} | {r['resolution']} | {r['tokens']} | {r['flops'] / 1e9:.1f} | "
                    f"{r['floor_s'] * 1e3:.1f} | {r['latency_s'] * 1e3:.1f} | {r['over_floor']:.2f} | {memory} | "
                    f"{origin} |"
                )
    return "\n".join(lines) + "\n"


def plot_results(results: dict[str, Any], output_dir: str | Path, prefix: str = "") -> list[Path]:
    """PNG plots of latency and peak memory against tokens, one line per arch and scope (needs matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    output_dir = Path(output_dir)
    rows, meta = results["rows"], results["meta"]
    paths = []
    for key, label, scale in (
        ("latency_s", "latency (s)", 1.0),
        ("peak_bytes", "peak activation memory (MiB)", 2**20),
    ):
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
        for ax, scope in zip(axes, ("block", "model"), strict=True):
            for size, arch in dict.fromkeys((r["size"], r["arch"]) for r in rows):
                pts = [r for r in rows if (r["size"], r["arch"], r["scope"]) == (size, arch, scope)]
                pts = [r for r in pts if r.get(key) is not None]
                if pts:
                    xs = [r["tokens"] for r in pts]
                    ax.plot(xs, [r[key] / scale for r in pts], marker="o", label=f"{arch} ({size})")
            ax.set(
                xscale="log",
                yscale="log",
                xlabel="tokens",
                ylabel=label,
                title=f"{'one block' if scope == 'block' else 'whole model'}",
            )
            ax.grid(True, which="both", alpha=0.3)
            if ax.lines:
                ax.legend(fontsize=7)
        fig.suptitle(f"{meta['device_name']}, {meta['dtype']}, batch {meta['batch']}", fontsize=9)
        fig.tight_layout()
        path = output_dir / f"{prefix}{'latency' if key == 'latency_s' else 'memory'}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def write_results(results: dict[str, Any], output_dir: str | Path, command: str | None = None, plots: bool = True):
    """Write results.json, results.md and (with matplotlib installed) latency.png / memory.png into `output_dir`."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    results = {**results, "meta": {**results["meta"], "command": command}}
    (output_dir / "results.json").write_text(json.dumps(results, indent=1))
    (output_dir / "results.md").write_text(results_markdown(results, command))
    written = [output_dir / "results.json", output_dir / "results.md"]
    if plots:
        try:
            written += plot_results(results, output_dir)
        except ImportError:
            print("matplotlib is not installed: no plots (pip install 'diffusers_lit[bench]').", file=sys.stderr)
    return written


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


SD_VAE_CHANNELS = (128, 256, 512, 512)  # Stable Diffusion's VAE (8x down, 4 latent channels), as DiT uses


def build_class_pipeline(
    arch: str,
    size: BenchSize,
    resolution: int,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    vae_channels: Sequence[int] = SD_VAE_CHANNELS,
    linear_attention_backend: str = "torch",
):
    """A randomly initialised class-conditional latent pipeline (LiTPipeline) with the `arch` ("lit" or "dit")
    transformer of `build_model` (LiT's linear attention by `linear_attention_backend`), a VAE of Stable Diffusion's
    layout and DDIM: what sampling costs, not what it draws."""
    from diffusers import AutoencoderKL, DDIMScheduler

    from .pipelines import LiTPipeline

    if arch not in ("lit", "dit"):
        raise ValueError(f"Pipelines are timed for 'lit' and 'dit' (class-conditional), got {arch!r}.")
    device = torch.device(device)
    check_backend(linear_attention_backend, device)
    transformer = _build(arch, size, resolution, None, device, dtype, linear_attention_backend)
    blocks = len(vae_channels)
    with _quiet_diffusers(), device:
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            latent_channels=IN_CHANNELS,
            layers_per_block=2,
            block_out_channels=tuple(vae_channels),
            down_block_types=("DownEncoderBlock2D",) * blocks,
            up_block_types=("UpDecoderBlock2D",) * blocks,
            sample_size=resolution,
        )
        vae = vae.to(device, dtype).eval()
    pipe = LiTPipeline(transformer=transformer, vae=vae, scheduler=DDIMScheduler())
    pipe.set_progress_bar_config(disable=True)
    return pipe


def time_pipeline(
    pipe, resolution: int, steps: int, guidance_scale: float = 4.0, repeats: int = 2, warmup: int = 1
) -> dict[str, float]:
    """Median seconds of one image (batch 1) of `pipe` at `resolution` with `steps` sampler steps, and of its parts:
    the VAE decode, timed alone on a latent of that size, and the denoising loop (transformer, guidance, sampler),
    the rest."""
    device = pipe.transformer.device
    generator = torch.Generator().manual_seed(0)

    def sample() -> None:
        pipe(
            1,
            guidance_scale=guidance_scale,
            num_inference_steps=steps,
            height=resolution,
            width=resolution,
            generator=generator,
            output_type="np",
        )

    latent = torch.randn(1, IN_CHANNELS, resolution // 8, resolution // 8, device=device, dtype=pipe.vae.dtype)
    with torch.no_grad():
        total = statistics.median(time_fn(sample, repeats=repeats, warmup=warmup, device=device))
        vae = statistics.median(time_fn(lambda: pipe.vae.decode(latent), repeats, warmup, device))
    return {
        "seconds_per_image": total,
        "vae_decode_seconds": vae,
        "denoising_seconds": total - vae,
        "seconds_per_step": (total - vae) / steps,
    }


def pipeline_results_markdown(results: dict[str, Any]) -> str:
    """benchmarks/pipeline_throughput.py's results as a table: per size, resolution and mode (eager / compiled),
    seconds per image of LiT and DiT, and DiT / LiT."""
    by_key = {(r["size"], r["resolution"], r["mode"], r["arch"]): r for r in results["rows"]}
    lines = [
        f"`{results['command']}` ({results['machine'].get('device_name', '?')}, {results['dtype']}, "
        f"{results['steps']} DDIM steps, guidance {results['guidance_scale']}, batch 1, LiT's linear attention "
        f"by its {results.get('linear_attention_backend', 'torch')!r} backend)",
        "",
        "| size | px | mode | LiT s / image | DiT s / image | DiT / LiT | LiT s / step | DiT s / step | VAE s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for size, resolution, mode in dict.fromkeys(key[:3] for key in by_key):
        lit, dit = by_key.get((size, resolution, mode, "lit")), by_key.get((size, resolution, mode, "dit"))
        cell = lambda row, key: f"{row[key]:.3f}" if row else "-"  # noqa: E731
        ratio = f"{dit['seconds_per_image'] / lit['seconds_per_image']:.2f}x" if lit and dit else "-"
        vae = (lit or dit)["vae_decode_seconds"]
        lines.append(
            f"| {size} | {resolution} | {mode} | {cell(lit, 'seconds_per_image')} | "
            f"{cell(dit, 'seconds_per_image')} | {ratio} | {cell(lit, 'seconds_per_step')} | "
            f"{cell(dit, 'seconds_per_step')} | {vae:.3f} |"
        )
    return "\n".join(lines) + "\n"
