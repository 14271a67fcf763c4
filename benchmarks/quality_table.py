"""The tables of docs/results.md from the JSON files of benchmarks/quality.sh.

    python benchmarks/quality_table.py benchmarks/results/quality --samples runs/quality/samples \
        --grid docs/results/quality-rows.png

Prints the target table (teacher and full recipe at every sample count scored) and the ablation table (every row
at one sample count, FID relative to the full recipe's); with --samples and --grid, writes a PNG of the first
images of every row (same seeds, so each column starts from the same noise).
"""

import argparse
import json
from pathlib import Path

ROWS = {  # row -> what it changes against the full recipe
    "teacher": "softmax DiT teacher (`assets/fmnist-dit`)",
    "full": "LiT full recipe: 2 heads, DWC 5x5, weights inherited, hybrid KD 0.5 / 0.05",
    "no-kd": "without KD (lambda 0 / 0)",
    "noise-kd-only": "noise KD only (lambda 0.5 / 0)",
    "no-inheritance": "without weight inheritance (every weight fresh)",
    "no-dwc": "without DWC (ReLU linear attention alone)",
    "heads-1": "1 head",
    "heads-3": "3 heads (the teacher's count)",
    "heads-4": "4 heads",
    "inherit-qkv": "inherit Q, K, V from the teacher (instead of none)",
    "full-lr1e-4": "full recipe, lr 1e-4",
    "full-lr5e-4": "full recipe, lr 5e-4",
    "full-lr1e-3": "full recipe, lr 1e-3",
    "inherit-qkv-lr1e-3": "full recipe with Q, K, V inherited, lr 1e-3",
}


def fid_at(result: dict, count: int) -> float | None:
    if result["num_samples"] == count:
        return result["fid"]
    return result.get("fid_at", {}).get(str(count))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--ablation-count", type=int, default=1000, help="sample count of the ablation table")
    parser.add_argument("--samples", type=Path, help="the .npz folder of benchmarks/quality.sh (RUNS/samples)")
    parser.add_argument("--grid", type=Path, help="PNG: the first --columns images of every row")
    parser.add_argument("--columns", type=int, default=10)
    args = parser.parse_args()
    if args.grid:
        write_grid(args.samples, args.grid, args.columns)
    results = {row: json.loads((args.folder / f"{row}.json").read_text()) for row in ROWS
               if (args.folder / f"{row}.json").is_file()}  # fmt: skip

    teacher, full = results.get("teacher"), results.get("full")
    if teacher and full:
        print("| samples | teacher FID | student FID | student / teacher |\n|---|---|---|---|")
        counts = sorted({int(n) for n in teacher.get("fid_at", {})} | {teacher["num_samples"]})
        for count in counts:
            t, s = fid_at(teacher, count), fid_at(full, count)
            if t is not None and s is not None:
                print(f"| {count:,} | {t:.1f} | {s:.1f} | {s / t:.2f} |")
        print()

    count = args.ablation_count
    reference = fid_at(full, count) if full else None
    print(f"| row | FID ({count:,}) | vs full | precision | recall |\n|---|---|---|---|---|")
    for row, result in results.items():
        fid = fid_at(result, count)
        if fid is None:
            continue
        exact = result["num_samples"] == count  # precision / recall were computed at this count
        relative = f"{fid / reference:.2f}x" if reference else "-"
        pr = f"{result['precision']:.3f} | {result['recall']:.3f}" if exact else "- | -"
        print(f"| {ROWS[row]} | {fid:.1f} | {relative} | {pr} |")


def write_grid(samples: Path, output: Path, columns: int) -> None:
    """One row of images per quality row that has a samples file, captioned with the row's name."""
    import torch

    from diffusers_lit.evaluation import image_grid, load_samples, tensor_to_pil

    rows = [row for row in ROWS if (samples / f"{row}.npz").is_file()]
    images = torch.cat([load_samples(samples / f"{row}.npz")[0][:columns] for row in rows]).float() / 255
    images = torch.nn.functional.interpolate(images, scale_factor=3, mode="nearest")  # room for the captions
    captions = [row if column == 0 else "" for row in rows for column in range(columns)]
    image_grid(tensor_to_pil(images), captions, columns=columns).save(output)
    print(f"wrote {output} (rows: {', '.join(rows)})")


if __name__ == "__main__":
    main()
