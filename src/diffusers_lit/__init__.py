"""diffusers_lit: LiT, a simple linear diffusion transformer, as a Hugging Face diffusers extension.

The public classes are imported on first use (as diffusers does), so that importing a light module of the
package, such as the command line's parser, does not load torch and diffusers.
"""

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "LIT_PRESETS": "models",
    "LiTLinearAttention": "models",
    "LiTLinearAttnProcessor": "models",
    "LiTLinearAttnTritonProcessor": "models",
    "LiTTransformer2DModel": "models",
    "lit_preset": "models",
    "LiTPipeline": "pipelines",
    "LiTTextToImagePipeline": "pipelines",
}
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

if TYPE_CHECKING:
    from .models import (
        LIT_PRESETS,
        LiTLinearAttention,
        LiTLinearAttnProcessor,
        LiTLinearAttnTritonProcessor,
        LiTTransformer2DModel,
        lit_preset,
    )
    from .pipelines import LiTPipeline, LiTTextToImagePipeline


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'diffusers_lit' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value
