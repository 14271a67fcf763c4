"""What `diffusers-lit bench` (and benchmarks/bench.py) measures, by name: the architectures and the sizes, and
the command's options. Plain data, so that the command line parses them without importing torch; the measuring is
in the other modules of `diffusers_lit.benchmarking`."""

import argparse
from dataclasses import dataclass

from ..choices import DTYPES, LINEAR_ATTENTION_BACKENDS, MODEL_SIZES

ARCHS = ("lit", "dit", "lit-attn", "dit-attn", "lit-t2i", "pixart", "sana")
MODEL_ARCHS = ("lit", "dit", "lit-t2i", "pixart", "sana")  # the ones that have a whole model
TEXT_ARCHS = ("lit-t2i", "pixart", "sana")


@dataclass(frozen=True)
class BenchSize:
    """Width = `heads * head_dim`; `lit_heads`: LiT's linear-attention heads; `depth`: number of blocks."""

    heads: int
    head_dim: int
    depth: int
    lit_heads: int

    @property
    def width(self) -> int:
        return self.heads * self.head_dim


# The paper's sizes (`MODEL_SIZES`); "tiny" is for tests and smoke runs.
BENCH_SIZES: dict[str, BenchSize] = {
    "tiny": BenchSize(heads=2, head_dim=32, depth=2, lit_heads=2),
    **{
        name: BenchSize(
            heads=size["num_attention_heads"],
            head_dim=size["attention_head_dim"],
            depth=size["num_layers"],
            lit_heads=size["linear_attention_heads"],
        )
        for name, size in MODEL_SIZES.items()
    },
}


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `diffusers-lit bench` and benchmarks/bench.py."""
    parser.add_argument("--sizes", nargs="+", default=["XL"], choices=sorted(BENCH_SIZES))
    parser.add_argument("--archs", nargs="+", default=list(ARCHS), choices=ARCHS)
    parser.add_argument(
        "--resolutions",
        nargs="+",
        type=int,
        default=[256, 512, 1024, 2048],
        help="pixels per side; tokens = (px / 16)^2 (8x VAE, patch 2)",
    )
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--device", help="default: cuda where PyTorch sees a GPU, else cpu")
    parser.add_argument("--dtype", default="fp32", choices=sorted(DTYPES))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument(
        "--whole-model-max-tokens",
        type=int,
        default=1024,
        help="measure whole models up to this many tokens, derive them above",
    )
    parser.add_argument("--no-whole-model", action="store_true", help="blocks only")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory pass")
    parser.add_argument("--compile", action="store_true", help="torch.compile each block / model first")
    parser.add_argument(
        "--linear-attention-backend",
        default="torch",
        choices=LINEAR_ATTENTION_BACKENDS,
        help="LiT's self-attention: PyTorch operations or fused Triton kernels (CUDA)",
    )
    help_ = "blocks only, timed in rounds over the archs and the matmul rate (for shared machines)"
    parser.add_argument("--interleave", action="store_true", help=help_)
    parser.add_argument("--threads", type=int, help="torch.set_num_threads")
    parser.add_argument("--no-plots", action="store_true")
    parser.add_argument("--output-dir", default="benchmarks/results/latest")
