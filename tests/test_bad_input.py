"""Refusals that no other test feeds: loading, the class pipeline's arguments, scheduler names, parse checks."""

import json
import os

import pytest
import torch
from diffusers import DDPMScheduler, DiTPipeline
from helpers import class_pipeline, tiny_class_transformer, tiny_vae

from diffusers_lit import LiTPipeline
from diffusers_lit.pipelines import scheduler_from_name
from diffusers_lit.training import parse_distill_args


def test_loading_what_is_not_a_lit_pipeline(tmp_path):
    (tmp_path / "weights.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match="is a file; pass a pipeline folder"):
        LiTPipeline.from_pretrained(tmp_path / "weights.safetensors")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="has no model_index.json: it is not a diffusers pipeline folder"):
        LiTPipeline.from_pretrained(tmp_path / "empty")
    DiTPipeline(transformer=tiny_class_transformer(), vae=tiny_vae(1), scheduler=DDPMScheduler()).save_pretrained(
        tmp_path / "dit"
    )
    with pytest.raises(ValueError, match="holds a DiTPipeline, not a LiT pipeline.*diffusers-lit convert"):
        LiTPipeline.from_pretrained(tmp_path / "dit")
    class_pipeline().save_pretrained(tmp_path / "lit")
    (tmp_path / "lit" / "card_info.json").write_text(json.dumps(["not", "an", "object"]))
    with pytest.raises(ValueError, match="card_info.json must hold a JSON object"):
        LiTPipeline.from_pretrained(tmp_path / "lit")


def test_class_pipeline_arguments():
    pipe = class_pipeline()
    with pytest.raises(ValueError, match="`class_labels` is empty"):
        pipe([], num_inference_steps=1)
    with pytest.raises(ValueError, match=r"`latents` must have shape \(2, 1, 8, 8\), got \(2, 1, 4, 4\)"):
        pipe([0, 1], num_inference_steps=1, latents=torch.zeros(2, 1, 4, 4))
    with pytest.raises(ValueError, match="`callback_on_step_end_tensor_inputs` must be among"):
        pipe([0], num_inference_steps=1, callback_on_step_end_tensor_inputs=["prompt_embeds"])


def test_unknown_scheduler_name():
    with pytest.raises(ValueError, match="Unknown scheduler 'plms': choose one of ddpm, ddim, dpm\\+\\+, euler"):
        scheduler_from_name("plms", DDPMScheduler().config)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--gradient_accumulation_steps", "0"], "--gradient_accumulation_steps must be at least 1"),
        (["--checkpointing_steps", "0"], "--checkpointing_steps must be at least 1"),
        (["--cfg_dropout_prob", "1.0"], "--cfg_dropout_prob must be in [0, 1)"),
        (["--lora_rank", "4", "--push_to_hub"], "--lora_rank trains adapters only"),
    ],
)
def test_more_training_flags_refused_by_the_parser(flags, message, capsys):
    base = ["--teacher", "t", "--dataset", "d", "--output_dir", "o", "--max_train_steps", "1"]
    with pytest.raises(SystemExit) as exit_info:
        parse_distill_args([*base, *flags])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_training_needs_a_length(capsys):
    with pytest.raises(SystemExit):
        parse_distill_args(["--teacher", "t", "--dataset", "d", "--output_dir", "o"])
    assert "Give --max_train_steps or --num_train_epochs" in capsys.readouterr().err


def cli_error(argv: list, capsys) -> str:
    """The `error: ...` line the command line prints for `argv` (exit status 2, no traceback)."""
    from diffusers_lit.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main([str(arg) for arg in argv])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in err, err
    return err.strip()


def test_non_finite_numbers_are_refused_where_a_float_is_taken(tmp_path, capsys):
    from diffusers_lit.models import LiTTransformer2DModel

    for value in ("nan", "inf", "-inf"):
        err = cli_error(["convert", "src", tmp_path / "out", f"--timestep-freq-shift={value}"], capsys)
        assert err.endswith(f"argument --timestep-freq-shift: give a finite number, got '{value}'")
    err = cli_error(["sample", "m", "--class-labels", "0", "--guidance-scale", "nan"], capsys)
    assert err.endswith("argument --guidance-scale: give a finite number, got 'nan'")
    base = ["--teacher", "t", "--dataset", "d", "--output_dir", "o", "--max_train_steps", "1"]
    with pytest.raises(SystemExit):
        parse_distill_args([*base, "--validation_guidance_scale", "nan"])
    assert "give a finite number, got 'nan'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="`timestep_freq_shift` must be a finite number, got nan"):
        LiTTransformer2DModel(num_layers=1, sample_size=8, num_embeds_ada_norm=3, timestep_freq_shift=float("nan"))
    pipe = class_pipeline()
    for scale in (float("nan"), float("inf"), "4"):
        with pytest.raises(ValueError, match="`guidance_scale` must be a finite number"):
            pipe([0], guidance_scale=scale, num_inference_steps=1)


def test_text_pipeline_refuses_a_non_finite_guidance_scale(tmp_path):
    from helpers import text_pipeline

    with pytest.raises(ValueError, match="`guidance_scale` must be a finite number, got nan"):
        text_pipeline(tmp_path)("a cat", guidance_scale=float("nan"), num_inference_steps=1)


def test_a_model_that_samples_nan_fails_sample_and_generate_and_writes_nothing(tmp_path, capsys):
    pipe = class_pipeline()
    torch.nn.init.constant_(pipe.transformer.proj_out_2.bias, float("nan"))
    pipe.save_pretrained(tmp_path / "broken")
    expected = "model produced non-finite (NaN / inf) values in 2 of 2 images"
    err = cli_error(
        ["sample", tmp_path / "broken", "--class-labels", "0", "1", "--steps", "1", "--output", tmp_path / "grid.png"],
        capsys,
    )
    assert expected in err and not (tmp_path / "grid.png").exists()
    err = cli_error(
        [
            "generate",
            tmp_path / "broken",
            "--num-samples",
            "2",
            "--steps",
            "1",
            "--device",
            "cpu",
            "--output",
            tmp_path / "s.npz",
        ],
        capsys,
    )
    assert expected in err and not (tmp_path / "s.npz").exists()


def test_bad_outputs_and_references_are_refused_before_any_sampling(tmp_path, capsys, monkeypatch):
    """Each refused before the pipeline is sampled (a sampler that fails the test if called)."""
    import diffusers_lit.cli as cli

    def never(*args, **kwargs):
        raise AssertionError("sampled before the refusal")

    monkeypatch.setattr(cli, "_draw", never)
    class_pipeline().save_pretrained(tmp_path / "model")
    model = tmp_path / "model"
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder.npz").mkdir()
    cases = [
        (
            ["sample", model, "--class-labels", "0", "--output", "/dev/null"],
            "/dev/null exists and is a device, pipe or socket, not a regular file",
        ),
        (
            ["sample", model, "--class-labels", "0", "--output", tmp_path / "grid.xyz"],
            f"--output {tmp_path / 'grid.xyz'}: name an image file PIL can write",
        ),
        (["generate", model, "--output", tmp_path / "folder.npz"], "folder.npz exists and is a folder, not a"),
        (["evaluate", model, "--output", "/dev/full"], "/dev/full exists and is a device, pipe or socket"),
        (["evaluate", model, "--grid", tmp_path / "grid.txt"], "name an image file PIL can write"),
        (["evaluate", model, "--num-samples", "1"], "--num-samples must be at least 2 (an FID needs two images)"),
        (["evaluate", model, "--num-samples", "10", "--fid-at", "20"], "--fid-at counts must lie in [2, 10]"),
        (["evaluate", model, "--reference", tmp_path / "missing"], "missing"),
        (["evaluate", model, "--reference", tmp_path / "missing.npz"], "reference batch"),
    ]
    for argv, message in cases:
        assert message in cli_error(argv, capsys), argv
    assert not list(tmp_path.glob("*.png")) and os.path.exists("/dev/null") and os.path.exists("/dev/full")
