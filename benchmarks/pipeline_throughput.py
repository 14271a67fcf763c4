"""Sampling throughput of whole class-conditional pipelines, LiT against DiT (randomly initialised, same width and
depth, Stable Diffusion's VAE, DDIM, classifier-free guidance 4, batch 1), eager and under torch.compile.

    python benchmarks/pipeline_throughput.py --sizes XL --resolutions 512 1024 --steps 4 --compile \
        --output-dir benchmarks/results/pipeline-cpu

Writes results.json and results.md (docs/benchmarks.md quotes them).
"""

import argparse
import json
import sys
from pathlib import Path

import torch

from diffusers_lit.benchmarking.measuring import machine_info
from diffusers_lit.benchmarking.options import BENCH_SIZES
from diffusers_lit.benchmarking.pipelines import build_class_pipeline, pipeline_results_markdown, time_pipeline
from diffusers_lit.choices import DTYPES, LINEAR_ATTENTION_BACKENDS, torch_dtype
from diffusers_lit.compilation import compile_transformer


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["XL"], choices=sorted(BENCH_SIZES))
    parser.add_argument("--archs", nargs="+", default=["lit", "dit"], choices=["lit", "dit"])
    parser.add_argument("--resolutions", nargs="+", type=int, default=[512, 1024])
    parser.add_argument("--steps", type=int, default=4, help="sampler steps per image")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="fp32", choices=sorted(DTYPES))
    parser.add_argument("--repeats", type=int, default=2)
    help_ = "also time the transformer under torch.compile (CUDA graphs on CUDA: mode 'reduce-overhead')"
    parser.add_argument("--compile", action="store_true", help=help_)
    parser.add_argument("--linear-attention-backend", default="torch", choices=LINEAR_ATTENTION_BACKENDS)
    parser.add_argument("--output-dir", default="benchmarks/results/pipeline")
    return parser


def main() -> None:
    args = build_parser().parse_args()

    rows = []
    for size in args.sizes:
        for resolution in args.resolutions:
            for arch in args.archs:
                pipe = build_class_pipeline(arch, BENCH_SIZES[size], resolution, args.device, torch_dtype(args.dtype),
                                            linear_attention_backend=args.linear_attention_backend)  # fmt: skip
                modes = ["eager", "compiled"] if args.compile else ["eager"]
                for mode in modes:
                    if mode == "compiled":
                        mode = f"compiled ({compile_transformer(pipe.transformer, args.device)})"
                    timing = time_pipeline(pipe, resolution, args.steps, repeats=args.repeats)
                    rows.append({"size": size, "resolution": resolution, "arch": arch, "mode": mode, **timing})
                    print(
                        f"{size} {resolution}px {arch} {mode}: {timing['seconds_per_image']:.3f} s / image "
                        f"({timing['seconds_per_step']:.3f} s / step, VAE {timing['vae_decode_seconds']:.3f} s)"
                    )
                del pipe
    results = {"machine": machine_info(torch.device(args.device)), "dtype": args.dtype, "steps": args.steps,
               "guidance_scale": 4.0, "linear_attention_backend": args.linear_attention_backend,
               "command": " ".join(["python", *sys.argv]), "rows": rows}  # fmt: skip
    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    (output / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (output / "results.md").write_text(pipeline_results_markdown(results))
    print(pipeline_results_markdown(results))


if __name__ == "__main__":
    main()
