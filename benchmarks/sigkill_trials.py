"""SIGKILL trials: kill a 2-process distillation at random moments, resume it, and check what it ends with.

Each trial starts a small 2-process CPU run of examples/distill_lit.py (the shipped Fashion-MNIST teacher, EMA,
a checkpoint every 2 steps, `--checkpoints_total_limit 1`), SIGKILLs the launcher and every worker at a random
moment of its training (even trials: uniform over the uninterrupted run's training time, counted from its
"Training N steps" line; odd trials: the moment the folder of a randomly chosen checkpoint appears, so during
its save, with the previous one the only complete checkpoint under the limit), then runs the
same command again with
`--resume_from_checkpoint latest`. A trial passes when the resumed run starts from the newest complete checkpoint
the kill left and ends with the weights of an uninterrupted run (the EMA weights its pipeline saves), tensor for
tensor.

    python benchmarks/sigkill_trials.py --trials 10   # about 15 minutes on 2 cores

Writes benchmarks/results/sigkill/trials.json and trials.md (the table in docs/reliability.md).
"""

import argparse
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # runs from a checkout without installing

from diffusers_lit.training.checkpointing import checkpoint_step, list_checkpoints  # noqa: E402

WEIGHTS = "transformer/diffusion_pytorch_model.safetensors"
TRAINING_STARTS = "INFO diffusers_lit.training.loop: [RANK 0] Training "
TRAINING_ENDS = "INFO diffusers_lit.training.loop: [RANK 0] Saved the distilled pipeline"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def command(output_dir: Path, steps: int) -> list[str]:
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    launch += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    launch += ["--main_process_port", str(free_port())]
    script = [str(ROOT / "examples" / "distill_lit.py"), "--teacher", str(ROOT / "assets" / "fmnist-dit")]
    script += ["--dataset", "fashion-mnist", "--output_dir", str(output_dir), "--max_train_steps", str(steps)]
    script += ["--train_batch_size", "4", "--use_ema", "--checkpointing_steps", "2", "--checkpoints_total_limit", "1"]
    script += ["--report_to", "none", "--mixed_precision", "no", "--resume_from_checkpoint", "latest"]
    return launch + script


def environment() -> dict[str, str]:
    pythonpath = os.pathsep.join([str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])])
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": pythonpath}
    env["CUDA_VISIBLE_DEVICES"] = ""
    return env


def run_to_end(output_dir: Path, steps: int, log: Path) -> str:
    with log.open("a") as out:
        subprocess.run(command(output_dir, steps), env=environment(), stdout=out, stderr=subprocess.STDOUT, check=True)
    return log.read_text()


def training_seconds(log: Path) -> float:
    """The time from the "Training N steps" line to the final save, from the log's timestamps."""
    stamps = {}
    for line in log.read_text().splitlines():
        for marker in (TRAINING_STARTS, TRAINING_ENDS):
            if marker in line:
                stamps[marker] = time.mktime(time.strptime(line[:19], "%Y-%m-%d %H:%M:%S")) + int(line[20:23]) / 1000
    return stamps[TRAINING_ENDS] - stamps[TRAINING_STARTS]


def run_and_kill(output_dir: Path, steps: int, log: Path, delay: float | None, during_save: int | None) -> dict:
    """Start the run; SIGKILL it `delay` seconds into its training, or when the folder of checkpoint
    `during_save` appears."""
    offset = log.stat().st_size if log.exists() else 0
    with log.open("a") as out:
        process = subprocess.Popen(command(output_dir, steps), env=environment(), stdout=out, stderr=subprocess.STDOUT)
        start, training_start = time.monotonic(), None
        while process.poll() is None:
            if training_start is None and TRAINING_STARTS in log.read_text()[offset:]:
                training_start = time.monotonic()
            saving = during_save is not None and (output_dir / f"checkpoint-{during_save}").exists()
            due = delay is not None and training_start is not None and time.monotonic() - training_start > delay
            if saving or due:
                break
            time.sleep(0.01)
        finished = process.poll() is not None
        if not finished:  # the launcher and every worker (torch's elastic agent starts them in their own groups)
            tree = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
            for member in tree:
                member.send_signal(signal.SIGKILL)
            psutil.wait_procs(tree, timeout=30)
        process.wait()
    incomplete = [path.name for path in output_dir.glob("checkpoint-*") if path not in list_checkpoints(output_dir)]
    complete = list_checkpoints(output_dir)
    return {
        "killed_after_s": round(time.monotonic() - start, 2),
        "finished_before_the_kill": finished,
        "incomplete_checkpoints": sorted(incomplete),
        "newest_complete": checkpoint_step(complete[-1]) if complete else 0,
    }


def same_tensors(a: Path, b: Path) -> bool:
    first, second = load_file(a), load_file(b)
    return first.keys() == second.keys() and all(torch.equal(first[key], second[key]) for key in first)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work-dir", default="runs/sigkill")
    parser.add_argument("--output-dir", default="benchmarks/results/sigkill")
    args = parser.parse_args()
    work, results_dir = Path(args.work_dir), Path(args.output_dir)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    results_dir.mkdir(parents=True, exist_ok=True)

    run_to_end(work / "reference", args.steps, work / "reference.log")
    duration = training_seconds(work / "reference.log")
    print(f"uninterrupted run: {duration:.1f} s of training", flush=True)

    rng = random.Random(args.seed)
    trials = []
    for trial in range(args.trials):
        out, log = work / f"trial-{trial}", work / f"trial-{trial}.log"
        delay = None if trial % 2 else rng.uniform(0, duration)
        during_save = rng.randrange(4, args.steps + 1, 2) if trial % 2 else None
        kill = run_and_kill(out, args.steps, log, delay, during_save)
        before = len(log.read_text())
        resumed_log = run_to_end(out, args.steps, log)[before:]
        match = re.search(r"Resumed from \S*checkpoint-(\d+) at step (\d+)", resumed_log)
        resumed_at = int(match.group(2)) if match else 0
        record = {
            "trial": trial,
            "kill": f"saving checkpoint-{during_save}" if delay is None else f"{delay:.1f} s into training",
            **kill,
            "resumed_at": resumed_at,
            "resumed_from_newest_complete": resumed_at == kill["newest_complete"],
            "weights_equal": same_tensors(out / WEIGHTS, work / "reference" / WEIGHTS),
        }
        record["passed"] = record["resumed_from_newest_complete"] and record["weights_equal"]
        trials.append(record)
        print(json.dumps(record), flush=True)

    summary = {"steps": args.steps, "uninterrupted_training_seconds": round(duration, 1), "trials": trials}
    (results_dir / "trials.json").write_text(json.dumps(summary, indent=2) + "\n")
    rows = [
        "| trial | kill | checkpoint folder being written at the kill | newest complete | resumed at | "
        "final weights = uninterrupted run |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in trials:
        kill = r["kill"] + (" (the run had finished)" if r["finished_before_the_kill"] else "")
        rows.append(
            f"| {r['trial']} | {kill} | {', '.join(r['incomplete_checkpoints']) or 'none'} | "
            f"{r['newest_complete']} | {r['resumed_at']} | {'yes' if r['weights_equal'] else 'NO'} |"
        )
    (results_dir / "trials.md").write_text("\n".join(rows) + "\n")
    passed = sum(r["passed"] for r in trials)
    print(f"{passed} / {len(trials)} trials passed")
    sys.exit(0 if passed == len(trials) else 1)


if __name__ == "__main__":
    main()
