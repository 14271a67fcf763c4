"""The named options a user picks from, as plain data: the command line parses them (and answers `--help`) without
importing torch or diffusers. The modules that act on a choice import its table from here."""

import argparse
import math

SCHEDULERS = {  # --scheduler: the diffusers scheduler classes a pipeline's scheduler can be swapped for
    "ddpm": "DDPMScheduler",
    "ddim": "DDIMScheduler",
    "dpm++": "DPMSolverMultistepScheduler",
    "euler": "EulerDiscreteScheduler",
}
INHERIT = {  # --inherit, the paper's ablation: which self-attention projections to copy instead of starting fresh
    "none": (),
    "v": ("to_v",),
    "kv": ("to_k", "to_v"),
    "qkv": ("to_q", "to_k", "to_v"),
    "qkvo": ("to_q", "to_k", "to_v", "to_out.0"),
    "o": ("to_out.0",),  # what the paper's text-to-image code inherits by accident: the output projection
}
LINEAR_ATTENTION_BACKENDS = ("torch", "triton")  # --linear-attention-backend: the processors' `backend` names
CHECKPOINT_WEIGHTS = {  # --checkpoint-weights: the entries of a training checkpoint (DiT's train.py), EMA first
    "ema": "the exponential moving average, which DiT samples with",
    "model": "the raw weights of the last step",
}
DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}  # --dtype: names of torch dtypes
SAMPLE_LAYOUTS = ("diffusers_lit", "adm")  # generate --format: this project's samples file, or ADM's sample batch
# The paper's model sizes: DiT's depths and widths (patch 2), with LiT's linear-attention heads. The presets
# (`lit_preset("LiT-XL/2")`), the benchmark's sizes and the converter's known widths are read from this table.
MODEL_SIZES = {
    "S": dict(num_layers=12, num_attention_heads=6, attention_head_dim=64, linear_attention_heads=2),
    "B": dict(num_layers=12, num_attention_heads=12, attention_head_dim=64, linear_attention_heads=3),
    "L": dict(num_layers=24, num_attention_heads=16, attention_head_dim=64, linear_attention_heads=4),
    "XL": dict(num_layers=28, num_attention_heads=16, attention_head_dim=72, linear_attention_heads=4),
}


def torch_dtype(name: str):
    """The torch dtype of a `DTYPES` name ("bf16" -> torch.bfloat16)."""
    import torch

    return getattr(torch, DTYPES[name])


def finite_float(text: str) -> float:
    """A float flag: any finite number (nan and inf are refused: a model or loss given one computes only NaN)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"give a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"give a finite number, got {text!r}")
    return value


def block_list(text: str) -> list[int]:
    """`--softmax-blocks 0,5`: comma-separated block indices (checked against the model's depth later)."""
    try:
        return [int(item) for item in text.split(",") if item.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"give block indices separated by commas, e.g. 0,5; got {text!r}") from None
