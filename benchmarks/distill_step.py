"""Cost of a distillation step against a plain training step of the same LiT student (examples/distill_lit.py).

    python benchmarks/distill_step.py --steps 12 --batch-size 128

Teacher: a random diffusers DiT (width 256 = 4 heads x 64, depth 8, patch 4, 10 classes) on 32 x 32 x 1 pixels
(64 tokens), the size DESIGN.md times; the student is converted from it on the fly. Both runs train the same
student on the same data with the same seed; the plain run sets --lambda_noise 0 --lambda_var 0, which skips
the teacher's forward. Reports the median and fastest step times over the steps after the first two of each
run, runs of both kinds interleaved.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def write_inputs(folder: Path, examples: int) -> tuple[Path, Path]:
    import datasets
    from diffusers import DDPMScheduler, DiTTransformer2DModel
    from PIL import Image

    from diffusers_lit import LiTPipeline

    torch.manual_seed(0)
    dit = DiTTransformer2DModel(
        num_attention_heads=4, attention_head_dim=64, in_channels=1, out_channels=2, num_layers=8, sample_size=32,
        patch_size=4, num_embeds_ada_norm=10,
    )  # fmt: skip
    for block in dit.transformer_blocks[1:]:  # as a trained DiT: one embedder, copied into every block
        block.norm1.emb.load_state_dict(dit.transformer_blocks[0].norm1.emb.state_dict())
    teacher = folder / "teacher"
    LiTPipeline(dit, DDPMScheduler(variance_type="learned_range")).save_pretrained(teacher)

    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (32, 32), dtype=np.uint8)) for _ in range(examples)]
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(num_classes=10)})
    data = datasets.Dataset.from_dict({"image": images, "label": [i % 10 for i in range(examples)]}, features=features)
    data.save_to_disk(str(folder / "data"))
    return teacher, folder / "data"


def run(teacher: Path, data: Path, output_dir: Path, steps: int, batch_size: int, plain: bool) -> list[float]:
    command = [sys.executable, str(ROOT / "examples" / "distill_lit.py"), "--teacher", str(teacher), "--dataset",
               str(data), "--output_dir", str(output_dir), "--cache_dir", str(output_dir.parent / "cache"),
               "--max_train_steps", str(steps), "--train_batch_size", str(batch_size), "--checkpointing_steps",
               str(10 * steps), "--report_to", "none", "--center_crop"]  # fmt: skip
    if plain:
        command += ["--lambda_noise", "0", "--lambda_var", "0"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    subprocess.run(command, check=True, env=env, capture_output=True, text=True)
    records = [json.loads(line) for line in (output_dir / "logs" / "metrics.jsonl").read_text().splitlines()]
    return [record["step_seconds"] for record in records]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=2, help="Runs of each kind, interleaved.")
    args = parser.parse_args()
    names = {True: "plain training step (lambda 0 / 0)", False: "distillation step (0.5 / 0.05)"}
    times = {name: [] for name in names.values()}
    with tempfile.TemporaryDirectory() as tmp:
        teacher, data = write_inputs(Path(tmp), examples=4 * args.batch_size)
        for repeat in range(args.repeats):
            for plain, name in names.items():
                output_dir = Path(tmp) / f"{'plain' if plain else 'distill'}-{repeat}"
                times[name] += run(teacher, data, output_dir, args.steps, args.batch_size, plain)[2:]
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch_size}, "
        f"{args.repeats} x {args.steps - 2} timed steps of each kind"
    )
    print("| step | median | fastest | median vs plain |")
    base = statistics.median(times[names[True]])
    for name, seconds in times.items():
        print(f"| {name} | {statistics.median(seconds):.3f} s | {min(seconds):.3f} s | "
              f"{statistics.median(seconds) / base:.2f}x |")  # fmt: skip


if __name__ == "__main__":
    main()
