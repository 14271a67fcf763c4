"""The LiT transformer of this folder for diffusers' loader: the class of pipeline_lit.py."""

from .pipeline_lit import LiTTransformer2DModel

__all__ = ["LiTTransformer2DModel"]
