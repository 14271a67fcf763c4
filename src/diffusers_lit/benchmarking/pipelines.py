"""Whole class-conditional pipelines timed: what one image costs with LiT's or DiT's transformer, a VAE of Stable
Diffusion's layout and DDIM (benchmarks/pipeline_throughput.py)."""

import statistics
from collections.abc import Sequence
from typing import Any

import torch

from ..models.linear_attention import check_backend
from .flops import IN_CHANNELS
from .measuring import time_fn
from .models import build, quiet_diffusers
from .options import BenchSize

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

    from ..pipelines import LiTPipeline

    if arch not in ("lit", "dit"):
        raise ValueError(f"Pipelines are timed for 'lit' and 'dit' (class-conditional), got {arch!r}.")
    device = torch.device(device)
    check_backend(linear_attention_backend, device)
    transformer = build(arch, size, resolution, None, device, dtype, linear_attention_backend)
    blocks = len(vae_channels)
    with quiet_diffusers(), device:
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


def _cell(row: dict[str, Any] | None, key: str) -> str:
    return f"{row[key]:.3f}" if row else "-"


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
        ratio = f"{dit['seconds_per_image'] / lit['seconds_per_image']:.2f}x" if lit and dit else "-"
        vae = (lit or dit)["vae_decode_seconds"]
        lines.append(
            f"| {size} | {resolution} | {mode} | {_cell(lit, 'seconds_per_image')} | "
            f"{_cell(dit, 'seconds_per_image')} | {ratio} | {_cell(lit, 'seconds_per_step')} | "
            f"{_cell(dit, 'seconds_per_step')} | {vae:.3f} |"
        )
    return "\n".join(lines) + "\n"
