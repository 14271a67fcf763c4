"""`diffusers-lit demo` in reduced form: the same chain as `make demo`, with few steps and few samples."""

import json

import pytest
from PIL import Image

from diffusers_lit.demo import STUDENT, TEACHER, format_table, run_demo
from diffusers_lit.fashion_mnist import DEBIAN_DIR

NO_FASHION_MNIST = "the Debian package dataset-fashion-mnist is not installed (make test installs it as root)"


@pytest.mark.skipif(not (DEBIAN_DIR / "train-images-idx3-ubyte.gz").is_file(), reason=NO_FASHION_MNIST)
def test_demo_chain_in_reduced_form(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DIFFUSERS_LIT_CACHE", str(tmp_path / "cache"))
    results = run_demo(tmp_path / "demo", distill_steps=2, batch_size=8, num_samples=10, sample_steps=2, num_prompts=4)
    assert results == json.loads((tmp_path / "demo" / "results.json").read_text())
    teacher, student, live = results["teacher"], results["student"], results["live"]
    assert teacher["transformer"] == "DiTTransformer2DModel" and teacher["training_steps"] == 2500
    assert student["model"] == str(STUDENT) and student["training_steps"] == 500  # shipped: 20% of the teacher's
    assert live["transformer"] == student["transformer"] == "LiTTransformer2DModel" and live["training_steps"] == 2
    assert live["parameters"] == student["parameters"] < teacher["parameters"]  # one embedder instead of six
    assert results["settings"]["num_samples"] == results["settings"]["num_reference"] == 10
    assert all(results[name]["fid"] > 0 for name in ("teacher", "student", "live"))
    assert (tmp_path / "demo" / "lit" / "model_index.json").is_file()
    last = json.loads((tmp_path / "demo" / "lit" / "logs" / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["lr"] == results["settings"]["distill_learning_rate"] == 1e-3  # the demo's tuned learning rate
    assert (tmp_path / "demo" / "lit-init" / "conversion_report.json").is_file()
    assert Image.open(tmp_path / "demo" / "side_by_side.png").size == (5 * 32, 6 * (32 + 12))  # T, S, then L rows
    assert format_table(results) in capsys.readouterr().out
    text = results["text_to_image"]  # the shipped scene teacher and its LiT student, 4 prompts each
    assert text["teacher"]["transformer"] == "PixArtTransformer2DModel"
    assert text["student"]["transformer"] == "LiTTransformer2DModel"
    for name in ("teacher", "student"):
        assert text[name]["num_scenes"] == 4 and 0 <= text[name]["scene_accuracy"] <= text[name]["object_accuracy"]
        assert text[name]["fid"] > 0
    assert Image.open(tmp_path / "demo" / "side_by_side_t2i.png").size == (4 * 4 * 64, 2 * (4 * 32 + 12))
    for name in ("fmnist-dit", "fmnist-lit", "scenes-pixart", "scenes-lit"):
        weights = TEACHER.parent / name / "transformer" / "diffusion_pytorch_model.safetensors"
        assert weights.stat().st_size < 25 * 2**20
