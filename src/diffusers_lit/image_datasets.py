"""Image datasets as the project reads them: loading (the embedded defaults, `save_to_disk` folders, image folders,
Hub names), column checks, training sizes and the preprocessing of one image. Training caches them
(`training.data`); evaluation reads reference images with the same preprocessing.
"""

import json
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .scenes import SCENES_DATASET


def load_image_dataset(
    dataset: str | os.PathLike,
    *,
    split: str = "train",
    config_name: str | None = None,
    revision: str | None = None,
    cache_dir: str | None = None,
):
    """
    A `datasets.Dataset` from a folder saved with `save_to_disk`, a local image folder (labels from
    sub-folders, captions from a metadata.jsonl, as datasets' "imagefolder"), a Hub dataset name, or
    "fashion-mnist" (the embedded default: Debian's files offline, else the Hub copy), or "fashion-mnist-scenes"
    (two items and a caption per image, `diffusers_lit.scenes`).
    """
    import datasets

    if str(dataset) == "fashion-mnist":
        from .fashion_mnist import load_fashion_mnist

        return load_fashion_mnist(split)
    if str(dataset) == SCENES_DATASET:
        from .scenes import load_scenes

        return load_scenes(split)
    path = Path(dataset)
    if path.is_dir():
        if (path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file():
            state = path / "state.json"
            if state.is_file() and not json.loads(state.read_text()).get("_data_files"):
                # datasets cannot load a saved dataset without rows (it has no data file).
                raise ValueError(f"The training dataset {dataset} is empty: it has no examples to train on.")
            loaded = datasets.load_from_disk(str(path))
        else:
            loaded = datasets.load_dataset("imagefolder", data_dir=str(path), cache_dir=cache_dir)
    elif path.exists():
        raise ValueError(f"The dataset {dataset} is a file; give a dataset folder or a Hub dataset name.")
    else:
        loaded = datasets.load_dataset(str(dataset), config_name, revision=revision, cache_dir=cache_dir)
    if isinstance(loaded, datasets.DatasetDict):
        if split not in loaded:
            raise ValueError(f"Dataset {dataset} has no split {split!r}; its splits: {', '.join(loaded)}.")
        loaded = loaded[split]
    return loaded


def check_dataset_columns(
    dataset, image_column: str, label_column: str | None = None, caption_column: str | None = None
) -> None:
    """Refuse an empty dataset or one without the named columns, listing the columns it has."""
    if len(dataset) == 0:
        raise ValueError("The training dataset is empty: it has no examples to train on.")
    columns = dataset.column_names
    for option, column in (
        ("image_column", image_column),
        ("label_column", label_column),
        ("caption_column", caption_column),
    ):
        if column is not None and column not in columns:
            raise ValueError(
                f"The dataset has no column {column!r} ({option}); its columns are: {', '.join(columns)}."
            )


def dataset_class_names(dataset, label_column: str) -> list[str] | None:
    """Class names of a `ClassLabel` column (e.g. an imagefolder's sub-folders), else None."""
    feature = dataset.features.get(label_column)
    return list(feature.names) if hasattr(feature, "names") else None


def parse_resolution(value: str) -> int | tuple[int, int]:
    """A training size from the command line: "32" (square) or "32x64" (height x width)."""
    try:
        sides = tuple(int(side) for side in str(value).lower().split("x"))
    except ValueError:
        sides = ()
    if len(sides) not in (1, 2) or min(sides) < 1:
        raise ValueError(f"A resolution is a positive size or HEIGHTxWIDTH in pixels (e.g. 32 or 32x64): {value!r}.")
    return sides[0] if len(sides) == 1 or sides[0] == sides[1] else sides


def preprocess_image(
    image: Image.Image, resolution: int | tuple[int, int], *, center_crop: bool = True, channels: int = 3, rng=None
) -> torch.Tensor:
    """PIL image -> (channels, height, width) float32 in [-1, 1], `resolution` an int (square) or (height, width):
    resized (bilinear) to cover that size with its aspect ratio kept, then a center crop or a random crop drawn from
    `rng` (a `numpy.random.Generator`)."""
    mode = {1: "L", 3: "RGB"}.get(channels)
    if mode is None:
        raise ValueError(f"Images can be read with 1 or 3 channels, not {channels}.")
    target_height, target_width = (resolution, resolution) if isinstance(resolution, int) else resolution
    image = image.convert(mode)
    width, height = image.size
    scale = max(target_width / width, target_height / height)
    size = (max(target_width, round(width * scale)), max(target_height, round(height * scale)))
    if size != (width, height):
        image = image.resize(size, resample=Image.BILINEAR)
    if center_crop:
        left, top = (size[0] - target_width) // 2, (size[1] - target_height) // 2
    else:
        rng = rng if rng is not None else np.random.default_rng()
        left = int(rng.integers(0, size[0] - target_width + 1))
        top = int(rng.integers(0, size[1] - target_height + 1))
    image = image.crop((left, top, left + target_width, top + target_height))
    array = np.asarray(image, dtype=np.float32).reshape(target_height, target_width, channels)
    return torch.from_numpy(array).permute(2, 0, 1) / 127.5 - 1.0
