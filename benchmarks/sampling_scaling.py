"""Sampling throughput against the number of processes (docs/benchmarks.md, "Sampling over processes").

The shipped class-conditional teacher sampled by `diffusers-lit generate`, once in one process with every thread,
once under `accelerate launch` with one CPU process per thread: the same samples either way (checked), the samples
per second of each end to end (wall time, start-up included), and the main process's drawing time per image it drew.
Time it on a quiet machine.

    python benchmarks/sampling_scaling.py --processes 2 --num-samples 1000

Writes benchmarks/results/sampling-scaling/results.json.
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # runs from a checkout without installing

from diffusers_lit.benchmarking.measuring import machine_info  # noqa: E402
from diffusers_lit.evaluation import load_samples  # noqa: E402
from diffusers_lit.files import write_atomically  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def timed_run(command: list[str], threads: int, **env: str) -> float:
    """Run `command` with `threads` OpenMP threads per process; its wall time in seconds."""
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(threads), **env}
    start = time.perf_counter()
    subprocess.run(command, env=environment, check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(ROOT / "assets" / "fmnist-dit"))
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--num-samples", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "sampling-scaling" / "results.json"))
    args = parser.parse_args()
    generate = ["generate", args.model, "--num-samples", str(args.num_samples), "--steps", str(args.steps)]
    generate += ["--scheduler", "ddim", "--guidance-scale", "4", "--batch-size", "50", "--shard-size", "50"]
    generate += ["--seed", "0", "--device", "cpu"]
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes"]
    launch += [str(args.processes), "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    runs = []
    with tempfile.TemporaryDirectory() as folder:
        one, many = Path(folder) / "one.npz", Path(folder) / "many.npz"
        wall = timed_run([sys.executable, "-m", "diffusers_lit", *generate, "--output", str(one)], args.processes)
        runs.append({"processes": 1, "threads_per_process": args.processes, "wall_seconds": wall, "file": one})
        command = [*launch, "--main_process_port", str(free_port()), "-m", "diffusers_lit", *generate]
        wall = timed_run([*command, "--output", str(many)], 1, ACCELERATE_USE_CPU="1", CUDA_VISIBLE_DEVICES="")
        runs.append({"processes": args.processes, "threads_per_process": 1, "wall_seconds": wall, "file": many})
        samples = [load_samples(run.pop("file")) for run in runs]
        for run, (_, _, info) in zip(runs, samples, strict=True):
            run["samples_per_second"] = args.num_samples / run["wall_seconds"]
            run["main_process_seconds_per_image"] = info["seconds_per_image"]  # its drawing time per image it drew
    result = {
        "model": args.model,
        "num_samples": args.num_samples,
        "steps": args.steps,
        "same_images": bool(torch.equal(samples[0][0], samples[1][0])),
        "runs": runs,
        "machine": machine_info(torch.device("cpu")),
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    write_atomically(args.output, json.dumps(result, indent=2) + "\n")
    print(json.dumps({key: result[key] for key in ("same_images", "runs")}, indent=2))


if __name__ == "__main__":
    main()
