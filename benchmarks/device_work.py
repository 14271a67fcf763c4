"""What one block asks of the device, LiT against diffusers' DiT, PixArt and Sana blocks, counted on the CPU:
aten operations (on a GPU, about one kernel launch each), host-device syncs and the dtypes of the matrix products
in a bfloat16 forward, and the bfloat16 / float16 error against the same block in float64 (same weights, inputs).

    python benchmarks/device_work.py --size XL --resolution 512 --output-dir benchmarks/results/cpu-device-work

Writes results.json and results.md (docs/benchmarks.md quotes them).
"""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # runs from a checkout without installing

from diffusers_lit.benchmarking.operations import block_report  # noqa: E402
from diffusers_lit.benchmarking.options import ARCHS, BENCH_SIZES  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="XL", choices=sorted(BENCH_SIZES))
    parser.add_argument("--archs", nargs="+", default=list(ARCHS), choices=ARCHS)
    parser.add_argument("--resolution", type=int, default=512, help="pixels per side; tokens = (px / 16)^2")
    parser.add_argument("--batch", type=int, default=2, help="2: a guided step")
    parser.add_argument("--output-dir", default="benchmarks/results/device-work")
    return parser


def results_markdown(rows: list[dict], command: str) -> str:
    lines = [
        f"`{command}`",
        "",
        "| block | operations (bf16) | syncs | product dtypes | bf16 error | fp16 error |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['arch']} | {row['operations']} | {row['syncs']} | {', '.join(row['product_dtypes'])} | "
            f"{row['bfloat16_error']:.2e} | {row['float16_error']:.2e} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    args = build_parser().parse_args()
    rows = []
    for arch in args.archs:
        rows.append(block_report(arch, BENCH_SIZES[args.size], args.resolution, batch=args.batch))
        print(f"{arch}: {rows[-1]['operations']} operations, {rows[-1]['syncs']} syncs, {rows[-1]['by_name']}")
    command = " ".join(["python", *sys.argv])
    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    settings = {"size": args.size, "resolution": args.resolution, "batch": args.batch, "command": command}
    (output / "results.json").write_text(json.dumps({**settings, "rows": rows}, indent=2) + "\n")
    (output / "results.md").write_text(results_markdown(rows, command))
    print(results_markdown(rows, command))


if __name__ == "__main__":
    main()
