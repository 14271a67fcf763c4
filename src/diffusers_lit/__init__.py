"""diffusers_lit: LiT, a simple linear diffusion transformer, as a Hugging Face diffusers extension."""

from .models import LIT_PRESETS, LiTLinearAttention, LiTTransformer2DModel, lit_preset

__version__ = "0.1.0"

__all__ = ["LIT_PRESETS", "LiTLinearAttention", "LiTTransformer2DModel", "lit_preset"]
