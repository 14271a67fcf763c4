"""Teacher and student of hybrid knowledge distillation: loading, compatibility checks, conditions, CFG dropout."""

import os
from collections.abc import Sequence
from typing import Any

import torch
from accelerate.logging import get_logger

from ..conversion import SourceCheckpoint, SourceModel, convert_transformer, load_source
from ..models import LiTTransformer2DModel

logger = get_logger(__name__, log_level="INFO")


def load_teacher(
    source: str | os.PathLike,
    *,
    revision: str | None = None,
    token: str | None = None,
    cache_dir: str | None = None,
    components: str | os.PathLike | None = None,
    num_attention_heads: int | None = None,
    checkpoint_weights: str = "ema",
) -> SourceModel:
    """
    The frozen teacher from a Hub id, a diffusers folder or an original checkpoint (`load_source`).
    `components`: a pipeline folder or Hub id to take the VAE, scheduler, tokenizer and text encoder from, for
    sources without them (an original checkpoint file; the folder needs no transformer). `num_attention_heads`
    and `checkpoint_weights`: for original checkpoints (of other widths than DiT's / PixArt's; of a training run).
    """
    return load_source(
        str(source),
        revision=revision,
        token=token,
        cache_dir=cache_dir,
        num_attention_heads=num_attention_heads,
        checkpoint_weights=checkpoint_weights,
        components=components,
    )


def load_student(source: str | os.PathLike, **kwargs: Any) -> tuple[LiTTransformer2DModel, dict[str, Any]]:
    """The LiT transformer of a LiT pipeline folder (or Hub id), and that pipeline's other components."""
    from ..pipelines import LiTPipeline

    pipe = LiTPipeline.from_pretrained(str(source), **kwargs)
    if not isinstance(pipe.transformer, LiTTransformer2DModel):
        raise ValueError(
            f"The student {source} holds a {type(pipe.transformer).__name__}, not a LiTTransformer2DModel: convert "
            "it with `diffusers-lit convert`, or give no student to convert the teacher on the fly."
        )
    components = {name: module for name, module in pipe.components.items() if name != "transformer"}
    return pipe.transformer, components


def convert_teacher(teacher: SourceModel, **kwargs: Any) -> tuple[LiTTransformer2DModel, dict]:
    """A LiT student converted from the teacher's transformer (`diffusers_lit.conversion.convert_transformer`):
    every weight copied but the self-attention's. `kwargs`: linear_attention_heads, dwc_kernel_size, inherit,
    softmax_blocks, seed."""
    config = {key: value for key, value in dict(teacher.transformer.config).items() if not key.startswith("_")}
    state_dict = {key: value.detach().float() for key, value in teacher.transformer.state_dict().items()}
    return convert_transformer(SourceCheckpoint(teacher.name, teacher.layout, config, state_dict), **kwargs)


def load_teacher_and_student(
    teacher: str | os.PathLike,
    student: str | os.PathLike | None = None,
    *,
    revision: str | None = None,
    token: str | None = None,
    teacher_components: str | os.PathLike | None = None,
    teacher_num_attention_heads: int | None = None,
    teacher_checkpoint_weights: str = "ema",
    linear_attention_heads: int | None = None,
    dwc_kernel_size: int = 5,
    inherit: str = "none",
    softmax_blocks: Sequence[int] = (),
    seed: int = 0,
    lambda_var: float = 0.05,
) -> tuple[SourceModel, LiTTransformer2DModel, dict[str, Any]]:
    """The frozen teacher (`load_teacher` of `teacher` with `teacher_components`, `teacher_num_attention_heads`,
    `teacher_checkpoint_weights`), the student (`load_student` of a LiT pipeline; `student` None: the
    teacher converted on the fly with `linear_attention_heads`, `dwc_kernel_size`, `inherit`, `softmax_blocks` and
    `seed`) and the
    student pipeline's other components, checked to fit each other (`check_teacher_student`)."""
    loaded = load_teacher(
        teacher,
        revision=revision,
        token=token,
        components=teacher_components,
        num_attention_heads=teacher_num_attention_heads,
        checkpoint_weights=teacher_checkpoint_weights,
    )
    if student is not None:
        lit, components = load_student(student)
    else:
        lit, report = convert_teacher(
            loaded,
            linear_attention_heads=linear_attention_heads,
            dwc_kernel_size=dwc_kernel_size,
            inherit=inherit,
            softmax_blocks=softmax_blocks,
            seed=seed,
        )
        components = {}
        logger.info(f"Converted the teacher on the fly: {report}")
    check_teacher_student(loaded.transformer, lit, lambda_var=lambda_var)
    return loaded, lit, components


def check_teacher_student(teacher: torch.nn.Module, student: torch.nn.Module, *, lambda_var: float = 0.05) -> None:
    """Refuse a teacher and student that cannot see the same inputs or be compared output to output."""
    t, s = teacher.config, student.config
    problems = []
    t_layout, s_layout = getattr(t, "norm_type", None), getattr(s, "norm_type", None)
    if t_layout != s_layout:
        problems.append(f"layout (norm_type) {t_layout!r} vs {s_layout!r}")
    for name in ("in_channels", "patch_size", "sample_size"):
        if getattr(t, name, None) != getattr(s, name, None):
            problems.append(f"{name} {getattr(t, name, None)} vs {getattr(s, name, None)}")
    if s_layout == "ada_norm_zero" and t_layout == s_layout and t.num_embeds_ada_norm != s.num_embeds_ada_norm:
        problems.append(f"number of classes (num_embeds_ada_norm) {t.num_embeds_ada_norm} vs {s.num_embeds_ada_norm}")
    if s_layout == "ada_norm_single" and t_layout == s_layout:
        t_text = getattr(t, "caption_channels", None) or getattr(t, "cross_attention_dim", None)
        s_text = getattr(s, "caption_channels", None) or getattr(s, "cross_attention_dim", None)
        if t_text != s_text:
            problems.append(f"caption size (caption_channels) {t_text} vs {s_text}")
    if problems:
        raise ValueError(
            "The teacher and the student do not match: " + "; ".join(problems) + " (teacher vs student). Convert "
            "the student from this teacher (`diffusers-lit convert`, or give no student to convert it on the fly)."
        )
    in_channels = s.in_channels
    if student.out_channels != 2 * in_channels:
        raise ValueError("The student must predict its variance (out_channels = 2 * in_channels, learned sigma).")
    teacher_out = getattr(teacher, "out_channels", None) or t.out_channels
    if teacher_out not in (in_channels, 2 * in_channels):
        raise ValueError(f"The teacher outputs {teacher_out} channels for {in_channels} input channels.")
    if lambda_var != 0 and teacher_out != 2 * in_channels:
        raise ValueError("The teacher predicts no variance (no learned sigma): set `lambda_var` to 0.")


def disable_label_dropout(model: torch.nn.Module) -> None:
    """Switch off the label dropout diffusers' DiT embedders apply in train mode (LiT's is off already)."""
    from diffusers.models.embeddings import LabelEmbedding

    for module in model.modules():
        if isinstance(module, LabelEmbedding):
            module.dropout_prob = 0.0


def dit_embedder_copies(model: torch.nn.Module) -> list[list[torch.nn.Parameter]]:
    """The parameters of a diffusers DiT's per-block timestep + class embedders, grouped copy by copy: one group
    per parameter, one entry per block. Empty for models with one shared embedder (LiT)."""
    blocks = getattr(model, "transformer_blocks", [])
    embedders = [block.norm1.emb for block in blocks if getattr(getattr(block, "norm1", None), "emb", None)]
    if len(embedders) < 2:
        return []
    return [list(group) for group in zip(*(embedder.parameters() for embedder in embedders), strict=True)]


@torch.no_grad()
def sum_shared_gradients(groups: list[list[torch.nn.Parameter]]) -> None:
    """Give every copy in each group the sum of the group's gradients: copies that start equal then stay equal,
    and train exactly as the one embedder of the original DiT (whose gradient is that sum)."""
    for group in groups:
        grads = [param.grad for param in group if param.grad is not None]
        if grads:
            total = torch.stack(grads).sum(dim=0)
            for param in group:
                param.grad = total.clone()


def drop_conditions(
    condition: dict[str, torch.Tensor],
    drop: torch.Tensor,
    *,
    null_class: int | None = None,
    null_prompt_embeds: torch.Tensor | None = None,
    null_prompt_mask: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """
    Classifier-free guidance dropout, once for both models: where `drop` (B,) is True, the class label becomes
    `null_class`, or the caption becomes the empty caption's embeddings (L, D) and mask (L,).
    """
    condition = dict(condition)
    if "class_labels" in condition:
        labels = condition["class_labels"]
        condition["class_labels"] = torch.where(drop.to(labels.device), torch.full_like(labels, null_class), labels)
    if "encoder_hidden_states" in condition:
        embeds, mask = condition["encoder_hidden_states"], condition["encoder_attention_mask"]
        drop = drop.to(embeds.device)
        condition["encoder_hidden_states"] = torch.where(drop[:, None, None], null_prompt_embeds.to(embeds), embeds)
        condition["encoder_attention_mask"] = torch.where(drop[:, None], null_prompt_mask.to(mask), mask)
    return condition


def uses_additional_conditions(transformer: torch.nn.Module) -> bool:
    """Whether a PixArt-layout transformer takes resolution / aspect-ratio micro-conditions (an instance attribute
    of diffusers' PixArt and of LiT's text layout; not read through the config, which may not have it resolved)."""
    return bool(vars(transformer).get("use_additional_conditions", False))


def model_prediction(
    model: torch.nn.Module, x_t: torch.Tensor, timesteps: torch.Tensor, condition: dict
) -> torch.Tensor:
    """The output (B, C_out, H, W) of a DiT / PixArt / LiT transformer for `x_t` (B, C, H, W), `timesteps` (B,)
    and `condition`: {"class_labels"}, or {"encoder_hidden_states", "encoder_attention_mask"} (and optionally
    "added_cond_kwargs")."""
    if "class_labels" in condition:
        return model(x_t, timestep=timesteps, class_labels=condition["class_labels"]).sample
    added = condition.get("added_cond_kwargs") or {"resolution": None, "aspect_ratio": None}
    return model(
        x_t,
        timestep=timesteps,
        encoder_hidden_states=condition["encoder_hidden_states"],
        encoder_attention_mask=condition["encoder_attention_mask"],
        added_cond_kwargs=added,
    ).sample


def resolution_conditions(batch: int, height: int, width: int, device, dtype) -> dict[str, torch.Tensor]:
    """PixArt-alpha's micro-conditions for images of `height` x `width` pixels: resolution (B, 2), aspect (B, 1)."""
    resolution = torch.tensor([[height, width]], device=device, dtype=dtype).repeat(batch, 1)
    aspect_ratio = torch.tensor([[height / width]], device=device, dtype=dtype).repeat(batch, 1)
    return {"resolution": resolution, "aspect_ratio": aspect_ratio}


def config_signature(module: torch.nn.Module) -> dict[str, Any]:
    """A model's class and public config: what a checkpoint records to recognise its model on resume."""
    config = {key: value for key, value in dict(module.config).items() if not key.startswith("_")}
    return {"class": type(module).__name__, "config": config}
