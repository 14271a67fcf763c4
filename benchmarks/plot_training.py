"""Training curves (loss terms against steps) of distillation / training runs, as one PNG.

    python benchmarks/plot_training.py runs/quality/student:"LiT, hybrid KD" --output docs/results/training.png

Each RUN is an output folder of examples/distill_lit.py or train_dit.py (its logs/metrics.jsonl) or such a
metrics.jsonl file itself, optionally followed by ":label". Curves are moving averages over `--window` steps, on a
log scale.
"""

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

TERMS = ("mse", "vlb", "noise_kd", "variance_kd")


def read_metrics(run: Path) -> dict[str, np.ndarray]:
    """The last record of each step of a run's logs/metrics.jsonl (or of that file), as arrays by key."""
    records = {}
    for line in (run if run.is_file() else run / "logs" / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        records[record["step"]] = record
    steps = sorted(records)
    return {key: np.array([records[s].get(key, np.nan) for s in steps]) for key in ("step", "loss", *TERMS)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="RUN[:label]")
    parser.add_argument("--output", required=True)
    parser.add_argument("--window", type=int, default=25)
    args = parser.parse_args()
    fig, axes = plt.subplots(1, 1 + len(TERMS), figsize=(4 * (1 + len(TERMS)), 3.2))
    for spec in args.runs:
        path, _, label = spec.partition(":")
        metrics = read_metrics(Path(path))
        kernel = np.ones(args.window) / args.window
        for ax, key in zip(axes, ("loss", *TERMS), strict=True):
            values = metrics[key]
            if len(values) >= args.window:
                ax.plot(metrics["step"][args.window - 1 :], np.convolve(values, kernel, mode="valid"),
                        label=label or path)  # fmt: skip
            ax.set_title(key)
            ax.set_yscale("log")
            ax.set_xlabel("step")
    axes[0].legend()
    fig.tight_layout()
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.output, dpi=100)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
