"""LoRA adapters of LiT in diffusers' LoRA file format: add, save, load into a fresh pipeline, fuse, unload."""

import pytest
import torch
from helpers import class_pipeline, text_pipeline
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict

from diffusers_lit import LiTPipeline, LiTTextToImagePipeline
from diffusers_lit.pipelines.lora import LORA_TARGET_MODULES

TARGETS = list(LORA_TARGET_MODULES)  # attn1 (LiT's linear attention) and attn2 share these names


def draw(pipe, **kwargs):
    kwargs = {"num_inference_steps": 2, "output_type": "pt", **kwargs}
    return pipe(generator=torch.Generator().manual_seed(0), **kwargs).images


def with_adapter(pipe, seed: int = 0):
    torch.manual_seed(seed)
    pipe.transformer.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=TARGETS, init_lora_weights=False))
    return pipe


def test_class_pipeline_lora_round_trip_fuse_and_unload(tmp_path):
    labels = [0, 2]
    base = draw(class_pipeline(), class_labels=labels)
    pipe = with_adapter(class_pipeline())
    adapted = draw(pipe, class_labels=labels)
    assert (adapted - base).abs().max() > 1e-3  # the adapter changes the function
    LiTPipeline.save_lora_weights(tmp_path, transformer_lora_layers=get_peft_model_state_dict(pipe.transformer))
    assert (tmp_path / "pytorch_lora_weights.safetensors").is_file()

    fresh = class_pipeline()
    fresh.load_lora_weights(tmp_path, adapter_name="fmnist")
    torch.testing.assert_close(draw(fresh, class_labels=labels), adapted, rtol=0, atol=1e-5)
    fresh.fuse_lora()
    torch.testing.assert_close(draw(fresh, class_labels=labels), adapted, rtol=0, atol=1e-4)
    fresh.unfuse_lora()
    fresh.set_adapters("fmnist", 0.0)  # weight 0: the base model's function
    torch.testing.assert_close(draw(fresh, class_labels=labels), base, rtol=0, atol=1e-5)
    fresh.unload_lora_weights()
    torch.testing.assert_close(draw(fresh, class_labels=labels), base, rtol=0, atol=1e-5)  # after fuse + unfuse


def test_text_pipeline_lora_round_trip(tmp_path):
    kwargs = dict(prompt="a red cat", use_resolution_binning=False, max_sequence_length=16)
    pipe = with_adapter(text_pipeline(tmp_path))
    adapted = draw(pipe, **kwargs)
    LiTTextToImagePipeline.save_lora_weights(
        tmp_path / "lora", transformer_lora_layers=get_peft_model_state_dict(pipe.transformer)
    )
    fresh = text_pipeline(tmp_path)
    fresh.load_lora_weights(tmp_path / "lora")
    torch.testing.assert_close(draw(fresh, **kwargs), adapted, rtol=0, atol=1e-5)


def test_lora_weights_of_another_architecture_are_refused(tmp_path):
    foreign = {
        "transformer.down_blocks.0.attn.to_q.lora_A.weight": torch.zeros(4, 16),
        "transformer.down_blocks.0.attn.to_q.lora_B.weight": torch.zeros(16, 4),
    }
    with pytest.raises(ValueError, match="adapt layers this LiTTransformer2DModel does not have"):
        class_pipeline().load_lora_weights(foreign)


def test_lora_weights_of_another_width_are_refused_and_leave_the_pipeline_as_it_was():
    """Adapters whose shapes do not fit the layers (another model width) are refused by name and size; the
    pipeline keeps no half-loaded adapter and draws the images it drew before."""
    source = class_pipeline()
    source.transformer.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q"]))
    weights = {f"transformer.{key}": value for key, value in get_peft_model_state_dict(source.transformer).items()}
    wide = {
        key: torch.ones(value.shape[0], value.shape[1] + 3) if "lora_A" in key else value
        for key, value in weights.items()
    }
    pipe = class_pipeline()
    before = draw(pipe, class_labels=[0, 1])
    with pytest.raises(
        RuntimeError, match=r"size mismatch for transformer_blocks.0.attn1.to_q.lora_A.*\[4, 19\].*\[4, 16\]"
    ):
        pipe.load_lora_weights(wide)
    assert not getattr(pipe.transformer, "peft_config", None)
    torch.testing.assert_close(draw(pipe, class_labels=[0, 1]), before, rtol=0, atol=0)


def test_distillation_trains_lora_adapters_on_a_frozen_student(tmp_path):
    """distill_lit.py --lora_rank: the student's own weights stay as they were, the adapters train, and the saved
    adapters loaded into a fresh pipeline of the student draw what the trained model draws."""
    from safetensors.torch import load_file
    from training_helpers import save_class_pipeline, tiny_dit, tiny_lit, write_imagefolder

    from diffusers_lit.training import distill, parse_distill_args

    teacher, student = save_class_pipeline(tiny_dit(), tmp_path / "t"), save_class_pipeline(tiny_lit(), tmp_path / "s")
    out = tmp_path / "lora"
    distill(
        parse_distill_args(
            [
                "--teacher",
                str(teacher),
                "--student",
                str(student),
                "--dataset",
                str(write_imagefolder(tmp_path / "im")),
                "--output_dir",
                str(out),
                "--cache_dir",
                str(tmp_path / "cache"),
                "--max_train_steps",
                "2",
                "--train_batch_size",
                "2",
                "--report_to",
                "none",
                "--lora_rank",
                "4",
                "--learning_rate",
                "1e-2",
            ]
        )
    )
    trained = load_file(out / "checkpoint-2" / "model.safetensors")  # the whole model: base and adapters
    base = load_file(student / "transformer" / "diffusion_pytorch_model.safetensors")
    lora_keys = [key for key in trained if "lora_" in key]
    frozen = [key for key in trained if "lora_" not in key]
    assert lora_keys and all(torch.equal(trained[key], base[key.replace(".base_layer", "")]) for key in frozen)
    assert any(trained[key].abs().max() > 0 for key in lora_keys if "lora_B" in key)  # B starts at 0: it trained

    fresh = LiTPipeline.from_pretrained(student)
    fresh.set_progress_bar_config(disable=True)
    fresh.load_lora_weights(out)
    model = LiTPipeline.from_pretrained(student)
    model.set_progress_bar_config(disable=True)
    model.transformer.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=TARGETS))
    model.transformer.load_state_dict(trained)
    torch.testing.assert_close(draw(fresh, class_labels=[0, 1]), draw(model, class_labels=[0, 1]), rtol=0, atol=1e-6)


def test_saving_with_adapters_and_fusing_projections_over_them_are_refused(tmp_path):
    """A pipeline saved with live adapters would reload with fresh weights; fused q / k / v projections would drop
    the adapters of to_q / to_k / to_v: both refused, with the way that works, which is checked."""
    labels = [0, 2]
    pipe = with_adapter(class_pipeline())
    adapted = draw(pipe, class_labels=labels)
    with pytest.raises(ValueError) as error:
        pipe.save_pretrained(tmp_path / "saved")
    assert str(error.value) == (
        "The transformer holds LoRA adapters (default): save them with `pipe.save_lora_weights(folder)`, or merge "
        "them into the weights (`pipe.fuse_lora()`, then `pipe.unload_lora_weights()`) before `save_pretrained`."
    )
    assert not (tmp_path / "saved").exists()
    with pytest.raises(ValueError, match=r"holds LoRA adapters \(default\), which fused projections would drop"):
        pipe.transformer.fuse_qkv_projections()
    with pytest.raises(ValueError, match="`lora_scale` must be a finite number, got nan"):
        pipe.fuse_lora(lora_scale=float("nan"))
    torch.testing.assert_close(draw(pipe, class_labels=labels), adapted, rtol=0, atol=0)  # nothing changed

    pipe.fuse_lora()
    pipe.unload_lora_weights()
    pipe.save_pretrained(tmp_path / "saved")
    reloaded = LiTPipeline.from_pretrained(tmp_path / "saved")
    torch.testing.assert_close(draw(reloaded, class_labels=labels), adapted, rtol=0, atol=1e-4)
    reloaded.transformer.fuse_qkv_projections()
    torch.testing.assert_close(draw(reloaded, class_labels=labels), adapted, rtol=0, atol=1e-4)
    adapters = get_peft_model_state_dict(with_adapter(class_pipeline()).transformer)
    LiTPipeline.save_lora_weights(tmp_path / "lora", transformer_lora_layers=adapters)
    with pytest.raises(ValueError, match="projections are fused .* Call `pipe.transformer.unfuse_qkv_projections"):
        reloaded.load_lora_weights(tmp_path / "lora")
