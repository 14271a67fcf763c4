from .pipeline_lit import LiTPipeline
from .pipeline_lit_t2i import LiTTextToImagePipeline

PIPELINES = {cls.__name__: cls for cls in (LiTPipeline, LiTTextToImagePipeline)}

__all__ = ["PIPELINES", "LiTPipeline", "LiTTextToImagePipeline"]
