"""Tiny random components for offline tests, and a pre-filled Hugging Face cache."""

import re
import shutil
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    DDPMScheduler,
    DiTTransformer2DModel,
    DPMSolverMultistepScheduler,
    PixArtTransformer2DModel,
    UNet2DModel,
)
from diffusers.models.embeddings import get_2d_sincos_pos_embed
from huggingface_hub.constants import HF_HUB_CACHE
from transformers import BertConfig, BertModel, BertTokenizerFast

from diffusers_lit import LiTPipeline, LiTTextToImagePipeline, LiTTransformer2DModel

WORDS = "a an the cat dog bird red blue green photo of small large on grass sky".split()


def exactly(message: str) -> str:
    """A `pytest.raises` pattern that matches `message` whole."""
    return f"^{re.escape(message)}$"


def tiny_class_transformer(
    in_channels: int = 1, sample_size: int = 8, num_classes: int = 3, seed: int = 0, **overrides
) -> LiTTransformer2DModel:
    torch.manual_seed(seed)
    config = dict(num_attention_heads=2, attention_head_dim=8, num_layers=2, linear_attention_heads=2)
    return LiTTransformer2DModel(
        **config | overrides, in_channels=in_channels, sample_size=sample_size, num_embeds_ada_norm=num_classes
    )


def tiny_text_transformer(sample_size: int = 8, caption_channels: int = 24, in_channels: int = 4, seed: int = 0):
    torch.manual_seed(seed)
    return LiTTransformer2DModel(
        norm_type="ada_norm_single",
        num_attention_heads=2,
        attention_head_dim=8,
        in_channels=in_channels,
        num_layers=2,
        sample_size=sample_size,
        cross_attention_dim=16,
        caption_channels=caption_channels,
        norm_eps=1e-6,
        linear_attention_heads=2,
    )


# diffusers' softmax transformers of the tiny LiTs' shape, in pixels: 1 channel, learned sigma.
TINY_SOFTMAX = dict(
    num_attention_heads=2, attention_head_dim=8, in_channels=1, out_channels=2, num_layers=2, sample_size=8
)


def tiny_dit_transformer(seed: int = 0) -> DiTTransformer2DModel:
    """diffusers' DiT of `tiny_class_transformer`'s shape: 1 channel, learned sigma, 3 classes."""
    torch.manual_seed(seed)
    return DiTTransformer2DModel(**TINY_SOFTMAX, num_embeds_ada_norm=3).eval()


def tiny_pixart_transformer(seed: int = 0) -> PixArtTransformer2DModel:
    """diffusers' PixArt of `tiny_text_transformer`'s shape in pixels: 1 channel, 24-wide captions."""
    torch.manual_seed(seed)
    return PixArtTransformer2DModel(
        **TINY_SOFTMAX,
        cross_attention_dim=16,
        caption_channels=24,
        norm_eps=1e-6,
        use_additional_conditions=False,
    ).eval()


def diffusers_to_original_dit(dit: DiTTransformer2DModel) -> dict[str, torch.Tensor]:
    """A diffusers DiT in facebookresearch/DiT's key layout (the public models.py)."""
    s = {key: value.clone() for key, value in dit.state_dict().items()}
    out = {"x_embedder.proj.weight": s["pos_embed.proj.weight"], "x_embedder.proj.bias": s["pos_embed.proj.bias"]}
    emb = "transformer_blocks.0.norm1.emb."
    out |= {
        "t_embedder.mlp.0.weight": s[emb + "timestep_embedder.linear_1.weight"],
        "t_embedder.mlp.0.bias": s[emb + "timestep_embedder.linear_1.bias"],
        "t_embedder.mlp.2.weight": s[emb + "timestep_embedder.linear_2.weight"],
        "t_embedder.mlp.2.bias": s[emb + "timestep_embedder.linear_2.bias"],
        "y_embedder.embedding_table.weight": s[emb + "class_embedder.embedding_table.weight"],
    }
    grid = dit.config.sample_size // dit.config.patch_size
    # DiT's grid is arange(grid): base_size=grid (diffusers' default 16 would scale the positions)
    width = dit.config.num_attention_heads * dit.config.attention_head_dim
    out["pos_embed"] = get_2d_sincos_pos_embed(width, grid, base_size=grid, output_type="pt").float()[None]
    for i in range(dit.config.num_layers):
        b = f"transformer_blocks.{i}."
        for p in ("weight", "bias"):
            out[f"blocks.{i}.attn.qkv.{p}"] = torch.cat([s[b + f"attn1.to_{x}.{p}"] for x in "qkv"])
            out[f"blocks.{i}.attn.proj.{p}"] = s[b + f"attn1.to_out.0.{p}"]
            out[f"blocks.{i}.mlp.fc1.{p}"] = s[b + f"ff.net.0.proj.{p}"]
            out[f"blocks.{i}.mlp.fc2.{p}"] = s[b + f"ff.net.2.{p}"]
            out[f"blocks.{i}.adaLN_modulation.1.{p}"] = s[b + f"norm1.linear.{p}"]
    for p in ("weight", "bias"):
        out[f"final_layer.adaLN_modulation.1.{p}"] = s[f"proj_out_1.{p}"]
        out[f"final_layer.linear.{p}"] = s[f"proj_out_2.{p}"]
    return out


def tiny_vae(in_channels: int = 3, seed: int = 0) -> AutoencoderKL:
    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=in_channels,
        out_channels=in_channels,
        latent_channels=4,
        block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        layers_per_block=1,
        norm_num_groups=8,
        sample_size=16,
    )


def tiny_unet() -> UNet2DModel:
    """A pixel-space UNet: a denoiser without transformer blocks (no `norm_type`)."""
    return UNet2DModel(
        sample_size=8,
        in_channels=1,
        out_channels=1,
        block_out_channels=(8, 8),
        down_block_types=("DownBlock2D",) * 2,
        up_block_types=("UpBlock2D",) * 2,
        layers_per_block=1,
        norm_num_groups=8,
    )


def tiny_text_encoder(tmp_path: Path, hidden_size: int = 24, seed: int = 0):
    """A cased BERT tokenizer over a small vocabulary written to disk, and a random BERT of `hidden_size`."""
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    # transformers 5 reads the word list from `vocab` (and ignores `vocab_file`, leaving every word [UNK]), 4 from
    # `vocab_file`: both are given, and the test below checks that the words are read.
    # Cased, as T5: lower-casing a caption is the caller's work (PixArt's, the training data's), not the tokenizer's.
    tokenizer = BertTokenizerFast(vocab=str(vocab), vocab_file=str(vocab), do_lower_case=False, model_max_length=32)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(WORDS) + 5,
        hidden_size=hidden_size,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
    )
    return tokenizer, BertModel(config).eval()


def class_pipeline(vae: bool = False, **kwargs) -> LiTPipeline:
    transformer = tiny_class_transformer(in_channels=4 if vae else 1, **kwargs)
    pipe = LiTPipeline(
        transformer=transformer,
        scheduler=DDPMScheduler(variance_type="learned_range"),
        vae=tiny_vae() if vae else None,
        id2label={0: "cat, kitty", 1: "dog", 2: "bird"},
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def text_pipeline(tmp_path: Path, sample_size: int = 8, vae: bool = True) -> LiTTextToImagePipeline:
    tokenizer, text_encoder = tiny_text_encoder(tmp_path)
    pipe = LiTTextToImagePipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=tiny_vae() if vae else None,
        transformer=tiny_text_transformer(sample_size=sample_size, in_channels=4 if vae else 1),
        scheduler=DPMSolverMultistepScheduler(),  # as PixArt: its sampling loop drops the learned variance
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def put_in_hf_cache(folder: Path, repo_id: str, commit: str = "0123456789abcdef0123456789abcdef01234567") -> Path:
    """Copy `folder` into the Hugging Face cache as the `main` snapshot of model repo `repo_id`, in place of one an
    earlier run in this cache left there (mutation runs run each test many times against one cache)."""
    repo = Path(HF_HUB_CACHE) / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    shutil.rmtree(snapshot, ignore_errors=True)
    shutil.copytree(folder, snapshot)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return snapshot
