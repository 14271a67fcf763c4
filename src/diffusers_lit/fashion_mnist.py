"""Fashion-MNIST as a `datasets.Dataset`: from the Debian package's idx files offline, or from the Hub.

The Debian package `dataset-fashion-mnist` installs the four gzipped idx files under
/usr/share/datasets/fashion-mnist; where they are missing, the Hub dataset zalando-datasets/fashion_mnist is
loaded instead. Either way: an `image` column (28x28 grey PIL images) and a `label` ClassLabel with the ten
class names.
"""

import gzip
import os
from pathlib import Path

import numpy as np

LABELS = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
HUB_DATASET = "zalando-datasets/fashion_mnist"
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """An idx file (gzipped or not) as a uint8 array of the shape its header gives."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as file:
        data = file.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{path} is not an idx file of unsigned bytes.")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    array = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if array.size != int(np.prod(shape)):
        raise ValueError(f"{path} is truncated: its header promises {shape}, it holds {array.size} values.")
    return array.reshape(shape)


def load_fashion_mnist(split: str = "train", data_dir: str | os.PathLike | None = None):
    """Fashion-MNIST `split` ("train": 60,000, "test": 10,000) as a `datasets.Dataset` (image, label)."""
    import datasets

    if split not in FILES:
        raise ValueError(f"`split` must be 'train' or 'test', got {split!r}.")
    folder = Path(data_dir) if data_dir is not None else DEBIAN_DIR
    image_file, label_file = (folder / name for name in FILES[split])
    if not (image_file.is_file() and label_file.is_file()):
        if data_dir is not None:
            raise FileNotFoundError(f"{folder} lacks {image_file.name} / {label_file.name}.")
        return datasets.load_dataset(HUB_DATASET, split=split)
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=LABELS)})

    def examples(image_file: str, label_file: str):
        from PIL import Image

        for image, label in zip(read_idx(image_file), read_idx(label_file), strict=True):
            yield {"image": Image.fromarray(image), "label": int(label)}

    return datasets.Dataset.from_generator(
        examples, features=features, gen_kwargs={"image_file": str(image_file), "label_file": str(label_file)}
    )
