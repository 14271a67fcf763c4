"""diffusers_lit.training: losses against hand and float64 computations, data and caches, checks, checkpoints."""

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler
from helpers import tiny_text_encoder, tiny_vae
from PIL import Image
from training_helpers import (
    CAPTIONS,
    tiny_dit,
    tiny_lit,
    tiny_lit_text,
    tiny_pixart,
    write_imagefolder,
)

from diffusers_lit.training import (
    DiffusionSchedule,
    cached_training_data,
    check_dataset_columns,
    check_output_dir_writable,
    check_resume_compatible,
    check_teacher_student,
    config_signature,
    diffusion_loss,
    drop_conditions,
    global_batch_indices,
    hybrid_distillation_loss,
    list_checkpoints,
    load_image_dataset,
    model_prediction,
    module_fingerprint,
    preprocess_image,
    prune_checkpoints,
    resolve_checkpoint,
    step_generator,
    variational_bound,
    write_training_state,
)
from diffusers_lit.training.data import epoch_permutation


def fixed_batch(seed: int = 0, channels: int = 2):
    generator = torch.Generator().manual_seed(seed)
    shape = (4, channels, 4, 4)
    x_start = torch.rand(shape, generator=generator) * 2 - 1
    x_start[0, 0, 0, :2] = torch.tensor([-1.0, 1.0])  # the edge bins of the decoder NLL
    noise = torch.randn(shape, generator=generator)
    student = torch.randn((4, 2 * channels, 4, 4), generator=generator)
    teacher = torch.randn((4, 2 * channels, 4, 4), generator=generator)
    timesteps = torch.tensor([0, 1, 500, 999])
    return x_start, noise, student, teacher, timesteps


def reference_vlb(v, eps, x_start, x_t, timesteps, betas) -> np.ndarray:
    """The VLB in bits per sample, written out independently in float64 with numpy and math.erf."""
    v, eps, x_start, x_t = (tensor.double().numpy() for tensor in (v, eps, x_start, x_t))
    betas = betas.double().numpy()
    alpha_bar = np.cumprod(1 - betas)
    out = []
    for i, t in enumerate(timesteps.tolist()):
        a, a_prev, b = alpha_bar[t], (alpha_bar[t - 1] if t > 0 else 1.0), betas[t]
        posterior_var = b * (1 - a_prev) / (1 - a)
        clipped = betas[1] * (1 - alpha_bar[0]) / (1 - alpha_bar[1]) if t == 0 else posterior_var  # clipped at t=1
        x0_hat = (x_t[i] - math.sqrt(1 - a) * eps[i]) / math.sqrt(a)
        c1, c2 = b * math.sqrt(a_prev) / (1 - a), (1 - a_prev) * math.sqrt(1 - b) / (1 - a)
        true_mean, model_mean = c1 * x_start[i] + c2 * x_t[i], c1 * x0_hat + c2 * x_t[i]
        frac = (v[i] + 1) / 2
        model_var = np.exp(frac * math.log(b) + (1 - frac) * math.log(clipped))
        if t > 0:
            kl = (
                np.log(np.sqrt(model_var / clipped))
                + (clipped + (true_mean - model_mean) ** 2) / (2 * model_var)
                - 0.5
            )
            out.append(kl.mean() / math.log(2))
        else:
            cdf = np.vectorize(lambda z: 0.5 * (1 + math.erf(z / math.sqrt(2))))
            std = np.sqrt(model_var)
            upper = np.where(x_start[i] > 0.999, 1.0, cdf((x_start[i] + 1 / 255 - model_mean) / std))
            lower = np.where(x_start[i] < -0.999, 0.0, cdf((x_start[i] - 1 / 255 - model_mean) / std))
            out.append(-np.log(upper - lower).mean() / math.log(2))
    return np.array(out)


def test_vlb_matches_an_independent_float64_computation():
    scheduler = DDPMScheduler()  # DiT's schedule: 1000 linear betas from 1e-4 to 0.02
    schedule = DiffusionSchedule.from_scheduler(scheduler)
    x_start, noise, student, _, timesteps = fixed_batch()
    eps, v = student.double().chunk(2, dim=1)
    v = v.tanh()  # in [-1, 1], as a trained model's
    x_t = schedule.add_noise(x_start.double(), noise.double(), timesteps)
    ours = variational_bound(v, eps, x_start.double(), x_t, timesteps, schedule)
    expected = reference_vlb(v, eps, x_start, x_t, timesteps, scheduler.betas)
    np.testing.assert_allclose(ours.numpy(), expected, rtol=1e-9, atol=1e-12)
    assert (ours > 0).all()


def test_the_schedule_follows_the_batchs_device_from_cpu_tables_and_timesteps():
    """The schedule's tables and the drawn timesteps may stay on the CPU while the batch is on an accelerator (the
    meta device stands in for one): `extract` gives values[t] as (B, 1, 1, 1) on the batch's device in its dtype, and
    the VLB is computed there."""
    schedule = DiffusionSchedule.from_scheduler(DDPMScheduler())
    values, timesteps = torch.arange(10, dtype=torch.float64), torch.tensor([1, 7])
    on_cpu = DiffusionSchedule.extract(values, timesteps, torch.zeros(2, 3, 4, 4, dtype=torch.float16))
    assert on_cpu.dtype == torch.float16 and on_cpu.shape == (2, 1, 1, 1) and on_cpu.flatten().tolist() == [1.0, 7.0]
    batch = torch.zeros(2, 3, 4, 4, dtype=torch.float16, device="meta")
    extracted = DiffusionSchedule.extract(values, timesteps, batch)
    assert (extracted.device.type, extracted.dtype, extracted.shape) == ("meta", torch.float16, (2, 1, 1, 1))
    vlb = variational_bound(batch.float(), batch.float(), batch.float(), batch.float(), torch.tensor([0, 5]), schedule)
    assert vlb.device.type == "meta" and vlb.shape == (2,)


def test_learned_range_variance_is_the_one_ddpm_samples_with():
    scheduler = DDPMScheduler(variance_type="learned_range")
    schedule = DiffusionSchedule.from_scheduler(scheduler)
    v = torch.tensor([-1.0, -0.3, 0.4, 1.0], dtype=torch.float64)
    for t in (1, 10, 500, 999):
        ours = schedule.learned_range_log_variance(v, torch.full((4,), t))
        theirs = torch.stack([scheduler._get_variance(t, predicted_variance=x) for x in v])  # a log variance
        torch.testing.assert_close(ours, theirs.double(), rtol=1e-4, atol=0)  # theirs in float32


def test_every_loss_term_equals_a_hand_computation():
    schedule = DiffusionSchedule.from_scheduler(DDPMScheduler())
    x_start, noise, student, teacher, timesteps = fixed_batch()
    x_t = schedule.add_noise(x_start, noise, timesteps)
    terms = hybrid_distillation_loss(student, teacher, noise, x_start, x_t, timesteps, schedule)
    eps_s, v_s, eps_t, v_t = (*student.chunk(2, dim=1), *teacher.chunk(2, dim=1))
    vlb = variational_bound(v_s, eps_s, x_start, x_t, timesteps, schedule).mean()
    torch.testing.assert_close(terms["mse"], ((eps_s - noise) ** 2).mean())
    torch.testing.assert_close(terms["vlb"], vlb)
    torch.testing.assert_close(terms["noise_kd"], ((eps_s - eps_t) ** 2).mean())
    torch.testing.assert_close(terms["variance_kd"], ((v_s - v_t) ** 2).mean())
    expected = (
        ((eps_s - noise) ** 2).mean() + vlb + 0.5 * ((eps_s - eps_t) ** 2).mean() + 0.05 * ((v_s - v_t) ** 2).mean()
    )
    torch.testing.assert_close(terms["loss"], expected)
    # x_t as DDPMScheduler.add_noise makes it
    torch.testing.assert_close(x_t, DDPMScheduler().add_noise(x_start, noise, timesteps))


def test_lambdas_zero_is_plain_diffusion_training_and_vlb_trains_only_the_variance():
    schedule = DiffusionSchedule.from_scheduler(DDPMScheduler())
    x_start, noise, student, teacher, timesteps = fixed_batch(seed=1)
    x_t = schedule.add_noise(x_start, noise, timesteps)
    outputs = [student.clone().requires_grad_(True) for _ in range(2)]
    hybrid = hybrid_distillation_loss(
        outputs[0], None, noise, x_start, x_t, timesteps, schedule, lambda_noise=0, lambda_var=0
    )
    plain = diffusion_loss(outputs[1], noise, x_start, x_t, timesteps, schedule)
    assert hybrid["loss"].item() == plain["loss"].item() and hybrid["noise_kd"].item() == 0.0
    hybrid["loss"].backward()
    plain["loss"].backward()
    assert torch.equal(outputs[0].grad, outputs[1].grad)

    # The VLB's mean is stopped: its gradient reaches the variance channels only.
    output = student.clone().requires_grad_(True)
    diffusion_loss(output, noise, x_start, x_t, timesteps, schedule)["vlb"].backward()
    assert output.grad[:, :2].abs().max() == 0 and output.grad[:, 2:].abs().max() > 0
    with pytest.raises(ValueError, match="predicts no variance"):
        hybrid_distillation_loss(student, teacher[:, :2], noise, x_start, x_t, timesteps, schedule)
    with pytest.raises(ValueError, match="epsilon"):
        DiffusionSchedule.from_scheduler(DDPMScheduler(prediction_type="v_prediction"))


def test_schedule_refuses_bad_betas_and_keeps_the_posterior_of_ddpm():
    """(0, 1] betas in one dimension only; the posterior mean of q(x_{t-1} | x_t, x_0) written out in float64 (its
    x_t coefficient cancels out of the VLB's KL and vanishes at t = 0, so only this pins it); a scheduler config
    without `prediction_type` predicts epsilon, diffusers' default."""
    for betas in (torch.full((2, 3), 0.01), torch.tensor([0.0, 0.1]), torch.tensor([0.1, 1.5])):
        with pytest.raises(ValueError, match="values in"):
            DiffusionSchedule(betas)
    assert DiffusionSchedule(torch.tensor([0.1, 1.0])).num_timesteps == 2  # beta = 1 is allowed
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    schedule = DiffusionSchedule(betas)
    generator = torch.Generator().manual_seed(0)
    x_start, x_t = (torch.randn((3, 1, 2, 2), generator=generator, dtype=torch.float64) for _ in range(2))
    timesteps = torch.tensor([1, 500, 999])
    alpha_bar = torch.cumprod(1 - betas, dim=0)
    a, a_prev, b = alpha_bar[timesteps], alpha_bar[timesteps - 1], betas[timesteps]
    c1, c2 = b * a_prev.sqrt() / (1 - a), (1 - a_prev) * (1 - b).sqrt() / (1 - a)
    expected = c1[:, None, None, None] * x_start + c2[:, None, None, None] * x_t
    torch.testing.assert_close(schedule.posterior_mean(x_start, x_t, timesteps), expected, rtol=1e-12, atol=0)
    no_type = SimpleNamespace(config={}, betas=betas)
    assert DiffusionSchedule.from_scheduler(no_type).num_timesteps == 1000


def test_each_kd_term_follows_its_own_lambda_and_vlb_scale_reaches_the_vlb():
    """One lambda at 0 keeps the other term; a lambda of 1 counts its term once; `vlb_scale` weights L_vlb."""
    schedule = DiffusionSchedule.from_scheduler(DDPMScheduler())
    x_start, noise, student, teacher, timesteps = fixed_batch(seed=2)
    x_t = schedule.add_noise(x_start, noise, timesteps)
    eps_s, v_s, eps_t, v_t = (*student.chunk(2, dim=1), *teacher.chunk(2, dim=1))
    noise_kd, variance_kd = ((eps_s - eps_t) ** 2).mean(), ((v_s - v_t) ** 2).mean()

    def loss(**kwargs):
        return hybrid_distillation_loss(student, teacher, noise, x_start, x_t, timesteps, schedule, **kwargs)

    base = diffusion_loss(student, noise, x_start, x_t, timesteps, schedule)
    only_variance = loss(lambda_noise=0, lambda_var=1.0)
    torch.testing.assert_close(only_variance["variance_kd"], variance_kd)
    torch.testing.assert_close(only_variance["loss"], base["loss"] + variance_kd)
    only_noise = loss(lambda_noise=1.0, lambda_var=0)
    assert only_noise["variance_kd"].item() == 0.0
    torch.testing.assert_close(only_noise["loss"], base["loss"] + noise_kd)
    none = hybrid_distillation_loss(
        student, None, noise, x_start, x_t, timesteps, schedule, lambda_noise=0, lambda_var=0
    )
    assert (none["noise_kd"].item(), none["variance_kd"].item()) == (0.0, 0.0)
    half = loss(vlb_scale=0.5)
    torch.testing.assert_close(half["loss"] - loss()["loss"], -0.5 * base["vlb"])


def test_condition_dropout_applies_once_to_both_models():
    drop = torch.tensor([True, False, True])
    labels = drop_conditions({"class_labels": torch.tensor([0, 1, 2])}, drop, null_class=3)["class_labels"]
    assert labels.tolist() == [3, 1, 3]
    embeds, mask = torch.randn(3, 5, 4), torch.ones(3, 5, dtype=torch.long)
    null_embeds, null_mask = torch.zeros(5, 4), torch.tensor([1, 1, 0, 0, 0])
    dropped = drop_conditions(
        {"encoder_hidden_states": embeds, "encoder_attention_mask": mask},
        drop,
        null_prompt_embeds=null_embeds,
        null_prompt_mask=null_mask,
    )
    assert (
        torch.equal(dropped["encoder_hidden_states"][1], embeds[1]) and dropped["encoder_hidden_states"][0].eq(0).all()
    )
    assert dropped["encoder_attention_mask"][2].tolist() == [1, 1, 0, 0, 0]

    # The teacher (diffusers DiT, eval) and LiT see the null class as it is: no label dropout inside either.
    teacher, student = tiny_dit().eval(), tiny_lit().train()
    x, t, null = torch.randn(8, 1, 16, 16), torch.full((8,), 10), torch.full((8,), 3)
    for model in (teacher, student):
        torch.manual_seed(0)
        first = model_prediction(model, x, t, {"class_labels": torch.zeros(8, dtype=torch.long)})
        assert not torch.allclose(first, model_prediction(model, x, t, {"class_labels": null}))
        torch.testing.assert_close(first, model_prediction(model, x, t, {"class_labels": torch.zeros(8).long()}))


def test_teacher_student_mismatches_are_refused():
    check_teacher_student(tiny_dit(), tiny_lit())
    check_teacher_student(tiny_pixart(), tiny_lit_text())
    for student, what in (
        (tiny_lit(in_channels=3), "in_channels 1 vs 3"),
        (tiny_lit(patch_size=2), "patch_size"),
        (tiny_lit(num_classes=5), "number of classes"),
        (tiny_lit_text(), "layout"),
    ):
        with pytest.raises(ValueError, match=what):
            check_teacher_student(tiny_dit(), student)
    with pytest.raises(ValueError, match="caption size"):
        check_teacher_student(tiny_pixart(), tiny_lit_text(caption_channels=32))


def test_preprocess_and_batch_positions():
    image = Image.fromarray(np.arange(24 * 32 * 3, dtype=np.uint8).reshape(24, 32, 3))
    pixels = preprocess_image(image, 16, center_crop=True, channels=1)
    assert pixels.shape == (1, 16, 16) and pixels.min() >= -1 and pixels.max() <= 1
    crops = {
        preprocess_image(image, 16, center_crop=False, rng=np.random.default_rng(i)).sum().item() for i in range(6)
    }
    assert len(crops) > 1

    # Two processes, batch 3, 10 examples: each global batch is split between the ranks, each epoch is a
    # permutation, and the result depends only on (micro-step, rank, seed).
    seen = [global_batch_indices(10, step, 3, 2, rank, seed=7) for step in range(5) for rank in range(2)]
    stream = torch.cat(seen)
    assert sorted(stream[:10].tolist()) == list(range(10)) and sorted(stream[10:20].tolist()) == list(range(10))
    assert torch.equal(global_batch_indices(10, 3, 3, 2, 1, seed=7), seen[7])
    assert not torch.equal(global_batch_indices(10, 0, 3, 2, 0, seed=8), seen[0])
    draws = [torch.rand(3, generator=step_generator(0, 5, rank)) for rank in (0, 1, 0)]
    assert torch.equal(draws[0], draws[2]) and not torch.equal(draws[0], draws[1])


def test_the_seeded_streams_are_the_same_in_every_version():
    """The data order and each step's draws are one fixed function of (seed, epoch or step, process): the recorded
    results (docs/results.md, `make demo`) come out the same from a fresh clone only while it stays the same. Pinned
    values: the epoch orders of seed 7 and where a global batch crosses from epoch 0 into epoch 1, and a step's
    timesteps (a changed stream tag, a dropped seed or shift would change them)."""
    assert epoch_permutation(10, 7, 0).tolist() == [3, 5, 7, 8, 0, 1, 2, 9, 6, 4]
    assert epoch_permutation(10, 7, 1).tolist() == [7, 1, 9, 4, 0, 6, 5, 2, 8, 3]
    assert global_batch_indices(10, 2, 4, 1, 0, seed=7).tolist() == [6, 4, 7, 1]  # positions 8-11: epochs 0 and 1
    assert torch.randint(0, 1000, (4,), generator=step_generator(5, 3, 1)).tolist() == [750, 969, 404, 202]


def test_a_micro_batch_is_drawn_from_its_generator_alone():
    """`draw_micro_batch`: equal for equal (seed, step, process), other draws at another step; x_t from its x_0, t and
    eps; the null class exactly where the dropout draw falls under the probability."""
    from diffusers_lit.training.data import TrainingData
    from diffusers_lit.training.loop import draw_micro_batch

    data = TrainingData(kind="pixels", inputs=torch.randn(8, 1, 4, 4), labels=torch.arange(8) % 3)
    schedule = DiffusionSchedule(torch.linspace(1e-4, 0.02, 1000))
    indices = torch.tensor([5, 1, 7, 2, 0, 3])

    def draw(step: int):
        return draw_micro_batch(data, indices, step_generator(0, step, 0), schedule, 0.5, null_class=3)

    (x0, t, eps, x_t, condition), again, other = draw(1), draw(1), draw(2)
    assert torch.equal(x0, data.inputs[indices])
    assert all(torch.equal(a, b) for a, b in zip((t, eps, x_t), again[1:4], strict=True))
    assert torch.equal(condition["class_labels"], again[4]["class_labels"])
    assert not torch.equal(eps, other[2]) and not torch.equal(t, other[1])
    torch.testing.assert_close(x_t, schedule.add_noise(x0, eps, t))
    generator = step_generator(0, 1, 0)  # the same draws in the documented order: t, eps, then the dropout
    torch.randint(0, 1000, (6,), generator=generator)
    torch.randn(x0.shape, generator=generator)
    dropped = torch.rand(6, generator=generator) < 0.5
    expected = torch.where(dropped, torch.tensor(3), data.labels[indices])
    assert 0 < int(dropped.sum()) < 6 and torch.equal(condition["class_labels"], expected)
    assert not torch.equal(eps, draw_micro_batch(data, indices, step_generator(1, 1, 0), schedule, 0.5, 3)[2])  # seed


def test_random_flips_mirror_exactly_the_drawn_examples():
    """Pixels (no stored mirror images): the examples whose draw from the generator falls under 0.5 come mirrored,
    the others as stored; latents with stored mirror images take those instead."""
    from diffusers_lit.training.data import TrainingData

    inputs = torch.randn(6, 1, 2, 3)
    indices = torch.tensor([4, 0, 5, 1, 3, 2])
    flips = torch.rand(6, generator=torch.Generator().manual_seed(1)) < 0.5
    assert 0 < int(flips.sum()) < 6
    pixels = TrainingData(kind="pixels", inputs=inputs, random_flip=True)
    batch = pixels.get_batch(indices, torch.Generator().manual_seed(1))["x_start"]
    mirrored = torch.where(flips[:, None, None, None], inputs[indices].flip(-1), inputs[indices])
    torch.testing.assert_close(batch, mirrored)
    mirrors = torch.randn(6, 1, 2, 3)  # stored mirror images (here: any other tensor), as VAE latents keep them
    stored = TrainingData(kind="pixels", inputs=inputs, inputs_flipped=mirrors, random_flip=True)
    batch = stored.get_batch(indices, torch.Generator().manual_seed(1))["x_start"]
    torch.testing.assert_close(batch, torch.where(flips[:, None, None, None], mirrors[indices], inputs[indices]))
    plain = TrainingData(kind="pixels", inputs=inputs).get_batch(indices, torch.Generator().manual_seed(1))
    assert torch.equal(plain["x_start"], inputs[indices])


def test_datasets_from_imagefolder_disk_and_bad_columns(tmp_path):
    import datasets

    dataset = load_image_dataset(write_imagefolder(tmp_path / "images", per_class=2))
    assert len(dataset) == 6 and dataset.features["label"].names == ["bird", "cat", "dog"]
    dataset.save_to_disk(str(tmp_path / "disk"))
    assert len(load_image_dataset(tmp_path / "disk")) == 6
    datasets.DatasetDict({"validation": dataset}).save_to_disk(str(tmp_path / "dict"))
    assert len(load_image_dataset(tmp_path / "dict", split="validation")) == 6
    with pytest.raises(ValueError, match="no split 'train'"):
        load_image_dataset(tmp_path / "dict")
    with pytest.raises(ValueError, match="no column 'class'.*label_column.*image, label"):
        check_dataset_columns(dataset, "image", "class")
    with pytest.raises(ValueError, match="empty"):
        check_dataset_columns(dataset.select([]), "image", "label")


def test_latent_and_text_caches_are_written_once_and_reused(tmp_path):
    dataset = load_image_dataset(write_imagefolder(tmp_path / "images", per_class=1, captions=True))
    tokenizer, text_encoder = tiny_text_encoder(tmp_path)
    vae = tiny_vae()
    kwargs = dict(
        image_column="image",
        caption_column="text",
        resolution=16,
        channels=3,
        random_flip=True,
        vae=vae,
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        max_sequence_length=8,
    )
    key = {"resolution": 16, "vae": "tiny"}
    data, folder, from_cache = cached_training_data(dataset, cache_dir=tmp_path / "cache", key_settings=key, **kwargs)
    assert not from_cache and data.kind == "latents" and data.inputs.shape == (3, 8, 8, 8) and len(data) == 3
    assert data.inputs_flipped.shape == data.inputs.shape and data.prompt_embeds.shape == (3, 8, 24)
    assert data.null_prompt_mask.sum() == 2  # [CLS] [SEP]
    assert data.prompt_masks.sum(1).tolist() == [2 + len(CAPTIONS[i].split()) for i in range(3)]
    without_vae = {name: value for name, value in kwargs.items() if name != "vae"}
    again, folder_again, from_cache = cached_training_data(
        dataset, cache_dir=tmp_path / "cache", key_settings=key, vae=None, **without_vae
    )
    assert from_cache and folder_again == folder and torch.equal(again.inputs, data.inputs)
    assert torch.equal(again.prompt_embeds, data.prompt_embeds) and again.scaling_factor == vae.config.scaling_factor

    # A batch: latents sampled from the cached posterior, scaled, flipped where drawn; all from the generator.
    batch = again.get_batch(torch.tensor([2, 0]), torch.Generator().manual_seed(0))
    assert batch["x_start"].shape == (2, 4, 8, 8) and batch["prompt_embeds"].shape == (2, 8, 24)
    same = again.get_batch(torch.tensor([2, 0]), torch.Generator().manual_seed(0))
    assert torch.equal(batch["x_start"], same["x_start"])
    _, other_folder, _ = cached_training_data(
        dataset, cache_dir=tmp_path / "cache", key_settings={**key, "resolution": 8}, **{**kwargs, "resolution": 8}
    )
    assert other_folder != folder


def test_built_data_is_each_example_preprocessed_encoded_and_captioned_alone(tmp_path):
    """Five examples read two at a time: each one's random crop is seeded by (seed, its index), its moments and
    its mirror's are the VAE posterior's parameters, its label and first caption are its own (lower-cased, stripped),
    and the null caption is the empty string's; the VAE's scaling and shift factors are kept."""
    import datasets

    from diffusers_lit.training.data import build_training_data

    rng = np.random.default_rng(3)
    images = [Image.fromarray(rng.integers(0, 256, (20, 26, 3), dtype=np.uint8)) for _ in range(5)]
    captions = [["A Red cat ", "a dog"], ["a blue dog"], ["the sky"], ["a bird", "a cat"], ["a small green photo"]]
    dataset = datasets.Dataset.from_dict({"image": images, "label": [2, 0, 1, 1, 0], "text": captions})
    tokenizer, text_encoder = tiny_text_encoder(tmp_path)
    vae = tiny_vae()
    vae.register_to_config(scaling_factor=0.3, shift_factor=0.1)
    data = build_training_data(
        dataset,
        label_column="label",
        caption_column="text",
        resolution=16,
        channels=3,
        center_crop=False,
        random_flip=True,
        vae=vae,
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        max_sequence_length=6,
        seed=4,
        batch_size=2,
    )
    pixels = torch.stack(
        [
            preprocess_image(image, 16, center_crop=False, rng=np.random.default_rng([4, i]))
            for i, image in enumerate(images)
        ]
    )
    with torch.no_grad():
        moments = vae.encode(pixels).latent_dist.parameters
        mirrored = vae.encode(pixels.flip(-1)).latent_dist.parameters
    torch.testing.assert_close(data.inputs, moments)
    torch.testing.assert_close(data.inputs_flipped, mirrored)
    assert data.kind == "latents" and data.random_flip and data.labels.tolist() == [2, 0, 1, 1, 0]
    assert (data.scaling_factor, data.shift_factor) == (0.3, 0.1)
    texts = ["a red cat", "a blue dog", "the sky", "a bird", "a small green photo", ""]
    tokens = tokenizer(texts, padding="max_length", max_length=6, truncation=True, return_tensors="pt")
    with torch.no_grad():
        states = text_encoder(tokens.input_ids, attention_mask=tokens.attention_mask)[0]
    torch.testing.assert_close(data.prompt_embeds, states[:5])
    assert torch.equal(data.prompt_masks, tokens.attention_mask[:5]) and data.prompt_masks[4].sum() == 6  # cut at 6
    torch.testing.assert_close(data.null_prompt_embeds, states[5])
    assert torch.equal(data.null_prompt_mask, tokens.attention_mask[5])

    plain = build_training_data(dataset, label_column="label", resolution=16, channels=1, batch_size=3)
    centred = torch.stack([preprocess_image(image, 16, center_crop=True, channels=1) for image in images])
    assert plain.kind == "pixels" and torch.equal(plain.inputs, centred) and plain.inputs_flipped is None
    assert (plain.scaling_factor, plain.shift_factor) == (1.0, 0.0) and plain.prompt_embeds is None
    assert not plain.random_flip
    cropped = build_training_data(dataset, resolution=16, channels=1, center_crop=False)  # seed 0 by default
    crops = [
        preprocess_image(image, 16, center_crop=False, channels=1, rng=np.random.default_rng([0, i]))
        for i, image in enumerate(images)
    ]
    assert torch.equal(cropped.inputs, torch.stack(crops))


def test_building_refuses_a_missing_column_by_its_option(tmp_path):
    import datasets

    from diffusers_lit.training.data import build_training_data

    columns = {"image": [Image.new("RGB", (8, 8))] * 2, "label": [0, 1], "text": ["a", "b"]}
    dataset = datasets.Dataset.from_dict(columns)
    tokenizer, text_encoder = tiny_text_encoder(tmp_path)
    kwargs = dict(resolution=8, channels=3, tokenizer=tokenizer, text_encoder=text_encoder, max_sequence_length=4)
    for option in ("image_column", "label_column", "caption_column"):
        with pytest.raises(ValueError, match=rf"no column 'photo' \({option}\); its columns are: image, label, text"):
            build_training_data(dataset, **{**kwargs, option: "photo"})


def test_checkpoint_listing_limit_and_resume_checks(tmp_path):
    student, teacher = config_signature(tiny_lit()), config_signature(tiny_dit())
    signature = {"student": student, "teacher": teacher, "data": {"kind": "pixels"}}
    for step in (10, 2, 30):
        (tmp_path / f"checkpoint-{step}").mkdir()
        write_training_state(tmp_path / f"checkpoint-{step}", {"step": step, "signature": signature})
    (tmp_path / "checkpoint-40").mkdir()  # incomplete: no training_state.json
    assert [path.name for path in list_checkpoints(tmp_path)] == ["checkpoint-2", "checkpoint-10", "checkpoint-30"]
    assert resolve_checkpoint(tmp_path, "latest").name == "checkpoint-30"
    assert resolve_checkpoint(tmp_path / "empty", "latest") is None
    assert resolve_checkpoint(tmp_path, "checkpoint-10").name == "checkpoint-10"
    with pytest.raises(ValueError, match="no checkpoint"):
        resolve_checkpoint(tmp_path, "checkpoint-40")
    # Pruned after the newest is complete: the limit counts it; the incomplete checkpoint-40 is left alone.
    assert [path.name for path in prune_checkpoints(tmp_path, 2)] == ["checkpoint-2"]
    assert [path.name for path in prune_checkpoints(tmp_path, 1)] == ["checkpoint-10"]
    assert [path.name for path in list_checkpoints(tmp_path)] == ["checkpoint-30"]
    assert (tmp_path / "checkpoint-40").is_dir()

    assert check_resume_compatible(tmp_path / "checkpoint-30", signature)["step"] == 30
    other = {**signature, "student": config_signature(tiny_lit(num_classes=5))}
    with pytest.raises(ValueError, match="another student.*num_embeds_ada_norm: 3 in the checkpoint, 5 now"):
        check_resume_compatible(tmp_path / "checkpoint-30", other)
    # A from-scratch run has no teacher (None): whatever a checkpoint recorded in its place is not compared.
    scratch = {**signature, "teacher": None}
    assert check_resume_compatible(tmp_path / "checkpoint-30", scratch)["step"] == 30
    with pytest.raises(ValueError, match="another student"):
        check_resume_compatible(tmp_path / "checkpoint-30", {**other, "teacher": None})

    check_output_dir_writable(tmp_path / "new" / "out")
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="is not writable"):
        check_output_dir_writable(tmp_path / "file" / "out")


def test_the_cache_key_follows_the_content_and_every_setting_but_not_their_order(tmp_path):
    """Two datasets of the same size and columns but other content get other caches (their fingerprints, not a
    length-and-columns stand-in); the same content and settings in any order, the same cache; a Path setting counts."""
    from datasets import Dataset

    from diffusers_lit.training.data import cache_key

    cats = Dataset.from_dict({"text": ["a cat", "a dog"]})
    assert cache_key(cats, resolution=16) == cache_key(Dataset.from_dict({"text": ["a cat", "a dog"]}), resolution=16)
    assert cache_key(cats, resolution=16) != cache_key(Dataset.from_dict({"text": ["a cat", "a cow"]}), resolution=16)
    assert cache_key(cats, resolution=16, vae="x") == cache_key(cats, vae="x", resolution=16)
    assert cache_key(cats, vae=tmp_path / "a") != cache_key(cats, vae=tmp_path / "b")


def test_captions_are_strings_or_lists_of_them_and_the_first_of_several_is_used():
    from diffusers_lit.training.data import caption_text

    assert caption_text(["the first", "the second"], "text") == "the first"
    for bad, name in ((5, "int"), ([], "list"), ([5, "a cat"], "list"), (None, "NoneType")):
        with pytest.raises(ValueError, match=rf"Caption column 'text' must hold strings .*, got {name}\."):
            caption_text(bad, "text")


def test_a_cache_is_written_under_new_folders_records_its_settings_and_keeps_the_first_copy(tmp_path):
    """The cache folder's parents are made as needed, meta.json records the settings and the example count, and a
    second writer of the same cache (another process) leaves the first copy in place instead of failing."""
    from diffusers_lit.training.data import load_training_data, save_training_data

    dataset = load_image_dataset(write_imagefolder(tmp_path / "images", per_class=1))
    kwargs = dict(image_column="image", resolution=8, channels=1, random_flip=False)
    key = {"resolution": 8}
    data, folder, _ = cached_training_data(dataset, cache_dir=tmp_path / "a" / "b", key_settings=key, **kwargs)
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["metadata"] == {"settings": key, "examples": 3} and len(data) == 3
    other = load_training_data(folder)
    other.inputs = other.inputs + 1
    save_training_data(other, folder)  # as a second process would, with the same key
    assert torch.equal(load_training_data(folder).inputs, data.inputs)
    save_training_data(other, tmp_path / "c" / "d" / "copy")  # saved alone, under new folders
    assert torch.equal(load_training_data(tmp_path / "c" / "d" / "copy").inputs, other.inputs)


def test_moments_are_encoded_in_the_vaes_dtype_on_the_cpu_by_default_and_returned_as_float32():
    from diffusers_lit.training.data import encode_moments

    vae = tiny_vae().double()
    pixels = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1  # float32
    moments = encode_moments(vae, pixels)
    with torch.no_grad():
        expected = vae.encode(pixels.double()).latent_dist.parameters  # (2, 2 * 4, 8, 8)
    assert moments.dtype == torch.float32 and moments.shape == (2, 8, 8, 8)
    torch.testing.assert_close(moments, expected.float(), rtol=0, atol=0)
    seen = []  # on another device (meta stands in for a GPU) the VAE sees its input there; the moments come back

    def encode(x: torch.Tensor) -> SimpleNamespace:
        seen.append((x.device.type, x.dtype))
        return SimpleNamespace(latent_dist=SimpleNamespace(parameters=torch.ones(len(x), 8, 8, 8, dtype=x.dtype)))

    half_vae = SimpleNamespace(parameters=lambda: iter([torch.zeros(1, dtype=torch.float16)]), encode=encode)
    moments = encode_moments(half_vae, pixels, device="meta")
    assert seen == [("meta", torch.float16)] and (moments.device.type, moments.dtype) == ("cpu", torch.float32)


def test_captions_are_encoded_masked_and_truncated_at_the_length_asked(tmp_path, caplog):
    """The states of a caption's tokens do not depend on how far it is padded (the keep mask reaches the
    encoder); a caption of exactly `max_sequence_length` tokens is kept whole without a word, a longer one is cut
    to that length and counted in the warning."""
    from diffusers_lit.training.data import encode_captions

    tokenizer, encoder = tiny_text_encoder(tmp_path)
    assert tokenizer("a cat dog").input_ids == [2, 5, 8, 9, 3]  # [CLS], WORDS' ids (not [UNK], 1), [SEP]
    short, exact, long = "a cat", "a red cat", "a small red cat on the grass"  # 4, 5 and 9 tokens with [CLS] [SEP]
    with caplog.at_level("WARNING"):
        embeds, masks = encode_captions([short, exact], tokenizer, encoder, max_sequence_length=5)
    assert caplog.text == "" and masks.sum(1).tolist() == [4, 5]
    padded, _ = encode_captions([short, "a dog"], tokenizer, encoder, max_sequence_length=12)
    torch.testing.assert_close(padded[0, :4], embeds[0, :4])
    assert not torch.allclose(padded[0, :4], padded[1, :4])  # the words are read
    with caplog.at_level("WARNING"):
        cut, cut_masks = encode_captions([long, short], tokenizer, encoder, max_sequence_length=5)
    assert cut.shape == (2, 5, 24) and cut_masks[0].tolist() == [1] * 5
    assert "1 of 2 captions are longer than 5 tokens (up to 9) and are truncated" in caplog.text


def test_training_resolution_takes_the_flag_then_the_recorded_size_then_the_square_model():
    from diffusers_lit.training.loop import training_resolution

    assert training_resolution(None, None, sample_size=4, vae_scale=8, patch_size=2) == 32  # latents: 4 x 8 pixels
    assert training_resolution(None, [32, 64], sample_size=32, vae_scale=1, patch_size=4) == (32, 64)
    assert training_resolution(48, [32, 64], sample_size=32, vae_scale=1, patch_size=4) == 48
    with pytest.raises(ValueError, match=r"--resolution 36 must be a multiple of 16 \(VAE scale x patch size\)"):
        training_resolution(36, None, sample_size=4, vae_scale=8, patch_size=2)
    with pytest.raises(ValueError, match=r"--resolution \(32, 66\) must be a multiple of 4"):
        training_resolution((32, 66), None, sample_size=32, vae_scale=1, patch_size=4)


def test_cache_key_settings_name_what_the_cached_data_depends_on():
    """Mirrored copies are cached only for latents (pixels flip per step), the crop seed only for random crops, the
    caption length only for captions; the encoders enter by their weights."""
    from diffusers_lit.training.loop import cache_key_settings

    settings = {
        "image_column": "image",
        "label_column": "label",
        "caption_column": None,
        "resolution": 32,
        "channels": 1,
        "center_crop": False,
        "random_flip": True,
        "vae": None,
        "tokenizer": None,
        "text_encoder": None,
        "max_sequence_length": 77,
        "seed": 3,
    }
    assert cache_key_settings(settings) == {
        "image_column": "image",
        "label_column": "label",
        "caption_column": None,
        "resolution": 32,
        "channels": 1,
        "center_crop": False,
        "random_flip": False,
        "crop_seed": 3,
        "vae": module_fingerprint(None),
        "text_encoder": module_fingerprint(None),
        "max_sequence_length": None,
    }
    key = cache_key_settings({**settings, "center_crop": True, "caption_column": "text"})
    assert key["crop_seed"] is None and key["max_sequence_length"] == 77
    vae = tiny_vae()
    key = cache_key_settings({**settings, "vae": vae})
    assert key["random_flip"] is True and key["vae"] == module_fingerprint(vae) != module_fingerprint(None)


def test_how_made_text_states_the_recipe():
    from diffusers_lit.training.loop import how_made_text

    recipe = {"steps": 200, "batch": 64, "learning_rate": 1e-3, "lr_scheduler": "constant", "max_grad_norm": 1.0}
    assert how_made_text(None, "fashion-mnist", ema=None, lambdas=(0.0, 0.0), **recipe) == (
        "Trained from scratch with diffusers_lit's `examples/train_dit.py` (DiT's loss: MSE + learned-range VLB) on "
        "`fashion-mnist`: 200 steps of 64 examples, AdamW lr 0.001 (constant), gradient norm clipped at 1.0."
    )
    distilled = how_made_text("t", "d", ema=(0.999, "constant"), lambdas=(1.0, 0.05), **{**recipe, "max_grad_norm": 0})
    assert distilled == (
        "Distilled from `t` with diffusers_lit's `examples/distill_lit.py` (hybrid knowledge distillation: "
        "lambda_noise 1.0, lambda_var 0.05) on `d`: 200 steps of 64 examples, AdamW lr 0.001 (constant), EMA "
        "weights (constant decay 0.999), no gradient clipping."
    )


def test_make_ema_schedules():
    """EMAModel's step counter: the first step copies (decay 0); then "constant" holds the decay (DiT, PixArt) and
    "warmup" is diffusers' (1 + s) / (10 + s), s counted from the second step, capped at the decay."""
    from diffusers_lit.training.loop import make_ema

    model = tiny_vae()
    constant, warmup = make_ema(model, 0.999, "constant"), make_ema(model, 0.999, "warmup")
    assert constant.get_decay(1) == warmup.get_decay(1) == 0.0
    assert constant.get_decay(5) == 0.999 and warmup.get_decay(5) == pytest.approx(5 / 14)
    assert warmup.get_decay(100_000) == 0.999
    with pytest.raises(ValueError, match=r"`schedule` must be one of \['constant', 'warmup'\], got 'cosine'"):
        make_ema(model, 0.999, "cosine")
