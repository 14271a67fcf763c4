"""How the command line and the benchmarks compile a denoiser: `torch.compile` of the transformer, whole graph,
with CUDA graphs on CUDA (`mode="reduce-overhead"`: one replay per denoising step, no launch latency) and the
default mode elsewhere (CUDA graphs need CUDA)."""

import torch
from torch import nn


def compile_mode(device: torch.device | str) -> str:
    """The `torch.compile` mode for a denoiser on `device`: "reduce-overhead" on CUDA, else "default"."""
    return "reduce-overhead" if torch.device(device).type == "cuda" else "default"


def compile_transformer(transformer: nn.Module, device: torch.device | str) -> str:
    """Compile `transformer` in place (`nn.Module.compile`) in the mode for `device`; returns the mode."""
    mode = compile_mode(device)
    transformer.compile(mode=mode)
    return mode
