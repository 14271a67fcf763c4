from .linear_attention import (
    LiTLinearAttention,
    LiTLinearAttnProcessor,
    LiTLinearAttnTritonProcessor,
    linear_attention,
)
from .transformer_lit import LIT_PRESETS, LiTTransformer2DModel, LiTTransformerBlock, lit_preset

__all__ = [
    "LIT_PRESETS",
    "LiTLinearAttention",
    "LiTLinearAttnProcessor",
    "LiTLinearAttnTritonProcessor",
    "LiTTransformer2DModel",
    "LiTTransformerBlock",
    "linear_attention",
    "lit_preset",
]
