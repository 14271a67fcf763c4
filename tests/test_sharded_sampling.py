"""Sampling over processes in resumable shards, and the ADM evaluation suite's batch format."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import class_pipeline

from diffusers_lit.cli import main
from diffusers_lit.evaluation import (
    feature_statistics,
    fid_from_features,
    frechet_distance,
    inception_features,
    load_samples,
    save_samples,
    score_images,
)
from diffusers_lit.sharded_sampling import sample_in_shards, shard_folder, shard_ranges

ROOT = Path(__file__).resolve().parents[1]
SAMPLING = ["--steps", "2", "--batch-size", "2", "--seed", "3", "--device", "cpu", "--scheduler", "ddim"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch_two_processes(args: list[str]) -> subprocess.CompletedProcess:
    """`ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 -m diffusers_lit ARGS`."""
    pythonpath = os.pathsep.join(
        [str(ROOT / "src"), str(ROOT / "tests"), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": pythonpath}
    env["CUDA_VISIBLE_DEVICES"] = ""
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    launch += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    launch += ["--main_process_port", str(free_port()), "-m", "diffusers_lit"]
    return subprocess.run([*launch, *args], env=env, capture_output=True, text=True, timeout=300)


def test_two_processes_draw_the_same_samples_as_one(tmp_path):
    """`accelerate launch --num_processes 2 -m diffusers_lit generate` shares 5 samples out in uneven shards and
    merges the very images one process draws, bit for bit."""
    class_pipeline().save_pretrained(tmp_path / "pipe")
    args = ["generate", str(tmp_path / "pipe"), "--num-samples", "5", "--shard-size", "2", *SAMPLING]
    main([*args, "--output", str(tmp_path / "one.npz")])
    result = launch_two_processes([*args, "--output", str(tmp_path / "two.npz")])
    assert result.returncode == 0, result.stderr[-3000:]
    (one, one_labels, one_info), (two, two_labels, two_info) = (
        load_samples(tmp_path / name) for name in ("one.npz", "two.npz")
    )
    assert one.shape == (5, 1, 8, 8) and torch.equal(one, two) and one_labels == two_labels == [0, 1, 2, 0, 1]
    assert one_info["num_processes"] == 1 and two_info["num_processes"] == 2
    assert not shard_folder(tmp_path / "two.npz").exists()  # merged, then tidied


def test_evaluate_shares_the_sampling_out_and_scores_on_the_main_process(tmp_path, monkeypatch):
    """`accelerate launch ... evaluate PIPE --samples FILE` draws as `generate` does over 2 processes and scores
    the merged samples once: the results of one process; without --samples it is refused before any work."""
    if not (Path("/usr/share/datasets/fashion-mnist") / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip("the Debian package dataset-fashion-mnist is not installed (make test installs it as root)")
    import json

    class_pipeline().save_pretrained(tmp_path / "pipe")
    args = ["evaluate", str(tmp_path / "pipe"), "--num-samples", "5", "--shard-size", "2", *SAMPLING]
    args += ["--cache-dir", str(tmp_path / "cache")]
    main([*args, "--output", str(tmp_path / "one.json")])
    shared = ["--samples", str(tmp_path / "s.npz"), "--output", str(tmp_path / "two.json")]
    result = launch_two_processes([*args, *shared])
    assert result.returncode == 0, result.stderr[-3000:]
    one, two = (json.loads((tmp_path / name).read_text()) for name in ("one.json", "two.json"))
    assert (one["num_processes"], two["num_processes"], one["num_samples"], two["num_samples"]) == (1, 2, 5, 5)
    # The same images (as generate's test shows, bit for bit); Inception runs here on 2 threads, there on 1.
    assert one["fid"] == pytest.approx(two["fid"], rel=1e-5) and one["fid"] > 10
    assert load_samples(tmp_path / "s.npz")[0].shape == (5, 1, 8, 8)  # the samples are kept for later scoring

    import diffusers_lit.sharded_sampling as sharded_sampling

    monkeypatch.setattr(sharded_sampling, "process_state", lambda: type("State", (), {"num_processes": 2})())
    with pytest.raises(ValueError, match="pass --samples FILE.npz"):
        main(["--debug", *args])


def test_a_stopped_run_resumes_without_redrawing_and_other_settings_are_refused(tmp_path):
    drawn = []

    def sample(indices: range, stop_at: int | None = None):
        if indices.start == stop_at:
            raise KeyboardInterrupt
        drawn.append(indices.start)
        images = torch.arange(indices.start, indices.stop, dtype=torch.uint8)[:, None, None, None].expand(-1, 1, 2, 2)
        return images, list(indices), {"seed": 0}

    output, settings = tmp_path / "s.npz", {"model": "m", "seed": 0}
    with pytest.raises(KeyboardInterrupt):
        sample_in_shards(lambda r: sample(r, stop_at=4), 7, output, settings, shard_size=2)
    assert drawn == [0, 2] and not output.exists()
    with pytest.raises(ValueError, match="other settings \\(seed\\)"):
        sample_in_shards(sample, 7, output, {"model": "m", "seed": 1}, shard_size=2)
    info = sample_in_shards(sample, 7, output, settings, shard_size=2)
    assert drawn == [0, 2, 4, 6]  # the finished shards were not drawn again
    images, labels, _ = load_samples(output)
    assert images[:, 0, 0, 0].tolist() == labels == list(range(7)) and info["num_processes"] == 1
    assert [(r.start, r.stop) for r in shard_ranges(7, 3)] == [(0, 3), (3, 6), (6, 7)]
    with pytest.raises(ValueError, match="at least one sample"):
        shard_ranges(0, 2)


def test_adm_sample_batches_and_reference_batches(tmp_path):
    """generate --format adm writes ADM's arr_0 (N, H, W, C) / arr_1 batch, which evaluate reads back; a reference
    batch file scores against its arr_0 images, or against its own mu and sigma where it carries them."""
    class_pipeline().save_pretrained(tmp_path / "pipe")
    main(
        [
            "generate",
            str(tmp_path / "pipe"),
            "--num-samples",
            "6",
            "--format",
            "adm",
            "--output",
            str(tmp_path / "a.npz"),
            *SAMPLING,
        ]
    )
    main(["generate", str(tmp_path / "pipe"), "--num-samples", "6", "--output", str(tmp_path / "d.npz"), *SAMPLING])
    with np.load(tmp_path / "a.npz") as data:
        assert data["arr_0"].shape == (6, 8, 8, 1) and data["arr_0"].dtype == np.uint8
        assert data["arr_1"].tolist() == [0, 1, 2, 0, 1, 2]
        np.savez(tmp_path / "bare.npz", arr_0=data["arr_0"])  # a batch from elsewhere: images only
    adm, native = load_samples(tmp_path / "a.npz"), load_samples(tmp_path / "d.npz")
    assert torch.equal(adm[0], native[0]) and adm[1] == native[1] and adm[2]["steps"] == 2
    bare = load_samples(tmp_path / "bare.npz")
    assert torch.equal(bare[0], native[0]) and bare[1] == [-1] * 6

    rng = np.random.default_rng(0)
    reference = rng.integers(0, 256, size=(8, 8, 8, 1), dtype=np.uint8)
    np.savez(tmp_path / "ref.npz", arr_0=reference)
    cache = tmp_path / "cache"
    scores = score_images(native[0], reference=str(tmp_path / "ref.npz"), cache_dir=cache)
    fake = inception_features(native[0].float() / 255)
    real = inception_features(torch.from_numpy(reference).permute(0, 3, 1, 2).float() / 255)
    assert scores["fid"] == pytest.approx(fid_from_features(real, fake), rel=1e-9) and scores["num_reference"] == 8
    mu, sigma = feature_statistics(real[:5])
    np.savez(tmp_path / "stats.npz", mu=mu, sigma=sigma)
    own = score_images(native[0], reference=str(tmp_path / "stats.npz"), cache_dir=cache)
    assert own["fid"] == pytest.approx(frechet_distance(mu, sigma, *feature_statistics(fake)), rel=1e-9)
    assert own["precision"] is None  # no reference images, no k-NN manifold

    np.savez(tmp_path / "ref16.npz", arr_0=np.zeros((4, 16, 16, 1), dtype=np.uint8))
    with pytest.raises(ValueError, match="holds 16x16 images, the samples are 8x8"):
        score_images(native[0], reference=str(tmp_path / "ref16.npz"), cache_dir=cache)
    np.savez(tmp_path / "neither.npz", x=np.zeros(3))
    with pytest.raises(ValueError, match="neither arr_0 images nor mu and sigma"):
        score_images(native[0], reference=str(tmp_path / "neither.npz"), cache_dir=cache)
    with pytest.raises(ValueError, match="is neither a samples file"):
        load_samples(tmp_path / "neither.npz")
    save_samples(tmp_path / "t.npz", native[0][:2], [[0, 1], [2, 3]], {"prompts": ["a", "b"]}, layout="adm")
    assert load_samples(tmp_path / "t.npz")[1] == [[0, 1], [2, 3]]  # scene items ride along beside arr_0


def test_generate_compile_draws_the_eager_images_and_says_so(tmp_path):
    """`generate --compile` samples with the transformer under torch.compile (its default mode on a CPU; CUDA graphs
    on CUDA), records the mode with the samples, and draws the eager images to float32 precision."""
    from diffusers_lit.compilation import compile_mode

    assert (compile_mode("cuda"), compile_mode("cpu")) == ("reduce-overhead", "default")
    class_pipeline().save_pretrained(tmp_path / "pipe")
    args = ["generate", str(tmp_path / "pipe"), "--num-samples", "2", *SAMPLING]
    main([*args, "--output", str(tmp_path / "eager.npz")])
    main([*args, "--compile", "--output", str(tmp_path / "compiled.npz")])
    (eager, _, eager_info), (compiled, _, compiled_info) = (
        load_samples(tmp_path / name) for name in ("eager.npz", "compiled.npz")
    )
    assert (eager_info["compile"], compiled_info["compile"]) == ("no", "default")
    assert (eager.int() - compiled.int()).abs().max() <= 1  # 8-bit images: at most one level apart


def test_a_model_replaced_at_the_same_path_is_not_merged_into_its_predecessors_run(tmp_path, monkeypatch, capsys):
    """The shard settings name the model by content: killed before the merge, the folder replaced by another model
    at the same path, the rerun is refused; the model put back, it resumes."""
    import shutil

    import diffusers_lit.sharded_sampling as sharded

    class_pipeline().save_pretrained(tmp_path / "model")
    shutil.copytree(tmp_path / "model", tmp_path / "first")
    output = tmp_path / "s.npz"
    argv = ["generate", str(tmp_path / "model"), "--num-samples", "2", "--shard-size", "1", "--output", str(output)]

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(sharded, "load_samples", killed)  # the merge: every shard was drawn
        with pytest.raises(KeyboardInterrupt):
            main([*argv, *SAMPLING])
    shutil.rmtree(tmp_path / "model")
    class_pipeline(seed=5).save_pretrained(tmp_path / "model")
    with pytest.raises(SystemExit):
        main([*argv, *SAMPLING])
    assert "holds shards of a run with other settings (model)" in capsys.readouterr().err and not output.exists()
    shutil.rmtree(tmp_path / "model")
    shutil.copytree(tmp_path / "first", tmp_path / "model")
    main([*argv, *SAMPLING])
    assert len(load_samples(output)[0]) == 2
