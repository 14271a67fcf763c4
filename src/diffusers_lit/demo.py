"""The embedded default, end to end and offline: the shipped Fashion-MNIST DiT teacher -> LiT -> hybrid KD ->
teacher, its shipped distilled student and this run's short distillation sampled by the same pipeline, sampler and
seeds -> FID, speed, a side-by-side grid."""

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

# The demo's one tie to the repository checkout: the models it ships under assets/ (not in the wheel).
ASSETS = Path(__file__).resolve().parents[2] / "assets"
TEACHER = ASSETS / "fmnist-dit"
STUDENT = ASSETS / "fmnist-lit"  # its LiT student, distilled by benchmarks/quality.sh (row inherit-qkv-lr1e-3)
TEXT_TEACHER = ASSETS / "scenes-pixart"  # the text-to-image teacher (make teacher-t2i)
TEXT_STUDENT = ASSETS / "scenes-lit"  # its LiT student, distilled by benchmarks/text_to_image.sh


CLASS_MODELS = ("teacher", "student", "live")  # the class-conditional rows of the demo's table, in order


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def run_demo(
    output_dir: str | Path = "outputs/demo",
    *,
    teacher: str | Path = TEACHER,
    student: str | Path | None = STUDENT,
    distill_steps: int = 100,
    batch_size: int = 64,
    learning_rate: float = 1e-3,
    num_samples: int = 200,
    sample_steps: int = 25,
    scheduler: str = "ddim",
    seed: int = 0,
    num_prompts: int = 100,
    text_teacher: str | Path = TEXT_TEACHER,
    text_student: str | Path = TEXT_STUDENT,
) -> dict[str, Any]:
    """Convert `teacher` to LiT, distil it for `distill_steps` (the live student), then sample and score teacher,
    `student` (its fully distilled LiT student, shipped; None leaves it out) and the live student alike; then
    text-to-image: the shipped scene teacher and its distilled LiT student draw `num_prompts` test-scene
    prompts (DPM-Solver++, 20 steps, guidance 4, same seeds), scored for prompt adherence and FID.
    `learning_rate` 1e-3: the best of the sweep at this scale (docs/results.md), 5x the teacher's.

    Writes into `output_dir`: lit-init/ (the converted student), lit/ (the live one), side_by_side.png,
    side_by_side_t2i.png and results.json; returns the results.
    """
    from .conversion import convert_to_lit
    from .evaluation import image_grid, load_inception, sample_for_evaluation, score_images, tensor_to_pil
    from .hardware import cpu_mixed_precision
    from .hub import read_card_info
    from .pipelines import LiTPipeline, scheduler_from_name

    output_dir = Path(output_dir)
    for path in (teacher, student):
        if path is not None and not Path(path, "model_index.json").is_file():
            raise FileNotFoundError(
                f"No pipeline at {path}: the demo's models ship in the repository's assets/ folder (not in the "
                "wheel), so run it from a checkout, or pass `teacher`, `student` (and the text-to-image ones) "
                "explicitly."
            )
    # The recipe docs/results.md found best at this scale: Q, K, V inherited from the teacher (the rest of the
    # self-attention, the DWC and the output projection, fresh), lr 1e-3, bf16 autocast where the CPU has bf16.
    print(f"1/5 Converting the teacher {teacher} into a LiT student (Q, K, V inherited, DWC and output fresh)")
    init = convert_to_lit(teacher, output_dir / "lit-init", overwrite=True, seed=seed, inherit="qkv")

    print(f"2/5 Hybrid knowledge distillation: {distill_steps} steps of {batch_size} images")
    live_dir = output_dir / "lit"
    command = [  # a process of its own, as `accelerate launch` would start it
        sys.executable,
        "-m",
        "diffusers_lit.training",
        "--teacher",
        str(teacher),
        "--student",
        str(init),
        "--dataset",
        "fashion-mnist",
        "--output_dir",
        str(live_dir),
        "--cache_dir",
        str(output_dir / "cache"),
        "--max_train_steps",
        str(distill_steps),
        "--train_batch_size",
        str(batch_size),
        "--seed",
        str(seed),
        "--learning_rate",
        str(learning_rate),
        "--max_grad_norm",
        "1.0",  # as the recorded demo runs
        "--mixed_precision",
        cpu_mixed_precision() if not torch.cuda.is_available() else "no",
        "--checkpointing_steps",
        str(max(distill_steps, 1)),
        "--checkpoints_total_limit",
        "1",
        "--report_to",
        "tensorboard",
    ]
    if live_dir.exists():  # a fresh student each run
        shutil.rmtree(live_dir)
    subprocess.run(command, check=True)

    paths = zip(CLASS_MODELS, (teacher, student, live_dir), strict=True)
    models = {name: path for name, path in paths if path is not None}
    print(f"3/5 Sampling {', '.join(models)}: {num_samples} images each, {scheduler} {sample_steps} steps, same seeds")
    results: dict[str, Any] = {}
    images = {}
    for name, path in models.items():
        pipe = LiTPipeline.from_pretrained(path)
        pipe.scheduler = scheduler_from_name(scheduler, pipe.scheduler.config)
        images[name], labels, info = sample_for_evaluation(pipe, num_samples, steps=sample_steps, seed=seed)
        results[name] = {
            "model": str(path),
            "transformer": type(pipe.transformer).__name__,
            "parameters": _count(pipe.transformer),
            "seconds_per_image": info["seconds_per_image"],
            "training_steps": read_card_info(Path(path)).get("training_steps"),
        }

    print("4/5 FID against Fashion-MNIST's test images (Inception-v3)")
    inception = load_inception()
    for name in models:
        scores = score_images(images[name], inception=inception)
        results[name]["fid"], num_reference = scores["fid"], scores["num_reference"]
    results["settings"] = {
        "num_samples": num_samples,
        "num_reference": num_reference,
        "sampler": scheduler,
        "sample_steps": sample_steps,
        "guidance_scale": 1.0,
        "seed": seed,
        "distill_batch_size": batch_size,
        "distill_learning_rate": learning_rate,
    }

    shown = min(num_samples, 20)
    names = pipe.config.id2label or {}
    captions = [f"{name[0].upper()} {names.get(str(label), label)}" for name in models for label in labels[:shown]]
    grid = image_grid(
        tensor_to_pil(torch.cat([images[name][:shown] for name in models])),
        captions,
        columns=shown // 2 if shown >= 10 else shown,
    )
    grid.save(output_dir / "side_by_side.png")

    if Path(text_teacher, "model_index.json").is_file() and Path(text_student, "model_index.json").is_file():
        print(f"5/5 Text-to-image: {num_prompts} test-scene prompts, teacher {text_teacher}, student {text_student}")
        results["text_to_image"] = text_to_image_demo(text_teacher, text_student, output_dir, num_prompts, seed)
    else:
        print(f"5/5 Text-to-image skipped: {text_teacher} or {text_student} is missing (benchmarks/text_to_image.sh)")
    (output_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(format_table(results))
    print(
        f"Wrote {output_dir / 'side_by_side.png'} (T: teacher, S: shipped student, L: live student, same seeds), "
        "side_by_side_t2i.png and results.json"
    )
    return results


def text_to_image_demo(
    teacher: str | Path, student: str | Path, output_dir: Path, num_prompts: int, seed: int = 0
) -> dict[str, Any]:
    """Sample the scene teacher and its LiT student on the first `num_prompts` test-scene captions with the same
    sampler and seeds; score both (scene / object accuracy, FID against as many real test scenes); write a grid
    of the first prompts, teacher row then student row."""
    from .adherence import load_classifier, scene_adherence
    from .evaluation import image_grid, quantize, sample_for_evaluation, score_images, tensor_to_pil
    from .pipelines import LiTPipeline
    from .scenes import scene_prompts

    prompts = scene_prompts(num_prompts)
    classifier, results, images = load_classifier(), {}, {}
    for name, path in (("teacher", teacher), ("student", student)):
        pipe = LiTPipeline.from_pretrained(path)
        images[name], labels, info = sample_for_evaluation(
            pipe, num_prompts, steps=20, guidance_scale=4.0, batch_size=100, seed=seed, prompts=prompts
        )
        left, right = (torch.tensor([pair[side] for pair in labels]) for side in (0, 1))
        scores = scene_adherence(classifier, quantize(images[name]), left, right)
        fid = score_images(images[name], reference="fashion-mnist-scenes")["fid"]
        results[name] = {
            "model": str(path),
            "transformer": type(pipe.transformer).__name__,
            "parameters": _count(pipe.transformer),
            "seconds_per_image": info["seconds_per_image"],
            "fid": fid,
            **scores,
        }
    shown = min(num_prompts, 4)
    captions = [f"{who}: {prompt}" for who in ("T", "S") for prompt in prompts[:shown]]
    pictures = tensor_to_pil(torch.cat([images["teacher"][:shown], images["student"][:shown]]))
    image_grid(pictures, captions, columns=shown, scale=4).save(output_dir / "side_by_side_t2i.png")
    results["settings"] = {
        "num_prompts": num_prompts,
        "sampler": "dpm++",
        "sample_steps": 20,
        "guidance_scale": 4.0,
        "seed": seed,
    }
    return results


def format_table(results: dict[str, Any]) -> str:
    """The demo's results as a text table."""
    settings = results["settings"]
    rows = [
        f"{'model':<9} {'transformer':<22} {'params':>10} {'train steps':>11} {'s / image':>10} "
        f"{'FID (' + str(settings['num_samples']) + ')':>10}"
    ]
    for name in CLASS_MODELS:
        if name in results:
            r = results[name]
            rows.append(
                f"{name:<9} {r['transformer']:<22} {r['parameters']:>10,} {str(r['training_steps']):>11} "
                f"{r['seconds_per_image']:>10.4f} {r['fid']:>10.2f}"
            )
    if "student" in results:
        rows.append("student: the teacher's LiT student, fully distilled and shipped")
    rows.append("live: the teacher's LiT student, distilled for a few steps in this run")
    text = results.get("text_to_image")
    if text:
        rows.append(f"text-to-image, {text['settings']['num_prompts']} test-scene prompts (guidance 4):")
        rows.append(
            f"{'model':<9} {'transformer':<22} {'params':>10} {'scene acc':>9} {'object acc':>10} "
            f"{'s / image':>10} {'FID':>8}"
        )
        for name in ("teacher", "student"):
            r = text[name]
            rows.append(
                f"{name:<9} {r['transformer']:<22} {r['parameters']:>10,} {r['scene_accuracy']:>9.3f} "
                f"{r['object_accuracy']:>10.3f} {r['seconds_per_image']:>10.4f} {r['fid']:>8.2f}"
            )
    return "\n".join(rows)
