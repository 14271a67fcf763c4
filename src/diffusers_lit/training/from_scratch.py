"""A teacher trained from scratch: diffusers' class-conditional `DiTTransformer2DModel` (the embedded default's
teacher) or, with a text encoder, diffusers' `PixArtTransformer2DModel` in the PixArt-Sigma layout (the scenes'
text-to-image teacher), both with learned sigma, trained with DiT's loss by the distillation loop with no teacher."""

import argparse
import shutil
from pathlib import Path

import torch
from diffusers import DiTTransformer2DModel, PixArtTransformer2DModel

from ..conversion import default_scheduler
from ..image_datasets import dataset_class_names, load_image_dataset, parse_resolution
from ..pipelines import LiTPipeline, LiTTextToImagePipeline
from ..text_encoders import load_text_encoder
from .loop import distill, parse_distill_args

# The flags that shape a fresh model (an --init_from run takes them from its folder).
MODEL_FLAGS = (
    "resolution",
    "channels",
    "patch_size",
    "width",
    "depth",
    "heads",
    "num_classes",
    "text_encoder",
    "caption_length",
)


def parse_dit_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    """The DiT's own flags, and the rest (the loop's flags, `parse_distill_args`)."""
    parser = argparse.ArgumentParser(
        description="Train a class-conditional DiT, or with --text_encoder a text-to-image PixArt, from scratch.",
        epilog="Every other flag is the distillation loop's: `python examples/distill_lit.py --help` lists them "
        "(less the teacher's: --teacher, --student, its conversion and --lambda_noise / --lambda_var).",
    )
    parser.add_argument(
        "--resolution",
        type=parse_resolution,
        default=32,
        help="Image size in pixels, N or HEIGHTxWIDTH (the model's sample size is the height).",
    )
    parser.add_argument("--channels", type=int, default=1, choices=[1, 3], help="1 for grey images, 3 for RGB.")
    parser.add_argument("--patch_size", type=int, default=2)
    parser.add_argument("--width", type=int, default=192)
    parser.add_argument("--depth", type=int, default=6)
    parser.add_argument("--heads", type=int, default=3)
    parser.add_argument("--num_classes", type=int, default=None, help="Default: the dataset's label names.")
    parser.add_argument(
        "--text_encoder",
        default=None,
        help="Hub id of a text encoder (e.g. sentence-transformers/all-MiniLM-L6-v2): train a text-to-image PixArt "
        "(PixArt-Sigma layout) on the dataset's captions instead of a class-conditional DiT.",
    )
    parser.add_argument(
        "--caption_length", type=int, default=32, help="Text-to-image: caption tokens the model is trained with."
    )
    parser.add_argument(
        "--init_from",
        default=None,
        help="A pipeline folder this script saved (e.g. assets/scenes-pixart): train its model on from its weights, "
        "with a fresh optimizer, instead of a fresh model. Its size, classes or text encoder and caption length are "
        "the folder's: leave the flags above out.",
    )
    args, rest = parser.parse_known_args(argv)
    if args.init_from is not None:
        given = [f"--{name}" for name in MODEL_FLAGS if getattr(args, name) != parser.get_default(name)]
        if given:
            parser.error(f"--init_from takes the model from {args.init_from}: leave out {', '.join(given)}.")
        if not (Path(args.init_from) / "model_index.json").is_file():
            parser.error(f"--init_from {args.init_from} is not a pipeline folder (it has no model_index.json).")
    return args, rest


def initial_dit_pipeline(args: argparse.Namespace, dataset: str, label_column: str, folder: Path, seed: int) -> Path:
    """A fresh DiT or PixArt (flags of `parse_dit_args`) with its scheduler and class names or text encoder, saved
    once as a LiT pipeline folder, so that a resumed run starts from the same place."""
    if (folder / "model_index.json").is_file():
        return folder
    if args.width % args.heads:
        raise ValueError(f"--width {args.width} is not divisible by --heads {args.heads}.")
    shape = dict(  # both layouts: learned sigma, the flags' size; the sample size is the height
        num_attention_heads=args.heads,
        attention_head_dim=args.width // args.heads,
        in_channels=args.channels,
        out_channels=2 * args.channels,
        num_layers=args.depth,
        sample_size=args.resolution if isinstance(args.resolution, int) else args.resolution[0],
        patch_size=args.patch_size,
    )
    if args.text_encoder is not None:
        tokenizer, text_encoder = load_text_encoder(args.text_encoder)
        torch.manual_seed(seed)
        pixart = PixArtTransformer2DModel(
            **shape,
            caption_channels=text_encoder.config.hidden_size,
            cross_attention_dim=args.width,
            use_additional_conditions=False,
        )
        LiTTextToImagePipeline(
            tokenizer,
            text_encoder,
            None,
            pixart,
            default_scheduler("pixart"),
            text_encoder_id=args.text_encoder,
            max_sequence_length=args.caption_length,
            image_size=None if isinstance(args.resolution, int) else args.resolution,
        ).save_pretrained(folder)
        return folder
    names = dataset_class_names(load_image_dataset(dataset), label_column)
    num_classes = args.num_classes or (len(names) if names else None)
    if num_classes is None:
        raise ValueError(f"{dataset}'s {label_column!r} column has no class names: pass --num_classes.")
    torch.manual_seed(seed)
    dit = DiTTransformer2DModel(
        **shape,
        num_embeds_ada_norm=num_classes,
        norm_eps=1e-6,
    )
    for block in dit.transformer_blocks[1:]:  # one timestep + class embedder, as the original DiT: copies agree
        block.norm1.emb.load_state_dict(dit.transformer_blocks[0].norm1.emb.state_dict())
    id2label = dict(enumerate(names)) if names else None
    LiTPipeline(dit, default_scheduler("dit", latent=False), id2label=id2label).save_pretrained(folder)
    return folder


def train_dit(argv: list[str] | None = None) -> Path:
    """Train a DiT (or PixArt) from scratch with the flags of `examples/train_dit.py`; returns the output folder.
    The fresh model is written once to OUTPUT_DIR/init_pipeline (with --init_from, that folder's model is trained)."""
    model_args, rest = parse_dit_args(argv)
    args = parse_distill_args(rest, from_scratch=True)
    if model_args.init_from is not None:
        args.student = args.init_from = model_args.init_from
        return distill(args, from_scratch=True)
    init_folder = Path(args.output_dir) / "init_pipeline"
    if args.overwrite_output_dir and init_folder.is_dir():  # a new run: a new model, not the earlier run's
        shutil.rmtree(init_folder)
    init = initial_dit_pipeline(model_args, args.dataset, args.label_column, init_folder, args.seed)
    args.student = str(init)
    args.resolution = model_args.resolution
    if model_args.text_encoder is not None:
        args.max_sequence_length = model_args.caption_length
    return distill(args, from_scratch=True)
