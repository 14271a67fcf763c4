"""`diffusers-lit`: the command line of diffusers_lit."""

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path

import torch


def demo(args: argparse.Namespace) -> None:
    """Build a small LiT, check its attention against the quadratic reference, save, reload and sample it."""
    from diffusers import DDPMScheduler

    from .evaluation import image_grid
    from .models import LiTTransformer2DModel
    from .models.linear_attention import linear_attention
    from .pipelines import LiTPipeline

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
    )  # fmt: skip
    params = sum(p.numel() for p in model.parameters())
    print(f"2. A LiT (class layout, width 128, depth 4, patch 4, 2 linear heads): {params:,} parameters")

    output_dir = Path(args.output_dir)
    pipe = LiTPipeline(
        model, DDPMScheduler(variance_type="learned_range"), id2label={i: f"class {i}" for i in range(10)}
    )
    pipe.save_pretrained(output_dir / "pipeline")
    pipe = LiTPipeline.from_pretrained(output_dir / "pipeline")
    print(f"3. Saved as a LiTPipeline folder and reloaded: {output_dir / 'pipeline'}")

    labels = [i % 10 for i in range(args.num_images)]
    start = time.perf_counter()
    images = pipe(labels, num_inference_steps=args.steps, generator=torch.Generator().manual_seed(args.seed)).images
    seconds = time.perf_counter() - start
    image_grid(images, [f"class {label}" for label in labels]).save(output_dir / "grid.png")
    print(f"4. Sampled {len(images)} images of 32x32 in {args.steps} DDPM steps with guidance 4: {seconds:.2f} s")
    results = {"attention_relative_error": error, "parameters": params, "steps": args.steps,
               "seconds": seconds, "images": len(images)}  # fmt: skip
    (output_dir / "results.json").write_text(json.dumps(results, indent=2))
    print(f"   {output_dir / 'grid.png'} and results.json written (an untrained model: the images are noise)")


SCHEDULERS = {
    "ddpm": "DDPMScheduler",
    "ddim": "DDIMScheduler",
    "dpm++": "DPMSolverMultistepScheduler",
    "euler": "EulerDiscreteScheduler",
}


def sample(args: argparse.Namespace) -> None:
    """Generate images with a LiT pipeline and write them as a labelled grid."""
    import diffusers

    from .evaluation import image_grid
    from .pipelines import LiTPipeline, LiTTextToImagePipeline

    if (args.class_labels is None) == (args.prompt is None):
        raise SystemExit("diffusers-lit sample: give either --class-labels or --prompt (one of them).")
    pipe = LiTPipeline.from_pretrained(args.model)
    if args.scheduler:
        scheduler_class = getattr(diffusers, SCHEDULERS[args.scheduler])
        pipe.scheduler = scheduler_class.from_config(pipe.scheduler.config)
    generator = torch.Generator().manual_seed(args.seed)
    size = {"height": args.height, "width": args.width}
    if isinstance(pipe, LiTTextToImagePipeline):
        if args.prompt is None:
            raise SystemExit(f"{args.model} is a text-to-image pipeline: give --prompt, not --class-labels.")
        images = pipe(list(args.prompt), num_inference_steps=args.steps, guidance_scale=args.guidance_scale,
                      generator=generator, **size).images  # fmt: skip
        labels = list(args.prompt)
    else:
        if args.class_labels is None:
            raise SystemExit(f"{args.model} is a class-conditional pipeline: give --class-labels, not --prompt.")
        class_labels = [int(label) if label.isdigit() else label for label in args.class_labels]
        images = pipe(class_labels, num_inference_steps=args.steps, guidance_scale=args.guidance_scale,
                      generator=generator, **size).images  # fmt: skip
        labels = [str(label) for label in class_labels]
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    image_grid(images, labels).save(output)
    print(f"Wrote {len(images)} images to {output}")


def add_convert_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of `diffusers-lit convert` (also used by examples/convert_to_lit.py)."""
    parser.add_argument("source", help="Hub repo id, diffusers folder, or original .pt / .pth / .safetensors file")
    parser.add_argument("output_dir", help="the LiT pipeline folder to write")
    parser.add_argument("--linear-attention-heads", type=int, help="default: max(2, teacher heads // 4)")
    parser.add_argument("--dwc-kernel-size", type=int, default=5)
    parser.add_argument("--inherit", choices=["none", "v", "kv", "qkv", "qkvo"], default="none",
                        help="self-attention projections to copy instead of starting fresh")  # fmt: skip
    parser.add_argument("--dtype", choices=["fp32", "fp16", "bf16"], help="default: the source's")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing non-empty output folder")
    parser.add_argument("--push-to-hub", metavar="REPO_ID", help="upload the finished folder")
    parser.add_argument("--components", help="pipeline to take VAE, scheduler and text encoder from (for .pt files)")
    parser.add_argument("--num-attention-heads", type=int, help="teacher heads, for .pt files of unusual widths")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fresh self-attention")
    parser.add_argument("--revision")


def convert(args: argparse.Namespace) -> None:
    """Convert a DiT / PixArt checkpoint into a LiT pipeline folder and summarise the report."""
    from .conversion import convert_to_lit

    output = convert_to_lit(
        args.source, args.output_dir, linear_attention_heads=args.linear_attention_heads,
        dwc_kernel_size=args.dwc_kernel_size, inherit=args.inherit, dtype=args.dtype, overwrite=args.overwrite,
        push_to_hub=args.push_to_hub, components=args.components, num_attention_heads=args.num_attention_heads,
        seed=args.seed, revision=args.revision,
    )  # fmt: skip
    report = json.loads((output / "conversion_report.json").read_text())
    print(
        f"Converted {report['source']} ({report['layout']}) into {output}: {report['copied']['count']} tensors "
        f"copied, {report['fresh']['count']} fresh, {report['unused']['count']} left out; parameters "
        f"{report['parameters']['source']:,} -> {report['parameters']['lit']:,}."
    )


def evaluate(args: argparse.Namespace) -> None:
    """Sample a class-conditional LiT (or DiT) pipeline and score it: FID, precision and recall."""
    import diffusers

    from .evaluation import evaluate_pipeline, image_grid, tensor_to_pil
    from .pipelines import LiTPipeline

    pipe = LiTPipeline.from_pretrained(args.model)
    if args.scheduler:
        pipe.scheduler = getattr(diffusers, SCHEDULERS[args.scheduler]).from_config(pipe.scheduler.config)
    results, images, labels = evaluate_pipeline(
        pipe, reference=args.reference, split=args.split, num_samples=args.num_samples, steps=args.steps,
        guidance_scale=args.guidance_scale, batch_size=args.batch_size, seed=args.seed, cache_dir=args.cache_dir,
    )  # fmt: skip
    results["model"] = args.model
    print(json.dumps(results, indent=2))
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(results, indent=2) + "\n")
    if args.grid:
        names = pipe.config.id2label or {}
        grid = image_grid(tensor_to_pil(images[:64]), [names.get(str(label), str(label)) for label in labels[:64]])
        grid.save(args.grid)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="diffusers-lit", description="LiT: a simple linear diffusion transformer")
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("demo", help="run the whole chain on the embedded default, offline")
    p.add_argument("--output-dir", default="outputs/demo")
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--num-images", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=demo)

    p = commands.add_parser("sample", help="generate a labelled grid of images with a LiT pipeline")
    p.add_argument("model", help="a LiT pipeline folder or Hub repo id")
    p.add_argument("--class-labels", nargs="+", help="class ids or names, one image each")
    p.add_argument("--prompt", nargs="+", help="prompts, one image each")
    p.add_argument("--output", default="grid.png")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--guidance-scale", type=float, default=4.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--height", type=int)
    p.add_argument("--width", type=int)
    p.add_argument("--scheduler", choices=sorted(SCHEDULERS), help="replace the pipeline's scheduler")
    p.set_defaults(func=sample)

    p = commands.add_parser("evaluate", help="FID, precision and recall of a class-conditional pipeline's samples")
    p.add_argument("model", help="a LiT (or DiT) pipeline folder or Hub repo id")
    p.add_argument("--reference", default="fashion-mnist", help="'fashion-mnist', or a dataset name / folder")
    p.add_argument("--split", default="test")
    p.add_argument("--num-samples", type=int, default=1000, help="generated images, and reference images")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--guidance-scale", type=float, default=1.0)
    p.add_argument("--scheduler", choices=sorted(SCHEDULERS))
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache-dir", help="reference features cache (default ~/.cache/diffusers_lit/fid)")
    p.add_argument("--output", help="write the results as JSON")
    p.add_argument("--grid", help="write the first 64 samples as a labelled PNG grid")
    p.set_defaults(func=evaluate)

    p = commands.add_parser("convert", help="turn a DiT / PixArt checkpoint into a LiT pipeline folder")
    add_convert_arguments(p)
    p.set_defaults(func=convert)

    from .benchmarking import add_bench_arguments, bench_main  # torch and the standard library only

    p = commands.add_parser("bench", help="speed and memory of LiT against DiT, PixArt and Sana (docs/benchmarks.md)")
    add_bench_arguments(p)
    p.set_defaults(func=bench_main)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    args.func(args)
