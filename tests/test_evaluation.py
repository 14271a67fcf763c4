import gzip

import numpy as np
import pytest
import scipy.linalg
import torch

from diffusers_lit.evaluation import (
    cached_reference_features,
    feature_statistics,
    fid_from_features,
    frechet_distance,
    inception_features,
    load_inception,
    load_samples,
    pil_to_tensor,
    precision_recall,
    save_samples,
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
    return pil_to_tensor([dataset[i]["image"] for i in range(16)])  # (16, 1, 28, 28)


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
