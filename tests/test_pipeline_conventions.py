"""The conventions diffusers' own `PipelineTesterMixin` holds every pipeline to, checked on both LiT pipelines
with tiny components: components round trip, outputs and their formats, batching, latents, variants and dtypes,
the pipeline-level hooks."""

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler
from helpers import class_pipeline, text_pipeline

from diffusers_lit import LiTPipeline, LiTTextToImagePipeline


@pytest.fixture(params=["class", "text"])
def kind(request):
    return request.param


def make(kind, tmp_path):
    return class_pipeline(vae=True) if kind == "class" else text_pipeline(tmp_path)


def condition(kind, count: int = 2) -> dict:
    if kind == "class":
        return {"class_labels": [0, 1, 2, 1][:count]}
    return {"prompt": ["a red cat", "a blue dog on grass", "a small bird", "a photo"][:count]}


def call(pipe, kind, count: int = 2, seed: int = 0, **kwargs):
    generator = kwargs.pop("generator", None) or torch.Generator().manual_seed(seed)
    kwargs = {"num_inference_steps": 2, "output_type": "np", **kwargs}
    return pipe(**condition(kind, count), generator=generator, **kwargs)


def test_components_rebuild_the_pipeline(kind, tmp_path):
    pipe = make(kind, tmp_path)
    expected = {"transformer", "scheduler", "vae"} | ({"tokenizer", "text_encoder"} if kind == "text" else set())
    assert set(pipe.components) == expected
    rebuilt = type(pipe)(**pipe.components, **({"id2label": pipe.config.id2label} if kind == "class" else {}))
    rebuilt.set_progress_bar_config(disable=True)
    np.testing.assert_array_equal(call(rebuilt, kind).images, call(pipe, kind).images)


def test_tuple_and_dict_outputs_and_output_types_agree(kind, tmp_path):
    pipe = make(kind, tmp_path)
    as_np = call(pipe, kind).images  # (B, H, W, C) in [0, 1]
    (as_tuple,) = call(pipe, kind, return_dict=False)
    np.testing.assert_array_equal(as_tuple, as_np)
    as_pt = call(pipe, kind, output_type="pt").images  # (B, C, H, W)
    np.testing.assert_allclose(as_pt.permute(0, 2, 3, 1).numpy(), as_np, atol=1e-6)
    as_pil = call(pipe, kind, output_type="pil").images
    np.testing.assert_allclose(np.stack([np.asarray(image) for image in as_pil]) / 255, as_np, atol=1 / 255 + 1e-6)


def test_each_image_of_a_batch_equals_it_drawn_alone(kind, tmp_path):
    """With one generator per image, image i of a batch is the image of a call for it alone (batching,
    classifier-free guidance and padding change nothing)."""
    pipe = make(kind, tmp_path)
    batch = call(pipe, kind, count=3, generator=[torch.Generator().manual_seed(s) for s in (5, 6, 7)]).images
    for i, seed in enumerate((5, 6, 7)):
        single = {key: value[i : i + 1] for key, value in condition(kind, 3).items()}
        alone = pipe(**single, generator=torch.Generator().manual_seed(seed), num_inference_steps=2, output_type="np")
        np.testing.assert_allclose(batch[i], alone.images[0], atol=1e-5)


def test_given_latents_replace_the_drawn_noise(kind, tmp_path):
    """With deterministic samplers (DDIM, DPM-Solver), given latents fix the images whatever the generator."""
    pipe = make(kind, tmp_path)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config) if kind == "class" else pipe.scheduler
    channels, size = pipe.transformer.config.in_channels, pipe.transformer.config.sample_size
    latents = torch.randn(2, channels, size, size, generator=torch.Generator().manual_seed(3))
    from_latents = call(pipe, kind, latents=latents).images
    other_generator = call(pipe, kind, seed=99, latents=latents).images
    np.testing.assert_array_equal(from_latents, other_generator)  # the generator no longer draws the start
    assert np.abs(from_latents - call(pipe, kind, seed=99).images).max() > 1e-3


def test_text_pipeline_num_images_per_prompt(tmp_path):
    """Image j of prompt i comes at i * per_prompt + j and is that prompt drawn with that image's generator
    (the prompts' embeddings repeated per prompt, not the batch tiled)."""
    pipe = text_pipeline(tmp_path)
    prompts, seeds = condition("text", 2)["prompt"], (5, 6, 7, 8)
    generators = [torch.Generator().manual_seed(seed) for seed in seeds]
    images = call(pipe, "text", count=2, num_images_per_prompt=2, generator=generators).images
    assert images.shape[0] == 4
    for index, seed in enumerate(seeds):
        generator = torch.Generator().manual_seed(seed)
        alone = pipe(prompt=prompts[index // 2], generator=generator, num_inference_steps=2, output_type="np")
        np.testing.assert_allclose(images[index], alone.images[0], atol=1e-5)


def test_save_and_load_a_variant_and_a_dtype_per_component(kind, tmp_path):
    pipe = make(kind, tmp_path)
    expected = call(pipe, kind).images
    pipe.save_pretrained(tmp_path / "fp16", variant="fp16")
    assert (tmp_path / "fp16" / "transformer" / "diffusion_pytorch_model.fp16.safetensors").is_file()
    pipeline_class = LiTPipeline if kind == "class" else LiTTextToImagePipeline
    loaded = pipeline_class.from_pretrained(tmp_path / "fp16", variant="fp16")
    loaded.set_progress_bar_config(disable=True)
    np.testing.assert_allclose(call(loaded, kind).images, expected, atol=1e-5)
    with pytest.raises(ValueError, match="variant"):
        pipeline_class.from_pretrained(tmp_path / "fp16", variant="no-such-variant")

    mixed = pipeline_class.from_pretrained(
        tmp_path / "fp16", variant="fp16", torch_dtype={"transformer": torch.bfloat16, "default": torch.float32}
    )
    assert mixed.transformer.dtype == torch.bfloat16 and mixed.vae.dtype == torch.float32


def test_pipeline_to_dtype_and_layerwise_casting_run(kind, tmp_path):
    pipe = make(kind, tmp_path)
    expected = call(pipe, kind).images
    pipe.to(torch.bfloat16)
    assert {component.dtype for component in (pipe.transformer, pipe.vae)} == {torch.bfloat16}
    np.testing.assert_allclose(call(pipe, kind).images, expected, atol=0.1)  # bf16: close, not equal
    pipe = make(kind, tmp_path)
    pipe.transformer.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=torch.float32)
    np.testing.assert_allclose(call(pipe, kind).images, expected, atol=0.2)  # float8 weights: coarse, faithful


def test_pipeline_level_group_offloading_keeps_the_images(kind, tmp_path):
    pipe = make(kind, tmp_path)
    expected = call(pipe, kind).images
    pipe.enable_group_offload(
        onload_device=torch.device("cpu"), offload_device=torch.device("cpu"), offload_type="leaf_level"
    )
    np.testing.assert_allclose(call(pipe, kind).images, expected, atol=1e-6)
