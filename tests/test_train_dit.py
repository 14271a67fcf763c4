"""train_dit (examples/train_dit.py: a DiT from scratch by the distillation loop) and the one-embedder DiT training."""

import json
import os
import shlex
import subprocess
from pathlib import Path

import pytest
import torch
from diffusers import DiTTransformer2DModel
from training_helpers import write_imagefolder

from diffusers_lit import LiTPipeline
from diffusers_lit.conversion import convert_to_lit
from diffusers_lit.training import (
    dit_embedder_copies,
    parse_distill_args,
    parse_dit_args,
    sum_shared_gradients,
    train_dit,
)

ROOT = Path(__file__).resolve().parents[1]


def tiny_dit(seed: int = 0) -> DiTTransformer2DModel:
    torch.manual_seed(seed)
    dit = DiTTransformer2DModel(
        num_attention_heads=2,
        attention_head_dim=8,
        in_channels=1,
        out_channels=2,
        num_layers=3,
        sample_size=8,
        num_embeds_ada_norm=3,
    )
    for block in dit.transformer_blocks[1:]:
        block.norm1.emb.load_state_dict(dit.transformer_blocks[0].norm1.emb.state_dict())
    return dit.eval()


def train(dit, steps, tie_by_sharing: bool):
    if tie_by_sharing:  # the original DiT: one embedder module used by every block
        for block in dit.transformer_blocks[1:]:
            block.norm1.emb = dit.transformer_blocks[0].norm1.emb
    copies = [] if tie_by_sharing else dit_embedder_copies(dit)
    optimizer = torch.optim.AdamW(dit.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    for _ in range(steps):
        x, t = torch.randn(4, 1, 8, 8, generator=gen), torch.randint(0, 1000, (4,), generator=gen)
        y = torch.randint(0, 3, (4,), generator=gen)
        dit(x, timestep=t, class_labels=y).sample.square().mean().backward()
        sum_shared_gradients(copies)
        optimizer.step()
        optimizer.zero_grad()
    return dit


def test_summed_gradients_train_the_copies_as_one_shared_embedder():
    copies = train(tiny_dit(), 3, tie_by_sharing=False)
    shared = train(tiny_dit(), 3, tie_by_sharing=True)
    assert len(dit_embedder_copies(tiny_dit())) == 5  # timestep linear_1 / linear_2 (w, b), class table
    reference = dict(shared.transformer_blocks[0].norm1.emb.named_parameters())
    for block in copies.transformer_blocks:
        for name, value in block.norm1.emb.named_parameters():
            torch.testing.assert_close(value, reference[name], rtol=1e-5, atol=1e-6, msg=name)
    first = copies.transformer_blocks[0].norm1.emb.state_dict()
    for block in copies.transformer_blocks[1:]:  # the copies stay bit-identical, so conversion can fold them
        assert all(torch.equal(first[k], v) for k, v in block.norm1.emb.state_dict().items())
    assert not torch.equal(
        first["timestep_embedder.linear_1.weight"],
        tiny_dit().transformer_blocks[0].norm1.emb.timestep_embedder.linear_1.weight,
    )


def test_train_dit_end_to_end_then_convert(tmp_path, capsys):
    images = write_imagefolder(tmp_path / "images", size=8)
    out = tmp_path / "dit"
    argv = [
        "--dataset",
        images,
        "--output_dir",
        out,
        "--resolution",
        "8",
        "--channels",
        "3",
        "--patch_size",
        "2",
        "--width",
        "16",
        "--depth",
        "2",
        "--heads",
        "2",
        "--max_train_steps",
        "3",
        "--train_batch_size",
        "4",
        "--cache_dir",
        tmp_path / "cache",
        "--report_to",
        "none",
        "--use_ema",
        "--checkpointing_steps",
        "2",
    ]
    train_dit([str(arg) for arg in argv])
    pipe = LiTPipeline.from_pretrained(out)
    assert isinstance(pipe.transformer, DiTTransformer2DModel) and pipe.transformer.config.num_layers == 2
    assert sorted(pipe.labels) == ["bird", "cat", "dog"]  # id2label from the imagefolder's class folders
    init = DiTTransformer2DModel.from_pretrained(out / "init_pipeline" / "transformer")
    assert not torch.equal(init.proj_out_2.weight, pipe.transformer.proj_out_2.weight)  # it trained
    card = (out / "README.md").read_text()
    assert "Trained from scratch" in card and "softmax attention" in card and "linear-attention" not in card
    metrics = [json.loads(line) for line in (out / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert [m["noise_kd"] for m in metrics] == [0.0] * len(metrics) and metrics[-1]["step"] == 3
    lit = convert_to_lit(out, tmp_path / "lit")  # the embedder copies stayed identical: conversion folds them
    report = json.loads((lit / "conversion_report.json").read_text())
    assert report["fresh"]["count"] == 2 * 10

    # --init_from: train a saved pipeline's model on (a fresh optimizer), its card continuing the folder's story.
    with torch.no_grad():
        pipe.transformer.proj_out_2.bias.add_(1.0)  # weights no fresh model has
    pipe.save_pretrained(tmp_path / "edited")
    loop_flags = argv[argv.index("--max_train_steps") :]
    more = tmp_path / "more"
    train_dit(
        [
            str(arg)
            for arg in ["--init_from", tmp_path / "edited", "--dataset", images, "--output_dir", more]
            + [str(arg) for arg in loop_flags]
        ]
    )
    continued = LiTPipeline.from_pretrained(more)
    assert continued.transformer.config.num_layers == 2 and not (more / "init_pipeline").exists()
    moved = continued.transformer.proj_out_2.bias - pipe.transformer.proj_out_2.bias
    assert 0 < moved.abs().max() < 3 * 1e-4 * 1.5  # three AdamW steps at lr 1e-4 from the folder's weights
    info = json.loads((more / "card_info.json").read_text())
    assert info["training_steps"] == 3 + 3
    first = json.loads((out / "card_info.json").read_text())["how_made"]
    assert info["how_made"].startswith(f"Training continued from `{tmp_path / 'edited'}` with")
    assert info["how_made"].endswith(f"was: {first}")
    with pytest.raises(SystemExit):  # the model is the folder's: a shape flag beside --init_from is refused
        parse_dit_args(["--init_from", str(out), "--width", "32"])
    assert "--init_from takes the model from" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_dit_args(["--init_from", str(images)])
    assert "is not a pipeline folder" in capsys.readouterr().err


def test_help_lists_the_model_flags_and_points_to_the_loop(capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_dit_args(["--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert "--width" in text and "--patch_size" in text and "distill_lit.py --help" in text
    model_args, rest = parse_dit_args(["--width", "64", "--max_train_steps", "3"])
    assert model_args.width == 64 and rest == ["--max_train_steps", "3"]  # the loop's flags pass through


def test_the_from_scratch_loop_has_no_teacher_flags(capsys):
    """examples/train_dit.py trains without a teacher: the loop's flags less the teacher's, lambdas 0."""
    base = ["--dataset", "d", "--output_dir", "o", "--max_train_steps", "3"]
    args = parse_distill_args(base, from_scratch=True)
    assert (args.teacher, args.student, args.lambda_noise, args.lambda_var) == (None, None, 0.0, 0.0)
    for flags in (["--teacher", "t"], ["--lambda_noise", "0.5"], ["--inherit", "qkv"]):
        with pytest.raises(SystemExit):
            parse_distill_args([*base, *flags], from_scratch=True)
        assert "unrecognized arguments: " + flags[0] in capsys.readouterr().err


def train_dit_recipe(target: str) -> tuple:
    """The model and loop flags of the examples/train_dit.py command of `make TARGET`."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("MAKE")}
    recipe = subprocess.run(
        ["make", "-s", "-n", "-C", str(ROOT), target], env=env, capture_output=True, text=True, check=True
    ).stdout.replace("\\\n", " ")
    command = next(line for line in recipe.splitlines() if "examples/train_dit.py" in line)
    return parse_dit_args(shlex.split(command.split("examples/train_dit.py", 1)[1]))


def test_make_teacher_trains_the_shipped_architecture():
    """`make teacher` (the teacher retrained on a CPU) builds the shipped teacher's model, with valid loop flags."""
    model_args, rest = train_dit_recipe("teacher")
    loop_args = parse_distill_args(rest, from_scratch=True)
    shipped = json.loads((ROOT / "assets" / "fmnist-dit" / "transformer" / "config.json").read_text())
    assert (model_args.width, model_args.depth, model_args.heads, model_args.patch_size, model_args.resolution) == (
        shipped["num_attention_heads"] * shipped["attention_head_dim"],
        shipped["num_layers"],
        shipped["num_attention_heads"],
        shipped["patch_size"],
        shipped["sample_size"],
    )
    assert (loop_args.max_train_steps, loop_args.train_batch_size, loop_args.dataset) == (4000, 64, "fashion-mnist")
    assert loop_args.resume_from_checkpoint == "latest" and loop_args.use_ema


def test_make_teacher_t2i_more_trains_the_shipped_text_teacher_on(monkeypatch):
    """`make teacher-t2i-more` continues assets/scenes-pixart's weights: EMA 0.999 from its first step (they are
    already averaged), the teacher's lr and batch after a warmup of the fresh optimizer."""
    monkeypatch.chdir(ROOT)  # --init_from is relative to the checkout
    model_args, rest = train_dit_recipe("teacher-t2i-more")
    loop_args = parse_distill_args(rest, from_scratch=True)
    assert model_args.init_from == "assets/scenes-pixart" and loop_args.dataset == "fashion-mnist-scenes"
    assert (loop_args.learning_rate, loop_args.train_batch_size, loop_args.max_grad_norm) == (3e-4, 64, 1.0)
    assert (loop_args.ema_decay, loop_args.ema_schedule, loop_args.lr_scheduler) == (
        0.999,
        "constant",
        "constant_with_warmup",
    )
    assert loop_args.resume_from_checkpoint == "latest"
