"""DiT and PixArt-alpha / Sigma checkpoints -> LiT: every weight copied except the self-attention's.

Every source is first read into diffusers' naming (`SourceCheckpoint`): a diffusers pipeline or transformer
folder (local or a Hub repo id) as it is, an original checkpoint file (facebookresearch/DiT `.pt`, PixArt
`.pth`, or `.safetensors` with those keys) through the public key layout, its architecture inferred from the
tensors. From there one path maps it onto `LiTTransformer2DModel` (`convert_transformer`), verifies the copy,
and writes a LiT pipeline folder (`convert_to_lit`).
"""

import argparse
import importlib
import inspect
import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from diffusers.utils import logging
from safetensors.torch import load_file

from .choices import CHECKPOINT_WEIGHTS, DTYPES, INHERIT, MODEL_SIZES, torch_dtype
from .files import check_output_path, write_atomically
from .hub import (
    pipeline_class_name,
    read_card_info,
    resolve_pretrained_folder,
)
from .models import LiTTransformer2DModel
from .models.transformer_lit import check_softmax_blocks
from .pipelines import LiTPipeline, LiTTextToImagePipeline
from .text_encoders import load_text_encoder

logger = logging.get_logger(__name__)

KNOWN_HEADS = {  # DiT S, B, L, XL (and PixArt-XL, as wide as DiT-XL) widths -> heads
    size["num_attention_heads"] * size["attention_head_dim"]: size["num_attention_heads"]
    for size in MODEL_SIZES.values()
}
COMPONENTS = ("vae", "scheduler", "tokenizer", "text_encoder")
COMPONENT_LIBRARIES = ("diffusers", "transformers")  # the only modules a model_index.json may name for them
SAFETENSORS_DTYPES = {"F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32, "F64": torch.float64}
SELF_ATTENTION = "self-attention projection: LiT replaces it with fresh linear attention"


@dataclass
class SourceCheckpoint:
    """A DiT or PixArt transformer in diffusers' naming.

    `layout` is "dit", "pixart-alpha", "pixart-sigma" or "pixart"; `config` is diffusers' DiT / PixArt
    transformer config; `dropped` names the original tensors that have no place in diffusers' naming, with
    the reason; `folder` is the diffusers pipeline folder holding the other components, if any; `weights` the
    entry of a training checkpoint read ("ema" or "model"), if the source was one.
    """

    name: str
    layout: str
    config: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    dropped: dict[str, str] = field(default_factory=dict)
    folder: Path | None = None
    model_index: dict[str, Any] = field(default_factory=dict)
    weights: str | None = None


# Reading sources


def _unpickle(path: Path) -> Any:
    """A `.safetensors` file, or a pickle loaded with weights_only=True: tensors, containers and plain values, and
    the `argparse.Namespace` of a DiT training checkpoint's arguments; no other object is built, no code runs."""
    try:
        if path.suffix == ".safetensors":
            return load_file(path)
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated, corrupt, or a pickle with objects weights_only refuses
        raise ValueError(
            f"Could not read {path} as a checkpoint ({type(error).__name__}: {str(error).splitlines()[0][:200]}). "
            "Is the file complete, and does it hold only tensors?"
        ) from error


def _state_dict(state: Any, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]  # PixArt's .pth wraps the weights
    if not isinstance(state, dict) or not all(isinstance(value, torch.Tensor) for value in state.values()):
        raise ValueError(
            f"{path} does not hold a dict of tensors (a state dict): it is not a DiT or PixArt checkpoint."
        )
    return state


def load_state_file(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a `.safetensors` file or a pickle (`.pt`, `.pth`, `.bin`, loaded with weights_only=True)."""
    return _state_dict(_unpickle(path), path)


def load_checkpoint_file(path: Path, weights: str = "ema") -> tuple[dict[str, torch.Tensor], str | None]:
    """The state dict of an original checkpoint file: a bare state dict (a released DiT / PixArt file), or the
    `weights` entry ("ema" or "model") of a training checkpoint such as DiT's train.py writes ({"model", "ema",
    "opt", "args"}). Returns the tensors and the entry read (None for a bare state dict)."""
    if weights not in CHECKPOINT_WEIGHTS:
        raise ValueError(f"`checkpoint_weights` must be one of {list(CHECKPOINT_WEIGHTS)}, got {weights!r}.")
    state = _unpickle(path)
    if not isinstance(state, dict) or not any(isinstance(state.get(entry), dict) for entry in CHECKPOINT_WEIGHTS):
        return _state_dict(state, path), None
    if not isinstance(state.get(weights), dict):
        other = next(entry for entry in CHECKPOINT_WEIGHTS if entry != weights)
        raise ValueError(
            f"{path} is a training checkpoint without {weights!r} weights (it holds {sorted(state)}): pass "
            f"checkpoint_weights={other!r} (--checkpoint-weights {other})."
        )
    logger.warning(
        f"{path} is a training checkpoint: converting its {weights!r} weights ({CHECKPOINT_WEIGHTS[weights]})."
    )
    return _state_dict(state[weights], path), weights


def load_weights_folder(folder: Path) -> dict[str, torch.Tensor]:
    """The weights of a diffusers model folder: safetensors or .bin, single file or sharded."""
    for index_name in ("diffusion_pytorch_model.safetensors.index.json", "diffusion_pytorch_model.bin.index.json"):
        index = folder / index_name
        if index.is_file():
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            return {key: value for shard in shards for key, value in load_state_file(folder / shard).items()}
    for name in ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"):
        if (folder / name).is_file():
            return load_state_file(folder / name)
    raise ValueError(f"{folder} has a config.json but no diffusion_pytorch_model weights.")


def read_source(
    source: str | os.PathLike,
    *,
    revision: str | None = None,
    token: str | bool | None = None,
    cache_dir: str | os.PathLike | None = None,
    num_attention_heads: int | None = None,
    sample_size: int | None = None,
    checkpoint_weights: str = "ema",
) -> SourceCheckpoint:
    """Read a DiT / PixArt source (Hub id, diffusers folder or original checkpoint file) into diffusers' naming.
    `num_attention_heads` is needed only for original checkpoints of widths other than DiT's / PixArt's,
    `sample_size` only for original checkpoints without a `pos_embed`, `checkpoint_weights` only for training
    checkpoints ("ema" or "model", `load_checkpoint_file`)."""
    path = Path(source)
    if path.is_file():
        state, weights = load_checkpoint_file(path, checkpoint_weights)
        checkpoint = original_to_diffusers(
            state, str(source), num_attention_heads=num_attention_heads, sample_size=sample_size
        )
        return replace(checkpoint, weights=weights)
    folder = resolve_pretrained_folder(source, revision=revision, token=token, cache_dir=cache_dir)
    model_index = {}
    transformer_folder = folder
    if (folder / "model_index.json").is_file():
        model_index = json.loads((folder / "model_index.json").read_text())
        transformer_folder = folder / "transformer"
    if not (transformer_folder / "config.json").is_file():
        raise ValueError(
            f"{source} is neither a diffusers pipeline with a transformer/ folder nor a transformer folder with a "
            "config.json. Give a DiT or PixArt pipeline, transformer folder, Hub repo id or checkpoint file."
        )
    config = json.loads((transformer_folder / "config.json").read_text())
    class_name, norm_type = config.get("_class_name"), config.get("norm_type")
    known = ("DiTTransformer2DModel", "PixArtTransformer2DModel", "Transformer2DModel")
    if (
        class_name not in known
        or norm_type not in ("ada_norm_zero", "ada_norm_single")
        or not config.get("patch_size")
    ):
        raise ValueError(
            f"{source} holds a {class_name} (norm_type={norm_type!r}); LiT converts DiT ('ada_norm_zero') and "
            "PixArt ('ada_norm_single') patch transformers only."
        )
    if norm_type == "ada_norm_zero":
        layout = "dit"
    else:
        pipeline_class = pipeline_class_name(model_index.get("_class_name", ""))
        layout = {"PixArtAlphaPipeline": "pixart-alpha", "PixArtSigmaPipeline": "pixart-sigma"}.get(
            pipeline_class, "pixart"
        )
    return SourceCheckpoint(
        name=str(source),
        layout=layout,
        config={key: value for key, value in config.items() if not key.startswith("_")},
        state_dict=load_weights_folder(transformer_folder),
        folder=folder if model_index else None,
        model_index=model_index,
    )


def _heads(width: int, heads: int | None) -> int:
    """The heads of an original checkpoint: given, or known for DiT / PixArt widths; never guessed (the tensors do
    not hold the head count, and a wrong one computes another function)."""
    if heads is not None and (heads < 1 or width % heads):
        raise ValueError(f"`num_attention_heads` {heads} does not divide the transformer's width {width}.")
    heads = heads or KNOWN_HEADS.get(width)
    if heads is None:
        raise ValueError(
            f"Cannot infer the attention heads of a transformer {width} wide (not a DiT / PixArt size; the "
            "checkpoint does not record them): pass `num_attention_heads` (convert --num-attention-heads; "
            "examples/distill_lit.py --teacher_num_attention_heads)."
        )
    return heads


def _take(state: dict[str, torch.Tensor], key: str) -> torch.Tensor:
    if key not in state:
        raise ValueError(f"The checkpoint lacks {key!r}: it is not a complete DiT or PixArt checkpoint.")
    return state.pop(key)


def _sample_size(state: dict[str, torch.Tensor], patch: int, name: str, given: int | None = None) -> int:
    """The sample size of an original checkpoint: from its fixed position grid, or `given` where it has none."""
    if given is not None and (given < 1 or given % patch):
        raise ValueError(f"`sample_size` {given} must be a positive multiple of the patch size {patch}.")
    if "pos_embed" not in state:
        if given is None:
            raise ValueError(
                f"{name} has no `pos_embed`, so its sample size cannot be inferred: pass `sample_size` "
                "(--sample-size), the latent (or pixel) side it was trained at, e.g. 128 for PixArt at 1024 px."
            )
        return given
    grid = math.isqrt(state["pos_embed"].shape[-2])
    if grid * grid != state["pos_embed"].shape[-2]:
        raise ValueError(f"{name}: `pos_embed` does not hold a square grid of positions.")
    if given is not None and given != grid * patch:
        raise ValueError(f"{name} was trained at sample size {grid * patch} (its `pos_embed`), not {given}.")
    return grid * patch


def _check_pos_embed(pos_embed: torch.Tensor, config: dict[str, Any], name: str) -> None:
    """Refuse a stored position embedding that is not the fixed sin-cos grid diffusers' PatchEmbed rebuilds from
    `config` (one learned or scaled otherwise would be silently replaced)."""
    from diffusers.models.embeddings import get_2d_sincos_pos_embed

    grid = config["sample_size"] // config["patch_size"]
    scale = config.get("interpolation_scale", 1)
    width = config["num_attention_heads"] * config["attention_head_dim"]
    rebuilt = get_2d_sincos_pos_embed(width, grid, base_size=grid, interpolation_scale=scale, output_type="pt")
    error = math.inf
    if pos_embed.numel() == rebuilt.numel():
        error = (pos_embed.reshape(rebuilt.shape).double() - rebuilt.double()).abs().max().item()
    if not error <= max(1e-4, torch.finfo(pos_embed.dtype).eps):
        raise ValueError(
            f"{name}: its `pos_embed` is not the fixed sin-cos grid of a {grid}x{grid} patch grid at interpolation "
            f"scale {scale} (largest difference {error:.3g}), which LiT and diffusers compute in its place: a learned "
            "or differently scaled position embedding cannot be converted."
        )


def original_to_diffusers(
    original: dict[str, torch.Tensor],
    name: str,
    num_attention_heads: int | None = None,
    sample_size: int | None = None,
) -> SourceCheckpoint:
    """An original DiT (facebookresearch/DiT) or PixArt (PixArt-alpha / Sigma) state dict in diffusers' naming.

    The architecture comes from the tensors; only the head count is not in them: DiT / PixArt widths give it,
    other widths need `num_attention_heads`."""
    state = dict(original)
    if "y_embedder.embedding_table.weight" in state:
        layout = "dit"
    elif "y_embedder.y_proj.fc1.weight" in state:
        layout = "pixart"
    else:
        sample = ", ".join(list(state)[:5])
        raise ValueError(
            f"{name} is not a DiT or PixArt checkpoint (no `y_embedder`; its first keys: {sample}). "
            "LiT converts class-conditional DiT and PixArt-alpha / Sigma transformers."
        )
    if any(".attn.q_norm." in key for key in state) or any(".attn.sr." in key for key in state):
        raise ValueError(f"{name} uses query-key norms or key-value compression, which LiT does not convert.")
    width, in_channels, patch = state["x_embedder.proj.weight"].shape[:3]
    depth = len({key.split(".")[1] for key in state if key.startswith("blocks.")})
    out_channels = state["final_layer.linear.weight"].shape[0] // (patch * patch)
    heads = _heads(width, num_attention_heads)
    sample_size = _sample_size(state, patch, name, sample_size)
    pos_embed = state.pop("pos_embed", None)
    dropped = (
        {"pos_embed": "fixed sin-cos position embedding: PatchEmbed computes it"} if pos_embed is not None else {}
    )
    mapped = {
        "pos_embed.proj.weight": _take(state, "x_embedder.proj.weight"),
        "pos_embed.proj.bias": _take(state, "x_embedder.proj.bias"),
    }
    config = dict(
        num_attention_heads=heads,
        attention_head_dim=width // heads,
        in_channels=in_channels,
        out_channels=out_channels,
        num_layers=depth,
        sample_size=sample_size,
        patch_size=patch,
        norm_eps=1e-6,
    )

    if layout == "dit":
        config.update(
            norm_type="ada_norm_zero",
            num_embeds_ada_norm=state["y_embedder.embedding_table.weight"].shape[0] - 1,
            timestep_freq_shift=0,  # DiT's TimestepEmbedder divides by half; diffusers' DiT by half - 1
        )
        embedder = {
            "timestep_embedder.linear_1.weight": _take(state, "t_embedder.mlp.0.weight"),
            "timestep_embedder.linear_1.bias": _take(state, "t_embedder.mlp.0.bias"),
            "timestep_embedder.linear_2.weight": _take(state, "t_embedder.mlp.2.weight"),
            "timestep_embedder.linear_2.bias": _take(state, "t_embedder.mlp.2.bias"),
            "class_embedder.embedding_table.weight": _take(state, "y_embedder.embedding_table.weight"),
        }
        for suffix in ("weight", "bias"):
            mapped[f"proj_out_1.{suffix}"] = _take(state, f"final_layer.adaLN_modulation.1.{suffix}")
            mapped[f"proj_out_2.{suffix}"] = _take(state, f"final_layer.linear.{suffix}")
    else:
        caption_channels = state["y_embedder.y_proj.fc1.weight"].shape[1]
        micro = "csize_embedder.mlp.0.weight" in state
        tokens = state["y_embedder.y_embedding"].shape[0] if "y_embedder.y_embedding" in state else None
        layout = {120: "pixart-alpha", 300: "pixart-sigma"}.get(tokens, "pixart")
        scale = sample_size / 64 if layout == "pixart-sigma" else max(sample_size // 64, 1)
        config.update(
            norm_type="ada_norm_single",
            num_embeds_ada_norm=1000,
            cross_attention_dim=width,
            caption_channels=caption_channels,
            use_additional_conditions=micro,
            interpolation_scale=scale,
        )
        if tokens is not None:
            state.pop("y_embedder.y_embedding")
            dropped["y_embedder.y_embedding"] = "PixArt's fixed random null-caption buffer: pipelines encode ''"
        renames = {
            "t_embedder.mlp.0": "adaln_single.emb.timestep_embedder.linear_1",
            "t_embedder.mlp.2": "adaln_single.emb.timestep_embedder.linear_2",
            "t_block.1": "adaln_single.linear",
            "y_embedder.y_proj.fc1": "caption_projection.linear_1",
            "y_embedder.y_proj.fc2": "caption_projection.linear_2",
            "final_layer.linear": "proj_out",
        }
        if micro:
            renames.update(
                {
                    "csize_embedder.mlp.0": "adaln_single.emb.resolution_embedder.linear_1",
                    "csize_embedder.mlp.2": "adaln_single.emb.resolution_embedder.linear_2",
                    "ar_embedder.mlp.0": "adaln_single.emb.aspect_ratio_embedder.linear_1",
                    "ar_embedder.mlp.2": "adaln_single.emb.aspect_ratio_embedder.linear_2",
                }
            )
        for old, new in renames.items():
            for suffix in ("weight", "bias"):
                mapped[f"{new}.{suffix}"] = _take(state, f"{old}.{suffix}")
        mapped["scale_shift_table"] = _take(state, "final_layer.scale_shift_table")

    for i in range(depth):
        block, new = f"blocks.{i}", f"transformer_blocks.{i}"
        for suffix in ("weight", "bias"):
            q, k, v = _take(state, f"{block}.attn.qkv.{suffix}").chunk(3)
            mapped.update(
                {f"{new}.attn1.to_q.{suffix}": q, f"{new}.attn1.to_k.{suffix}": k, f"{new}.attn1.to_v.{suffix}": v}
            )
            mapped[f"{new}.attn1.to_out.0.{suffix}"] = _take(state, f"{block}.attn.proj.{suffix}")
            mapped[f"{new}.ff.net.0.proj.{suffix}"] = _take(state, f"{block}.mlp.fc1.{suffix}")
            mapped[f"{new}.ff.net.2.{suffix}"] = _take(state, f"{block}.mlp.fc2.{suffix}")
            if layout == "dit":
                mapped[f"{new}.norm1.linear.{suffix}"] = _take(state, f"{block}.adaLN_modulation.1.{suffix}")
            else:
                mapped[f"{new}.attn2.to_q.{suffix}"] = _take(state, f"{block}.cross_attn.q_linear.{suffix}")
                k, v = _take(state, f"{block}.cross_attn.kv_linear.{suffix}").chunk(2)
                mapped.update({f"{new}.attn2.to_k.{suffix}": k, f"{new}.attn2.to_v.{suffix}": v})
                mapped[f"{new}.attn2.to_out.0.{suffix}"] = _take(state, f"{block}.cross_attn.proj.{suffix}")
        if layout == "dit":  # diffusers' DiT keeps a copy of the one embedder in every block
            mapped.update({f"{new}.norm1.emb.{key}": value for key, value in embedder.items()})
        else:
            mapped[f"{new}.scale_shift_table"] = _take(state, f"{block}.scale_shift_table")
    if state:
        raise ValueError(f"{name} holds tensors this converter does not know: {sorted(state)[:10]}.")
    if pos_embed is not None:
        _check_pos_embed(pos_embed, config, name)
    return SourceCheckpoint(name=name, layout=layout, config=config, state_dict=mapped, dropped=dropped)


# Mapping onto LiT


def default_linear_heads(teacher_heads: int) -> int:
    """LiT's head count for a teacher's: max(2, heads // 4), the rule of the paper's sizes (S 2, B 3, L 4, XL 4)."""
    return max(2, teacher_heads // 4)


def lit_config(
    source_config: dict[str, Any],
    linear_attention_heads: int | None,
    dwc_kernel_size: int,
    softmax_blocks: Sequence[int] = (),
) -> dict:
    """The LiT config of a DiT / PixArt transformer config: same names, plus LiT's own (a hybrid's softmax blocks
    only when there are any, so that an all-linear LiT's config is as before)."""
    accepted = inspect.signature(LiTTransformer2DModel.__init__).parameters
    config = {key: value for key, value in source_config.items() if key in accepted}
    config["out_channels"] = config.get("out_channels") or config["in_channels"]
    if linear_attention_heads is not None and linear_attention_heads < 1:
        raise ValueError(f"`linear_attention_heads` must be at least 1, got {linear_attention_heads}.")
    heads = linear_attention_heads or default_linear_heads(config["num_attention_heads"])
    config["linear_attention_heads"] = heads
    config["dwc_kernel_size"] = dwc_kernel_size
    if softmax_blocks:
        check_softmax_blocks(softmax_blocks, config.get("num_layers", accepted["num_layers"].default))
        config["softmax_attention_blocks"] = sorted(softmax_blocks)
    return config


def map_state_dict(
    source: SourceCheckpoint, inherit: str = "none", softmax_blocks: Sequence[int] = ()
) -> tuple[dict, dict[str, str], dict[str, str]]:
    """Rename a diffusers-named DiT / PixArt state dict to LiT's; the self-attention of `softmax_blocks` (a
    hybrid's) is copied whole, the others' as `inherit` says.

    Returns (LiT tensors, {LiT key: source key} of every copy, {source key: reason} of every tensor left out).
    Only names and shapes are touched, so this also runs on meta tensors.
    """
    keep = INHERIT[inherit]
    per_block = bool(source.config.get("per_block_embedders"))
    mapped, origin, unused = {}, {}, dict(source.dropped)
    for key, tensor in source.state_dict.items():
        match = re.match(r"transformer_blocks\.(\d+)\.(.*)", key)
        block, rest = (int(match.group(1)), match.group(2)) if match else (None, key)
        new = key
        if rest.startswith("norm1.emb."):  # DiT: the per-block copies of the one embedder
            if per_block:  # copies that differ: one embedder per block, each the source's own
                new = f"time_class_embed.{block}." + rest.removeprefix("norm1.emb.")
            elif block != 0:
                unused[key] = "copy of the timestep + class embedder: folded into LiT's shared `time_class_embed`"
                continue
            else:
                new = "time_class_embed." + rest.removeprefix("norm1.emb.")
        elif rest.startswith("norm3."):
            new = f"transformer_blocks.{block}.norm2." + rest.removeprefix("norm3.")
        elif rest.startswith("attn1."):
            projection = rest.removeprefix("attn1.").rsplit(".", 1)[0]
            if projection not in keep and block not in softmax_blocks:
                unused[key] = SELF_ATTENTION
                continue
        mapped[new] = tensor
        origin[new] = key
    return mapped, origin, unused


def embedder_copies_differ(source: SourceCheckpoint) -> list[int]:
    """diffusers' DiT repeats the embedder in every block: the blocks whose copy differs from block 0's (none for a
    DiT trained as the original, with one shared embedder; some for one trained or fine-tuned in diffusers)."""
    differing = set()
    for key, tensor in source.state_dict.items():
        match = re.match(r"transformer_blocks\.(\d+)\.norm1\.emb\.(.*)", key)
        if match and match.group(1) != "0":
            if not torch.equal(tensor, source.state_dict[f"transformer_blocks.0.norm1.emb.{match.group(2)}"]):
                differing.add(int(match.group(1)))
    return sorted(differing)


def convert_transformer(
    source: SourceCheckpoint,
    *,
    linear_attention_heads: int | None = None,
    dwc_kernel_size: int = 5,
    inherit: str = "none",
    seed: int = 0,
    softmax_blocks: Sequence[int] = (),
) -> tuple[LiTTransformer2DModel, dict[str, Any]]:
    """Build a LiT from a source transformer: copy every tensor but the self-attention's (all of it for the
    `softmax_blocks` of a hybrid, which keep the source's softmax attention), then verify.

    Returns the LiT (float32, fresh self-attention seeded by `seed`) and a report of what was copied, left
    fresh and left out, with the parameter counts before and after.
    """
    if inherit not in INHERIT:
        raise ValueError(f"`inherit` must be one of {list(INHERIT)}, got {inherit!r}.")
    if source.config["norm_type"] == "ada_norm_zero" and embedder_copies_differ(source):
        source = replace(source, config={**source.config, "per_block_embedders": True})  # kept, not folded
    config = lit_config(source.config, linear_attention_heads, dwc_kernel_size, softmax_blocks)
    mapped, origin, unused = map_state_dict(source, inherit, softmax_blocks)
    torch.manual_seed(seed)
    lit = LiTTransformer2DModel(**config)
    fresh = sorted(set(lit.state_dict()) - set(mapped))
    try:
        unexpected = lit.load_state_dict(mapped, strict=False).unexpected_keys  # the missing ones are `fresh`
    except RuntimeError as error:
        raise ValueError(f"{source.name} does not fit the LiT built from its config: {error}") from error
    kept = tuple(f"transformer_blocks.{block}.attn1." for block in softmax_blocks)
    if unexpected or any(".attn1." not in key or key.startswith(kept) for key in fresh):
        raise ValueError(
            f"{source.name} did not map onto LiT cleanly: unexpected {unexpected[:5]}, "
            f"missing outside the self-attention "
            f"{[key for key in fresh if '.attn1.' not in key or key.startswith(kept)][:5]}."
        )
    lit_state = lit.state_dict()
    for key in mapped:
        if not torch.equal(lit_state[key], mapped[key]):  # compared in the promoted dtype: fp16 / bf16 sources too
            raise RuntimeError(f"{key} differs from its source {origin[key]} after the copy.")
    report = {
        "source": source.name,
        "layout": source.layout,
        "source_config": source.config,
        "lit_config": config,
        "options": {
            "linear_attention_heads": config["linear_attention_heads"],
            "dwc_kernel_size": dwc_kernel_size,
            "inherit": inherit,
            "seed": seed,
            "softmax_blocks": sorted(softmax_blocks),
        },
        "copied": {"count": len(mapped), "keys": {key: origin[key] for key in sorted(mapped)}},
        "fresh": {"count": len(fresh), "keys": fresh},
        "unused": {"count": len(unused), "keys": dict(sorted(unused.items()))},
        "parameters": {
            "source": sum(t.numel() for t in source.state_dict.values()),  # as a diffusers transformer
            "lit": sum(p.numel() for p in lit.parameters()),
        },
    }
    return lit, report


# Writing a LiT pipeline folder


def _stored_dtype(folder: Path) -> torch.dtype | None:
    """The dtype of a component's saved floating-point weights (diffusers loads fp16 weights as fp32 unless told)."""
    from safetensors import safe_open

    for file in sorted(folder.glob("*.safetensors")):
        with safe_open(file, "pt") as weights:
            for key in weights.keys():
                dtype = SAFETENSORS_DTYPES.get(weights.get_slice(key).get_dtype())
                if dtype is not None:
                    return dtype
    return None


def load_components(folder: Path, model_index: dict[str, Any]) -> dict[str, Any]:
    """The VAE, scheduler, tokenizer and text encoder that a pipeline folder's model_index.json names, loaded in
    their stored dtype. Only diffusers' and transformers' classes: the file names no other module to import."""
    components = {}
    for name in COMPONENTS:
        entry = model_index.get(name)
        if not isinstance(entry, list) or len(entry) != 2 or entry[0] is None:
            continue
        library, class_name = entry
        if library not in COMPONENT_LIBRARIES or not (folder / name).is_dir():
            raise ValueError(
                f"{folder}/model_index.json names {name} {entry}, but LiT loads diffusers' and transformers' "
                f"components from their own folder only ({folder / name}): fix the pipeline folder."
            )
        component_class = getattr(importlib.import_module(library), class_name, None)
        if component_class is None or not hasattr(component_class, "from_pretrained"):
            raise ValueError(f"{folder}/model_index.json names {name} {entry}, which {library} does not have.")
        kwargs = {}
        if library == "diffusers" and (dtype := _stored_dtype(folder / name)) is not None:
            kwargs["torch_dtype"] = dtype  # transformers keeps the stored dtype by itself
        components[name] = component_class.from_pretrained(folder / name, **kwargs)
    return components


def read_components(
    source: str | os.PathLike,
    *,
    revision: str | None = None,
    token: str | bool | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The components (`load_components`) and model_index.json of a pipeline folder or Hub id lending them to a
    source that has none (an original checkpoint file): a whole pipeline, or one with only some components (a VAE
    and a scheduler, without a transformer)."""
    folder = resolve_pretrained_folder(source, revision=revision, token=token, cache_dir=cache_dir)
    if not (folder / "model_index.json").is_file():
        raise ValueError(
            f"{source} has no model_index.json, so its components cannot be named: give a diffusers pipeline "
            "folder or Hub id (a model_index.json and component folders such as vae/ and scheduler/)."
        )
    model_index = json.loads((folder / "model_index.json").read_text())
    return load_components(folder, model_index), model_index


def lit_pipeline(
    transformer: torch.nn.Module,
    components: dict[str, Any],
    *,
    id2label: dict | None = None,
    text_encoder_id: str | None = None,
    max_sequence_length: int | None = None,
    image_size: list[int] | None = None,
) -> LiTPipeline | LiTTextToImagePipeline:
    """The LiT pipeline of `transformer` with a source's other components (`scheduler` required): a
    `LiTTextToImagePipeline` for the PixArt layout (its text encoder given or referenced by `text_encoder_id`, its
    trained caption length and image size), else a `LiTPipeline` (its class names)."""
    if getattr(transformer.config, "norm_type", None) == "ada_norm_single":
        return LiTTextToImagePipeline(
            tokenizer=components.get("tokenizer"),
            text_encoder=components.get("text_encoder"),
            vae=components.get("vae"),
            transformer=transformer,
            scheduler=components["scheduler"],
            text_encoder_id=text_encoder_id,
            max_sequence_length=max_sequence_length,
            image_size=image_size,
        )
    return LiTPipeline(
        transformer=transformer, scheduler=components["scheduler"], vae=components.get("vae"), id2label=id2label
    )


def default_scheduler(layout: str, latent: bool = True):
    """The sampler of a pipeline whose source names none: for "dit", DiT's DDPM with the learned variance (1000
    linear betas), which clips the predicted x_0 to [-1, 1] only in pixel space (DiT samples latents with
    clip_denoised=False); for PixArt layouts, PixArt's DPM-Solver++ (same betas)."""
    from diffusers import DDPMScheduler, DPMSolverMultistepScheduler

    if layout == "dit":
        return DDPMScheduler(beta_schedule="linear", variance_type="learned_range", clip_sample=not latent)
    return DPMSolverMultistepScheduler()


def _process_is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def _recover_interrupted_conversions(output_dir: Path) -> None:
    """Tidy what a killed conversion into `output_dir` left beside it (its hidden folders name its process id):
    a half-written `.NAME.converting-PID-*` is removed; a `.NAME.replaced-PID` (the earlier output, moved aside
    while its replacement was renamed in) is put back where the output is missing, else removed."""
    if not output_dir.parent.is_dir():
        return
    for path in sorted(output_dir.parent.glob(f".{output_dir.name}.*-*")):
        kind, _, rest = path.name.removeprefix(f".{output_dir.name}.").partition("-")
        pid = rest.split("-")[0]
        if kind not in ("converting", "replaced") or not pid.isdigit() or _process_is_alive(int(pid)):
            continue
        if kind == "replaced" and not output_dir.exists():
            path.rename(output_dir)
            logger.warning(f"Restored {output_dir} from {path.name}, left by an interrupted conversion.")
        else:
            shutil.rmtree(path)
            logger.warning(f"Removed {path}, left by an interrupted conversion.")


def _check_output_dir(output_dir: Path, overwrite: bool, source_folder: Path | None) -> None:
    check_output_path(output_dir, folder=True)
    if output_dir.is_dir() and any(output_dir.iterdir()) and not overwrite:
        raise ValueError(f"{output_dir} exists and is not empty: choose another folder, or pass overwrite=True.")
    if source_folder is not None:
        source, output = source_folder.resolve(), output_dir.resolve()
        if output == source or source in output.parents or output in source.parents:
            raise ValueError(f"{output_dir} overlaps the source {source_folder}: write the LiT pipeline elsewhere.")


def convert_to_lit(
    source: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    linear_attention_heads: int | None = None,
    dwc_kernel_size: int = 5,
    inherit: str = "none",
    dtype: str | None = None,
    overwrite: bool = False,
    push_to_hub: str | None = None,
    components: str | os.PathLike | None = None,
    num_attention_heads: int | None = None,
    sample_size: int | None = None,
    checkpoint_weights: str = "ema",
    timestep_freq_shift: float | None = None,
    seed: int = 0,
    softmax_blocks: Sequence[int] = (),
    revision: str | None = None,
    token: str | bool | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> Path:
    """Convert a DiT or PixArt-alpha / Sigma model into a LiT pipeline folder.

    Args:
        source: A Hub repo id or folder in diffusers layout (pipeline or transformer), or an original
            checkpoint file (`.pt`, `.pth`, `.safetensors`).
        output_dir: The LiT pipeline folder to write (written to a temporary folder, then renamed).
        linear_attention_heads: Heads of the linear attention; default max(2, teacher heads // 4).
        dwc_kernel_size: Kernel of the depth-wise convolution.
        inherit: Self-attention projections to copy instead of starting fresh: none, v, kv, qkv, qkvo.
        dtype: "fp32", "fp16" or "bf16" for the saved transformer; default: the source's dtype.
        overwrite: Replace an existing non-empty `output_dir`.
        push_to_hub: A repo id to upload the finished folder to.
        components: A diffusers pipeline (folder or repo id) to take the VAE, scheduler, tokenizer and text
            encoder from when `source` has none (an original checkpoint file).
        num_attention_heads: The teacher's heads, for original checkpoints of non-DiT / PixArt widths.
        sample_size: The sample size, for original checkpoints that carry no `pos_embed`.
        checkpoint_weights: The weights of a training checkpoint file ({"model", "ema", ...}, as DiT's train.py
            writes) to convert: "ema" (DiT samples with them) or "model".
        timestep_freq_shift: The timestep embedding's frequency shift (`LiTTransformer2DModel`); default the
            source's: 0 for original DiT checkpoints (DiT's own), else the diffusers model's.
        seed: Seed of the fresh self-attention weights.
        softmax_blocks: Blocks that keep the source's softmax self-attention, copied exactly (a hybrid LiT).
        revision, token, cache_dir: Where and how to fetch Hub repo ids.

    Returns:
        The path of the LiT pipeline folder, with `conversion_report.json` and a model card.
    """
    if inherit not in INHERIT:
        raise ValueError(f"`inherit` must be one of {list(INHERIT)}, got {inherit!r}.")
    if dtype is not None and dtype not in DTYPES:
        raise ValueError(f"`dtype` must be one of {list(DTYPES)}, got {dtype!r}.")
    output_dir = Path(output_dir)
    local_source = Path(source) if Path(source).exists() else None
    _recover_interrupted_conversions(output_dir)
    _check_output_dir(output_dir, overwrite, local_source)

    checkpoint = read_source(
        source,
        revision=revision,
        token=token,
        cache_dir=cache_dir,
        num_attention_heads=num_attention_heads,
        sample_size=sample_size,
        checkpoint_weights=checkpoint_weights,
    )
    if timestep_freq_shift is not None:
        checkpoint.config["timestep_freq_shift"] = timestep_freq_shift
    source_dtype = next(iter(checkpoint.state_dict.values())).dtype
    lit, report = convert_transformer(
        checkpoint,
        linear_attention_heads=linear_attention_heads,
        dwc_kernel_size=dwc_kernel_size,
        inherit=inherit,
        seed=seed,
        softmax_blocks=softmax_blocks,
    )
    target_dtype = torch_dtype(dtype) if dtype else source_dtype
    if target_dtype != lit.dtype:
        lit.to(target_dtype)
    report["options"]["dtype"] = str(lit.dtype).removeprefix("torch.")
    report["source_weights"] = checkpoint.weights

    loaded, model_index = {}, checkpoint.model_index
    if checkpoint.folder is not None:
        loaded = load_components(checkpoint.folder, model_index)
    elif components is not None:
        loaded, model_index = read_components(components, revision=revision, token=token, cache_dir=cache_dir)
    if loaded.get("vae") is None and lit.config.in_channels not in (1, 3):
        raise ValueError(
            f"{source} works on {lit.config.in_channels}-channel latents and comes without a VAE: pass `components` "
            "(--components) with a pipeline that has its VAE (e.g. facebook/DiT-XL-2-256 or a PixArt pipeline)."
        )
    scheduler = loaded.get("scheduler") or default_scheduler(
        checkpoint.layout, latent=lit.config.in_channels not in (1, 3)
    )
    pipe = lit_pipeline(
        lit,
        {**loaded, "scheduler": scheduler},
        id2label=model_index.get("id2label"),
        text_encoder_id=model_index.get("text_encoder_id"),
        max_sequence_length=model_index.get("max_sequence_length"),
        image_size=model_index.get("image_size"),
    )
    source_info = read_card_info(checkpoint.folder) if checkpoint.folder else {}
    hybrid = f"Blocks {sorted(softmax_blocks)} keep the source's softmax self-attention. " if softmax_blocks else ""
    weights = f", its {checkpoint.weights!r} weights" if checkpoint.weights else ""
    pipe.card_info = {
        "base_model": str(source) if local_source is None else source_info.get("base_model"),
        "license": source_info.get("license"),
        "how_made": (
            f"Converted from `{source}` ({checkpoint.layout}{weights}) with `diffusers-lit convert`: "
            f"every weight copied except the self-attention, which is LiT's linear attention with "
            f"{report['options']['linear_attention_heads']} heads and a {dwc_kernel_size}x{dwc_kernel_size} "
            f"depth-wise convolution, started fresh (inherited projections: {inherit}). "
            f"{hybrid}{report['copied']['count']} tensors copied, {report['fresh']['count']} fresh; see "
            "conversion_report.json. Train it with hybrid knowledge distillation (examples/distill_lit.py) "
            "before use: until then the self-attention is random."
        ),
        "example_prompt": source_info.get("example_prompt"),
    }

    output_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.converting-{os.getpid()}-", dir=output_dir.parent))
    try:
        pipe.save_pretrained(tmp, repo_id=push_to_hub or output_dir.name)
        index = json.loads((tmp / "model_index.json").read_text())
        report["components"] = {name: index.get(name) for name in COMPONENTS}
        write_atomically(tmp / "conversion_report.json", json.dumps(report, indent=2) + "\n")
        if output_dir.exists():  # overwrite: move the old folder aside until the new one is in place
            backup = output_dir.with_name(f".{output_dir.name}.replaced-{os.getpid()}")
            output_dir.rename(backup)
            tmp.rename(output_dir)
            shutil.rmtree(backup)
        else:
            tmp.rename(output_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)

    if push_to_hub:
        pipe.upload_saved(output_dir, push_to_hub, token=token, commit_message="Convert to LiT")
    return output_dir


@dataclass
class SourceModel:
    """A loaded DiT / PixArt source (a distillation's teacher, a from-scratch run's own model) as diffusers
    objects: its transformer and the components of its pipeline."""

    name: str
    layout: str
    transformer: torch.nn.Module
    components: dict[str, Any]
    id2label: dict[int, str] | None
    text_encoder_id: str | None = None
    max_sequence_length: int | None = None  # the caption length it was trained with, if recorded
    image_size: list[int] | None = None  # (height, width) in pixels of a model trained on non-square images

    @property
    def is_text_to_image(self) -> bool:
        return getattr(self.transformer.config, "norm_type", None) == "ada_norm_single"


def load_source(
    source: str | os.PathLike,
    *,
    revision: str | None = None,
    token: str | bool | None = None,
    cache_dir: str | os.PathLike | None = None,
    num_attention_heads: int | None = None,
    checkpoint_weights: str = "ema",
    components: str | os.PathLike | None = None,
) -> SourceModel:
    """Load a DiT / PixArt source (Hub id, diffusers folder or original checkpoint) as diffusers models.
    `num_attention_heads`: for original checkpoints of widths other than DiT's / PixArt's; `checkpoint_weights`:
    the entry of a training checkpoint to load ("ema" or "model"); `components`: a pipeline folder or Hub id
    (`read_components`) lending the VAE, scheduler, text encoder and labels the source lacks."""
    from diffusers import DiTTransformer2DModel, PixArtTransformer2DModel
    from diffusers.models.embeddings import Timesteps

    checkpoint = read_source(
        source,
        revision=revision,
        token=token,
        cache_dir=cache_dir,
        num_attention_heads=num_attention_heads,
        checkpoint_weights=checkpoint_weights,
    )
    model_class = DiTTransformer2DModel if checkpoint.layout == "dit" else PixArtTransformer2DModel
    accepted = inspect.signature(model_class.__init__).parameters
    transformer = model_class(**{key: value for key, value in checkpoint.config.items() if key in accepted})
    transformer.load_state_dict(checkpoint.state_dict, strict=True)
    shift = checkpoint.config.get("timestep_freq_shift")
    if shift is not None:  # an original DiT: the diffusers model computes it with DiT's own frequencies
        for module in transformer.modules():
            if isinstance(module, Timesteps):
                module.downscale_freq_shift = shift
        transformer.register_to_config(timestep_freq_shift=shift)  # and a LiT converted from it keeps them
    transformer.to(next(iter(checkpoint.state_dict.values())).dtype).eval()
    loaded = load_components(checkpoint.folder, checkpoint.model_index) if checkpoint.folder else {}
    model_index = checkpoint.model_index
    if components is not None:  # the source's own components first
        lent, lent_index = read_components(components, revision=revision, token=token, cache_dir=cache_dir)
        loaded, model_index = {**lent, **loaded}, {**lent_index, **model_index}
    text_encoder_id = model_index.get("text_encoder_id")
    if text_encoder_id and "text_encoder" not in loaded:
        loaded["tokenizer"], loaded["text_encoder"] = load_text_encoder(text_encoder_id)
    id2label = model_index.get("id2label")
    return SourceModel(
        name=checkpoint.name,
        layout=checkpoint.layout,
        transformer=transformer,
        components=loaded,
        id2label={int(key): value for key, value in id2label.items()} if id2label else None,
        text_encoder_id=text_encoder_id,
        max_sequence_length=model_index.get("max_sequence_length"),
        image_size=model_index.get("image_size"),
    )
