"""The named options a user picks from, as plain data: the command line parses them (and answers `--help`) without
importing torch or diffusers. The modules that act on a choice import its table from here."""

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
DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}  # --dtype: names of torch dtypes


def torch_dtype(name: str):
    """The torch dtype of a `DTYPES` name ("bf16" -> torch.bfloat16)."""
    import torch

    return getattr(torch, DTYPES[name])
