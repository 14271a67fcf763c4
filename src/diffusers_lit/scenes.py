"""Fashion-MNIST scenes: the offline text-to-image task. A 32x64 (height x width) canvas holds two Fashion-MNIST
items, one in each half, and a caption names both and their places in one of several phrasings, so that a model
must read the words to draw the right items in the right halves.

Scenes are drawn deterministically from (split, number, seed): train items for training, test items for reference
statistics and prompts. `load_scenes` builds a `datasets.Dataset` with columns `image` (64x32 grey PIL images),
`text`, `left_label`, `right_label` and `phrasing`, and caches it with `save_to_disk` under the Hugging Face home.
"""

import re
from pathlib import Path

import numpy as np

from .files import atomic_path

SCENES_DATASET = "fashion-mnist-scenes"  # the name `--dataset` and `load_image_dataset` know
SCENE_HEIGHT, SCENE_WIDTH = 32, 64
ITEM_SIZE = 28
# How each Fashion-MNIST class is named in a caption, with its article.
ITEM_NAMES = (
    "a t-shirt",
    "trousers",
    "a pullover",
    "a dress",
    "a coat",
    "a sandal",
    "a shirt",
    "a sneaker",
    "a bag",
    "an ankle boot",
)
PHRASINGS = (
    "{left} on the left and {right} on the right",
    "{right} on the right and {left} on the left",
    "{right} to the right of {left}",
    "{left} to the left of {right}",
    "on the left {left}, on the right {right}",
    "{left} next to {right}, left to right",
)
SPLIT_SIZES = {"train": 20000, "test": 2000}  # scenes of the cached splits
SPLIT_SEEDS = {"train": 0, "test": 1}


def scene_caption(left: int, right: int, phrasing: int = 0) -> str:
    """The caption of a scene with class `left` in the left half and `right` in the right half."""
    if not (0 <= left < len(ITEM_NAMES) and 0 <= right < len(ITEM_NAMES)):
        raise ValueError(f"Scene items must be Fashion-MNIST classes 0 to {len(ITEM_NAMES) - 1}, got {left}, {right}.")
    if not 0 <= phrasing < len(PHRASINGS):
        raise ValueError(f"`phrasing` must be 0 to {len(PHRASINGS) - 1}, got {phrasing}.")
    return PHRASINGS[phrasing].format(left=ITEM_NAMES[left], right=ITEM_NAMES[right])


def parse_scene_caption(text: str) -> tuple[int, int] | None:
    """The (left, right) classes a caption in one of the scenes' phrasings names (any case, outer spaces
    ignored), else None."""
    names = "|".join(re.escape(name) for name in sorted(ITEM_NAMES, key=len, reverse=True))
    for phrasing in PHRASINGS:
        pattern = re.escape(phrasing).replace(r"\{left\}", f"(?P<left>{names})")
        pattern = pattern.replace(r"\{right\}", f"(?P<right>{names})")
        match = re.fullmatch(pattern, text.strip().lower())
        if match:
            return ITEM_NAMES.index(match["left"]), ITEM_NAMES.index(match["right"])
    return None


def scene_draws(num_items: int, num_scenes: int, seed: int) -> dict[str, np.ndarray]:
    """The random choices of `num_scenes` scenes from a pool of `num_items` items: item indices (S, 2), offsets
    (S, 2, 2) of each item inside its 32x32 half (row, column in 0..4), phrasings (S,)."""
    rng = np.random.default_rng(seed)
    margin = SCENE_HEIGHT - ITEM_SIZE
    return {
        "items": rng.integers(0, num_items, size=(num_scenes, 2)),
        "offsets": rng.integers(0, margin + 1, size=(num_scenes, 2, 2)),
        "phrasings": rng.integers(0, len(PHRASINGS), size=num_scenes),
    }


def compose_scene(left: np.ndarray, right: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Two 28x28 uint8 items -> one (32, 64) uint8 canvas (black background); `offsets` (2, 2) place each item in
    its half."""
    canvas = np.zeros((SCENE_HEIGHT, SCENE_WIDTH), dtype=np.uint8)
    half = SCENE_WIDTH // 2
    for side, item in enumerate((left, right)):
        row, column = (int(value) for value in offsets[side])
        canvas[row : row + ITEM_SIZE, side * half + column : side * half + column + ITEM_SIZE] = item
    return canvas


def build_scenes(split: str = "train", num_scenes: int | None = None, seed: int | None = None):
    """Fashion-MNIST scenes of `split`'s items as a `datasets.Dataset` (not cached; see `load_scenes`)."""
    import datasets
    from PIL import Image

    from .fashion_mnist import LABELS, load_fashion_mnist

    if split not in SPLIT_SIZES:
        raise ValueError(f"Scene splits are {list(SPLIT_SIZES)}, got {split!r}.")
    num_scenes = SPLIT_SIZES[split] if num_scenes is None else num_scenes
    if num_scenes < 1:
        raise ValueError(f"`num_scenes` must be at least 1, got {num_scenes}.")
    items = load_fashion_mnist(split).with_format("numpy")
    images, labels = np.asarray(items["image"], dtype=np.uint8), np.asarray(items["label"], dtype=np.int64)
    draws = scene_draws(len(labels), num_scenes, SPLIT_SEEDS[split] if seed is None else seed)
    features = datasets.Features(
        {
            "image": datasets.Image(),
            "text": datasets.Value("string"),
            "left_label": datasets.ClassLabel(names=LABELS),
            "right_label": datasets.ClassLabel(names=LABELS),
            "phrasing": datasets.Value("int32"),
        }
    )

    def examples():
        for (left, right), offsets, phrasing in zip(draws["items"], draws["offsets"], draws["phrasings"], strict=True):
            yield {
                "image": Image.fromarray(compose_scene(images[left], images[right], offsets)),
                "text": scene_caption(int(labels[left]), int(labels[right]), int(phrasing)),
                "left_label": int(labels[left]),
                "right_label": int(labels[right]),
                "phrasing": int(phrasing),
            }

    return datasets.Dataset.from_list(list(examples()), features=features)


def scene_prompts(count: int, split: str = "test") -> list[str]:
    """The captions of the first `count` scenes of `split` (the cached split): the default prompt set."""
    scenes = load_scenes(split)
    if not 1 <= count <= len(scenes):
        raise ValueError(f"The {split} scenes hold {len(scenes)} captions; asked for {count} prompts.")
    return list(scenes[:count]["text"])


def scenes_cache_dir() -> Path:
    from huggingface_hub.constants import HF_HOME

    return Path(HF_HOME) / "diffusers_lit" / "datasets"


def load_scenes(split: str = "train", num_scenes: int | None = None, seed: int | None = None):
    """The scenes of `build_scenes`, read from the cache (HF_HOME/diffusers_lit/datasets) or built and written
    there once (to a temporary folder, then renamed)."""
    import datasets

    if split not in SPLIT_SIZES:
        raise ValueError(f"Scene splits are {list(SPLIT_SIZES)}, got {split!r}.")
    num_scenes = SPLIT_SIZES[split] if num_scenes is None else num_scenes
    seed = SPLIT_SEEDS[split] if seed is None else seed
    folder = scenes_cache_dir() / f"{SCENES_DATASET}-{split}-{num_scenes}-seed{seed}"
    if (folder / "dataset_info.json").is_file():
        return datasets.load_from_disk(str(folder))
    scenes = build_scenes(split, num_scenes, seed)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder, keep_existing=True) as tmp:  # another process may cache the same scenes first
        scenes.save_to_disk(str(tmp))
    return datasets.load_from_disk(str(folder))
