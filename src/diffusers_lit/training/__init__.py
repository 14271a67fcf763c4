"""Hybrid knowledge distillation of LiT students: losses, data and caches, checkpoints, validation, and the
accelerate loop over them (`distill`, run by `examples/distill_lit.py`; `train_dit` by `examples/train_dit.py`).
"""

from ..image_datasets import (
    check_dataset_columns,
    dataset_class_names,
    load_image_dataset,
    parse_resolution,
    preprocess_image,
)
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
    global_batch_indices,
    module_fingerprint,
    step_generator,
)
from .distillation import (
    check_teacher_student,
    config_signature,
    convert_teacher,
    disable_label_dropout,
    dit_embedder_copies,
    drop_conditions,
    load_student,
    load_teacher,
    load_teacher_and_student,
    model_prediction,
    resolution_conditions,
    sum_shared_gradients,
    uses_additional_conditions,
)
from .from_scratch import initial_dit_pipeline, parse_dit_args, train_dit
from .loop import distill, parse_distill_args, weights_hash
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
    "disable_label_dropout",
    "discretized_gaussian_log_likelihood",
    "distill",
    "dit_embedder_copies",
    "drop_conditions",
    "global_batch_indices",
    "hybrid_distillation_loss",
    "initial_dit_pipeline",
    "list_checkpoints",
    "load_image_dataset",
    "load_student",
    "load_teacher",
    "load_teacher_and_student",
    "log_validation_grid",
    "model_prediction",
    "module_fingerprint",
    "normal_kl",
    "parse_distill_args",
    "parse_dit_args",
    "parse_resolution",
    "preprocess_image",
    "prune_checkpoints",
    "read_training_state",
    "resolution_conditions",
    "resolve_checkpoint",
    "save_validation_grid",
    "step_generator",
    "sum_shared_gradients",
    "train_dit",
    "uses_additional_conditions",
    "validation_grid",
    "variational_bound",
    "weights_hash",
    "write_training_state",
]
