"""Validation grids during training: the student samples fixed classes or prompts with fixed seeds."""

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..evaluation import image_grid


def validation_grid(
    pipeline,
    *,
    class_labels: list[int] | None = None,
    prompts: list[str] | None = None,
    num_inference_steps: int = 25,
    guidance_scale: float = 4.0,
    seed: int = 0,
) -> Image.Image:
    """One image per class label (LiTPipeline) or prompt (LiTTextToImagePipeline), image i drawn with a generator
    seeded `seed + i`, in a labelled grid. The global random state is left as it was."""
    if (class_labels is None) == (prompts is None):
        raise ValueError("Give either `class_labels` or `prompts` for the validation grid.")
    items = class_labels if class_labels is not None else prompts
    generators = [torch.Generator("cpu").manual_seed(seed + index) for index in range(len(items))]
    pipeline.set_progress_bar_config(disable=True)
    with torch.random.fork_rng(devices=[]):
        if class_labels is not None:
            images = pipeline(
                class_labels=list(class_labels),
                num_inference_steps=num_inference_steps,
                guidance_scale=guidance_scale,
                generator=generators,
            ).images
            id2label = getattr(pipeline.config, "id2label", None) or {}
            captions = [str(id2label.get(str(label), label)).split(",")[0] for label in class_labels]
        else:
            images = pipeline(
                prompt=list(prompts),
                num_inference_steps=num_inference_steps,
                guidance_scale=guidance_scale,
                generator=generators,
            ).images
            captions = list(prompts)
    return image_grid(images, captions)


def save_validation_grid(grid: Image.Image, output_dir: str | Path, step: int) -> Path:
    """Write the grid to `output_dir/validation/step-<step>.png`."""
    path = Path(output_dir) / "validation" / f"step-{step:06d}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path)
    return path


def log_validation_grid(trackers, grid: Image.Image, step: int) -> None:
    """Send the grid to the accelerate trackers that take images (tensorboard)."""
    array = np.asarray(grid.convert("RGB"))[None]  # (1, H, W, 3)
    for tracker in trackers:
        if tracker.name == "tensorboard":
            tracker.writer.add_images("validation", array, step, dataformats="NHWC")
