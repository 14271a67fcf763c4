from .pipeline_lit import LiTPipeline
from .pipeline_lit_t2i import LiTTextToImagePipeline
from .schedulers import SCHEDULERS, scheduler_from_name

__all__ = ["SCHEDULERS", "LiTPipeline", "LiTTextToImagePipeline", "scheduler_from_name"]
