import json
import os
import shutil

import numpy as np
import pytest
import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
)
from diffusers.pipelines.pixart_alpha.pipeline_pixart_alpha import ASPECT_RATIO_256_BIN
from helpers import (
    class_pipeline,
    put_in_hf_cache,
    text_pipeline,
    tiny_dit_transformer,
    tiny_text_transformer,
    tiny_unet,
)
from PIL import Image

from diffusers_lit import LiTPipeline, LiTTextToImagePipeline, LiTTransformer2DModel


def generate(pipe, seed=0, **kwargs):
    kwargs = {"class_labels": [0, 1, 2], "num_inference_steps": 3, "output_type": "np", **kwargs}
    return pipe(generator=torch.Generator().manual_seed(seed), **kwargs).images


def count_transformer_batches(pipe) -> list[int]:
    batches = []
    forward = pipe.transformer.forward

    def counting_forward(hidden_states, *args, **kwargs):
        batches.append(hidden_states.shape[0])
        return forward(hidden_states, *args, **kwargs)

    pipe.transformer.forward = counting_forward
    return batches


def test_seeded_generation_is_deterministic():
    pipe = class_pipeline()
    first, second = generate(pipe, seed=3), generate(pipe, seed=3)
    np.testing.assert_array_equal(first, second)
    assert not np.allclose(first, generate(pipe, seed=4))


def test_batch_with_generators_equals_single_calls():
    pipe = class_pipeline()
    generators = [torch.Generator().manual_seed(seed) for seed in (10, 11, 12)]
    batch = pipe([2, 0, 1], generator=generators, num_inference_steps=4, output_type="np").images
    for image, label, seed in zip(batch, [2, 0, 1], (10, 11, 12), strict=True):
        single = pipe([label], generator=torch.Generator().manual_seed(seed), num_inference_steps=4, output_type="np")
        np.testing.assert_allclose(image, single.images[0], atol=1e-5)


def test_guidance_one_runs_half_the_batch():
    pipe = class_pipeline()
    batches = count_transformer_batches(pipe)
    guided = generate(pipe, guidance_scale=4.0)
    assert batches == [6, 6, 6]
    batches.clear()
    plain = generate(pipe, guidance_scale=1.0)
    assert batches == [3, 3, 3]
    assert not np.allclose(guided, plain)


def test_vae_scale_factor_is_2_per_down_block_after_the_first():
    from types import SimpleNamespace

    from diffusers_lit.pipelines.pipeline_lit import vae_scale_factor

    vaes = [SimpleNamespace(config=SimpleNamespace(block_out_channels=(8,) * n)) for n in (1, 2, 3, 4)]
    assert [vae_scale_factor(vae) for vae in vaes] == [1, 2, 4, 8] and vae_scale_factor(None) == 1


def test_labels_by_name_and_by_id():
    pipe = class_pipeline()
    by_name = generate(pipe, class_labels=["kitty", "dog", "bird"])
    np.testing.assert_array_equal(by_name, generate(pipe, class_labels=[0, 1, 2]))
    np.testing.assert_array_equal(generate(pipe, class_labels="cat"), generate(pipe, class_labels=0))
    assert pipe.get_label_ids(["bird", "cat"]) == [2, 0]
    # An integer tensor of any shape, and groups mixed with single labels, are read in order.
    np.testing.assert_array_equal(generate(pipe, class_labels=torch.tensor([[0], [1], [2]])), by_name)
    np.testing.assert_array_equal(generate(pipe, class_labels=[["kitty", 1], 2]), by_name)


@pytest.mark.parametrize("vae", [False, True])
def test_output_types(vae):
    pipe = class_pipeline(vae=vae)
    channels, size = (3, 16) if vae else (1, 8)
    pt = generate(pipe, output_type="pt")
    assert pt.shape == (3, channels, size, size) and pt.min() >= 0 and pt.max() <= 1
    array = generate(pipe, output_type="np")
    assert array.shape == (3, size, size, channels)
    np.testing.assert_allclose(array, pt.permute(0, 2, 3, 1).numpy(), atol=1e-6)
    pil = generate(pipe, output_type="pil")
    assert len(pil) == 3 and isinstance(pil[0], Image.Image) and pil[0].size == (size, size)
    assert pil[0].mode == ("RGB" if vae else "L")
    latent = generate(pipe, output_type="latent")
    assert latent.shape == (3, 4 if vae else 1, 8, 8)
    if not vae:  # pixel space: the image is the sample, mapped from [-1, 1] to [0, 1]
        np.testing.assert_allclose(pt.numpy(), ((latent / 2 + 0.5).clamp(0, 1)).numpy(), atol=1e-6)


@pytest.mark.parametrize("vae", [False, True])
def test_non_square_sizes(vae):
    pipe = class_pipeline(vae=vae)
    scale = 2 if vae else 1
    images = generate(pipe, height=8 * scale, width=20 * scale)
    assert images.shape[1:3] == (8 * scale, 20 * scale)


@pytest.mark.parametrize(
    "scheduler",
    [
        DDIMScheduler(),
        DDPMScheduler(variance_type="learned_range"),
        DPMSolverMultistepScheduler(algorithm_type="dpmsolver++"),
        EulerDiscreteScheduler(),
    ],
    ids=["ddim", "ddpm-learned-range", "dpmsolver++", "euler"],
)
def test_schedulers(scheduler):
    """Each scheduler samples as its documented loop does: x_T scaled by `init_noise_sigma`, the model input by
    `scale_model_input`, the variance passed on only where the scheduler learns it (written out here, guidance 1)."""
    pipe = class_pipeline()
    pipe.scheduler = scheduler
    images = generate(pipe, num_inference_steps=4, guidance_scale=1.0)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn((3, 1, 8, 8), generator=generator) * scheduler.init_noise_sigma
    scheduler.set_timesteps(4)
    learned = scheduler.config.get("variance_type") in ("learned", "learned_range")
    with torch.no_grad():
        for t in scheduler.timesteps:
            output = pipe.transformer(
                scheduler.scale_model_input(x, t), timestep=t.expand(3), class_labels=torch.tensor([0, 1, 2])
            ).sample  # (3, 2, 8, 8): eps and the variance
            kwargs = {"generator": generator} if isinstance(scheduler, DDPMScheduler) else {}
            x = scheduler.step(output if learned else output[:, :1], t, x, **kwargs).prev_sample
    expected = (x / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    assert images.shape == (3, 8, 8, 1) and expected.std() > 0.05
    np.testing.assert_allclose(images, expected, atol=1e-5)


def test_learned_variance_reaches_schedulers_that_use_it():
    pipe = class_pipeline()
    seen = []
    step = pipe.scheduler.step
    pipe.scheduler.step = lambda model_output, *args, **kwargs: (
        seen.append(model_output.shape[1]) or step(model_output, *args, **kwargs)
    )
    generate(pipe)
    assert seen == [2, 2, 2]  # noise and variance channels
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)  # keeps a `variance_type` it ignores
    step = pipe.scheduler.step
    seen.clear()
    pipe.scheduler.step = lambda model_output, *args, **kwargs: (
        seen.append(model_output.shape[1]) or step(model_output, *args, **kwargs)
    )
    generate(pipe)
    assert seen == [1, 1, 1]


def test_callback_on_step_end_can_replace_latents():
    pipe = class_pipeline()
    steps = []

    def callback(pipeline, step, timestep, tensors):
        steps.append(step)
        return {"latents": torch.zeros_like(tensors["latents"])}

    images = generate(pipe, callback_on_step_end=callback, output_type="latent")
    assert steps == [0, 1, 2]
    assert torch.count_nonzero(images) == 0


def test_diffusers_dit_runs_through_the_same_pipeline():
    dit = tiny_dit_transformer()
    pipe = LiTPipeline(dit, DDPMScheduler(variance_type="learned_range"))
    pipe.set_progress_bar_config(disable=True)
    batches = count_transformer_batches(pipe)
    images = generate(pipe, guidance_scale=2.0)
    assert images.shape == (3, 8, 8, 1) and batches == [6, 6, 6]


def test_save_load_same_images(tmp_path):
    pipe = class_pipeline(vae=True)
    expected = generate(pipe)
    pipe.save_pretrained(tmp_path / "pipe")
    index = json.loads((tmp_path / "pipe" / "model_index.json").read_text())
    assert index["_class_name"] == ["pipeline_lit", "LiTPipeline"] and index["id2label"]["0"] == "cat, kitty"
    loaded = LiTPipeline.from_pretrained(tmp_path / "pipe")
    loaded.set_progress_bar_config(disable=True)
    assert loaded.labels == pipe.labels
    # The reloaded VAE may pick another (equivalent) attention kernel: equal to float32 rounding.
    np.testing.assert_allclose(generate(loaded, class_labels=["cat", "dog", "bird"]), expected, atol=1e-5)
    card = (tmp_path / "pipe" / "README.md").read_text()
    assert "library_name: diffusers_lit" in card and "from diffusers_lit import LiTPipeline" in card


def test_pixel_space_pipeline_round_trip(tmp_path):
    pipe = class_pipeline(vae=False)
    pipe.save_pretrained(tmp_path)
    loaded = LiTPipeline.from_pretrained(tmp_path)
    assert loaded.vae is None
    loaded.set_progress_bar_config(disable=True)
    np.testing.assert_array_equal(generate(loaded), generate(pipe))
    assert LiTPipeline.from_pretrained(tmp_path, dtype=torch.float64).transformer.dtype == torch.float64


def test_usage_snippet_names_the_example_label_or_class_0():
    assert "class_labels=[0], num_inference_steps=50" in LiTPipeline.usage_snippet("user/lit")
    assert 'class_labels=["Bag"]' in LiTPipeline.usage_snippet("user/lit", "Bag")


def test_usage_snippet_in_the_card_runs(tmp_path):
    pipe = class_pipeline()
    pipe.save_pretrained(tmp_path / "lit")
    card = (tmp_path / "lit" / "README.md").read_text()
    snippet = card.split("```python\n")[1].split("```")[0]
    snippet = snippet.replace("num_inference_steps=50", "num_inference_steps=2").replace("lit.png", "out.png")
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        exec(snippet, {})
    finally:
        os.chdir(cwd)
    assert Image.open(tmp_path / "out.png").size == (8, 8)


def test_repo_id_from_the_hf_cache_offline(tmp_path):
    pipe = class_pipeline()
    pipe.card_info = {"base_model": "someone/tiny-dit", "license": "mit", "how_made": "Converted from a tiny DiT."}
    pipe.save_pretrained(tmp_path / "pipe")
    put_in_hf_cache(tmp_path / "pipe", "lit-tests/tiny-class")
    loaded = LiTPipeline.from_pretrained("lit-tests/tiny-class")
    loaded.set_progress_bar_config(disable=True)
    np.testing.assert_array_equal(generate(loaded), generate(pipe))
    assert loaded.card_info == pipe.card_info  # base model, license and origin come back from the card
    loaded.save_pretrained(tmp_path / "again")
    card = (tmp_path / "again" / "README.md").read_text()
    assert "base_model: someone/tiny-dit" in card and "license: mit" in card and "Converted from a tiny DiT." in card


def test_missing_repo_id_offline_raises_oserror():
    with pytest.raises(OSError, match="Offline mode is on"):
        LiTPipeline.from_pretrained("lit-tests/not-in-the-cache")
    with pytest.raises(OSError, match="neither an existing folder nor a valid Hub repo id"):
        LiTPipeline.from_pretrained("./no/such/folder")


def test_push_to_hub_uploads_the_folder_with_its_card(tmp_path, monkeypatch):
    import diffusers.utils.hub_utils
    from huggingface_hub import RepoUrl

    import diffusers_lit.hub

    uploaded = {}

    def fake_upload_folder(repo_id, folder_path, **kwargs):  # huggingface_hub's upload, minus the network
        uploaded["repo_id"] = repo_id
        shutil.copytree(folder_path, tmp_path / "uploaded")

    monkeypatch.setattr(diffusers.utils.hub_utils, "upload_folder", fake_upload_folder)
    monkeypatch.setattr(
        diffusers_lit.hub, "create_repo", lambda repo_id, **kwargs: RepoUrl(f"https://huggingface.co/{repo_id}")
    )
    pipe = class_pipeline()
    rendered = []
    render = LiTPipeline.model_card
    monkeypatch.setattr(
        LiTPipeline, "model_card", lambda self, repo_id: rendered.append(repo_id) or render(self, repo_id)
    )
    pipe.push_to_hub("someone/lit-tiny")
    assert uploaded["repo_id"] == "someone/lit-tiny" and rendered == ["someone/lit-tiny"]  # one card, the repo's
    folder = tmp_path / "uploaded"
    assert (folder / "model_index.json").is_file() and (folder / "transformer" / "config.json").is_file()
    card = (folder / "README.md").read_text()
    assert "# lit-tiny" in card and 'LiTPipeline.from_pretrained("someone/lit-tiny")' in card
    assert LiTPipeline.from_pretrained(folder).labels == pipe.labels


def test_bad_inputs():
    pipe = class_pipeline()
    with pytest.raises(ValueError, match=r"`class_labels` \[3\] out of range: this model has classes 0 to 2\."):
        generate(pipe, class_labels=[0, 3])
    with pytest.raises(
        ValueError, match="Unknown class label 'horse' in `class_labels`; known labels: bird, cat, dog, kitty"
    ):
        generate(pipe, class_labels=["horse"])
    unnamed = LiTPipeline(pipe.transformer, pipe.scheduler)
    with pytest.raises(ValueError, match="known labels: none: this pipeline has no id2label"):
        generate(unnamed, class_labels=["cat"])
    with pytest.raises(ValueError, match="`class_labels` is empty: give at least one class id or name"):
        generate(pipe, class_labels=[])
    with pytest.raises(ValueError, match="`height` and `width` must be positive multiples of 2"):
        generate(pipe, height=9)
    with pytest.raises(ValueError, match="`num_inference_steps` must be at least 1"):
        generate(pipe, num_inference_steps=0)
    with pytest.raises(ValueError, match="must be positive multiples of 2 .*got 0x8"):
        generate(pipe, height=0)  # not the default size
    with pytest.raises(ValueError, match="must be positive multiples of 2 .*got 8x0"):
        generate(pipe, width=0)
    with pytest.raises(ValueError, match=r"class ids \(int\) or names \(str\), got \[1.7\]"):
        generate(pipe, class_labels=[1.7])
    with pytest.raises(ValueError, match=r"got \[0.5, None, True\]\.$"):  # the first three
        generate(pipe, class_labels=[0.5, None, True, 1.5])
    with pytest.raises(ValueError, match="an integer tensor"):
        generate(pipe, class_labels=torch.tensor([1.0]))
    with pytest.raises(ValueError, match="`output_type` must be one of"):
        generate(pipe, output_type="jpeg")
    with pytest.raises(ValueError, match="3 generators for 2 class labels"):
        pipe([0, 1], generator=[torch.Generator()] * 3)
    with pytest.raises(ValueError, match="needs a class-conditional transformer"):
        LiTPipeline(tiny_text_transformer(), DDPMScheduler())
    with pytest.raises(ValueError, match="Without a VAE the transformer works on pixels, but it takes 4 channels"):
        LiTPipeline(class_pipeline(vae=True).transformer, DDPMScheduler())
    with pytest.raises(ValueError, match="got one with norm_type=None"):  # a model without transformer blocks
        LiTPipeline(tiny_unet(), DDPMScheduler())


def test_a_patch_1_pixel_model_samples_one_pixel_and_refuses_none():
    """The size check's bound is 0: where the size multiple is 1 (pixels, patch 1) a 1-pixel side is an image."""
    pipe = class_pipeline(sample_size=4, patch_size=1)  # pixels
    for height, width in ((1, 1), (1, 3), (2, 1)):
        image = pipe([0], height=height, width=width, num_inference_steps=1, output_type="pt").images
        assert image.shape == (1, 1, height, width)
    for height, width in ((0, 1), (1, 0)):
        with pytest.raises(ValueError, match=f"must be positive multiples of 1 .*got {height}x{width}"):
            pipe([0], height=height, width=width, num_inference_steps=1)


# Text-to-image


def test_text_pipeline_generates_and_uses_the_prompt(tmp_path):
    pipe = text_pipeline(tmp_path)
    kwargs = dict(num_inference_steps=2, output_type="np", use_resolution_binning=False, max_sequence_length=16)
    cat = pipe("a red cat", generator=torch.Generator().manual_seed(0), **kwargs).images
    again = pipe("a red cat", generator=torch.Generator().manual_seed(0), **kwargs).images
    dog = pipe("a blue dog on grass", generator=torch.Generator().manual_seed(0), **kwargs).images
    assert cat.shape == (1, 16, 16, 3)
    np.testing.assert_array_equal(cat, again)
    assert not np.allclose(cat, dog)
    negative = pipe("a red cat", negative_prompt="sky", generator=torch.Generator().manual_seed(0), **kwargs).images
    assert not np.allclose(cat, negative)


def test_text_pipeline_prompt_embeds_equal_prompts(tmp_path):
    pipe = text_pipeline(tmp_path)
    kwargs = dict(num_inference_steps=2, output_type="np", use_resolution_binning=False, max_sequence_length=16)
    embeds, mask, negative_embeds, negative_mask = pipe.encode_prompt("a red cat", max_sequence_length=16)
    from_embeds = pipe(
        negative_prompt=None,
        prompt_embeds=embeds,
        prompt_attention_mask=mask,
        negative_prompt_embeds=negative_embeds,
        negative_prompt_attention_mask=negative_mask,
        generator=torch.Generator().manual_seed(0),
        **kwargs,
    ).images
    from_prompt = pipe("a red cat", generator=torch.Generator().manual_seed(0), **kwargs).images
    np.testing.assert_allclose(from_embeds, from_prompt, atol=1e-6)


def test_text_pipeline_resolution_binning(tmp_path):
    """On by default for a latent sample size with a PixArt table (32: 256 px): generated on the table's nearest
    bin, resized back to what was asked; off for other sizes and when asked."""
    pipe = text_pipeline(tmp_path, sample_size=32)
    kwargs = dict(num_inference_steps=1, height=64, width=96, max_sequence_length=8)
    assert pipe("a cat", output_type="np", **kwargs).images.shape == (1, 64, 96, 3)
    height, width = pipe.image_processor.classify_height_width_bin(64, 96, ratios=ASPECT_RATIO_256_BIN)
    assert (height, width) == (208, 304)
    assert pipe("a cat", output_type="latent", **kwargs).images.shape == (1, 4, 104, 152)  # the VAE halves
    unbinned = pipe("a cat", output_type="latent", use_resolution_binning=False, **kwargs).images
    assert unbinned.shape == (1, 4, 32, 48)
    assert text_pipeline(tmp_path)("a cat", output_type="latent", **kwargs).images.shape == (1, 4, 32, 48)  # 8


def test_text_pipeline_save_load_and_dispatch(tmp_path):
    pipe = text_pipeline(tmp_path)
    kwargs = dict(num_inference_steps=2, output_type="np", use_resolution_binning=False, max_sequence_length=16)
    expected = pipe("a small bird", generator=torch.Generator().manual_seed(0), **kwargs).images
    pipe.save_pretrained(tmp_path / "t2i")
    for loader in (LiTPipeline, LiTTextToImagePipeline):
        loaded = loader.from_pretrained(tmp_path / "t2i")
        assert isinstance(loaded, LiTTextToImagePipeline)
        loaded.set_progress_bar_config(disable=True)
        images = loaded("a small bird", generator=torch.Generator().manual_seed(0), **kwargs).images
        np.testing.assert_array_equal(images, expected)
    assert "pipeline_tag: text-to-image" in (tmp_path / "t2i" / "README.md").read_text()
    class_pipeline().save_pretrained(tmp_path / "class")
    with pytest.raises(ValueError, match="holds a LiTPipeline, not a LiTTextToImagePipeline"):
        LiTTextToImagePipeline.from_pretrained(tmp_path / "class")


def test_text_pipeline_bad_inputs(tmp_path):
    pipe = text_pipeline(tmp_path)
    with pytest.raises(ValueError, match="negative_prompt"):
        embeds, mask, _, _ = pipe.encode_prompt(["a cat", "a dog"], max_sequence_length=8)
        negative, negative_mask, _, _ = pipe.encode_prompt("sky", False, max_sequence_length=8)
        pipe(
            negative_prompt=None,
            prompt_embeds=embeds,
            prompt_attention_mask=mask,
            negative_prompt_embeds=negative,
            negative_prompt_attention_mask=negative_mask,
            use_resolution_binning=False,
            num_inference_steps=1,
        )
    with pytest.raises(ValueError, match="`prompt` has 2 entries but `negative_prompt` has 1"):
        pipe(["a cat", "a dog"], negative_prompt=["sky"], use_resolution_binning=False, max_sequence_length=8)
    with pytest.raises(ValueError, match="Cannot forward both `negative_prompt`"):  # PixArt's own check
        pipe(prompt_embeds=embeds, negative_prompt="sky", negative_prompt_embeds=negative, num_inference_steps=1)
    with pytest.raises(ValueError, match="text-to-image transformer .* got one with norm_type='ada_norm_zero'"):
        LiTTextToImagePipeline(
            pipe.tokenizer, pipe.text_encoder, pipe.vae, class_pipeline().transformer, pipe.scheduler
        )
    with pytest.raises(ValueError, match="got one with norm_type=None"):  # a model without transformer blocks
        LiTTextToImagePipeline(pipe.tokenizer, pipe.text_encoder, None, tiny_unet(), pipe.scheduler)
    with pytest.raises(ValueError, match="hidden size 24 does not match the transformer's caption_channels 32"):
        LiTTextToImagePipeline(
            pipe.tokenizer, pipe.text_encoder, pipe.vae, tiny_text_transformer(caption_channels=32), pipe.scheduler
        )


# Guidance against an independent computation of the guided noise


def capture_scheduler_inputs(pipe) -> list[dict]:
    """Record what every scheduler step receives: the (guided) model output, the timestep and the sample."""
    calls, step = [], pipe.scheduler.step

    def recording_step(model_output, timestep, sample, *args, **kwargs):
        calls.append({"model_output": model_output.clone(), "timestep": timestep, "sample": sample.clone()})
        return step(model_output, timestep, sample, *args, **kwargs)

    pipe.scheduler.step = recording_step
    return calls


@pytest.mark.parametrize("scale", [1.0, 3.0])
def test_class_guidance_equals_uncond_plus_scale_times_the_difference(scale):
    pipe = class_pipeline()
    pipe.scheduler = DDIMScheduler()  # takes the noise channels only
    calls = capture_scheduler_inputs(pipe)
    labels = [2, 0]
    pipe(labels, guidance_scale=scale, num_inference_steps=2, generator=torch.Generator().manual_seed(0))
    model, null = pipe.transformer, pipe.transformer.config.num_embeds_ada_norm
    for call in calls:
        x, t = call["sample"], torch.full((2,), int(call["timestep"]))
        with torch.no_grad():
            cond = model(x, timestep=t, class_labels=torch.tensor(labels)).sample[:, :1].double()
            uncond = model(x, timestep=t, class_labels=torch.tensor([null, null])).sample[:, :1].double()
        assert (cond - uncond).abs().max() > 1e-3  # the two differ, so a swapped formula is seen
        torch.testing.assert_close(call["model_output"].double(), uncond + scale * (cond - uncond), atol=1e-5, rtol=0)


def test_text_guidance_equals_uncond_plus_scale_times_the_difference(tmp_path):
    pipe = text_pipeline(tmp_path)
    calls = capture_scheduler_inputs(pipe)
    scale, kwargs = 4.5, dict(use_resolution_binning=False, max_sequence_length=16)
    pipe(
        "a red cat",
        negative_prompt="sky",
        guidance_scale=scale,
        num_inference_steps=2,
        generator=torch.Generator().manual_seed(0),
        **kwargs,
    )
    embeds, mask, negative, negative_mask = pipe.encode_prompt("a red cat", negative_prompt="sky", **kwargs)
    model = pipe.transformer
    for call in calls:
        x, t = call["sample"], torch.full((1,), int(call["timestep"]))
        with torch.no_grad():
            cond, uncond = (
                model(
                    x,
                    timestep=t,
                    encoder_hidden_states=e,
                    encoder_attention_mask=m,
                    added_cond_kwargs={"resolution": None, "aspect_ratio": None},
                )
                .sample[:, :4]
                .double()
                for e, m in ((embeds, mask), (negative, negative_mask))
            )
        assert (cond - uncond).abs().max() > 1e-3
        torch.testing.assert_close(call["model_output"].double(), uncond + scale * (cond - uncond), atol=1e-5, rtol=0)


def test_guided_learned_variance_is_the_conditional_halfs():
    """With guidance and a scheduler that takes the learned variance (DDPM, learned_range), the noise channels are
    guided and the variance channels are the conditional prediction's, not the unconditional one's."""
    pipe = class_pipeline()
    calls = capture_scheduler_inputs(pipe)
    labels, scale = [1, 2], 2.5
    pipe(labels, guidance_scale=scale, num_inference_steps=2, generator=torch.Generator().manual_seed(0))
    model, null = pipe.transformer, pipe.transformer.config.num_embeds_ada_norm
    assert len(calls) == 2
    for call in calls:
        x, t = call["sample"], torch.full((2,), int(call["timestep"]))
        with torch.no_grad():
            cond = model(x, timestep=t, class_labels=torch.tensor(labels)).sample.double()
            uncond = model(x, timestep=t, class_labels=torch.tensor([null, null])).sample.double()
        assert (cond[:, 1:] - uncond[:, 1:]).abs().max() > 1e-3  # the two variances differ
        expected = torch.cat([uncond[:, :1] + scale * (cond[:, :1] - uncond[:, :1]), cond[:, 1:]], dim=1)
        torch.testing.assert_close(call["model_output"].double(), expected, atol=1e-5, rtol=0)


def test_vae_decodes_the_latents_divided_by_its_scaling_factor():
    """Images are the VAE's decoding of latents / scaling_factor, mapped from [-1, 1] to [0, 1]."""
    pipe = class_pipeline(vae=True)
    scaling = pipe.vae.config.scaling_factor
    assert scaling != 1
    latents = generate(pipe, output_type="latent")
    with torch.no_grad():
        decoded = pipe.vae.decode(latents / scaling).sample
        other = pipe.vae.decode(latents * scaling).sample
    assert (decoded - other).abs().max() > 0.05  # the scaling is seen
    torch.testing.assert_close(generate(pipe, output_type="pt"), (decoded / 2 + 0.5).clamp(0, 1), atol=1e-5, rtol=0)


def test_one_ddim_step_is_the_denoised_sample():
    """One DDIM step (timestep 0, final alpha 1) gives x0 = (x - sqrt(1 - a0) eps) / sqrt(a0), clipped to [-1, 1],
    with eps the conditional noise at guidance 1 (no guidance, as callbacks read)."""
    pipe = class_pipeline()
    pipe.scheduler = DDIMScheduler()
    seen = []

    def callback(pipe, step, timestep, tensors):
        seen.append((step, int(timestep), pipe.do_classifier_free_guidance, pipe.num_timesteps))
        return tensors

    kwargs = dict(num_inference_steps=1, guidance_scale=1.0, height=8, width=12, output_type="pt")
    images = generate(pipe, callback_on_step_end=callback, **kwargs)
    assert seen == [(0, 0, False, 1)]
    x = torch.randn((3, 1, 8, 12), generator=torch.Generator().manual_seed(0)).double()
    alpha = 1 - 1e-4  # DDPM's first beta: 1e-4
    with torch.no_grad():
        eps = pipe.transformer(x.float(), timestep=torch.zeros(3), class_labels=torch.tensor([0, 1, 2])).sample[:, :1]
    x0 = ((x - (1 - alpha) ** 0.5 * eps.double()) / alpha**0.5).clamp(-1, 1)
    assert (x0.abs() < 1).float().mean() > 0.2  # not all clipped
    torch.testing.assert_close(images.double(), x0 / 2 + 0.5, atol=1e-5, rtol=0)


@pytest.mark.parametrize("channels", [1, 3, 4])
@pytest.mark.parametrize("name", ["ddpm", "ddim", "dpm++", "euler"])
def test_every_cli_scheduler_on_1_3_and_4_channel_models(name, channels):
    """Each scheduler the command line offers, swapped in from DiT's DDPM learned-range config, samples a model of
    any channel count into latents of that many channels, and the same each time."""
    from diffusers_lit.pipelines import scheduler_from_name

    pipe = class_pipeline(vae=channels == 4)
    if channels == 3:
        from helpers import tiny_class_transformer

        pipe = LiTPipeline(tiny_class_transformer(in_channels=3), DDPMScheduler(variance_type="learned_range"))
        pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = scheduler_from_name(name, pipe.scheduler.config)
    assert pipe.scheduler_uses_learned_variance() == (name == "ddpm")  # only DDPM samples with the model's variance
    latents = generate(pipe, num_inference_steps=3, output_type="latent")
    assert tuple(latents.shape) == (3, channels, 8, 8) and torch.isfinite(latents).all()
    torch.testing.assert_close(latents, generate(pipe, num_inference_steps=3, output_type="latent"))


def test_a_scheduler_that_would_drop_channels_is_refused():
    pipe = class_pipeline()  # 1 channel, learned sigma
    pipe.scheduler = DPMSolverMultistepScheduler(variance_type="learned_range")  # keeps output channels 0..2
    with pytest.raises(ValueError, match="keeps only 3 channels of the model output; this model has 1"):
        generate(pipe, num_inference_steps=2)


def test_pipeline_conventions_callbacks_read_guidance_and_steps():
    """What diffusers' PipelineTesterMixin checks: callbacks read `guidance_scale` and `num_timesteps`, nested label
    lists are a batch, and the text pipeline's signature is PixArt-Sigma's."""
    import inspect

    pipe = class_pipeline()
    seen = []

    def callback(pipe, step, timestep, tensors):
        seen.append((pipe.guidance_scale, pipe.do_classifier_free_guidance, pipe.num_timesteps))
        return tensors

    nested = generate(pipe, class_labels=[[0, 1], [2]], guidance_scale=3.0, callback_on_step_end=callback)
    assert seen == [(3.0, True, 3)] * 3
    np.testing.assert_array_equal(nested, generate(pipe, class_labels=[0, 1, 2], guidance_scale=3.0))
    parameters = inspect.signature(LiTTextToImagePipeline.__call__).parameters
    assert {"prompt", "negative_prompt", "prompt_embeds", "max_sequence_length", "guidance_scale"} <= set(parameters)


DIFFUSERS_ALONE = """
import sys

sys.modules["diffusers_lit"] = None  # as where only diffusers is installed: `import diffusers_lit` fails
import numpy as np
import torch
from diffusers import DiffusionPipeline

for source, kind, out in zip(*[iter(sys.argv[1:])] * 3):
    pipe = DiffusionPipeline.from_pretrained(source, trust_remote_code=True)
    pipe.set_progress_bar_config(disable=True)
    torch.manual_seed(0)
    if kind == "class":
        images = pipe(class_labels=[0, 1, 2], num_inference_steps=3, output_type="np").images
    else:
        images = pipe("a cat", num_inference_steps=2, output_type="np").images
    np.save(out, images)
    print(type(pipe).__module__, type(pipe).__name__, type(pipe.transformer).__name__)
"""


def test_diffusers_alone_runs_lit_folders_and_repos(tmp_path):
    """Saved LiT folders of both kinds, and the same as HF-cache repos (as pushed), carry the code diffusers runs
    with `trust_remote_code=True`: in a process where diffusers_lit cannot be imported, `DiffusionPipeline`
    loads each and draws the same images as the in-memory pipeline. Without `trust_remote_code` diffusers refuses,
    and diffusers_lit's own loader never runs the folder's files."""
    import subprocess
    import sys

    from diffusers import DiffusionPipeline

    jobs, expected = [], {}
    for kind, pipe in (("class", class_pipeline()), ("text", text_pipeline(tmp_path))):
        torch.manual_seed(0)
        prompt = [] if kind == "class" else ["a cat"]
        steps = (
            {"class_labels": [0, 1, 2], "num_inference_steps": 3} if kind == "class" else {"num_inference_steps": 2}
        )
        expected[kind] = pipe(*prompt, output_type="np", **steps).images
        folder = tmp_path / kind
        pipe.save_pretrained(folder)
        index = json.loads((folder / "model_index.json").read_text())
        assert index["transformer"] == ["transformer_lit", "LiTTransformer2DModel"]
        put_in_hf_cache(folder, f"lit-tests/diffusers-{kind}")
        jobs += [(str(folder), kind), (f"lit-tests/diffusers-{kind}", kind)]
    with pytest.raises(ValueError, match="trust_remote_code=True"):
        DiffusionPipeline.from_pretrained(tmp_path / "class")
    args = [item for number, (source, kind) in enumerate(jobs) for item in (source, kind, tmp_path / f"{number}.npy")]
    run = subprocess.run([sys.executable, "-c", DIFFUSERS_ALONE, *map(str, args)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Expected types" not in run.stderr  # the pipeline's annotation and the loaded transformer: one class
    lines = run.stdout.strip().splitlines()[-len(jobs) :]
    for number, ((_, kind), line) in enumerate(zip(jobs, lines, strict=True)):
        name = "LiTPipeline" if kind == "class" else "LiTTextToImagePipeline"
        assert line.split() == ["diffusers_modules.local.pipeline_lit", name, "LiTTransformer2DModel"]
        np.testing.assert_array_equal(np.load(tmp_path / f"{number}.npy"), expected[kind])

    folder = tmp_path / "class"
    for name in ("pipeline_lit.py", "transformer/pipeline_lit.py", "transformer/transformer_lit.py"):
        (folder / name).write_text("raise RuntimeError('a folder file was run')\n")
    loaded = LiTPipeline.from_pretrained(folder)
    assert type(loaded) is LiTPipeline and type(loaded.transformer) is LiTTransformer2DModel


def count_calls(module: torch.nn.Module) -> list[int]:
    """A one-element counter of `module`'s forward calls."""
    calls = [0]
    module.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


@pytest.mark.parametrize("kind", ["class", "text", "text-pixels"])
def test_first_block_cache_skips_the_later_blocks_and_forgets_between_calls(tmp_path, kind):
    """diffusers' first-block cache on LiT: threshold 0 changes nothing; a threshold nothing falls under skips
    every block after the first from the second step on; a second call starts afresh (same images)."""
    from diffusers import FirstBlockCacheConfig

    pipe = class_pipeline() if kind == "class" else text_pipeline(tmp_path, vae=kind == "text")
    steps = 4

    def call() -> np.ndarray:
        if kind == "class":
            return generate(pipe, num_inference_steps=steps)
        generator = torch.Generator().manual_seed(0)
        if kind == "text":
            return pipe("a cat", num_inference_steps=steps, output_type="np", generator=generator).images
        # unclipped: the random pixel transformer's images saturate at 0 and 1
        return pipe("a cat", num_inference_steps=steps, output_type="latent", generator=generator).images.numpy()

    reference = call()
    last_block_ff = count_calls(pipe.transformer.transformer_blocks[-1].ff)
    pipe.transformer.enable_cache(FirstBlockCacheConfig(threshold=0.0))
    np.testing.assert_allclose(call(), reference, rtol=0, atol=1e-6)
    assert last_block_ff == [steps]
    pipe.transformer.disable_cache()
    pipe.transformer.enable_cache(FirstBlockCacheConfig(threshold=1e9))
    cached = call()
    assert last_block_ff == [steps + 1]  # computed at the first step only
    assert np.abs(cached - reference).max() > 1e-4
    np.testing.assert_array_equal(call(), cached)  # the cache state was reset at the end of the first call


def test_pyramid_attention_broadcast_reuses_the_linear_attention():
    """Pyramid attention broadcast finds LiT's linear attention (a diffusers attention module) and, with a skip
    range of 2, computes it every other step, reading the timestep from `pipe.current_timestep`."""
    from diffusers import PyramidAttentionBroadcastConfig

    pipe = class_pipeline()
    assert pipe.current_timestep is None  # before any call
    reference = generate(pipe, num_inference_steps=4)
    attention = count_calls(pipe.transformer.transformer_blocks[0].attn1.to_q)
    pipe.transformer.enable_cache(
        PyramidAttentionBroadcastConfig(
            spatial_attention_block_skip_range=2,
            spatial_attention_timestep_skip_range=(-1, 1001),
            current_timestep_callback=lambda: pipe.current_timestep,
        )
    )
    broadcast = generate(pipe, num_inference_steps=4)
    assert attention == [2]
    assert np.abs(broadcast - reference).max() > 1e-5
    assert pipe.current_timestep is None  # cleared after the call


def test_the_card_is_rendered_from_card_info_json(tmp_path):
    """A model's facts travel as data (card_info.json), the card's prose is rendered from them, and a broken
    file is refused with its name."""
    pipe = class_pipeline()
    pipe.card_info = {"how_made": "Trained for a test.", "training_steps": 7, "batch_size": 2}
    pipe.save_pretrained(tmp_path / "pipe")
    assert json.loads((tmp_path / "pipe" / "card_info.json").read_text()) == pipe.card_info
    assert "## How it was made\n\nTrained for a test." in (tmp_path / "pipe" / "README.md").read_text()
    assert LiTPipeline.from_pretrained(tmp_path / "pipe").card_info["training_steps"] == 7
    (tmp_path / "pipe" / "card_info.json").write_text("{not json")
    with pytest.raises(ValueError, match="card_info.json is not valid JSON"):
        LiTPipeline.from_pretrained(tmp_path / "pipe")
