"""The benchmark's results written out: results.json, a markdown report and PNG plots."""

import json
import sys
from pathlib import Path
from typing import Any

from ..files import write_atomically


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
    write_atomically(output_dir / "results.json", json.dumps(results, indent=1))
    write_atomically(output_dir / "results.md", results_markdown(results, command))
    written = [output_dir / "results.json", output_dir / "results.md"]
    if plots:
        try:
            written += plot_results(results, output_dir)
        except ImportError:
            print("matplotlib is not installed: no plots (pip install 'diffusers_lit[bench]').", file=sys.stderr)
    return written
