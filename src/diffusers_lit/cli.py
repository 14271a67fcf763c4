"""`diffusers-lit`: the command line of diffusers_lit."""

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path

import torch


def demo(args: argparse.Namespace) -> None:
    """Build a small LiT, check its linear attention against the quadratic reference, sample with it."""
    from diffusers import DDPMScheduler
    from tqdm.auto import tqdm

    from .models import LiTTransformer2DModel
    from .models.linear_attention import linear_attention

    torch.manual_seed(args.seed)
    print("1. LiT linear attention against the explicit N x N formula, float64:")
    q, k, v = (torch.randn(2, 4, 256, 32, dtype=torch.float64) for _ in range(3))
    scores = torch.relu(q) @ torch.relu(k).transpose(-1, -2) / k.shape[-2]  # (B, h, N, N)
    reference = scores @ v / (scores.sum(-1, keepdim=True) + 1e-6)
    error = ((linear_attention(q, k, v) - reference).norm() / reference.norm()).item()
    print(f"   relative error {error:.2e} at 256 tokens, 4 heads")

    model = LiTTransformer2DModel(
        num_attention_heads=4, attention_head_dim=32, in_channels=1, num_layers=4, sample_size=32,
        patch_size=4, num_embeds_ada_norm=10, linear_attention_heads=2,
    ).eval()  # fmt: skip
    params = sum(p.numel() for p in model.parameters())
    print(f"2. A LiT (class layout, width 128, depth 4, patch 4): {params:,} parameters")

    scheduler = DDPMScheduler(num_train_timesteps=1000, variance_type="learned_range")
    scheduler.set_timesteps(args.steps)
    sample = torch.randn(args.num_images, 1, 32, 32)
    labels = torch.arange(args.num_images) % 10
    start = time.perf_counter()
    with torch.no_grad():
        for t in tqdm(scheduler.timesteps, desc="denoising"):
            model_output = model(sample, t, labels).sample  # (B, 2, 32, 32): noise and variance
            sample = scheduler.step(model_output, t, sample).prev_sample
    seconds = time.perf_counter() - start
    print(f"3. Denoised {args.num_images} images of 32x32 in {args.steps} DDPM steps: {seconds:.2f} s")

    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output_dir / "transformer")
    reloaded = LiTTransformer2DModel.from_pretrained(output_dir / "transformer")
    same = all(
        torch.equal(a, b) for a, b in zip(model.state_dict().values(), reloaded.state_dict().values(), strict=True)
    )
    results = {"attention_relative_error": error, "parameters": params, "steps": args.steps,
               "seconds": seconds, "reload_bit_exact": same}  # fmt: skip
    (output_dir / "results.json").write_text(json.dumps(results, indent=2))
    print(f"4. Saved to {output_dir / 'transformer'} and reloaded bit-exact: {same}; results in results.json")
    print("   (an untrained model: the images are noise until a teacher is distilled into it)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="diffusers-lit", description="LiT: a simple linear diffusion transformer")
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("demo", help="run the whole chain on the embedded default, offline")
    p.add_argument("--output-dir", default="outputs/demo")
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--num-images", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=demo)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    args.func(args)
