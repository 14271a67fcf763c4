"""Evaluation of generated images: labelled sample grids."""

import math
from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont


def image_grid(
    images: Sequence[Image.Image], labels: Sequence[str] | None = None, columns: int | None = None
) -> Image.Image:
    """Images of one size in a grid of `columns` (default: about square), each captioned with its label."""
    if not images:
        raise ValueError("`images` is empty: there is nothing to put in a grid.")
    if labels is not None and len(labels) != len(images):
        raise ValueError(f"Got {len(labels)} labels for {len(images)} images: give one label per image.")
    width, height = images[0].size
    columns = columns or math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / columns)
    font = ImageFont.load_default()
    caption = 12 if labels is not None else 0
    grid = Image.new("RGB", (columns * width, rows * (height + caption)), "white")
    draw = ImageDraw.Draw(grid)
    for index, image in enumerate(images):
        x, y = (index % columns) * width, (index // columns) * (height + caption)
        grid.paste(image.convert("RGB"), (x, y + caption))
        if labels is not None:
            draw.text((x + 1, y), str(labels[index])[: max(1, width // 6)], fill="black", font=font)
    return grid
