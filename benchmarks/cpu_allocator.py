"""Training-step cost on a CPU under the system allocator (glibc) and jemalloc, in fp32 and bf16 autocast.

The shipped Fashion-MNIST DiT teacher (assets/fmnist-dit) and the LiT converted from it: a no-grad forward (the
teacher's share of a distillation step) and a forward + backward (a student's training step), batch 256 of
32 x 32 x 1 (256 tokens). Each allocator runs in its own process, jemalloc preloaded by scripts/jemalloc.sh.

    python benchmarks/cpu_allocator.py --repeats 2        # docs/benchmarks.md, "CPU memory allocator"
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from diffusers_lit.training.distillation import convert_teacher, load_teacher

ROOT = Path(__file__).resolve().parents[1]
TEACHER = ROOT / "assets" / "fmnist-dit"


def time_models(batch_size: int, repeats: int) -> dict[str, float]:
    """Median seconds of each (model, precision, pass) after one warm-up."""
    loaded = load_teacher(TEACHER)
    teacher, student = loaded.transformer, convert_teacher(loaded, inherit="qkv")[0]
    generator = torch.Generator().manual_seed(0)
    size = teacher.config.sample_size
    x = torch.randn(batch_size, teacher.config.in_channels, size, size, generator=generator)  # (B, C, H, W)
    t = torch.randint(0, 1000, (batch_size,), generator=generator)
    y = torch.randint(0, 10, (batch_size,), generator=generator)
    results = {}
    for name, model in (("DiT", teacher), ("LiT", student)):
        model.train()
        for precision in ("fp32", "bf16"):
            autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")
            for kind in ("no-grad forward", "forward + backward"):
                seconds = []
                for _ in range(repeats + 1):
                    start = time.perf_counter()
                    with torch.set_grad_enabled(kind != "no-grad forward"), autocast:
                        out = model(x, timestep=t, class_labels=y).sample
                    if kind != "no-grad forward":
                        out.float().square().mean().backward()
                        model.zero_grad(set_to_none=True)
                    seconds.append(time.perf_counter() - start)
                results[f"{name} | {precision} | {kind}"] = statistics.median(seconds[1:])
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=2, help="Timed repeats after one warm-up.")
    parser.add_argument("--worker", choices=["system", "jemalloc"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        if args.worker == "jemalloc" and "jemalloc" not in os.environ.get("LD_PRELOAD", ""):
            sys.exit(
                "jemalloc not found (/usr/lib/*/libjemalloc.so.2): `make jemalloc` installs Debian's libjemalloc2."
            )
        print(json.dumps(time_models(args.batch_size, args.repeats)))
        return
    columns = {}
    for allocator in ("jemalloc", "system"):  # jemalloc first: a missing library stops the run before any work
        env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "MALLOC_CONF", "JEMALLOC")}
        env |= {"JEMALLOC": ""} if allocator == "system" else {}
        command = ["sh", "-c", '. "$0" && exec "$@"', str(ROOT / "scripts" / "jemalloc.sh"), sys.executable, __file__]
        command += ["--worker", allocator, "--batch-size", str(args.batch_size), "--repeats", str(args.repeats)]
        with tempfile.TemporaryDirectory() as tmp:  # a fresh HF_MODULES_CACHE: nothing shared between the runs
            env.setdefault("HF_HOME", tmp)
            done = subprocess.run(command, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"{allocator} run failed")
        columns[allocator] = json.loads(done.stdout.strip().splitlines()[-1])
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch_size}, "
        f"median of {args.repeats} after a warm-up, seconds"
    )
    print("| model | precision | pass | system allocator | jemalloc | speed-up |")
    print("|---|---|---|---|---|---|")
    for row, system in columns["system"].items():
        jemalloc = columns["jemalloc"][row]
        print(f"| {row} | {system:.2f} | {jemalloc:.2f} | {system / jemalloc:.2f}x |")


if __name__ == "__main__":
    main()
