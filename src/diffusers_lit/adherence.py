"""Prompt adherence on Fashion-MNIST scenes: a small CNN recognises the item in each half of a generated scene.

Object accuracy is the share of named items recognised in their named half; scene accuracy the share of scenes
with both right. The classifier sees a 32x32 half with its 28x28 item anywhere a scene puts it (it is trained with
the scenes' own offsets), so real scenes give the ceiling of these scores.
"""

import math
import os

import numpy as np
import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn
from tqdm.auto import tqdm

from .scenes import ITEM_SIZE, SCENE_HEIGHT, SCENE_WIDTH

CLASSIFIER_EPOCHS = 15  # the shipped classifier's (assets/fmnist-classifier): test accuracy above 0.92


class FashionClassifier(ModelMixin, ConfigMixin):
    """Fashion-MNIST classes of 32x32 grey images (B, 1, 32, 32) in [0, 1] -> logits (B, num_classes)."""

    @register_to_config
    def __init__(self, num_classes: int = 10, channels: tuple[int, ...] = (32, 64, 128), dropout_prob: float = 0.25):
        super().__init__()
        layers, width = [], 1
        for index, out in enumerate(channels):
            layers += [nn.Conv2d(width, out, 3, padding=1), nn.BatchNorm2d(out), nn.ReLU()]
            if index < len(channels) - 1:
                layers += [nn.Conv2d(out, out, 3, padding=1), nn.BatchNorm2d(out), nn.ReLU(), nn.MaxPool2d(2)]
            width = out
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(dropout_prob)
        self.head = nn.Linear(width, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.features(images * 2 - 1)  # (B, C, 8, 8)
        return self.head(self.dropout(x.mean(dim=(2, 3))))  # (B, num_classes)


def place_items(items: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """28x28 items (B, 1, 28, 28) -> 32x32 halves (B, 1, 32, 32), each item at a random offset as scenes place it."""
    margin = SCENE_HEIGHT - ITEM_SIZE
    halves = torch.zeros(items.shape[0], 1, SCENE_HEIGHT, SCENE_HEIGHT)
    offsets = torch.randint(0, margin + 1, (items.shape[0], 2), generator=generator)
    for index, (row, column) in enumerate(offsets.tolist()):
        halves[index, :, row : row + ITEM_SIZE, column : column + ITEM_SIZE] = items[index]
    return halves


def _fashion_mnist_arrays(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    from .fashion_mnist import load_fashion_mnist

    data = load_fashion_mnist(split).with_format("numpy")
    images = torch.from_numpy(np.asarray(data["image"], dtype=np.float32) / 255.0)[:, None]  # (N, 1, 28, 28)
    return images, torch.from_numpy(np.asarray(data["label"], dtype=np.int64))


def train_classifier(
    epochs: int = CLASSIFIER_EPOCHS, batch_size: int = 128, learning_rate: float = 2e-3, seed: int = 0
) -> tuple[FashionClassifier, dict]:
    """Train a `FashionClassifier` on Fashion-MNIST's train split (items at scene offsets, random horizontal flips),
    AdamW with a cosine schedule; returns it in eval mode and its test accuracy (items at random offsets)."""
    if epochs < 1 or batch_size < 1 or learning_rate <= 0:
        raise ValueError("`epochs` and `batch_size` must be at least 1 and `learning_rate` positive.")
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    images, labels = _fashion_mnist_arrays("train")
    model = FashionClassifier()
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=1e-4)
    total = epochs * math.ceil(len(labels) / batch_size)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * step / total)))
    progress = tqdm(total=total, desc="classifier")
    for _ in range(epochs):
        model.train()
        for indices in torch.randperm(len(labels), generator=generator).split(batch_size):
            batch = place_items(images[indices], generator)
            flip = torch.rand(len(indices), generator=generator) < 0.5
            batch = torch.where(flip[:, None, None, None], batch.flip(-1), batch)
            loss = F.cross_entropy(model(batch), labels[indices])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            progress.update(1)
            progress.set_postfix(loss=f"{loss.item():.3f}")
    progress.close()
    model.eval()
    return model, {
        "test_accuracy": classifier_accuracy(model, seed),
        "epochs": epochs,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "seed": seed,
    }


def classifier_accuracy(model: FashionClassifier, seed: int = 0) -> float:
    """Accuracy on Fashion-MNIST's whole test split, each item at the random offset seed + 1 draws for it."""
    images, labels = _fashion_mnist_arrays("test")
    halves = place_items(images, torch.Generator().manual_seed(seed + 1))
    return (classify(model, halves) == labels).double().mean().item()


@torch.no_grad()
def classify(model: FashionClassifier, halves: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """Predicted classes (N,) of 32x32 images (N, 1, 32, 32) in [0, 1] (or uint8)."""
    halves = halves.float() / 255 if halves.dtype == torch.uint8 else halves.float()
    return torch.cat([model(batch).argmax(dim=1) for batch in halves.split(batch_size)])


def scene_adherence(
    model: FashionClassifier, images: torch.Tensor, left_labels: torch.Tensor, right_labels: torch.Tensor
) -> dict:
    """Object and scene accuracy of scenes (N, 1, 32, 64) in [0, 1] (or uint8) whose prompts name `left_labels`
    (N,) and `right_labels` (N,)."""
    if images.ndim != 4 or tuple(images.shape[1:]) != (1, SCENE_HEIGHT, SCENE_WIDTH):
        raise ValueError(f"Scenes are (N, 1, {SCENE_HEIGHT}, {SCENE_WIDTH}) images, got {tuple(images.shape)}.")
    if not len(images) == len(left_labels) == len(right_labels):
        raise ValueError(f"Got {len(images)} scenes for {len(left_labels)} / {len(right_labels)} named items.")
    half = SCENE_WIDTH // 2
    left_ok = classify(model, images[..., :half]) == torch.as_tensor(left_labels)
    right_ok = classify(model, images[..., half:]) == torch.as_tensor(right_labels)
    return {
        "scene_accuracy": (left_ok & right_ok).double().mean().item(),
        "object_accuracy": torch.cat([left_ok, right_ok]).double().mean().item(),
        "num_scenes": len(images),
    }


def default_classifier_path() -> str:
    """The shipped classifier (assets/fmnist-classifier in a checkout), or $DIFFUSERS_LIT_CLASSIFIER."""
    from pathlib import Path

    return os.environ.get(
        "DIFFUSERS_LIT_CLASSIFIER", str(Path(__file__).resolve().parents[2] / "assets" / "fmnist-classifier")
    )


def load_classifier(path: str | os.PathLike | None = None) -> FashionClassifier:
    """A saved `FashionClassifier` (config.json and safetensors weights), in eval mode."""
    path = path or default_classifier_path()
    if not os.path.isdir(path):
        raise FileNotFoundError(
            f"No scene classifier at {path}: train one with `python examples/train_classifier.py --output_dir {path}`."
        )
    return FashionClassifier.from_pretrained(path).eval()
