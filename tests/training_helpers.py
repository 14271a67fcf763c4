"""Tiny teachers, students and image datasets for the distillation tests (16 x 16 pixels)."""

import json
from pathlib import Path

import numpy as np
import torch
from diffusers import DDPMScheduler, DiTTransformer2DModel, PixArtTransformer2DModel
from helpers import tiny_text_encoder, tiny_vae
from PIL import Image

from diffusers_lit import LiTPipeline, LiTTextToImagePipeline, LiTTransformer2DModel

CLASSES = ("cat", "dog", "bird")
CAPTIONS = ("a red cat", "a blue dog on grass", "a small bird in the sky", "a green photo")


def tiny_dit(in_channels: int = 1, sample_size: int = 16, patch_size: int = 4, num_classes: int = 3, seed: int = 1):
    torch.manual_seed(seed)
    dit = DiTTransformer2DModel(
        num_attention_heads=2,
        attention_head_dim=8,
        in_channels=in_channels,
        out_channels=2 * in_channels,
        num_layers=2,
        sample_size=sample_size,
        patch_size=patch_size,
        num_embeds_ada_norm=num_classes,
    )
    for block in dit.transformer_blocks[1:]:  # a trained DiT holds one embedder, copied into every block
        block.norm1.emb.load_state_dict(dit.transformer_blocks[0].norm1.emb.state_dict())
    return dit


def tiny_lit(
    in_channels: int = 1,
    sample_size: int = 16,
    patch_size: int = 4,
    num_classes: int = 3,
    heads: int = 2,
    seed: int = 2,
):
    torch.manual_seed(seed)
    return LiTTransformer2DModel(
        num_attention_heads=2,
        attention_head_dim=8,
        in_channels=in_channels,
        num_layers=2,
        sample_size=sample_size,
        patch_size=patch_size,
        num_embeds_ada_norm=num_classes,
        linear_attention_heads=heads,
    )


def tiny_pixart(caption_channels: int = 24, seed: int = 1):
    torch.manual_seed(seed)
    return PixArtTransformer2DModel(
        num_attention_heads=2,
        attention_head_dim=8,
        in_channels=4,
        out_channels=8,
        num_layers=2,
        sample_size=8,
        patch_size=2,
        cross_attention_dim=16,
        caption_channels=caption_channels,
        norm_type="ada_norm_single",
    )


def tiny_lit_text(caption_channels: int = 24, seed: int = 2):
    torch.manual_seed(seed)
    return LiTTransformer2DModel(
        norm_type="ada_norm_single",
        num_attention_heads=2,
        attention_head_dim=8,
        in_channels=4,
        num_layers=2,
        sample_size=8,
        patch_size=2,
        cross_attention_dim=16,
        caption_channels=caption_channels,
        norm_eps=1e-6,
        linear_attention_heads=2,
    )


def save_class_pipeline(transformer, folder: Path) -> Path:
    """A class-conditional pixel-space pipeline folder (DiT teacher or LiT student)."""
    pipe = LiTPipeline(transformer, DDPMScheduler(variance_type="learned_range"), id2label=dict(enumerate(CLASSES)))
    pipe.save_pretrained(folder)
    return folder


def save_text_pipeline(transformer, folder: Path, tmp_path: Path, caption_channels: int = 24) -> Path:
    tokenizer, text_encoder = tiny_text_encoder(tmp_path, hidden_size=caption_channels)
    pipe = LiTTextToImagePipeline(tokenizer, text_encoder, tiny_vae(), transformer, DDPMScheduler())
    pipe.save_pretrained(folder)
    return folder


def write_imagefolder(folder: Path, per_class: int = 4, size: int = 16, captions: bool = False, seed: int = 0) -> Path:
    """Small RGB PNGs in one sub-folder per class (labels), or flat with a metadata.jsonl of captions."""
    rng = np.random.default_rng(seed)
    rows = []
    for label, name in enumerate(CLASSES):
        for index in range(per_class):
            pixels = rng.integers(0, 256, (size, size + 4, 3), dtype=np.uint8)  # not square: exercises the crop
            relative = f"{name}_{index}.png" if captions else f"{name}/{index}.png"
            (folder / relative).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(folder / relative)
            rows.append({"file_name": relative, "text": CAPTIONS[(label + index) % len(CAPTIONS)]})
    if captions:
        (folder / "metadata.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return folder
