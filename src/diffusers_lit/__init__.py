"""diffusers_lit: LiT, a simple linear diffusion transformer, as a Hugging Face diffusers extension."""

__version__ = "0.1.0"

from .models import (  # noqa: E402
    LIT_PRESETS,
    LiTLinearAttention,
    LiTLinearAttnProcessor,
    LiTLinearAttnTritonProcessor,
    LiTTransformer2DModel,
    lit_preset,
)
from .pipelines import LiTPipeline, LiTTextToImagePipeline  # noqa: E402

__all__ = [
    "LIT_PRESETS",
    "LiTLinearAttention",
    "LiTLinearAttnProcessor",
    "LiTLinearAttnTritonProcessor",
    "LiTPipeline",
    "LiTTextToImagePipeline",
    "LiTTransformer2DModel",
    "lit_preset",
]
