"""Training data: image datasets through `datasets`, cached once as VAE latents (or pixels) and text embeddings.

The cache holds everything the loop needs, so a training step never touches an image, the VAE or the text
encoder. Batches are drawn by position in a seeded stream of epoch permutations (`global_batch_indices`), and
every random draw of a step comes from a generator seeded by (seed, micro-step, process) (`step_generator`):
a run resumed from a checkpoint therefore sees exactly the data and noise of an uninterrupted run.
"""

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ..files import atomic_path
from ..image_datasets import check_dataset_columns, preprocess_image

CACHE_VERSION = 1
logger = logging.getLogger(__name__)


def module_fingerprint(module: torch.nn.Module | None) -> str | None:
    """A short hash of a model's class, config and weights (a sum and the first values of every tensor)."""
    if module is None:
        return None
    digest = hashlib.sha256(type(module).__name__.encode())
    config = getattr(module, "config", None)
    if config is not None:
        items = config.to_dict() if hasattr(config, "to_dict") else dict(config)
        digest.update(json.dumps(items, sort_keys=True, default=str).encode())
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            flat = tensor.detach().reshape(-1)
            values = [flat.double().sum().item(), *flat[:8].double().tolist()] if flat.numel() else []
            digest.update(f"{name}{tuple(tensor.shape)}{values}".encode())
    return digest.hexdigest()[:16]


@dataclass
class TrainingData:
    """
    The cached training set.

    `inputs`: (N, C, H, W) pixels in [-1, 1] (`kind="pixels"`), or (N, 2 * C, h, w) VAE posterior mean and log
    variance (`kind="latents"`); `inputs_flipped`: the same of the mirrored images (latents with random flip).
    `labels` (N,) class ids; or `prompt_embeds` (N, L, D) and `prompt_masks` (N, L) with the empty caption's
    `null_prompt_embeds` (L, D) and `null_prompt_mask` (L,).
    """

    kind: str
    inputs: torch.Tensor
    inputs_flipped: torch.Tensor | None = None
    random_flip: bool = False
    labels: torch.Tensor | None = None
    prompt_embeds: torch.Tensor | None = None
    prompt_masks: torch.Tensor | None = None
    null_prompt_embeds: torch.Tensor | None = None
    null_prompt_mask: torch.Tensor | None = None
    scaling_factor: float = 1.0
    shift_factor: float = 0.0
    metadata: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return self.inputs.shape[0]

    def get_batch(self, indices: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """
        The examples at `indices` (B,): {"x_start": (B, C, H, W)} and {"class_labels": (B,)} or
        {"prompt_embeds": (B, L, D), "prompt_masks": (B, L)}. Random draws (flips, latent samples) use `generator`.
        """
        batch = {}
        flips = torch.rand(len(indices), generator=generator) < 0.5 if self.random_flip else None
        inputs = self.inputs[indices]
        if flips is not None:
            if self.inputs_flipped is not None:
                inputs = torch.where(flips[:, None, None, None], self.inputs_flipped[indices], inputs)
            else:
                inputs = torch.where(flips[:, None, None, None], inputs.flip(-1), inputs)
        if self.kind == "latents":
            mean, log_variance = inputs.chunk(2, dim=1)
            std = torch.exp(0.5 * log_variance.clamp(-30.0, 20.0))
            sample = mean + std * torch.randn(mean.shape, generator=generator)
            inputs = (sample - self.shift_factor) * self.scaling_factor
        batch["x_start"] = inputs
        if self.labels is not None:
            batch["class_labels"] = self.labels[indices]
        if self.prompt_embeds is not None:
            batch["prompt_embeds"] = self.prompt_embeds[indices]
            batch["prompt_masks"] = self.prompt_masks[indices]
        return batch

    def tensors(self) -> dict[str, torch.Tensor]:
        names = (
            "inputs",
            "inputs_flipped",
            "labels",
            "prompt_embeds",
            "prompt_masks",
            "null_prompt_embeds",
            "null_prompt_mask",
        )
        return {name: getattr(self, name).contiguous() for name in names if getattr(self, name) is not None}


def encode_captions(
    captions: list[str], tokenizer, text_encoder, max_sequence_length: int, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Captions -> text-encoder states (B, L, D) float32 and keep masks (B, L), as PixArt's pipeline encodes
    prompts (lower-cased, padded to `max_sequence_length`)."""
    text = [caption.lower().strip() for caption in captions]
    lengths = [len(ids) for ids in tokenizer(text, add_special_tokens=True).input_ids]
    too_long = sum(length > max_sequence_length for length in lengths)
    if too_long:
        logger.warning(
            f"{too_long} of {len(text)} captions are longer than {max_sequence_length} tokens (up to {max(lengths)}) "
            "and are truncated: raise `max_sequence_length` to keep them whole."
        )
    tokens = tokenizer(
        text,
        padding="max_length",
        max_length=max_sequence_length,
        truncation=True,
        add_special_tokens=True,
        return_tensors="pt",
    )
    mask = tokens.attention_mask.to(device)
    with torch.no_grad():
        embeds = text_encoder(tokens.input_ids.to(device), attention_mask=mask)[0]
    return embeds.float().cpu(), mask.cpu()


def encode_moments(vae, pixels: torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
    """Pixels (B, C, H, W) in [-1, 1] -> the VAE posterior's mean and log variance (B, 2 * c, h, w), float32."""
    with torch.no_grad():
        pixels = pixels.to(device, next(vae.parameters()).dtype)
        return vae.encode(pixels).latent_dist.parameters.float().cpu()


def caption_text(value: Any, column: str) -> str:
    """The caption of one example: its string, or the first of several."""
    if isinstance(value, str):
        return value
    if isinstance(value, list | tuple) and value and isinstance(value[0], str):
        return value[0]  # several captions per image: the first one
    raise ValueError(f"Caption column {column!r} must hold strings (or lists of strings), got {type(value).__name__}.")


def build_training_data(
    dataset,
    *,
    image_column: str = "image",
    label_column: str | None = None,
    caption_column: str | None = None,
    resolution: int | tuple[int, int],
    channels: int,
    center_crop: bool = True,
    random_flip: bool = False,
    vae=None,
    tokenizer=None,
    text_encoder=None,
    max_sequence_length: int | None = None,
    seed: int = 0,
    device: torch.device | str = "cpu",
    batch_size: int = 32,
) -> TrainingData:
    """
    Preprocess every example once: images -> pixels or VAE posterior moments (both flips when `random_flip`
    and a VAE), labels, caption embeddings. Random crops are drawn here, one per image, seeded by (seed, index).
    """
    check_dataset_columns(dataset, image_column, label_column, caption_column)
    if caption_column is not None and (tokenizer is None or text_encoder is None):
        raise ValueError("Captions need the teacher's tokenizer and text encoder.")
    pixels_batches, flipped_batches, labels, captions = [], [], [], []
    for start in range(0, len(dataset), batch_size):
        rows = dataset[start : start + batch_size]
        images = [
            preprocess_image(
                image,
                resolution,
                center_crop=center_crop,
                channels=channels,
                rng=np.random.default_rng([seed, start + offset]),
            )
            for offset, image in enumerate(rows[image_column])
        ]
        pixels = torch.stack(images)  # (b, C, R, R)
        if vae is not None:
            pixels_batches.append(encode_moments(vae, pixels, device))
            if random_flip:
                flipped_batches.append(encode_moments(vae, pixels.flip(-1), device))
        else:
            pixels_batches.append(pixels)
        if label_column is not None:
            labels.extend(int(label) for label in rows[label_column])
        if caption_column is not None:
            captions.extend(caption_text(value, caption_column) for value in rows[caption_column])

    data = TrainingData(
        kind="latents" if vae is not None else "pixels",
        inputs=torch.cat(pixels_batches),
        inputs_flipped=torch.cat(flipped_batches) if flipped_batches else None,
        random_flip=random_flip,
        labels=torch.tensor(labels, dtype=torch.long) if label_column is not None else None,
    )
    if vae is not None:
        data.scaling_factor = float(vae.config.scaling_factor)
        data.shift_factor = float(getattr(vae.config, "shift_factor", None) or 0.0)
    if caption_column is not None:
        length = max_sequence_length or tokenizer.model_max_length
        embeds, masks = [], []
        for start in range(0, len(captions), batch_size):
            batch_embeds, batch_masks = encode_captions(
                captions[start : start + batch_size], tokenizer, text_encoder, length, device
            )
            embeds.append(batch_embeds)
            masks.append(batch_masks)
        data.prompt_embeds, data.prompt_masks = torch.cat(embeds), torch.cat(masks)
        null_embeds, null_mask = encode_captions([""], tokenizer, text_encoder, length, device)
        data.null_prompt_embeds, data.null_prompt_mask = null_embeds[0], null_mask[0]
    return data


def cache_key(dataset, **settings: Any) -> str:
    """A hash of the dataset's fingerprint and every setting that changes the cached tensors."""
    fingerprint = getattr(dataset, "_fingerprint", None) or f"{len(dataset)}:{dataset.column_names}"
    payload = json.dumps({"version": CACHE_VERSION, "dataset": fingerprint, **settings}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


def save_training_data(data: TrainingData, folder: Path) -> None:
    """Write the cache atomically: tensors.safetensors and meta.json in `folder`, renamed into place last."""
    meta = {
        "kind": data.kind,
        "random_flip": data.random_flip,
        "scaling_factor": data.scaling_factor,
        "shift_factor": data.shift_factor,
        "metadata": data.metadata,
    }
    with atomic_path(folder, keep_existing=True) as tmp:  # another process may write the same cache first
        tmp.mkdir(parents=True)
        save_file(data.tensors(), str(tmp / "tensors.safetensors"))
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))


def load_training_data(folder: Path) -> TrainingData:
    meta = json.loads((Path(folder) / "meta.json").read_text())
    tensors = load_file(str(Path(folder) / "tensors.safetensors"))
    return TrainingData(**meta, **tensors)


def cached_training_data(dataset, *, cache_dir: str | os.PathLike, key_settings: dict[str, Any], **kwargs: Any):
    """`build_training_data`, read from `cache_dir/<key>` when there, else built and written there.

    Returns (data, cache folder, whether it was read from the cache)."""
    folder = Path(cache_dir) / cache_key(dataset, **key_settings)
    if (folder / "meta.json").is_file():
        return load_training_data(folder), folder, True
    data = build_training_data(dataset, **kwargs)
    data.metadata = {"settings": key_settings, "examples": len(data)}
    folder.parent.mkdir(parents=True, exist_ok=True)
    save_training_data(data, folder)
    return data, folder, False


def _seed(*values: int) -> int:
    return int(np.random.SeedSequence([int(value) for value in values]).generate_state(1, dtype=np.uint64)[0] >> 1)


@lru_cache(maxsize=4)
def epoch_permutation(num_examples: int, seed: int, epoch: int) -> torch.Tensor:
    """The order of the examples in `epoch`: a permutation drawn from (seed, epoch)."""
    return torch.randperm(num_examples, generator=torch.Generator().manual_seed(_seed(seed, epoch, 1)))


def global_batch_indices(
    num_examples: int, micro_step: int, batch_size: int, num_processes: int, process_index: int, seed: int
) -> torch.Tensor:
    """
    Example indices (batch_size,) of this process at `micro_step`: the global batch `micro_step` covers positions
    [micro_step * G, (micro_step + 1) * G) of the stream of seeded epoch permutations (G = batch_size *
    num_processes), and process r takes its r-th slice. Depends on nothing else, so resuming is exact.
    """
    start = (micro_step * num_processes + process_index) * batch_size
    positions = range(start, start + batch_size)
    return torch.stack(
        [
            epoch_permutation(num_examples, seed, position // num_examples)[position % num_examples]
            for position in positions
        ]
    )


def step_generator(seed: int, micro_step: int, process_index: int) -> torch.Generator:
    """The CPU generator of one micro-step on one process (flips, latent samples, timesteps, noise, dropout)."""
    return torch.Generator().manual_seed(_seed(seed, micro_step, process_index, 2))
