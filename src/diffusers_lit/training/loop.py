"""The accelerate training loop: hybrid knowledge distillation of a LiT student from a frozen DiT / PixArt teacher,
or (`from_scratch`) a DiT trained with DiT's own loss. `examples/distill_lit.py` and `examples/train_dit.py` call it.

Per step: x_0 from the cached data (VAE latents or pixels), t uniform, noise eps; the teacher (eval, no grad) and
the student see the same x_t, t and condition, with classifier-free-guidance dropout applied once to both; the
loss is MSE(eps_s, eps) + L_vlb + lambda_noise * MSE(eps_s, eps_t) + lambda_var * MSE(v_s, v_t).
"""

import argparse
import hashlib
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import DistributedType, ProjectConfiguration, set_seed
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from huggingface_hub.constants import HF_HOME
from tqdm.auto import tqdm

from ..choices import CHECKPOINT_WEIGHTS, INHERIT, block_list, finite_float
from ..conversion import default_scheduler, lit_pipeline, load_source
from ..hardware import cpu_has_native_bf16
from ..hub import read_card_info
from ..image_datasets import check_dataset_columns, dataset_class_names, load_image_dataset, parse_resolution
from ..pipelines import LiTPipeline, LiTTextToImagePipeline
from ..pipelines.lora import LORA_TARGET_MODULES
from ..pipelines.pipeline_lit import vae_scale_factor
from .checkpointing import (
    check_no_pickled_objects,
    check_resume_compatible,
    check_run_folder,
    checkpoint_step,
    clear_previous_run,
    load_ema,
    prune_checkpoints,
    resolve_checkpoint,
    save_ema,
    write_training_state,
)
from .data import (
    TrainingData,
    cached_training_data,
    caption_text,
    global_batch_indices,
    module_fingerprint,
    step_generator,
)
from .distillation import (
    config_signature,
    disable_label_dropout,
    dit_embedder_copies,
    drop_conditions,
    load_teacher_and_student,
    model_prediction,
    resolution_conditions,
    sum_shared_gradients,
    uses_additional_conditions,
)
from .losses import DiffusionSchedule, hybrid_distillation_loss
from .validation import log_validation_grid, save_validation_grid, validation_grid

logger = get_logger(__name__, log_level="INFO")
LOSS_TERMS = ("loss", "mse", "vlb", "noise_kd", "variance_kd")
SECRET_ARGS = ("hub_token",)  # never written to a checkpoint, a tracker or a log
EMA_SCHEDULES = ("constant", "warmup")


def ema_text(decay: float, schedule: str) -> str:
    """How a model card states the EMA weights."""
    if schedule == "constant":
        return f", EMA weights (constant decay {decay})"
    return f", EMA weights (diffusers' warmup: decay min((1 + s) / (10 + s), {decay}) at step s)"


def parse_distill_args(argv: list[str] | None = None, *, from_scratch: bool = False) -> argparse.Namespace:
    """The flags of `examples/distill_lit.py` (`--help` lists them), checked. `from_scratch` (examples/train_dit.py):
    the loop's flags without a teacher, its conversion or its loss weights (teacher None, lambdas 0)."""
    parser = argparse.ArgumentParser(description="Distil a LiT student from a DiT / PixArt teacher.")
    if from_scratch:
        parser.set_defaults(
            teacher=None, student=None, init_from=None, teacher_components=None, lambda_noise=0.0, lambda_var=0.0
        )
    else:  # Models.
        parser.add_argument("--teacher", required=True, help="Hub id, folder or original checkpoint of the teacher.")
        parser.add_argument(
            "--student", default=None, help="LiT pipeline folder or Hub id; omitted: convert the teacher."
        )
        parser.add_argument("--revision", default=None, help="Hub revision of the teacher.")
        parser.add_argument(
            "--teacher_components", default=None, help="Pipeline to take the VAE / scheduler / text encoder from."
        )
        parser.add_argument(
            "--teacher_num_attention_heads",
            type=int,
            default=None,
            help="Heads of an original teacher checkpoint of a width other than DiT's / PixArt's.",
        )
        parser.add_argument(
            "--teacher_checkpoint_weights",
            default="ema",
            choices=list(CHECKPOINT_WEIGHTS),
            help="Weights of a training checkpoint teacher ({model, ema, ...}, DiT's train.py): ema or model.",
        )
        parser.add_argument(
            "--linear_attention_heads", type=int, default=None, help="On-the-fly conversion: LiT heads."
        )
        parser.add_argument("--dwc_kernel_size", type=int, default=5, help="On-the-fly conversion: DWC kernel.")
        parser.add_argument(
            "--inherit",
            default="none",
            choices=list(INHERIT),
            help="On-the-fly conversion: self-attention projections to copy from the teacher.",
        )
        parser.add_argument(
            "--softmax_blocks",
            type=block_list,
            default=(),
            metavar="I,J",
            help="On-the-fly conversion: blocks that keep the teacher's softmax self-attention (a hybrid LiT).",
        )
    # Data.
    parser.add_argument("--dataset", required=True, help="Hub dataset name, image folder, or save_to_disk folder.")
    parser.add_argument("--dataset_config_name", default=None)
    parser.add_argument("--dataset_split", default="train")
    parser.add_argument("--image_column", default="image")
    parser.add_argument("--label_column", default="label", help="Class ids (class-conditional teachers).")
    parser.add_argument("--caption_column", default="text", help="Captions (text-to-image teachers).")
    parser.add_argument(
        "--resolution",
        type=parse_resolution,
        default=None,
        help="Training size in pixels, N or HEIGHTxWIDTH (e.g. 32x64); default the teacher's image size, else the "
        "model's square size.",
    )
    parser.add_argument("--center_crop", action="store_true", help="Center crop (default: a random crop per image).")
    parser.add_argument("--random_flip", action="store_true", help="Mirror half the examples, drawn per step.")
    parser.add_argument("--max_sequence_length", type=int, default=None, help="Caption tokens; default min(300, max).")
    parser.add_argument("--cache_dir", default=None, help="Where latents / text embeddings are cached.")
    parser.add_argument("--cfg_dropout_prob", type=finite_float, default=0.1, help="Class / caption dropout for CFG.")
    # Loss.
    if not from_scratch:
        parser.add_argument(
            "--lambda_noise", type=finite_float, default=0.5, help="Weight of MSE(eps_student, eps_teacher)."
        )
        parser.add_argument(
            "--lambda_var", type=finite_float, default=0.05, help="Weight of MSE(v_student, v_teacher)."
        )
    parser.add_argument("--vlb_scale", type=finite_float, default=1.0, help="Weight of L_vlb (DiT: 1).")
    # Optimisation.
    parser.add_argument("--train_batch_size", type=int, default=32, help="Per process.")
    parser.add_argument("--max_train_steps", type=int, default=None)
    parser.add_argument("--num_train_epochs", type=int, default=None, help="Used when --max_train_steps is not.")
    parser.add_argument("--gradient_accumulation_steps", type=int, default=1)
    parser.add_argument("--gradient_checkpointing", action="store_true")
    parser.add_argument(
        "--lora_rank",
        type=int,
        default=None,
        help="Train LoRA adapters of this rank on a frozen student (attention projections) instead of the whole "
        "student; saves pytorch_lora_weights.safetensors (diffusers' LoRA format). With --lambda_noise 0 "
        "--lambda_var 0: plain LoRA fine-tuning.",
    )
    parser.add_argument(
        "--lora_alpha", type=finite_float, default=None, help="LoRA scale numerator; default the rank."
    )
    parser.add_argument(
        "--learning_rate", type=finite_float, default=None, help="AdamW; default 1e-4 (class), 2e-5 (text)."
    )
    parser.add_argument("--lr_scheduler", default="constant", help="diffusers' get_scheduler names.")
    parser.add_argument("--lr_warmup_steps", type=int, default=0)
    parser.add_argument("--adam_beta1", type=finite_float, default=0.9)
    parser.add_argument("--adam_beta2", type=finite_float, default=0.999)
    parser.add_argument("--adam_weight_decay", type=finite_float, default=0.0)
    parser.add_argument("--adam_epsilon", type=finite_float, default=1e-8)
    parser.add_argument(
        "--max_grad_norm",
        type=finite_float,
        default=None,
        help="Clip the gradient norm (0: off). Default: off for class-conditional (DiT) runs, as DiT trains; 1.0 "
        "for text-to-image runs.",
    )
    parser.add_argument("--use_ema", action="store_true")
    parser.add_argument("--ema_decay", type=finite_float, default=0.9999)
    parser.add_argument(
        "--ema_schedule",
        choices=EMA_SCHEDULES,
        default="constant",
        help="constant: the decay at every step from the second on, as DiT and PixArt; warmup: diffusers' "
        "EMAModel default, decay min((1 + s) / (10 + s), --ema_decay) at step s.",
    )
    parser.add_argument("--mixed_precision", default=None, choices=["no", "fp16", "bf16"])
    parser.add_argument("--allow_tf32", action="store_true", help="TF32 matmuls and convolutions on Ampere+ GPUs.")
    parser.add_argument("--seed", type=int, default=0)
    # Output, checkpoints, logging.
    parser.add_argument("--output_dir", required=True)
    parser.add_argument(
        "--overwrite_output_dir",
        action="store_true",
        help="Remove an earlier run's checkpoints, final pipeline and logs from --output_dir first (without it, a "
        "folder holding a run is refused unless --resume_from_checkpoint is given).",
    )
    parser.add_argument("--checkpointing_steps", type=int, default=500)
    parser.add_argument("--checkpoints_total_limit", type=int, default=None)
    parser.add_argument("--resume_from_checkpoint", default=None, help='"latest" or a checkpoint folder.')
    parser.add_argument("--report_to", default="tensorboard", help='"tensorboard", "wandb", "all" or "none".')
    parser.add_argument("--logging_dir", default="logs", help="Inside --output_dir.")
    parser.add_argument(
        "--log_per_process",
        action="store_true",
        help="Also write each process's batch indices, losses and final weight hash (checks of data parallelism).",
    )
    parser.add_argument("--validation_steps", type=int, default=None, help="Sample a validation grid every N steps.")
    parser.add_argument("--validation_class_labels", type=int, nargs="*", default=None)
    parser.add_argument("--validation_prompts", nargs="*", default=None)
    parser.add_argument("--validation_inference_steps", type=int, default=25)
    parser.add_argument("--validation_guidance_scale", type=finite_float, default=4.0)
    parser.add_argument("--push_to_hub", action="store_true")
    parser.add_argument("--hub_model_id", default=None)
    parser.add_argument("--hub_token", default=None)
    args = parser.parse_args(argv)

    if args.max_train_steps is None and args.num_train_epochs is None:
        parser.error("Give --max_train_steps or --num_train_epochs.")
    for name in ("train_batch_size", "gradient_accumulation_steps", "checkpointing_steps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1.")
    if not 0.0 <= args.cfg_dropout_prob < 1.0:
        parser.error("--cfg_dropout_prob must be in [0, 1).")
    if args.max_train_steps is not None and args.max_train_steps < 1:
        parser.error(f"--max_train_steps must be at least 1, got {args.max_train_steps}.")
    if args.num_train_epochs is not None and args.num_train_epochs <= 0:
        parser.error(f"--num_train_epochs must be positive, got {args.num_train_epochs}.")
    if args.learning_rate is not None and not args.learning_rate > 0:
        parser.error(f"--learning_rate must be positive, got {args.learning_rate}.")
    if args.checkpoints_total_limit is not None and args.checkpoints_total_limit < 1:
        parser.error("--checkpoints_total_limit must be at least 1 (leave it out to keep every checkpoint).")
    if args.lora_rank is not None and args.lora_rank < 1:
        parser.error(f"--lora_rank must be at least 1, got {args.lora_rank}.")
    if args.lora_rank and (args.use_ema or args.push_to_hub):
        parser.error("--lora_rank trains adapters only: --use_ema and --push_to_hub do not apply to them.")
    if args.resume_from_checkpoint and args.overwrite_output_dir:
        parser.error("--resume_from_checkpoint and --overwrite_output_dir contradict each other: choose one.")
    if args.max_grad_norm is not None and args.max_grad_norm < 0:
        parser.error("--max_grad_norm must be 0 (off) or positive.")
    if not 0.0 < args.ema_decay < 1.0:
        parser.error("--ema_decay must be in (0, 1).")
    return args


def distill(args: argparse.Namespace, *, from_scratch: bool = False) -> Path:
    """Distil `args.student` from `args.teacher` (flags of `parse_distill_args`); returns the output folder, which
    holds the final pipeline. `from_scratch` (examples/train_dit.py): no teacher; train the student pipeline's own
    transformer, which may be a DiT or PixArt, with the plain diffusion loss. Read top to bottom as diffusers'
    training scripts: set up, models, data, optimizer, resume, the loop, the final pipeline."""
    # 1. Set up: the output folder checked before anything is loaded, then accelerate.
    if from_scratch and (args.lambda_noise != 0 or args.lambda_var != 0):
        raise ValueError("Training from scratch has no teacher to distil from: lambda_noise and lambda_var must be 0.")
    output_dir = check_run_folder(
        args.output_dir, resume=args.resume_from_checkpoint, overwrite=args.overwrite_output_dir
    )
    accelerator = Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        log_with=None if args.report_to == "none" else args.report_to,
        project_config=ProjectConfiguration(
            project_dir=str(output_dir), logging_dir=str(output_dir / args.logging_dir)
        ),
    )
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    logger.info(accelerator.state, main_process_only=False)
    if accelerator.distributed_type == DistributedType.FSDP and (args.use_ema or args.validation_steps):
        raise ValueError(
            "--use_ema and --validation_steps need the student's full weights on every process: use DDP or "
            "DeepSpeed ZeRO-1/2 with them, not FSDP (see examples/accelerate_configs/)."
        )
    if accelerator.mixed_precision == "bf16" and accelerator.device.type == "cpu" and not cpu_has_native_bf16():
        logger.warning(
            "bf16 on a CPU without bf16 instructions (AVX512-BF16 / AMX-BF16) is emulated: training runs several "
            "times slower than in fp32. Pass --mixed_precision no."
        )
    if args.allow_tf32:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    set_seed(args.seed)  # fresh weights of an on-the-fly conversion; the loop draws from its own generators
    device = accelerator.device
    weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(accelerator.mixed_precision, torch.float32)

    # 2. Models: the teacher (none from scratch) and the student; `source` lends the VAE, scheduler, text encoder
    # and labels (the teacher, or from scratch the student's own pipeline).
    if from_scratch:
        teacher, source = None, load_source(args.student)
        student, student_components = source.transformer, {}
    else:
        teacher, student, student_components = load_teacher_and_student(
            args.teacher,
            args.student,
            revision=args.revision,
            token=args.hub_token,
            teacher_components=args.teacher_components,
            teacher_num_attention_heads=args.teacher_num_attention_heads,
            teacher_checkpoint_weights=args.teacher_checkpoint_weights,
            linear_attention_heads=args.linear_attention_heads,
            dwc_kernel_size=args.dwc_kernel_size,
            inherit=args.inherit,
            softmax_blocks=args.softmax_blocks,
            seed=args.seed,
            lambda_var=args.lambda_var,
        )
        source = teacher
    disable_label_dropout(student)  # classifier-free guidance dropout is the loop's, applied once to both models
    embedder_copies = dit_embedder_copies(student)
    text_to_image = source.is_text_to_image
    vae = source.components.get("vae")
    tokenizer, text_encoder = source.components.get("tokenizer"), source.components.get("text_encoder")
    if vae is None and student.config.in_channels not in (1, 3):
        raise ValueError(
            f"The teacher works on {student.config.in_channels}-channel latents but comes without a VAE: pass "
            "--teacher_components with a pipeline that has its VAE (e.g. facebook/DiT-XL-2-256)."
        )
    if text_to_image and (tokenizer is None or text_encoder is None):
        raise ValueError(f"The text-to-image model {source.name} has no tokenizer / text encoder.")
    # DiT and PixArt train on DDPM's 1000 linear betas (diffusers' defaults) when the teacher names no scheduler.
    teacher_scheduler = source.components.get("scheduler") or default_scheduler(
        "pixart" if text_to_image else "dit", latent=vae is not None
    )
    scheduler = student_components.get("scheduler") or teacher_scheduler  # the saved pipeline's sampler
    schedule = DiffusionSchedule.from_scheduler(teacher_scheduler)
    vae_scale = vae_scale_factor(vae)
    resolution = training_resolution(
        args.resolution, source.image_size, student.config.sample_size, vae_scale, student.config.patch_size
    )
    channels = vae.config.in_channels if vae is not None else student.config.in_channels
    learning_rate = args.learning_rate if args.learning_rate is not None else (2e-5 if text_to_image else 1e-4)
    max_grad_norm = args.max_grad_norm if args.max_grad_norm is not None else (1.0 if text_to_image else 0.0)

    # 3. Data: columns checked before any work; latents / pixels and text embeddings cached once (the main process
    # writes, the others read).
    dataset = load_image_dataset(args.dataset, split=args.dataset_split, config_name=args.dataset_config_name)
    label_column = None if text_to_image else args.label_column
    caption_column = args.caption_column if text_to_image else None
    check_dataset_columns(dataset, args.image_column, label_column, caption_column)
    id2label = source.id2label
    if id2label is None and not text_to_image:
        names = dataset_class_names(dataset, label_column)
        id2label = dict(enumerate(names)) if names else None

    # Resuming: the checkpoint must come from this teacher, student and data layout (from scratch: any teacher
    # recorded, as earlier runs recorded their own model in its place).
    signature = {
        "student": config_signature(student),
        "teacher": config_signature(teacher.transformer) if teacher is not None else None,
        "data": {"kind": "latents" if vae is not None else "pixels", "resolution": resolution, "channels": channels},
    }
    checkpoint = resolve_checkpoint(output_dir, args.resume_from_checkpoint)
    if checkpoint is not None:
        recorded = check_resume_compatible(checkpoint, signature)
        now = {**vars(args), "num_processes": accelerator.num_processes}
        keys = ("train_batch_size", "num_processes", "gradient_accumulation_steps", "seed")
        changed = [key for key in keys if recorded.get("run", {}).get(key) != now[key]]
        if changed:
            logger.warning(f"Resuming with other {', '.join(changed)}: the data order will differ from the run's.")
    elif args.resume_from_checkpoint:
        logger.info(f"No checkpoint in {output_dir}: starting a new run.")

    for module in (vae, text_encoder):
        if module is not None:
            module.requires_grad_(False).eval().to(device, dtype=torch.float32)  # the cache is computed in float32
    max_sequence_length = args.max_sequence_length or source.max_sequence_length
    max_sequence_length = max_sequence_length or (min(300, tokenizer.model_max_length) if tokenizer else None)
    settings = {
        "image_column": args.image_column,
        "label_column": label_column,
        "caption_column": caption_column,
        "resolution": resolution,
        "channels": channels,
        "center_crop": args.center_crop,
        "random_flip": args.random_flip,
        "vae": vae,
        "tokenizer": tokenizer,
        "text_encoder": text_encoder,
        "max_sequence_length": max_sequence_length,
        "seed": args.seed,
    }
    cache_dir = args.cache_dir or str(Path(HF_HOME) / "diffusers_lit" / "training_cache")
    with accelerator.main_process_first():
        data, cache_folder, from_cache = cached_training_data(
            dataset, cache_dir=cache_dir, key_settings=cache_key_settings(settings), device=device, **settings
        )
    logger.info(f"{'Read' if from_cache else 'Cached'} {len(data)} examples ({data.kind}) in {cache_folder}")
    text_settings = None
    if text_to_image:  # what the saved pipeline records of this training: caption length, non-square size
        size = None if isinstance(resolution, int) else tuple(resolution)
        text_settings = {"max_sequence_length": max_sequence_length, "image_size": size}
    if data.labels is not None and int(data.labels.max()) >= student.config.num_embeds_ada_norm:
        raise ValueError(
            f"The dataset has class ids up to {int(data.labels.max())}, but the models have "
            f"{student.config.num_embeds_ada_norm} classes."
        )
    global_batch = args.train_batch_size * accelerator.num_processes * args.gradient_accumulation_steps
    max_train_steps = args.max_train_steps or math.ceil(args.num_train_epochs * len(data) / global_batch)

    # 4. Models on the device (the teacher frozen in eval mode, without internal label dropout, and only where a KD
    # term needs it), the optimizer, its schedule and the EMA of the student.
    needs_teacher = teacher is not None and (args.lambda_noise != 0 or args.lambda_var != 0)
    teacher_model = teacher.transformer.requires_grad_(False).eval().to(device) if needs_teacher else None
    for module in (teacher_model, vae, text_encoder):
        if module is not None and module.dtype != weight_dtype:
            module.to(dtype=weight_dtype)
    student.train()
    if args.gradient_checkpointing:
        student.enable_gradient_checkpointing()
    if args.lora_rank:
        add_lora_adapters(student, args.lora_rank, args.lora_alpha)
    optimizer = torch.optim.AdamW(
        [param for param in student.parameters() if param.requires_grad],
        lr=learning_rate,
        betas=(args.adam_beta1, args.adam_beta2),
        weight_decay=args.adam_weight_decay,
        eps=args.adam_epsilon,
    )
    lr_scheduler = get_scheduler(
        args.lr_scheduler,
        optimizer=optimizer,
        num_warmup_steps=args.lr_warmup_steps * accelerator.num_processes,
        num_training_steps=max_train_steps * accelerator.num_processes,
    )
    ema = make_ema(student, args.ema_decay, args.ema_schedule) if args.use_ema else None
    if ema is not None:
        ema.to(device)
    student, optimizer, lr_scheduler = accelerator.prepare(student, optimizer, lr_scheduler)

    # 5. The run's record and trackers; resume.
    if args.overwrite_output_dir and accelerator.is_main_process:
        clear_previous_run(output_dir)
    accelerator.wait_for_everyone()
    run_record = {key: value for key, value in vars(args).items() if key not in SECRET_ARGS}  # never a token
    if accelerator.is_main_process:
        config = {key: value for key, value in run_record.items() if isinstance(value, int | float | str | bool)}
        accelerator.init_trackers("distill_lit", config=config)
    global_step = 0
    if checkpoint is not None:
        check_no_pickled_objects(checkpoint)
        if ema is not None:
            load_ema(ema, checkpoint)  # checked before accelerate's state is touched
            ema.to(device)
        accelerator.load_state(str(checkpoint))
        global_step = checkpoint_step(checkpoint)
        logger.info(f"Resumed from {checkpoint} at step {global_step}")

    null_class = None if text_to_image else accelerator.unwrap_model(student).config.num_embeds_ada_norm
    added_cond = uses_additional_conditions(accelerator.unwrap_model(student)) or (
        teacher is not None and uses_additional_conditions(teacher.transformer)
    )
    validation_items = _validation_inputs(args, data, dataset, text_to_image, id2label, student)
    logs_dir = output_dir / args.logging_dir
    logs_dir.mkdir(parents=True, exist_ok=True)
    run_record = {**run_record, "num_processes": accelerator.num_processes, "max_train_steps": max_train_steps}

    # 6. The loop: each optimisation step averages its terms over the accumulation steps, then over the processes.
    logger.info(
        f"Training {max_train_steps} steps of {global_batch} examples ({accelerator.num_processes} processes x "
        f"{args.train_batch_size} x {args.gradient_accumulation_steps} accumulation) on {len(data)} examples"
    )
    progress = tqdm(
        range(max_train_steps), initial=global_step, desc="Steps", disable=not accelerator.is_local_main_process
    )
    while global_step < max_train_steps:
        step_start = time.perf_counter()
        totals = torch.zeros(len(LOSS_TERMS), device=device)
        step_indices = []
        for micro in range(args.gradient_accumulation_steps):
            micro_step = global_step * args.gradient_accumulation_steps + micro
            generator = step_generator(args.seed, micro_step, accelerator.process_index)
            indices = global_batch_indices(
                len(data),
                micro_step,
                args.train_batch_size,
                accelerator.num_processes,
                accelerator.process_index,
                args.seed,
            )
            step_indices.extend(indices.tolist())
            x_start, timesteps, noise, x_t, condition = draw_micro_batch(
                data, indices, generator, schedule, args.cfg_dropout_prob, null_class, device
            )
            if added_cond:
                height, width = x_start.shape[-2] * vae_scale, x_start.shape[-1] * vae_scale
                condition["added_cond_kwargs"] = resolution_conditions(len(indices), height, width, device, x_t.dtype)

            with accelerator.accumulate(student):
                teacher_output = None
                if teacher_model is not None:
                    with torch.no_grad(), accelerator.autocast():
                        teacher_output = model_prediction(
                            teacher_model, x_t.to(weight_dtype), timesteps, cast_condition(condition, weight_dtype)
                        )
                terms = hybrid_distillation_loss(
                    model_prediction(student, x_t, timesteps, condition),
                    teacher_output,
                    noise,
                    x_start,
                    x_t,
                    timesteps,
                    schedule,
                    lambda_noise=args.lambda_noise,
                    lambda_var=args.lambda_var,
                    vlb_scale=args.vlb_scale,
                )
                accelerator.backward(terms["loss"])
                if accelerator.sync_gradients:
                    sum_shared_gradients(embedder_copies)  # a DiT's per-block embedder copies train as one
                if accelerator.sync_gradients and max_grad_norm > 0:
                    accelerator.clip_grad_norm_(student.parameters(), max_grad_norm)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            totals += torch.stack([terms[name].detach() for name in LOSS_TERMS]) / args.gradient_accumulation_steps

        if not accelerator.sync_gradients:
            raise RuntimeError("Gradient accumulation went out of step with the optimisation steps.")
        if ema is not None:
            ema.step(student.parameters())
        global_step += 1
        progress.update(1)

        local = {name: totals[i].item() for i, name in enumerate(LOSS_TERMS)}
        means = accelerator.gather(totals[None]).mean(dim=0)
        logs = {name: means[i].item() for i, name in enumerate(LOSS_TERMS)}
        logs["lr"] = lr_scheduler.get_last_lr()[0]
        logs["step_seconds"] = time.perf_counter() - step_start
        accelerator.log(logs, step=global_step)
        progress.set_postfix(loss=f"{logs['loss']:.4f}", lr=f"{logs['lr']:.2e}")
        if args.log_per_process:
            with open(logs_dir / f"losses-rank{accelerator.process_index}.jsonl", "a") as file:
                file.write(json.dumps({"step": global_step, "indices": step_indices, **local}) + "\n")
        if accelerator.is_main_process:
            with open(logs_dir / "metrics.jsonl", "a") as file:
                file.write(json.dumps({"step": global_step, **logs}) + "\n")

        if global_step % args.checkpointing_steps == 0 or global_step == max_train_steps:
            _save_checkpoint(accelerator, output_dir, global_step, args, signature, run_record, ema)
        if args.validation_steps and (global_step % args.validation_steps == 0 or global_step == max_train_steps):
            if accelerator.is_main_process and validation_items:
                _run_validation(
                    accelerator,
                    args,
                    student,
                    ema,
                    source,
                    scheduler,
                    id2label,
                    text_settings,
                    validation_items,
                    global_step,
                    output_dir,
                )
            accelerator.wait_for_everyone()
    progress.close()

    # 7. The final LiT pipeline (EMA weights when used) with its model card, or the LoRA adapters.
    accelerator.wait_for_everyone()
    if args.log_per_process:
        record = {
            "num_processes": accelerator.num_processes,
            "process_index": accelerator.process_index,
            "weights_sha256": weights_hash(accelerator.unwrap_model(student)),
        }
        (logs_dir / f"final-rank{accelerator.process_index}.json").write_text(json.dumps(record))
    state_dict = accelerator.get_state_dict(student)  # the full weights, also when FSDP / ZeRO-3 shard them
    if accelerator.is_main_process and args.lora_rank:
        from peft.utils import get_peft_model_state_dict

        pipeline_class = LiTTextToImagePipeline if text_to_image else LiTPipeline
        layers = get_peft_model_state_dict(accelerator.unwrap_model(student))
        pipeline_class.save_lora_weights(output_dir, transformer_lora_layers=layers)
        logger.info(f"Saved the LoRA adapters to {output_dir} (load them with pipe.load_lora_weights)")
    elif accelerator.is_main_process:
        final = type(accelerator.unwrap_model(student)).from_config(accelerator.unwrap_model(student).config)
        final.load_state_dict(state_dict)
        if ema is not None:
            ema.copy_to(final.parameters())
        pipe = _output_pipeline(final, source, scheduler, id2label, text_settings, dtype=torch.float32)
        earlier = read_card_info(Path(args.init_from)) if from_scratch and args.init_from else None
        pipe.card_info = {
            "base_model": None if teacher is None else teacher.name,
            "how_made": how_made_text(
                teacher.name if teacher is not None else None,
                args.dataset,
                continued_from=(args.init_from, earlier) if earlier is not None else None,
                steps=max_train_steps,
                batch=global_batch,
                learning_rate=learning_rate,
                lr_scheduler=args.lr_scheduler,
                ema=(args.ema_decay, args.ema_schedule) if ema is not None else None,
                max_grad_norm=max_grad_norm,
                lambdas=(args.lambda_noise, args.lambda_var),
            ),
            "training_steps": max_train_steps + (earlier.get("training_steps", 0) if earlier else 0),
            "batch_size": global_batch,
        }
        if text_to_image:  # the card's usage example: a caption of the training data, not a stock prompt
            pipe.card_info["example_prompt"] = caption_text(dataset[0][caption_column], caption_column)
        pipe.save_pretrained(output_dir)
        logger.info(f"Saved the {'trained' if teacher is None else 'distilled'} pipeline to {output_dir}")
        if args.push_to_hub:
            pipe.push_to_hub(args.hub_model_id or output_dir.name, token=args.hub_token)
    accelerator.end_training()
    return output_dir


def training_resolution(
    resolution: int | tuple[int, int] | None,
    image_size: list[int] | None,
    sample_size: int,
    vae_scale: int,
    patch_size: int,
) -> int | tuple[int, int]:
    """The training size in pixels: `resolution` if given, else the source's recorded (height, width) `image_size`,
    else the model's square `sample_size` x `vae_scale`; each side a multiple of `vae_scale` x `patch_size`."""
    resolution = resolution or (tuple(image_size) if image_size else None) or sample_size * vae_scale
    multiple = vae_scale * patch_size
    if any(side % multiple for side in ((resolution,) if isinstance(resolution, int) else resolution)):
        raise ValueError(f"--resolution {resolution} must be a multiple of {multiple} (VAE scale x patch size).")
    return resolution


def cache_key_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """What the cached training data made with `settings` (the keywords of `cached_training_data`) depends on, its
    key: the columns, size, crop and flip (mirrored latents are cached only with a VAE; pixels flip per step), the
    encoders' weights and the caption length (text only)."""
    return {
        **{key: settings[key] for key in ("image_column", "label_column", "caption_column", "resolution", "channels")},
        "center_crop": settings["center_crop"],
        "random_flip": settings["random_flip"] and settings["vae"] is not None,
        "crop_seed": None if settings["center_crop"] else settings["seed"],
        "vae": module_fingerprint(settings["vae"]),
        "text_encoder": module_fingerprint(settings["text_encoder"]),
        "max_sequence_length": settings["max_sequence_length"] if settings["caption_column"] else None,
    }


def add_lora_adapters(student: torch.nn.Module, rank: int, alpha: float | None) -> None:
    """Freeze the student and add trainable LoRA adapters of `rank` (scale `alpha` / rank, default 1) to its
    attention projections (`LORA_TARGET_MODULES`)."""
    from peft import LoraConfig

    student.requires_grad_(False)
    student.add_adapter(LoraConfig(r=rank, lora_alpha=alpha or rank, target_modules=list(LORA_TARGET_MODULES)))


def make_ema(student: torch.nn.Module, decay: float, schedule: str) -> EMAModel:
    """diffusers' EMAModel of the student: "constant" `decay` from the second step, as DiT and PixArt, or "warmup",
    diffusers' min((1 + s) / (10 + s), decay) at step s."""
    if schedule not in EMA_SCHEDULES:
        raise ValueError(f"`schedule` must be one of {list(EMA_SCHEDULES)}, got {schedule!r}.")
    min_decay = decay if schedule == "constant" else 0.0  # EMAModel clamps its decay to this
    return EMAModel(
        student.parameters(), decay=decay, min_decay=min_decay, model_cls=type(student), model_config=student.config
    )


def cast_condition(condition: dict[str, Any], dtype: torch.dtype) -> dict[str, Any]:
    """The condition for the teacher, in its dtype: floating-point tensors cast, ids and masks as they are, the
    additional conditions (PixArt-alpha's resolution and aspect ratio) kept."""
    cast = {
        key: value.to(dtype) if torch.is_floating_point(value) else value
        for key, value in condition.items()
        if isinstance(value, torch.Tensor)
    }
    if "added_cond_kwargs" in condition:
        cast["added_cond_kwargs"] = condition["added_cond_kwargs"]
    return cast


def how_made_text(
    teacher: str | None,
    dataset: str,
    *,
    steps: int,
    batch: int,
    learning_rate: float,
    lr_scheduler: str,
    ema: tuple[float, str] | None,
    max_grad_norm: float,
    lambdas: tuple[float, float],
    continued_from: tuple[str, dict[str, Any]] | None = None,
) -> str:
    """The model card's "How it was made" of a trained (`teacher` None) or distilled pipeline. `continued_from`: the
    folder a trained model started from (`--init_from`) and its card_info, whose story this one continues."""
    schedule = (
        f"{steps} steps of {batch} examples, AdamW lr {learning_rate} ({lr_scheduler})"
        f"{ema_text(*ema) if ema is not None else ''}, "
        f"{'gradient norm clipped at ' + str(max_grad_norm) if max_grad_norm > 0 else 'no gradient clipping'}"
    )
    if teacher is None and continued_from is not None:
        folder, earlier = continued_from
        return (
            f"Training continued from `{folder}` with diffusers_lit's `examples/train_dit.py --init_from` (DiT's "
            f"loss: MSE + learned-range VLB; a fresh optimizer) on `{dataset}`: {schedule}. "
            f"`{folder}` was: {earlier.get('how_made', 'not recorded.')}"
        )
    if teacher is None:
        return (
            f"Trained from scratch with diffusers_lit's `examples/train_dit.py` (DiT's loss: MSE + learned-range VLB) "
            f"on `{dataset}`: {schedule}."
        )
    return (
        f"Distilled from `{teacher}` with diffusers_lit's `examples/distill_lit.py` (hybrid knowledge distillation: "
        f"lambda_noise {lambdas[0]}, lambda_var {lambdas[1]}) on `{dataset}`: {schedule}."
    )


def draw_micro_batch(
    data: TrainingData,
    indices: torch.Tensor,
    generator: torch.Generator,
    schedule: DiffusionSchedule,
    cfg_dropout_prob: float,
    null_class: int | None,
    device: torch.device | str = "cpu",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """The inputs of one micro-batch of the examples at `indices` (B,): x_0 (B, C, H, W), t (B,), eps and x_t
    (B, C, H, W), and the condition with classifier-free guidance dropout applied (`drop_conditions`). Every random
    draw comes from `generator`, in this order: the batch's own (flips, latent samples), t, eps, the dropout."""
    batch = data.get_batch(indices, generator)
    x_start = batch["x_start"].to(device)
    timesteps = torch.randint(0, schedule.num_timesteps, (len(indices),), generator=generator).to(device)
    noise = torch.randn(x_start.shape, generator=generator).to(device)
    drop = torch.rand(len(indices), generator=generator) < cfg_dropout_prob
    x_t = schedule.add_noise(x_start, noise, timesteps)
    if "prompt_embeds" in batch:
        condition = {
            "encoder_hidden_states": batch["prompt_embeds"].to(device),
            "encoder_attention_mask": batch["prompt_masks"].to(device),
        }
    else:
        condition = {"class_labels": batch["class_labels"].to(device)}
    condition = drop_conditions(
        condition,
        drop,
        null_class=null_class,
        null_prompt_embeds=data.null_prompt_embeds,
        null_prompt_mask=data.null_prompt_mask,
    )
    return x_start, timesteps, noise, x_t, condition


def weights_hash(model: torch.nn.Module) -> str:
    """SHA-256 of a model's parameters, in order: equal on every process of a data-parallel run."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(
            name.encode() + tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
        )
    return digest.hexdigest()


def _save_checkpoint(accelerator, output_dir, global_step, args, signature, run_record, ema) -> None:
    """`checkpoint-<step>`: accelerate's state (student, optimizer, scheduler, RNG), the EMA weights and, last, the
    run's record, which marks it complete; only then are older checkpoints beyond the total limit removed."""
    path = output_dir / f"checkpoint-{global_step}"
    accelerator.save_state(str(path))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if ema is not None:
            save_ema(ema, path)
        write_training_state(path, {"step": global_step, "signature": signature, "run": run_record})
        logger.info(f"Saved {path}")
        for removed in prune_checkpoints(output_dir, args.checkpoints_total_limit):
            logger.info(f"Removed {removed} (--checkpoints_total_limit {args.checkpoints_total_limit})")
    accelerator.wait_for_everyone()


def _validation_inputs(args, data, dataset, text_to_image, id2label, student) -> list | None:
    """The class ids or prompts of the validation grid."""
    if not args.validation_steps:
        return None
    if text_to_image:
        captions = dataset[: min(4, len(dataset))][args.caption_column]
        return args.validation_prompts or [caption_text(text, args.caption_column) for text in captions]
    if args.validation_class_labels is not None:
        return args.validation_class_labels
    return list(range(min(8, getattr(student, "module", student).config.num_embeds_ada_norm)))


def _output_pipeline(transformer, source, scheduler, id2label, text_settings=None, dtype=None):
    """A LiT pipeline of the student with the source's VAE (and text encoder; `text_settings`: the trained
    caption length and image size)."""
    components = {**source.components, "scheduler": scheduler}
    if dtype is not None:
        for name in ("vae", "text_encoder"):
            if components.get(name) is not None:
                components[name] = components[name].to(dtype)
    return lit_pipeline(
        transformer, components, id2label=id2label, text_encoder_id=source.text_encoder_id, **(text_settings or {})
    )


def _run_validation(
    accelerator, args, student, ema, source, scheduler, id2label, text_settings, items, step, output_dir
) -> None:
    """Sample the grid with the student (EMA weights when used), write it to disk and to the trackers."""
    model = accelerator.unwrap_model(student)
    if ema is not None:
        ema.store(model.parameters())
        ema.copy_to(model.parameters())
    model.eval()
    try:
        pipe = _output_pipeline(
            model, source, scheduler.__class__.from_config(scheduler.config), id2label, text_settings
        )
        kwargs = {"prompts": items} if source.is_text_to_image else {"class_labels": items}
        with accelerator.autocast():
            grid = validation_grid(
                pipe,
                num_inference_steps=args.validation_inference_steps,
                guidance_scale=args.validation_guidance_scale,
                seed=args.seed,
                **kwargs,
            )
    finally:
        model.train()
        if ema is not None:
            ema.restore(model.parameters())
    path = save_validation_grid(grid, output_dir, step)
    log_validation_grid(accelerator.trackers, grid, step)
    logger.info(f"Validation grid: {path}")
