"""The benchmark's randomly initialised models of each architecture, and zero-argument forwards of them."""

import contextlib
from collections.abc import Callable

import torch
from torch import nn

from .flops import CAPTION_CHANNELS, DWC_KERNEL, IN_CHANNELS, OUT_CHANNELS, PATCH, SANA_HEAD_DIM, TEXT_TOKENS
from .options import ARCHS, TEXT_ARCHS, BenchSize


def build_model(arch: str, size: BenchSize, resolution: int, num_layers: int | None = None) -> nn.Module:
    """A randomly initialised whole model of `arch` (a model arch, or the model an "*-attn" arch comes from)."""
    from diffusers import DiTTransformer2DModel, PixArtTransformer2DModel, SanaTransformer2DModel

    from ..models.transformer_lit import LiTTransformer2DModel

    layers = size.depth if num_layers is None else num_layers
    latent = resolution // 8
    common = dict(
        num_attention_heads=size.heads,
        attention_head_dim=size.head_dim,
        in_channels=IN_CHANNELS,
        num_layers=layers,
        sample_size=latent,
        patch_size=PATCH,
    )
    base = arch.removesuffix("-attn")
    if base == "lit":
        return LiTTransformer2DModel(**common, linear_attention_heads=size.lit_heads, dwc_kernel_size=DWC_KERNEL)
    if base == "dit":
        return DiTTransformer2DModel(**common, out_channels=OUT_CHANNELS)
    text = dict(cross_attention_dim=size.width, caption_channels=CAPTION_CHANNELS.get(arch), out_channels=OUT_CHANNELS)
    if arch == "lit-t2i":
        return LiTTransformer2DModel(
            **common,
            **text,
            norm_type="ada_norm_single",
            norm_eps=1e-6,
            use_additional_conditions=False,
            linear_attention_heads=size.lit_heads,
            dwc_kernel_size=DWC_KERNEL,
        )
    if arch == "pixart":
        return PixArtTransformer2DModel(**common, **text, use_additional_conditions=False)
    if arch == "sana":
        return SanaTransformer2DModel(
            in_channels=IN_CHANNELS,
            out_channels=OUT_CHANNELS,
            num_attention_heads=size.width // SANA_HEAD_DIM,
            attention_head_dim=SANA_HEAD_DIM,
            num_layers=layers,
            num_cross_attention_heads=size.heads,
            cross_attention_head_dim=size.head_dim,
            cross_attention_dim=size.width,
            caption_channels=CAPTION_CHANNELS["sana"],
            sample_size=latent,
            patch_size=PATCH,
        )
    raise ValueError(f"Unknown arch {arch!r}; choose one of {ARCHS}.")


@contextlib.contextmanager
def quiet_diffusers():
    """Silence diffusers' warnings about casting float32 modules, which these randomly built models do not have."""
    from diffusers.utils import logging as diffusers_logging

    verbosity = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()
    try:
        yield
    finally:
        diffusers_logging.set_verbosity(verbosity)


def build(arch, size, resolution, num_layers, device: torch.device, dtype: torch.dtype, backend: str) -> nn.Module:
    """`build_model` initialised on `device`, cast to `dtype`, in eval mode; LiT's linear attention by `backend`."""
    with quiet_diffusers(), device:
        model = build_model(arch, size, resolution, num_layers).to(device=device, dtype=dtype).eval()
    if hasattr(model, "set_linear_attention_backend"):
        model.set_linear_attention_backend(backend)
    return model


def make_runner(
    arch: str,
    model: nn.Module,
    resolution: int,
    batch: int = 1,
    scope: str = "block",
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
) -> Callable[[], torch.Tensor]:
    """
    A zero-argument forward of `model`'s first block (`scope="block"`; its self-attention for "*-attn" archs) or of
    the whole model (`scope="model"`) on random inputs of `resolution` pixels: (B, N, D) tokens for blocks,
    (B, 4, latent, latent) latents for models.
    """
    gen = torch.Generator().manual_seed(seed)
    side = resolution // 8 // PATCH
    tokens = side * side

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen).to(device=device, dtype=dtype)

    width = model.config.num_attention_heads * model.config.attention_head_dim
    timestep = torch.full((batch,), 500, device=device)
    text = rand(batch, TEXT_TOKENS, width) if arch in TEXT_ARCHS else None
    if scope == "model":
        latents = rand(batch, IN_CHANNELS, side * PATCH, side * PATCH)
        if arch in ("lit", "dit"):
            labels = torch.arange(batch, device=device) % 1000
            return lambda: model(latents, timestep=timestep, class_labels=labels).sample
        caption = rand(batch, TEXT_TOKENS, CAPTION_CHANNELS[arch])
        if arch == "sana":
            return lambda: model(latents, encoder_hidden_states=caption, timestep=timestep).sample
        extra = {"added_cond_kwargs": {"resolution": None, "aspect_ratio": None}} if arch == "pixart" else {}
        return lambda: model(latents, encoder_hidden_states=caption, timestep=timestep, **extra).sample
    if scope != "block":
        raise ValueError(f"`scope` must be 'block' or 'model', got {scope!r}.")

    block = model.transformer_blocks[0]
    hidden = rand(batch, tokens, width)
    if arch == "lit-attn":
        return lambda: block.attn1(hidden, side, side)
    if arch == "dit-attn":
        return lambda: block.attn1(hidden)
    if arch == "lit":
        conditioning = rand(batch, width)
        return lambda: block(hidden, conditioning, side, side)
    if arch == "dit":
        labels = torch.arange(batch, device=device) % 1000
        return lambda: block(hidden, timestep=timestep, class_labels=labels)
    modulation = rand(batch, 6 * width)
    if arch == "lit-t2i":
        return lambda: block(hidden, modulation, side, side, encoder_hidden_states=text)
    if arch == "pixart":
        return lambda: block(hidden, encoder_hidden_states=text, timestep=modulation)
    if arch == "sana":
        return lambda: block(hidden, encoder_hidden_states=text, timestep=modulation, height=side, width=side)
    raise ValueError(f"Unknown arch {arch!r}; choose one of {ARCHS}.")


def compile_target(arch: str, model: nn.Module, scope: str) -> nn.Module:
    """What a runner of `make_runner` calls: the model, its first block, or that block's self-attention."""
    if scope == "model":
        return model
    block = model.transformer_blocks[0]
    return block.attn1 if arch.endswith("-attn") else block
