"""Speed and memory of LiT against DiT, PixArt and Sana: `python benchmarks/bench.py --help`.

The same as `diffusers-lit bench`; the logic lives in `diffusers_lit.benchmarking.runs`. Results (json, md, png) go to
`--output-dir`; docs/benchmarks.md records the runs.
"""

import argparse
import sys
import types
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
sys.path.insert(0, str(SRC))  # runs from a checkout without installing
try:
    import diffusers_lit  # noqa: F401
except ImportError as error:  # e.g. no transformers on a bare GPU machine: the benchmark needs torch and diffusers
    print(f"diffusers_lit's pipelines do not import ({error}); loading its models and benchmarks only.")
    package = types.ModuleType("diffusers_lit")
    package.__path__ = [str(SRC / "diffusers_lit")]
    sys.modules["diffusers_lit"] = package

from diffusers_lit.benchmarking.options import add_bench_arguments  # noqa: E402
from diffusers_lit.benchmarking.runs import bench_main  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_bench_arguments(parser)
    return parser


def main() -> None:
    bench_main(build_parser().parse_args())


if __name__ == "__main__":
    main()
