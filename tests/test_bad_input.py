"""Refusals that no other test feeds: loading, the class pipeline's arguments, scheduler names, parse checks."""

import json

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
