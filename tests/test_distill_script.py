"""The distillation loop (examples/distill_lit.py) end to end: a few steps of tiny models on 16 x 16 pictures."""

import argparse
import json
import os
import pickle
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import diffusers_to_original_dit
from PIL import Image
from safetensors.torch import load_file
from training_helpers import (
    save_class_pipeline,
    save_text_pipeline,
    tiny_dit,
    tiny_lit,
    tiny_lit_text,
    tiny_pixart,
    write_imagefolder,
)

from diffusers_lit import LiTPipeline, LiTTextToImagePipeline
from diffusers_lit.training import distill, load_image_dataset, parse_distill_args

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "distill_lit.py"
TERMS = ("loss", "mse", "vlb", "noise_kd", "variance_kd")


def run(*argv: str) -> Path:
    """The script's loop in this process. The tests' in-process runs all use the same accelerate settings (no mixed
    precision), so accelerate's one state per process serves them all."""
    return distill(parse_distill_args([str(arg) for arg in argv]))


def metrics(output_dir: Path) -> dict[int, dict]:
    """The last logged record of each step."""
    lines = (output_dir / "logs" / "metrics.jsonl").read_text().splitlines()
    return {record["step"]: record for record in map(json.loads, lines)}


@pytest.fixture(scope="module")
def class_setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("distill")
    return {
        "teacher": save_class_pipeline(tiny_dit(), root / "teacher"),
        "student": save_class_pipeline(tiny_lit(), root / "student"),
        "images": write_imagefolder(root / "images"),
        "cache": root / "cache",
        "root": root,
    }


def common(setup, output_dir: Path, steps: int = 4) -> list:
    return [
        "--teacher",
        setup["teacher"],
        "--dataset",
        setup["images"],
        "--output_dir",
        output_dir,
        "--cache_dir",
        setup["cache"],
        "--max_train_steps",
        steps,
        "--train_batch_size",
        2,
        "--report_to",
        "none",
        "--random_flip",
    ]


def test_class_conditional_end_to_end(class_setup):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = class_setup["root"] / "e2e"
    run(
        *common(class_setup, out),
        "--student",
        class_setup["student"],
        "--checkpointing_steps",
        2,
        "--checkpoints_total_limit",
        1,
        "--validation_steps",
        2,
        "--validation_inference_steps",
        2,
        "--validation_class_labels",
        0,
        2,
        "--use_ema",
        "--report_to",
        "tensorboard",
    )

    assert [path.name for path in out.glob("checkpoint-*")] == ["checkpoint-4"]  # the total limit removed step 2
    assert sorted(path.name for path in (out / "validation").iterdir()) == ["step-000002.png", "step-000004.png"]
    assert Image.open(out / "validation" / "step-000004.png").size == (2 * 16, 16 + 12)
    logged = metrics(out)
    assert sorted(logged) == [1, 2, 3, 4] and all(set(TERMS) <= set(record) for record in logged.values())
    events = EventAccumulator(str(next((out / "logs").rglob("events.out.tfevents.*")).parent)).Reload()
    assert set(TERMS) <= set(events.Tags()["scalars"]) and "validation" in events.Tags()["images"]

    # The final pipeline: the EMA weights, a model card that says where it came from; it loads and samples.
    pipe = LiTPipeline.from_pretrained(out)
    assert not list(out.glob("checkpoint-4/*.pkl")) or all(
        path.name.startswith("random_states") for path in out.glob("checkpoint-4/*.pkl")
    )  # the EMA is no pickle
    shadow = load_file(out / "checkpoint-4" / "ema.safetensors")
    ema = [shadow[f"shadow.{index}"] for index in range(len(shadow))]
    assert all(torch.equal(p, e) for p, e in zip(pipe.transformer.parameters(), ema, strict=True))
    assert f"Distilled from `{class_setup['teacher']}`" in (out / "README.md").read_text()
    pipe.set_progress_bar_config(disable=True)
    images = pipe(["cat", 1], num_inference_steps=2, output_type="np").images
    assert images.shape == (2, 16, 16, 1)
    assert len(list(class_setup["cache"].iterdir())) == 1  # the pixels, cached once


def test_resume_continues_exactly(class_setup):
    """Straight: 4 steps (checkpoint at 2). Interrupted: the same, stopped after step 2, resumed from `latest`.
    Same losses, bit-identical final (EMA) weights. The student is converted from the teacher on the fly, a hybrid
    whose block 0 keeps the teacher's softmax self-attention."""
    out = class_setup["root"] / "resume"
    args = [
        *common(class_setup, out),
        "--checkpointing_steps",
        2,
        "--gradient_accumulation_steps",
        2,
        "--lr_scheduler",
        "cosine",
        "--lr_warmup_steps",
        1,
        "--use_ema",
        "--ema_decay",
        0.5,
        "--linear_attention_heads",
        2,
        "--softmax_blocks",
        "0",
    ]
    run(*args)
    assert json.loads((out / "transformer" / "config.json").read_text())["softmax_attention_blocks"] == [0]
    straight = metrics(out)
    straight_weights = load_file(out / "transformer" / "diffusion_pytorch_model.safetensors")

    shutil.rmtree(out / "checkpoint-4")  # as if the run had stopped after step 2
    (out / "transformer" / "diffusion_pytorch_model.safetensors").unlink()
    run(*args, "--resume_from_checkpoint", "latest")
    lines = [json.loads(line) for line in (out / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert [record["step"] for record in lines] == [1, 2, 3, 4, 3, 4]
    for record in lines[4:]:
        assert {k: v for k, v in record.items() if k != "step_seconds"} == {
            k: v for k, v in straight[record["step"]].items() if k != "step_seconds"
        }
    resumed_weights = load_file(out / "transformer" / "diffusion_pytorch_model.safetensors")
    assert straight_weights.keys() == resumed_weights.keys()
    assert all(torch.equal(straight_weights[key], resumed_weights[key]) for key in straight_weights)
    assert lines[1]["lr"] != lines[3]["lr"]  # the cosine schedule moved, and was restored


def test_text_to_image_chain(tmp_path):
    teacher = save_text_pipeline(tiny_pixart(), tmp_path / "teacher", tmp_path)
    student = save_text_pipeline(tiny_lit_text(), tmp_path / "student", tmp_path)
    images = write_imagefolder(tmp_path / "images", per_class=1, captions=True)
    out = tmp_path / "out"
    run(
        "--teacher",
        teacher,
        "--student",
        student,
        "--dataset",
        images,
        "--output_dir",
        out,
        "--cache_dir",
        tmp_path / "cache",
        "--max_train_steps",
        2,
        "--train_batch_size",
        2,
        "--report_to",
        "none",
        "--max_sequence_length",
        8,
        "--validation_steps",
        2,
        "--validation_inference_steps",
        1,
        "--validation_prompts",
        "a red cat",
        "--random_flip",
    )
    logged = metrics(out)
    assert logged[2]["lr"] == 2e-5 and logged[2]["noise_kd"] > 0 and logged[2]["variance_kd"] > 0
    assert (out / "validation" / "step-000002.png").is_file()
    pipe = LiTPipeline.from_pretrained(out)
    assert isinstance(pipe, LiTTextToImagePipeline)
    pipe.set_progress_bar_config(disable=True)
    assert pipe("a blue dog", num_inference_steps=1, output_type="np").images.shape == (1, 16, 16, 3)


def test_an_original_training_checkpoint_of_another_width_teaches_with_a_components_only_folder(class_setup, tmp_path):
    """DiT's train.py output ({"model", "ema", "opt", "args"}) as the teacher: 16 wide (no DiT size, so its heads
    are given), its EMA weights by default, its scheduler and labels from a folder without a transformer."""
    model, ema = tiny_dit(seed=3), tiny_dit(seed=4)
    checkpoint = tmp_path / "0001000.pt"
    arguments = argparse.Namespace(model="tiny", image_size=16, num_classes=3)
    original = {"model": diffusers_to_original_dit(model), "ema": diffusers_to_original_dit(ema), "args": arguments}
    torch.save(original, checkpoint)
    components = save_class_pipeline(tiny_dit(), tmp_path / "components")
    shutil.rmtree(components / "transformer")
    index = json.loads((components / "model_index.json").read_text())
    del index["transformer"]
    (components / "model_index.json").write_text(json.dumps(index))
    setup = {**class_setup, "teacher": checkpoint}
    flags = ["--teacher_components", components, "--learning_rate", "1e-5"]
    with pytest.raises(ValueError, match="Cannot infer the attention heads of a transformer 16 wide"):
        run(*common(setup, tmp_path / "no-heads", steps=1), *flags)
    out = tmp_path / "out"
    run(*common(setup, out, steps=1), *flags, "--teacher_num_attention_heads", 2)
    pipe = LiTPipeline.from_pretrained(out)
    assert pipe.labels == {"bird": 2, "cat": 0, "dog": 1}  # the components folder's labels
    student = pipe.transformer.proj_out_2.weight  # copied from the teacher, then one Adam step of 1e-5
    assert (student - ema.proj_out_2.weight).abs().max() < 1e-4 < (student - model.proj_out_2.weight).abs().max()
    raw = tmp_path / "raw"
    run(
        *common(setup, raw, steps=1),
        *flags,
        "--teacher_num_attention_heads",
        2,
        "--teacher_checkpoint_weights",
        "model",
    )
    student = LiTPipeline.from_pretrained(raw).transformer.proj_out_2.weight
    assert (student - model.proj_out_2.weight).abs().max() < 1e-4


def test_bad_inputs_are_refused_before_the_first_step(class_setup, tmp_path):
    root = class_setup["root"]
    other_student = save_class_pipeline(tiny_lit(in_channels=3), root / "other-student")
    empty = root / "empty"
    load_image_dataset(class_setup["images"]).select([]).save_to_disk(str(empty))
    (tmp_path / "a-file").write_text("")

    cases = [
        (dict(student=other_student), "do not match: in_channels 1 vs 3"),
        (dict(label_column="class"), "no column 'class'"),
        (dict(dataset=empty), "empty"),
        (dict(output_dir=tmp_path / "a-file" / "out"), "is not writable"),
    ]
    for index, (changes, message) in enumerate(cases):
        out = changes.get("output_dir", tmp_path / f"out-{index}")
        argv = common({**class_setup, "images": changes.get("dataset", class_setup["images"])}, out, steps=1)
        argv += ["--student", changes.get("student", class_setup["student"])]
        argv += ["--label_column", changes["label_column"]] if "label_column" in changes else []
        with pytest.raises(ValueError, match=message):
            run(*argv)
        assert not (Path(out) / "logs" / "metrics.jsonl").exists()

    # A checkpoint of another model (a student with other linear-attention heads) in the output folder.
    out = tmp_path / "resume-other"
    other_heads = save_class_pipeline(tiny_lit(heads=1), root / "heads1")
    run(*common(class_setup, out, steps=1), "--student", other_heads, "--checkpointing_steps", 1)
    with pytest.raises(ValueError, match="another student.*linear_attention_heads: 1 in the checkpoint, 2 now"):
        run(
            *common(class_setup, out, steps=2),
            "--student",
            class_setup["student"],
            "--resume_from_checkpoint",
            "latest",
        )
    assert sorted(metrics(out)) == [1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_processes_data_parallel_on_cpu(class_setup, tmp_path):
    out = tmp_path / "ddp"
    pythonpath = os.pathsep.join([str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])])
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": pythonpath}
    env["CUDA_VISIBLE_DEVICES"] = ""  # the CPU path, also on a machine with a GPU
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(_free_port()),
        str(SCRIPT),
        *map(str, common(class_setup, out, steps=3)),
        "--student",
        str(class_setup["student"]),
        "--log_per_process",
        "--checkpointing_steps",
        "3",
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]

    finals = [json.loads((out / "logs" / f"final-rank{rank}.json").read_text()) for rank in (0, 1)]
    assert [final["num_processes"] for final in finals] == [2, 2]
    assert [final["process_index"] for final in finals] == [0, 1]
    assert finals[0]["weights_sha256"] == finals[1]["weights_sha256"]
    ranks = [
        [json.loads(line) for line in (out / "logs" / f"losses-rank{r}.jsonl").read_text().splitlines()]
        for r in (0, 1)
    ]
    logged = metrics(out)
    for step in (1, 2, 3):
        first, second = ranks[0][step - 1], ranks[1][step - 1]
        assert not set(first["indices"]) & set(second["indices"])  # each process takes its own shard
        for term in TERMS:
            assert logged[step][term] == pytest.approx((first[term] + second[term]) / 2, rel=1e-6, abs=1e-7)
    assert first["loss"] != second["loss"]
    state = json.loads((out / "checkpoint-3" / "training_state.json").read_text())
    assert state["run"]["num_processes"] == 2


def test_example_accelerate_configs_parse():
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.utils import DistributedType

    folder = ROOT / "examples" / "accelerate_configs"
    fsdp = load_config_from_file(str(folder / "fsdp.yaml"))
    assert fsdp.distributed_type == DistributedType.FSDP
    assert fsdp.fsdp_config["fsdp_transformer_layer_cls_to_wrap"] == "LiTTransformerBlock"
    assert load_config_from_file(str(folder / "deepspeed_zero2.yaml")).distributed_type == DistributedType.DEEPSPEED


def test_each_step_draws_its_own_noise_timesteps_and_dropout(class_setup, monkeypatch):
    """The loop's random draws come from (seed, step, process): they differ from step to step, and equal those of
    `step_generator` for the same triple (a generator that ignored the step would train on one draw forever)."""
    from diffusers_lit.training import loop, step_generator

    seen = []
    loss = loop.hybrid_distillation_loss

    def recording_loss(student_output, teacher_output, noise, x_start, x_t, timesteps, *args, **kwargs):
        seen.append({"noise": noise.clone(), "timesteps": timesteps.clone()})
        return loss(student_output, teacher_output, noise, x_start, x_t, timesteps, *args, **kwargs)

    monkeypatch.setattr(loop, "hybrid_distillation_loss", recording_loss)
    run(
        *common(class_setup, class_setup["root"] / "draws", steps=3),
        "--student",
        class_setup["student"],
        "--seed",
        5,
        "--checkpointing_steps",
        10,
    )
    assert len(seen) == 3
    for step, draws in enumerate(seen):
        generator = step_generator(5, step, 0)  # as the loop draws: the flips (--random_flip), timesteps, noise
        torch.rand(2, generator=generator)
        timesteps = torch.randint(0, 1000, (2,), generator=generator)
        noise = torch.randn(draws["noise"].shape, generator=generator)
        assert torch.equal(draws["timesteps"], timesteps) and torch.equal(draws["noise"], noise)
    assert not torch.equal(seen[0]["noise"], seen[1]["noise"]) and not torch.equal(seen[1]["noise"], seen[2]["noise"])
    assert step_generator(5, 1, 0).initial_seed() != step_generator(5, 1, 1).initial_seed()  # and per process


# Bad input and safety (issue 15)


def test_resume_never_unpickles_and_refuses_a_malformed_ema(class_setup):
    out = class_setup["root"] / "no-pickle"

    def args(steps: int) -> list:
        return [
            *common(class_setup, out, steps=steps),
            "--student",
            class_setup["student"],
            "--checkpointing_steps",
            1,
            "--use_ema",
            "--ema_decay",
            0.5,
        ]

    run(*args(2))
    checkpoint = out / "checkpoint-2"
    assert (checkpoint / "ema.safetensors").is_file() and not list(checkpoint.glob("custom_checkpoint_*"))
    # A doctored pickle where an older checkpoint kept its EMA: it is never read, so its code never runs.
    marker = class_setup["root"] / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    (checkpoint / "custom_checkpoint_0.pkl").write_bytes(pickle.dumps(Payload()))
    with pytest.raises(ValueError, match=r"pickled objects \(custom_checkpoint_0.pkl\), which are never loaded"):
        run(*args(3), "--resume_from_checkpoint", "latest")
    assert not marker.exists()
    (checkpoint / "custom_checkpoint_0.pkl").unlink()
    (checkpoint / "ema.safetensors").unlink()
    with pytest.raises(ValueError, match="has no EMA weights"):
        run(*args(3), "--resume_from_checkpoint", "latest")
    (checkpoint / "ema.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ValueError, match="ema.safetensors is not a readable safetensors file"):
        run(*args(3), "--resume_from_checkpoint", "latest")
    (checkpoint / "ema.json").write_text("{")
    with pytest.raises(ValueError, match="ema.json is not an EMA state"):
        run(*args(3), "--resume_from_checkpoint", "latest")


def test_no_secret_is_written_and_no_run_is_overwritten(class_setup):
    out = class_setup["root"] / "secret"
    token = "hf_doNotWriteMe1234567890"
    args = [
        *common(class_setup, out, steps=2),
        "--student",
        class_setup["student"],
        "--checkpointing_steps",
        1,
        "--report_to",
        "tensorboard",
    ]
    run(*args, "--hub_token", token)
    files = [path for path in out.rglob("*") if path.is_file()]
    assert any(path.name == "training_state.json" for path in files) and any("tfevents" in p.name for p in files)
    assert not [path for path in files if token.encode() in path.read_bytes()]

    with pytest.raises(ValueError, match="holds an earlier run.*--resume_from_checkpoint latest.*--overwrite"):
        run(*args)
    run(*args, "--overwrite_output_dir")
    steps = [json.loads(line)["step"] for line in (out / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2]  # the new run alone, not mixed with the earlier one


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--max_train_steps", "-5"], "--max_train_steps must be at least 1"),
        (["--num_train_epochs", "0"], "--num_train_epochs must be positive"),
        (["--learning_rate", "0"], "--learning_rate must be positive"),
        (["--checkpoints_total_limit", "0"], "--checkpoints_total_limit must be at least 1"),
        (["--ema_decay", "1.5"], "--ema_decay must be in"),
        (["--resume_from_checkpoint", "latest", "--overwrite_output_dir"], "contradict each other"),
        (["--train_batch_size", "0"], "--train_batch_size"),
        (["--max_grad_norm", "-1"], "--max_grad_norm"),
        (["--lora_rank", "0"], "--lora_rank"),
        (["--lora_rank", "4", "--use_ema"], "--lora_rank trains adapters only"),
        (["--inherit", "qk"], "invalid choice: 'qk'"),
        (["--softmax_blocks", "0;1"], "give block indices separated by commas"),
    ],
)
def test_nonsense_flags_are_refused_before_any_work(flags, message, capsys):
    base = ["--teacher", "t", "--dataset", "d", "--output_dir", "o", "--max_train_steps", "1"]
    with pytest.raises(SystemExit):
        parse_distill_args([*base, *flags])
    assert message in capsys.readouterr().err


def test_defaults_follow_dit_clipping_and_ema(class_setup, monkeypatch):
    """DiT-layout runs do not clip gradients by default (DiT does not), and EMA decays at a constant rate."""
    from accelerate import Accelerator

    clipped = []
    monkeypatch.setattr(Accelerator, "clip_grad_norm_", lambda self, params, norm: clipped.append(norm))
    out = class_setup["root"] / "defaults"
    run(
        *common(class_setup, out, steps=2),
        "--student",
        class_setup["student"],
        "--use_ema",
        "--ema_decay",
        0.9,
        "--checkpointing_steps",
        1,
    )
    assert clipped == []
    state = json.loads((out / "checkpoint-2" / "ema.json").read_text())
    assert state["min_decay"] == state["decay"] == 0.9  # EMAModel then uses 0.9 at every step after the first
    assert "EMA weights (constant decay 0.9), no gradient clipping" in (out / "README.md").read_text()
    run(
        *common(class_setup, class_setup["root"] / "clipped", steps=1),
        "--student",
        class_setup["student"],
        "--max_grad_norm",
        1.0,
    )
    assert clipped == [1.0]
