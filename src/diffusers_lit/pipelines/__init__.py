from .pipeline_lit import LiTPipeline
from .pipeline_lit_t2i import LiTTextToImagePipeline
from .schedulers import SCHEDULERS, scheduler_from_name

PIPELINES = {cls.__name__: cls for cls in (LiTPipeline, LiTTextToImagePipeline)}

__all__ = ["PIPELINES", "SCHEDULERS", "LiTPipeline", "LiTTextToImagePipeline", "scheduler_from_name"]
