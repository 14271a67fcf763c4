"""The embedded default, end to end and offline: the shipped Fashion-MNIST DiT teacher -> LiT -> hybrid KD ->
teacher and student sampled by the same pipeline, sampler and seeds -> FID, speed, a side-by-side grid."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[2]
TEACHER = REPO / "assets" / "fmnist-dit"
DISTILL_SCRIPT = REPO / "examples" / "distill_lit.py"


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def run_demo(
    output_dir: str | Path = "outputs/demo",
    *,
    teacher: str | Path = TEACHER,
    distill_steps: int = 100,
    batch_size: int = 64,
    learning_rate: float = 1e-3,
    num_samples: int = 200,
    sample_steps: int = 25,
    scheduler: str = "ddim",
    seed: int = 0,
) -> dict[str, Any]:
    """Convert `teacher` to LiT, distil it for `distill_steps`, then sample and score teacher and student alike.
    `learning_rate` 1e-3: the best of the sweep at this scale (docs/results.md), 5x the teacher's.

    Writes into `output_dir`: lit-init/ (the converted student), lit/ (the distilled one), side_by_side.png and
    results.json; returns the results.
    """
    from .conversion import convert_to_lit
    from .evaluation import image_grid, load_inception, sample_for_evaluation, score_images, tensor_to_pil
    from .pipelines import LiTPipeline, scheduler_from_name

    output_dir = Path(output_dir)
    if not DISTILL_SCRIPT.is_file():
        raise FileNotFoundError(f"The demo runs {DISTILL_SCRIPT}: run it from a checkout of the repository.")
    print(f"1/4 Converting the teacher {teacher} into a LiT student (self-attention fresh)")
    init = convert_to_lit(teacher, output_dir / "lit-init", overwrite=True, seed=seed)

    print(f"2/4 Hybrid knowledge distillation: {distill_steps} steps of {batch_size} images")
    student_dir = output_dir / "lit"
    command = [sys.executable, str(DISTILL_SCRIPT), "--teacher", str(teacher), "--student", str(init),
               "--dataset", "fashion-mnist", "--output_dir", str(student_dir),
               "--cache_dir", str(output_dir / "cache"),
               "--max_train_steps", str(distill_steps), "--train_batch_size", str(batch_size), "--seed", str(seed),
               "--learning_rate", str(learning_rate), "--max_grad_norm", "1.0",  # as the recorded demo runs
               "--checkpointing_steps", str(max(distill_steps, 1)), "--checkpoints_total_limit", "1",
               "--report_to", "tensorboard"]  # fmt: skip
    if student_dir.exists():  # a fresh student each run
        shutil.rmtree(student_dir)
    subprocess.run(command, check=True)

    print(f"3/4 Sampling teacher and student: {num_samples} images each, {scheduler} {sample_steps} steps, same seeds")
    results: dict[str, Any] = {}
    images = {}
    for name, path in (("teacher", teacher), ("student", student_dir)):
        pipe = LiTPipeline.from_pretrained(path)
        pipe.scheduler = scheduler_from_name(scheduler, pipe.scheduler.config)
        images[name], labels, info = sample_for_evaluation(pipe, num_samples, steps=sample_steps, seed=seed)
        results[name] = {"model": str(path), "transformer": type(pipe.transformer).__name__,
                         "parameters": _count(pipe.transformer),
                         "seconds_per_image": info["seconds_per_image"]}  # fmt: skip
    teacher_card = (Path(teacher) / "README.md").read_text() if (Path(teacher) / "README.md").is_file() else ""
    results["teacher"]["training_steps"] = _steps_from_card(teacher_card)
    results["student"]["training_steps"] = distill_steps

    print("4/4 FID against Fashion-MNIST's test images (Inception-v3)")
    inception = load_inception()
    for name in ("teacher", "student"):
        scores = score_images(images[name], inception=inception)
        results[name]["fid"], num_reference = scores["fid"], scores["num_reference"]
    results["settings"] = {"num_samples": num_samples, "num_reference": num_reference, "sampler": scheduler,
                           "sample_steps": sample_steps, "guidance_scale": 1.0, "seed": seed,
                           "distill_batch_size": batch_size, "distill_learning_rate": learning_rate}  # fmt: skip

    shown = min(num_samples, 20)
    names = pipe.config.id2label or {}
    captions = [f"{who} {names.get(str(label), label)}" for who in ("T", "S") for label in labels[:shown]]
    grid = image_grid(tensor_to_pil(torch.cat([images["teacher"][:shown], images["student"][:shown]])), captions,
                      columns=shown // 2 if shown >= 10 else shown)  # fmt: skip
    grid.save(output_dir / "side_by_side.png")
    (output_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(format_table(results))
    print(f"Wrote {output_dir / 'side_by_side.png'} (T: teacher, S: student, same seeds) and results.json")
    return results


def _steps_from_card(card: str) -> int | None:
    match = re.search(r"([\d,]+) steps of", card)
    return int(match.group(1).replace(",", "")) if match else None


def format_table(results: dict[str, Any]) -> str:
    """The demo's results as a text table."""
    settings = results["settings"]
    rows = [f"{'model':<9} {'transformer':<22} {'params':>10} {'train steps':>11} {'s / image':>10} "
            f"{'FID (' + str(settings['num_samples']) + ')':>10}"]  # fmt: skip
    for name in ("teacher", "student"):
        r = results[name]
        rows.append(f"{name:<9} {r['transformer']:<22} {r['parameters']:>10,} {str(r['training_steps']):>11} "
                    f"{r['seconds_per_image']:>10.4f} {r['fid']:>10.2f}")  # fmt: skip
    return "\n".join(rows)
