"""Hybrid knowledge distillation of LiT students: losses, data and caches, checkpoints, validation.

`examples/distill_lit.py` is the accelerate loop over these pieces.
"""

from .checkpointing import (
    check_output_dir_writable,
    check_resume_compatible,
    list_checkpoints,
    prune_checkpoints,
    read_training_state,
    resolve_checkpoint,
    write_training_state,
)
from .data import (
    TrainingData,
    build_training_data,
    cached_training_data,
    check_dataset_columns,
    dataset_class_names,
    global_batch_indices,
    load_image_dataset,
    module_fingerprint,
    preprocess_image,
    step_generator,
)
from .distillation import (
    Teacher,
    check_teacher_student,
    config_signature,
    convert_teacher,
    drop_conditions,
    load_student,
    load_teacher,
    model_prediction,
    resolution_conditions,
    uses_additional_conditions,
)
from .losses import (
    DiffusionSchedule,
    diffusion_loss,
    discretized_gaussian_log_likelihood,
    hybrid_distillation_loss,
    normal_kl,
    variational_bound,
)
from .validation import log_validation_grid, save_validation_grid, validation_grid

__all__ = [
    "DiffusionSchedule",
    "Teacher",
    "TrainingData",
    "build_training_data",
    "cached_training_data",
    "check_dataset_columns",
    "check_output_dir_writable",
    "check_resume_compatible",
    "check_teacher_student",
    "config_signature",
    "convert_teacher",
    "dataset_class_names",
    "diffusion_loss",
    "discretized_gaussian_log_likelihood",
    "drop_conditions",
    "global_batch_indices",
    "hybrid_distillation_loss",
    "list_checkpoints",
    "load_image_dataset",
    "load_student",
    "load_teacher",
    "log_validation_grid",
    "model_prediction",
    "module_fingerprint",
    "normal_kl",
    "preprocess_image",
    "prune_checkpoints",
    "read_training_state",
    "resolution_conditions",
    "resolve_checkpoint",
    "save_validation_grid",
    "step_generator",
    "uses_additional_conditions",
    "validation_grid",
    "variational_bound",
    "write_training_state",
]
