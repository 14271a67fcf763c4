"""diffusers_lit: LiT, a simple linear diffusion transformer, as a Hugging Face diffusers extension."""

__version__ = "0.1.0"

from .models import LIT_PRESETS, LiTLinearAttention, LiTTransformer2DModel, lit_preset  # noqa: E402
from .pipelines import LiTPipeline, LiTTextToImagePipeline  # noqa: E402

__all__ = [
    "LIT_PRESETS",
    "LiTLinearAttention",
    "LiTPipeline",
    "LiTTextToImagePipeline",
    "LiTTransformer2DModel",
    "lit_preset",
]
