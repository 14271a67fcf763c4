"""Before / after: LiT-XL's self-attention from an earlier commit against the working tree's, same weights.

    python benchmarks/compare_attention.py --baseline-rev d354c35 --output-dir benchmarks/results/attention
    python benchmarks/compare_attention.py --baseline-rev HEAD --backend triton --device cuda --dtype bf16 ...

Loads `src/diffusers_lit/models/linear_attention.py` as it was at `--baseline-rev` (git show), checks that both
compute the same function on the same weights, then times them interleaved (baseline, new, baseline, ...; the
median of each) and measures their peak memory, next to the FLOP floor of the run's measured matmul rate.
`--backend triton` runs the working tree's module on the fused kernels (against, say, HEAD's torch backend).
"""

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # runs from a checkout without installing

from diffusers_lit.benchmarking.flops import block_flops  # noqa: E402
from diffusers_lit.benchmarking.measuring import machine_info, measure_matmul_rate, peak_memory, time_fn  # noqa: E402
from diffusers_lit.benchmarking.options import BENCH_SIZES  # noqa: E402
from diffusers_lit.choices import DTYPES, LINEAR_ATTENTION_BACKENDS, torch_dtype  # noqa: E402
from diffusers_lit.models.linear_attention import LiTLinearAttention  # noqa: E402

SOURCE = "src/diffusers_lit/models/linear_attention.py"


def load_baseline(rev: str):
    source = subprocess.run(["git", "show", f"{rev}:{SOURCE}"], cwd=ROOT, check=True, capture_output=True).stdout
    path = Path(tempfile.mkdtemp()) / "linear_attention_baseline.py"
    path.write_bytes(source)
    # A module of the package, so that its relative imports (`..choices`) resolve.
    spec = importlib.util.spec_from_file_location("diffusers_lit.models.linear_attention_baseline", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def compare(baseline, new, x: torch.Tensor, side: int, repeats: int, device: torch.device) -> dict:
    """Same function? Then interleaved timings (medians) and peak memory of both on (B, side * side, D) tokens."""
    modules = {"baseline": baseline, "new": new}
    reference, out = baseline(x, side, side), new(x, side, side)
    row = {"tokens": side * side, "rel_diff": ((out - reference).norm() / reference.norm()).item()}
    del reference, out
    runners = {name: (lambda m=module: m(x, side, side)) for name, module in modules.items()}
    for run in runners.values():
        time_fn(run, repeats=0, warmup=2, device=device)
    times = {name: [] for name in modules}
    for _ in range(repeats):
        for name, run in runners.items():
            times[name] += time_fn(run, repeats=1, warmup=0, device=device)
    for name, run in runners.items():
        row[f"{name}_s"] = statistics.median(times[name])
        row[f"{name}_times_s"] = times[name]
        row[f"{name}_peak_bytes"] = peak_memory(run, device)
    return row


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline-rev", default="d354c35")
    parser.add_argument("--size", default="XL", choices=sorted(BENCH_SIZES))
    parser.add_argument("--tokens", nargs="+", type=int, default=[4096, 16384], help="square numbers")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="fp32", choices=sorted(DTYPES))
    parser.add_argument(
        "--backend", default="torch", choices=LINEAR_ATTENTION_BACKENDS, help="the working tree's backend"
    )
    parser.add_argument("--output-dir", default="benchmarks/results/attention")
    return parser


def main() -> None:
    args = build_parser().parse_args()
    device, dtype = torch.device(args.device), torch_dtype(args.dtype)

    size = BENCH_SIZES[args.size]
    baseline = load_baseline(args.baseline_rev).LiTLinearAttention(size.width, size.lit_heads).eval()
    new = LiTLinearAttention(size.width, size.lit_heads).eval()
    new.load_state_dict(baseline.state_dict())
    new.set_backend(args.backend)
    baseline, new = baseline.to(device, dtype), new.to(device, dtype)
    rates = [measure_matmul_rate(device, dtype)]
    rows = []
    for tokens in args.tokens:
        side = int(tokens**0.5)
        x = torch.randn(args.batch, tokens, size.width, generator=torch.Generator().manual_seed(tokens))
        x = x.to(device, dtype)
        with torch.inference_mode():
            row = compare(baseline, new, x, side, args.repeats, device)
        row["flops"] = block_flops("lit-attn", size, tokens, args.batch)
        rows.append(row)
        rates.append(measure_matmul_rate(device, dtype))
    rate = statistics.median(rates)
    lines = [
        f"LiT-{args.size} self-attention ({size.width} wide, {size.lit_heads} heads), batch {args.batch}, "
        f"{args.dtype} on {machine_info(device)['device_name']}, "
        f"baseline {args.baseline_rev} vs working tree ({args.backend} backend); matmul rate {rate / 1e9:.1f} GFLOP/s "
        f"(median of {len(rates)}); "
        f"medians of {args.repeats} interleaved repeats.",
        f"Command: `python {' '.join(sys.argv)}`",
        "",
        "| tokens | GFLOP | floor (ms) | before (ms) | before / floor | after (ms) | after / floor | speed-up | "
        "peak MiB before | peak MiB after | rel. diff |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        row["floor_s"] = floor = row["flops"] / rate
        lines.append(
            f"| {row['tokens']} | {row['flops'] / 1e9:.1f} | {floor * 1e3:.0f} | {row['baseline_s'] * 1e3:.0f} | "
            f"{row['baseline_s'] / floor:.2f} | {row['new_s'] * 1e3:.0f} | {row['new_s'] / floor:.2f} | "
            f"{row['baseline_s'] / row['new_s']:.2f}x | {row['baseline_peak_bytes'] / 2**20:.0f} | "
            f"{row['new_peak_bytes'] / 2**20:.0f} | {row['rel_diff']:.1e} |"
        )
    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    meta = {**machine_info(device), "dtype": args.dtype, "matmul_rates_flops": rates, "command": " ".join(sys.argv)}
    (output / "results.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    (output / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
