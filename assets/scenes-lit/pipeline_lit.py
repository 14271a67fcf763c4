"""diffusers' entry to this LiT pipeline.

`DiffusionPipeline.from_pretrained(..., trust_remote_code=True)` imports its class from the diffusers_lit package
(`pip install diffusers_lit`); diffusers_lit's own loaders never run this file."""

from diffusers_lit import LiTPipeline, LiTTextToImagePipeline

__all__ = ["LiTPipeline", "LiTTextToImagePipeline"]
