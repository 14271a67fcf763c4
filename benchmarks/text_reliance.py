"""How much a model reads its prompts (or class labels): its denoising error with the right caption against wrong ones.

On the first N test scenes, with the same x_t, t and noise for every caption (paired), the epsilon MSE of the model
given each scene's own caption, the caption with left and right swapped, a caption of two other items, and the empty
caption. A model that uses its prompt denoises worse with a wrong caption: the gain of the right caption over a
wrong one, in percent of the wrong one's error, measures how much it relies on the words (items: "other"; places:
"swapped"; any text: "empty"). Fast (a minute on a CPU) next to sampling and scoring 1,000 prompts, so it follows a
teacher through its checkpoints.

    python benchmarks/text_reliance.py assets/scenes-pixart
    python benchmarks/text_reliance.py assets/scenes-pixart \
        --weights runs/scenes-pixart-cpu/checkpoint-2500/model.safetensors

A class-conditional pipeline is measured the same way with Fashion-MNIST test images and their class, another class
and the null class: the scale of a model that does read its condition (docs/results.md, "Text-to-image").
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # runs from a checkout without installing

from diffusers_lit.fashion_mnist import load_fashion_mnist  # noqa: E402
from diffusers_lit.image_datasets import preprocess_image  # noqa: E402
from diffusers_lit.pipelines import LiTPipeline  # noqa: E402
from diffusers_lit.scenes import load_scenes, scene_caption  # noqa: E402
from diffusers_lit.training.data import encode_captions  # noqa: E402
from diffusers_lit.training.distillation import model_prediction  # noqa: E402
from diffusers_lit.training.losses import DiffusionSchedule  # noqa: E402

T_RANGES = (1000, 500)  # t uniform in [0, T): every noise level, and the lower half


def scene_captions(scenes) -> dict[str, list[str]]:
    """Each scene's own caption and three wrong ones: left and right swapped, two other items, empty."""
    left, right = scenes["left_label"], scenes["right_label"]
    return {
        "right": list(scenes["text"]),
        "swapped": [scene_caption(b, a) for a, b in zip(left, right, strict=True)],
        "other": [scene_caption((a + 3) % 10, (b + 5) % 10) for a, b in zip(left, right, strict=True)],
        "empty": [""] * len(left),
    }


def paired_errors(model, x_start, conditions: dict[str, dict], schedule, seed: int) -> dict[str, dict[str, float]]:
    """The epsilon MSE of `model` under each condition on the same x_t, t and noise, per t range, and the gains (in
    percent) of the "right" condition over each other one."""
    generator = torch.Generator().manual_seed(seed)
    results = {}
    for t_range in T_RANGES:
        timesteps = torch.randint(0, t_range, (len(x_start),), generator=generator)
        noise = torch.randn(x_start.shape, generator=generator)
        x_t = schedule.add_noise(x_start, noise, timesteps)
        mse = {}
        for kind, condition in conditions.items():
            eps = model_prediction(model, x_t, timesteps, condition)[:, : x_start.shape[1]]
            mse[kind] = ((eps - noise) ** 2).mean().item()
        gains = {f"gain_over_{kind}": 100 * (mse[kind] - mse["right"]) / mse[kind] for kind in mse if kind != "right"}
        results[f"t<{t_range}"] = {**{f"mse_{kind}": value for kind, value in mse.items()}, **gains}
    return results


@torch.no_grad()
def reliance(pipe, count: int, seed: int) -> dict[str, dict[str, float]]:
    """`paired_errors` on the first `count` test scenes with their captions (text-to-image), or the first
    Fashion-MNIST test images with their class, another class ((y + 3) mod 10) and the null class."""
    schedule = DiffusionSchedule.from_scheduler(pipe.scheduler)
    if not hasattr(pipe, "tokenizer"):
        images = load_fashion_mnist("test").select(range(count))
        size = pipe.transformer.config.sample_size
        x_start = torch.stack([preprocess_image(image, size, channels=1) for image in images["image"]])
        labels = torch.tensor(images["label"])
        null = torch.full_like(labels, pipe.transformer.config.num_embeds_ada_norm)
        conditions = {"right": labels, "other": (labels + 3) % 10, "null": null}
        conditions = {kind: {"class_labels": value} for kind, value in conditions.items()}
        return paired_errors(pipe.transformer, x_start, conditions, schedule, seed)
    scenes = load_scenes("test").select(range(count))
    pixels = np.asarray([np.asarray(image, dtype=np.float32) for image in scenes["image"]])
    x_start = torch.from_numpy(pixels)[:, None] / 127.5 - 1  # (N, 1, 32, 64)
    length = pipe.config.max_sequence_length or pipe.tokenizer.model_max_length
    conditions = {}
    for kind, texts in scene_captions(scenes).items():
        embeds, mask = encode_captions(texts, pipe.tokenizer, pipe.text_encoder, length)
        conditions[kind] = {"encoder_hidden_states": embeds, "encoder_attention_mask": mask}
    return paired_errors(pipe.transformer, x_start, conditions, schedule, seed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="a pipeline folder (teacher or LiT student; text-to-image or classes)")
    parser.add_argument("--weights", help="a checkpoint's model.safetensors to load into its transformer")
    parser.add_argument("--num-images", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", help="also write the results as JSON")
    args = parser.parse_args()
    pipe = LiTPipeline.from_pretrained(args.model)
    if args.weights:
        from safetensors.torch import load_file

        pipe.transformer.load_state_dict(load_file(args.weights))
    pipe.transformer.eval()
    results = {"model": args.model, "weights": args.weights, "num_images": args.num_images}
    results.update(reliance(pipe, args.num_images, args.seed))
    text = json.dumps(results, indent=2)
    print(text)
    if args.output:
        Path(args.output).write_text(text + "\n")


if __name__ == "__main__":
    main()
