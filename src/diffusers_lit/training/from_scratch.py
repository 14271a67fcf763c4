"""A class-conditional DiT trained from scratch (the teacher of the embedded default): diffusers'
`DiTTransformer2DModel` with learned sigma, trained with DiT's loss by the distillation loop with no teacher."""

import argparse
from pathlib import Path

import torch
from diffusers import DDPMScheduler, DiTTransformer2DModel

from ..pipelines import LiTPipeline
from .data import dataset_class_names, load_image_dataset
from .loop import distill, parse_distill_args


def parse_dit_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    """The DiT's own flags, and the rest (the loop's flags, `parse_distill_args`)."""
    parser = argparse.ArgumentParser(
        description="Train a class-conditional DiT from scratch.",
        epilog="Every other flag is the distillation loop's: `python examples/distill_lit.py --help` lists them "
        "(--teacher, --lambda_noise and --lambda_var are set here: no teacher).",
    )
    parser.add_argument("--resolution", type=int, default=32, help="Image side in pixels (the model's sample size).")
    parser.add_argument("--channels", type=int, default=1, choices=[1, 3], help="1 for grey images, 3 for RGB.")
    parser.add_argument("--patch_size", type=int, default=2)
    parser.add_argument("--width", type=int, default=192)
    parser.add_argument("--depth", type=int, default=6)
    parser.add_argument("--heads", type=int, default=3)
    parser.add_argument("--num_classes", type=int, default=None, help="Default: the dataset's label names.")
    return parser.parse_known_args(argv)


def initial_dit_pipeline(args: argparse.Namespace, dataset: str, label_column: str, folder: Path, seed: int) -> Path:
    """A fresh DiT (flags of `parse_dit_args`), DDPM's learned-range scheduler and the class names, saved once as
    a LiT pipeline folder, so that a resumed run starts from the same place."""
    if (folder / "model_index.json").is_file():
        return folder
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


def train_dit(argv: list[str] | None = None) -> Path:
    """Train a DiT from scratch with the flags of `examples/train_dit.py`; returns the output folder. The fresh model
    is written once to OUTPUT_DIR/init_pipeline."""
    model_args, rest = parse_dit_args(argv)
    args = parse_distill_args([*rest, "--teacher", "unused", "--lambda_noise", "0", "--lambda_var", "0"])
    init = initial_dit_pipeline(model_args, args.dataset, args.label_column, Path(args.output_dir) / "init_pipeline",
                                args.seed)  # fmt: skip
    args.teacher = args.student = str(init)
    args.resolution = model_args.resolution
    return distill(args, from_scratch=True)
