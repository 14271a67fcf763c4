#!/usr/bin/env python
"""Train a class-conditional DiT from scratch: the teacher of the embedded default.

    accelerate launch examples/train_dit.py --dataset fashion-mnist --output_dir runs/fmnist-dit \
        --resolution 32 --patch_size 2 --width 192 --depth 6 --heads 3 \
        --max_train_steps 20000 --train_batch_size 128 --use_ema --checkpointing_steps 1000

diffusers' `DiTTransformer2DModel` with learned sigma, in pixel space, trained with DiT's loss (MSE + the
learned-range VLB) by the loop of `examples/distill_lit.py` with no teacher (lambda_noise = lambda_var = 0): the
same data path, caches, checkpoints, exact resume (`--resume_from_checkpoint latest`), EMA, logging and validation
grids. The fresh model is written once to OUTPUT_DIR/init_pipeline, so that a resumed run starts from the same
place; every other flag is distill_lit's (`python examples/distill_lit.py --help`).
"""

import argparse
import sys
from pathlib import Path

from diffusers import DDPMScheduler, DiTTransformer2DModel

sys.path.insert(0, str(Path(__file__).parent))
import distill_lit  # noqa: E402

from diffusers_lit import LiTPipeline  # noqa: E402
from diffusers_lit.training import dataset_class_names, load_image_dataset  # noqa: E402


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description="Train a class-conditional DiT from scratch.", add_help=False)
    parser.add_argument("--resolution", type=int, default=32, help="Image side in pixels (the model's sample size).")
    parser.add_argument("--channels", type=int, default=1, choices=[1, 3], help="1 for grey images, 3 for RGB.")
    parser.add_argument("--patch_size", type=int, default=2)
    parser.add_argument("--width", type=int, default=192)
    parser.add_argument("--depth", type=int, default=6)
    parser.add_argument("--heads", type=int, default=3)
    parser.add_argument("--num_classes", type=int, default=None, help="Default: the dataset's label names.")
    return parser.parse_known_args(argv)


def initial_pipeline(args: argparse.Namespace, dataset: str, label_column: str, folder: Path, seed: int) -> Path:
    """A fresh DiT, DDPM's learned-range scheduler and the class names, saved once as a LiT pipeline folder."""
    if (folder / "model_index.json").is_file():
        return folder
    import torch

    names = dataset_class_names(load_image_dataset(dataset), label_column)
    num_classes = args.num_classes or (len(names) if names else None)
    if num_classes is None:
        raise ValueError(f"{dataset}'s {label_column!r} column has no class names: pass --num_classes.")
    if args.width % args.heads:
        raise ValueError(f"--width {args.width} is not divisible by --heads {args.heads}.")
    torch.manual_seed(seed)
    dit = DiTTransformer2DModel(
        num_attention_heads=args.heads, attention_head_dim=args.width // args.heads, in_channels=args.channels,
        out_channels=2 * args.channels, num_layers=args.depth, sample_size=args.resolution,
        patch_size=args.patch_size, num_embeds_ada_norm=num_classes, norm_eps=1e-6,
    )  # fmt: skip
    for block in dit.transformer_blocks[1:]:  # one timestep + class embedder, as the original DiT: copies agree
        block.norm1.emb.load_state_dict(dit.transformer_blocks[0].norm1.emb.state_dict())
    id2label = dict(enumerate(names)) if names else None
    LiTPipeline(dit, DDPMScheduler(variance_type="learned_range"), id2label=id2label).save_pretrained(folder)
    return folder


def main(argv: list[str] | None = None) -> Path:
    model_args, rest = parse_args(argv)
    args = distill_lit.parse_args([*rest, "--teacher", "unused", "--lambda_noise", "0", "--lambda_var", "0"])
    init = initial_pipeline(model_args, args.dataset, args.label_column, Path(args.output_dir) / "init_pipeline",
                            args.seed)  # fmt: skip
    args.teacher = args.student = str(init)
    args.resolution = model_args.resolution
    return distill_lit.main(args, from_scratch=True)


if __name__ == "__main__":
    main()
