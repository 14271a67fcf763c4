"""Text-to-image on Fashion-MNIST scenes: the scenes, the real MiniLM text encoder, pixel-space text pipelines,
prompt adherence, and the chain (PixArt teacher from scratch -> LiT -> distilled -> scored) in a reduced form."""

import copy
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import DPMSolverMultistepScheduler, EulerDiscreteScheduler, PixArtTransformer2DModel
from helpers import exactly, tiny_vae
from PIL import Image

from diffusers_lit import LiTPipeline, LiTTextToImagePipeline
from diffusers_lit.adherence import (
    CLASSIFIER_EPOCHS,
    FashionClassifier,
    classifier_accuracy,
    default_classifier_path,
    load_classifier,
    scene_adherence,
)
from diffusers_lit.cli import main as cli
from diffusers_lit.conversion import convert_to_lit
from diffusers_lit.evaluation import load_samples
from diffusers_lit.pipelines import pipeline_lit_t2i
from diffusers_lit.scenes import (
    PHRASINGS,
    SCENE_HEIGHT,
    SCENE_WIDTH,
    build_scenes,
    compose_scene,
    parse_scene_caption,
    scene_caption,
)
from diffusers_lit.text_encoders import MINILM, load_text_encoder, text_encoder_folder
from diffusers_lit.training import parse_resolution, preprocess_image, train_dit
from diffusers_lit.training.loop import distill, parse_distill_args

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def minilm():
    return load_text_encoder(MINILM)


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    """24 test-split scenes, saved where `--dataset` can read them."""
    folder = tmp_path_factory.mktemp("scenes") / "scenes"
    build_scenes("test", 24, seed=3).save_to_disk(str(folder))
    return folder


def tiny_pixart(seed: int = 0, **config) -> PixArtTransformer2DModel:
    torch.manual_seed(seed)
    defaults = dict(num_attention_heads=2, attention_head_dim=8, in_channels=1, out_channels=2, num_layers=2)
    defaults.update(sample_size=16, patch_size=4, caption_channels=384, cross_attention_dim=16)
    return PixArtTransformer2DModel(**{**defaults, "use_additional_conditions": False, **config})


def pixel_pipeline(minilm, transformer=None) -> LiTTextToImagePipeline:
    tokenizer, encoder = minilm
    pipe = LiTTextToImagePipeline(
        tokenizer,
        encoder,
        None,
        transformer or tiny_pixart(),
        DPMSolverMultistepScheduler(),
        text_encoder_id=MINILM,
        max_sequence_length=16,
        image_size=(16, 32),
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_captions_name_both_items_and_parse_back_in_every_phrasing():
    assert scene_caption(7, 8, 0) == "a sneaker on the left and a bag on the right"
    assert scene_caption(7, 8, 2) == "a bag to the right of a sneaker"
    captions = set()
    for left, right, phrasing in itertools.product(range(10), range(10), range(len(PHRASINGS))):
        caption = scene_caption(left, right, phrasing)
        captions.add(caption)
        assert parse_scene_caption(caption.upper() + " ") == (left, right)
    assert len(captions) == 10 * 10 * len(PHRASINGS)  # no two scenes or phrasings share a caption
    assert parse_scene_caption("a bag") is None
    with pytest.raises(ValueError, match="classes 0 to 9"):
        scene_caption(10, 0)


def test_scenes_are_deterministic_and_hold_their_items_in_their_halves():
    item = np.full((28, 28), 200, dtype=np.uint8)
    canvas = compose_scene(item, item // 2, np.array([[0, 4], [3, 1]]))
    assert canvas.shape == (SCENE_HEIGHT, SCENE_WIDTH)
    assert canvas[0:28, 4:32].min() == 200 and canvas[:, :4].max() == 0 and canvas[28:, :32].max() == 0
    assert canvas[3:31, 33:61].min() == 100 and canvas[:3, 32:].max() == 0 and canvas[:, 61:].max() == 0

    first, again, other = build_scenes("test", 6, seed=5), build_scenes("test", 6, seed=5), build_scenes("test", 6, 6)
    assert first["text"] == again["text"] and first["text"] != other["text"]
    assert all(
        np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(first["image"], again["image"], strict=True)
    )
    assert first.column_names == ["image", "text", "left_label", "right_label", "phrasing"]
    for row in first:
        assert row["image"].size == (SCENE_WIDTH, SCENE_HEIGHT)
        assert parse_scene_caption(row["text"]) == (row["left_label"], row["right_label"])


def test_resolutions_and_non_square_preprocessing():
    assert parse_resolution("32") == 32 and parse_resolution("32x64") == (32, 64) and parse_resolution("8x8") == 8
    for bad in ("0", "32x", "x", "-4x8", "a"):
        with pytest.raises(ValueError, match="HEIGHTxWIDTH"):
            parse_resolution(bad)
    image = Image.fromarray(np.arange(32 * 64, dtype=np.uint32).reshape(32, 64).astype(np.uint8))
    pixels = preprocess_image(image, (32, 64), channels=1)
    assert pixels.shape == (1, 32, 64)
    torch.testing.assert_close(pixels[0], torch.from_numpy(np.asarray(image, dtype=np.float32)) / 127.5 - 1)


def test_the_minilm_encoder_loads_offline_and_tells_captions_apart(minilm):
    tokenizer, encoder = minilm
    assert Path(text_encoder_folder(MINILM)).is_dir() and encoder.config.hidden_size == 384
    tokens = tokenizer(
        [scene_caption(7, 8), scene_caption(8, 7)], padding="max_length", max_length=16, return_tensors="pt"
    )
    with torch.no_grad():
        states = encoder(tokens.input_ids, attention_mask=tokens.attention_mask)[0]
    assert states.shape == (2, 16, 384)
    # The same words in another order: the token states differ, so the places can be read.
    assert (states[0] - states[1]).abs().max() > 0.1


def test_pixel_space_text_pipeline_references_its_encoder_and_round_trips(minilm, tmp_path):
    pipe = pixel_pipeline(minilm)
    prompts = [scene_caption(0, 1), scene_caption(2, 3)]
    generators = [torch.Generator().manual_seed(i) for i in range(2)]
    images = pipe(prompts, num_inference_steps=3, generator=generators, output_type="pt").images
    assert images.shape == (2, 1, 16, 32) and 0 <= images.min() and images.max() <= 1  # image_size, pixels
    positional = pipe(prompts[0], "", 1, output_type="pt").images  # prompt, negative prompt, steps
    assert positional.shape == (1, 1, 16, 32)

    pipe.save_pretrained(tmp_path / "pipe")
    index = json.loads((tmp_path / "pipe" / "model_index.json").read_text())
    assert (
        index["text_encoder"] == [None, None] and index["tokenizer"] == [None, None] and index["vae"] == [None, None]
    )
    assert (
        index["text_encoder_id"] == MINILM and index["max_sequence_length"] == 16 and index["image_size"] == [16, 32]
    )
    assert not (tmp_path / "pipe" / "text_encoder").exists()  # referenced, not copied

    loaded = LiTPipeline.from_pretrained(tmp_path / "pipe")
    assert isinstance(loaded, LiTTextToImagePipeline) and loaded.text_encoder.config.hidden_size == 384
    loaded.set_progress_bar_config(disable=True)
    generators = [torch.Generator().manual_seed(i) for i in range(2)]
    again = loaded(prompts, num_inference_steps=3, generator=generators, output_type="pt").images
    torch.testing.assert_close(again, images)


def test_pixel_space_text_pipeline_refuses_nonsense(minilm):
    pipe = pixel_pipeline(minilm)
    with pytest.raises(ValueError, match="at least 1"):
        pipe("a bag", num_inference_steps=0)
    with pytest.raises(ValueError, match="at least 1, got 0"):
        pipe("a bag", "", 0)  # the steps given positionally
    binning = "Resolution binning maps latent sizes of PixArt tables: a pixel-space pipeline has none."
    with pytest.raises(ValueError, match=exactly(binning)):
        pipe("a bag", num_inference_steps=1, use_resolution_binning=True)
    with pytest.raises(ValueError, match="one negative prompt per prompt"):
        pipe(["a bag", "a coat"], negative_prompt=["", "", ""], num_inference_steps=1)
    tokenizer, encoder = minilm
    narrow = tiny_pixart(num_layers=1, caption_channels=24)
    with pytest.raises(ValueError, match="hidden size 384 does not match the transformer's caption_channels 24"):
        LiTTextToImagePipeline(tokenizer, encoder, None, narrow, DPMSolverMultistepScheduler())


def test_pixel_space_text_pipeline_passes_its_defaults_to_pixart_and_returns_what_was_asked(minilm):
    """The call's defaults reach PixArt's prompt encoding (padded tokens are masked, so images cannot show them):
    the trained caption length, else min(300, the tokenizer's maximum), and no caption cleaning."""
    pipe = pixel_pipeline(minilm)
    seen = []
    encode_prompt = pipe.encode_prompt
    pipe.encode_prompt = lambda *args, **kwargs: seen.append(kwargs) or encode_prompt(*args, **kwargs)
    images = pipe("a bag", num_inference_steps=1).images  # "pil" by default, as PixArt's
    assert len(images) == 1 and images[0].size == (32, 16) and images[0].mode == "L"
    assert seen[-1]["max_sequence_length"] == 16 and seen[-1]["clean_caption"] is False
    pipe.register_to_config(max_sequence_length=None)
    (pixels,) = pipe("a bag", num_inference_steps=1, output_type="pt", return_dict=False)
    assert pixels.shape == (1, 1, 16, 32) and seen[-1]["max_sequence_length"] == 300  # MiniLM's maximum is 512
    maximum, pipe.tokenizer.model_max_length = pipe.tokenizer.model_max_length, 12  # the module's tokenizer
    try:
        pipe("a bag", num_inference_steps=1, output_type="pt")
    finally:
        pipe.tokenizer.model_max_length = maximum
    assert seen[-1]["max_sequence_length"] == 12
    pipe("a bag", num_inference_steps=None, timesteps=[999, 500], output_type="pt", max_sequence_length=8)
    assert seen[-1]["max_sequence_length"] == 8 and pipe.scheduler.timesteps.tolist() == [999, 500]
    pipe.scheduler = EulerDiscreteScheduler()  # a scheduler that takes sigmas
    pipe("a bag", num_inference_steps=None, sigmas=[2.0, 0.5], output_type="pt")
    assert pipe.scheduler.sigmas.tolist() == [2.0, 0.5]
    pipe.register_to_config(image_size=[8, 32])  # a height other than the transformer's
    assert pipe("a bag", num_inference_steps=1, output_type="pt").images.shape == (1, 1, 8, 32)
    pipe.register_to_config(image_size=None)
    assert pipe("a bag", num_inference_steps=1, output_type="pt").images.shape == (1, 1, 16, 16)
    # Without a VAE the image processor keeps every size (a VAE's would round it down to its factor).
    assert pipe.image_processor.preprocess(Image.new("L", (33, 17))).shape == (1, 1, 17, 33)


def test_text_pipeline_refuses_bad_settings_at_construction(minilm):
    tokenizer, encoder = minilm
    with pytest.raises(ValueError, match="`max_sequence_length` must be at least 1, got 0"):
        LiTTextToImagePipeline(tokenizer, encoder, None, tiny_pixart(), DPMSolverMultistepScheduler(), None, 0)
    assert LiTTextToImagePipeline(tokenizer, encoder, None, tiny_pixart(), DPMSolverMultistepScheduler(), None, 1)
    for bad in ([16, 32, 8], [0, 32]):
        with pytest.raises(ValueError, match=rf"`image_size` must be \(height, width\) in pixels, got \{bad}"):
            LiTTextToImagePipeline(
                tokenizer, encoder, None, tiny_pixart(), DPMSolverMultistepScheduler(), image_size=bad
            )
    assert LiTTextToImagePipeline(
        tokenizer, encoder, None, tiny_pixart(), DPMSolverMultistepScheduler(), image_size=[1, 4]
    ).config.image_size == [1, 4]
    alpha = tiny_pixart(num_layers=1, use_additional_conditions=True)
    message = (
        "This transformer is conditioned on resolution and aspect ratio (PixArt-alpha at 1024 px), which the "
        "PixArt-Sigma sampling loop does not pass: use diffusers' PixArtAlphaPipeline with it."
    )
    with pytest.raises(ValueError, match=exactly(message)):
        LiTTextToImagePipeline(tokenizer, encoder, None, alpha, DPMSolverMultistepScheduler())


def test_text_encoder_id_loads_what_is_not_given_and_keeps_the_vae(minilm, monkeypatch):
    """Tokenizer and encoder come from `text_encoder_id` only where not given (each load is a model read)."""
    tokenizer, encoder = minilm
    loads = []

    def load(name):  # copies, to tell what was loaded from what was given
        loads.append(name)
        return copy.copy(tokenizer), copy.copy(encoder)

    monkeypatch.setattr(pipeline_lit_t2i, "load_text_encoder", load)

    def build(tokenizer, encoder, text_encoder_id=MINILM, vae=None):
        transformer = tiny_pixart(in_channels=1 if vae is None else 4, out_channels=2 if vae is None else 8)
        scheduler = DPMSolverMultistepScheduler()
        return LiTTextToImagePipeline(tokenizer, encoder, vae, transformer, scheduler, text_encoder_id)

    both = build(tokenizer, encoder)
    assert loads == [] and both.tokenizer is tokenizer and both.text_encoder is encoder
    only_tokenizer = build(tokenizer, None)
    assert loads == [MINILM] and only_tokenizer.tokenizer is tokenizer
    assert only_tokenizer.text_encoder not in (None, encoder)
    only_encoder = build(None, encoder)
    assert loads == [MINILM] * 2 and only_encoder.text_encoder is encoder
    assert only_encoder.tokenizer not in (None, tokenizer)
    neither = build(None, None, text_encoder_id=None)
    assert loads == [MINILM] * 2 and neither.tokenizer is None and neither.text_encoder is None
    vae = tiny_vae(in_channels=1)
    latent = build(None, None, vae=vae)
    assert latent.vae is vae and latent.text_encoder is not None and latent.vae_scale_factor == 2


def test_usage_snippet_runs_as_written(minilm, tmp_path, monkeypatch):
    """The model card's snippet, with the stock prompt where the training data gave none."""
    pixel_pipeline(minilm).save_pretrained(tmp_path / "pipe")
    snippet = LiTTextToImagePipeline.usage_snippet(str(tmp_path / "pipe"))
    assert 'pipe("a photograph of an astronaut riding a horse", num_inference_steps=20)' in snippet
    assert 'pipe("a bag", num_inference_steps=20)' in LiTTextToImagePipeline.usage_snippet("user/lit", "a bag")
    monkeypatch.chdir(tmp_path)
    exec(snippet, {})
    assert Image.open(tmp_path / "lit.png").size == (32, 16)


def test_adherence_counts_items_in_their_named_halves():
    class Oracle(FashionClassifier):  # "recognises" an item by its brightness: class = mean value * 10
        def forward(self, images):
            return torch.nn.functional.one_hot((images.mean(dim=(1, 2, 3)) * 10).long().clamp(0, 9), 10).float()

    halves = torch.stack([torch.full((1, 32, 32), (label + 0.5) / 10) for label in range(4)])  # classes 0..3
    scenes = torch.cat([halves[[0, 1, 2, 3]], halves[[1, 1, 3, 0]]], dim=-1)  # (4, 1, 32, 64)
    result = scene_adherence(Oracle(), scenes, torch.tensor([0, 1, 2, 0]), torch.tensor([1, 0, 3, 0]))
    # Scene 0: both right; 1: left right, right wrong; 2: both right; 3: left wrong, right right.
    assert result == {"scene_accuracy": 0.5, "object_accuracy": 6 / 8, "num_scenes": 4}
    with pytest.raises(ValueError, match=r"\(N, 1, 32, 64\)"):
        scene_adherence(Oracle(), scenes[..., :32], torch.zeros(4), torch.zeros(4))
    with pytest.raises(ValueError, match="4 scenes for 3"):
        scene_adherence(Oracle(), scenes, torch.zeros(3), torch.zeros(4))


def test_shipped_classifier_recognises_real_scene_halves():
    """Its recorded test accuracy (the whole test split, items at the offsets of seed + 1) is what it scores, and
    at least the 0.92 the scores rely on."""
    model = load_classifier()
    info = json.loads((Path(default_classifier_path()) / "training.json").read_text())
    accuracy = classifier_accuracy(model, info["seed"])
    assert accuracy == pytest.approx(info["test_accuracy"], abs=1e-4)
    assert accuracy >= 0.92
    assert info["epochs"] == CLASSIFIER_EPOCHS
    assert sum(p.numel() for p in model.parameters()) * 4 < 2e6  # under 2 MB


def test_text_chain_teacher_from_scratch_convert_distill_and_score(scenes, tmp_path, capsys):
    """The text-to-image chain with the real MiniLM encoder, reduced: a pixel PixArt teacher trained from scratch
    on scenes (two steps), a LiT converted and distilled from it (two steps), and both scored."""
    common = [
        "--dataset",
        str(scenes),
        "--train_batch_size",
        "4",
        "--max_train_steps",
        "2",
        "--report_to",
        "none",
        "--cache_dir",
        str(tmp_path / "cache"),
        "--checkpointing_steps",
        "100",
    ]
    teacher = train_dit(
        [
            *common,
            "--output_dir",
            str(tmp_path / "teacher"),
            "--text_encoder",
            MINILM,
            "--caption_length",
            "16",
            "--resolution",
            "32x64",
            "--patch_size",
            "4",
            "--width",
            "16",
            "--depth",
            "2",
            "--heads",
            "2",
        ]
    )
    index = json.loads((teacher / "model_index.json").read_text())
    assert index["transformer"] == ["diffusers", "PixArtTransformer2DModel"] and index["image_size"] == [32, 64]
    assert index["max_sequence_length"] == 16 and index["text_encoder_id"] == MINILM
    first_caption = build_scenes("test", 24, seed=3)[0][
        "text"
    ]  # the cards show a caption of the data, not a stock one
    assert json.loads((teacher / "card_info.json").read_text())["example_prompt"] == first_caption
    converted = convert_to_lit(teacher, tmp_path / "converted")
    assert f'pipe("{first_caption}"' in (converted / "README.md").read_text()

    student = distill(
        parse_distill_args(
            [
                *common,
                "--teacher",
                str(teacher),
                "--output_dir",
                str(tmp_path / "student"),
                "--lambda_noise",
                "1.0",
                "--lambda_var",
                "0.05",
                "--inherit",
                "qkvo",
            ]
        )
    )
    pipe = LiTPipeline.from_pretrained(student)
    assert type(pipe.transformer).__name__ == "LiTTransformer2DModel" and pipe.config.image_size == [32, 64]
    assert (
        f'pipe("{first_caption}"' in (student / "README.md").read_text()
        and "astronaut" not in pipe.model_card("s").text
    )
    metrics = [json.loads(line) for line in (student / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 2 and all(m["noise_kd"] > 0 and m["variance_kd"] > 0 for m in metrics)

    prompts = tmp_path / "prompts.txt"
    prompts.write_text(f"{scene_caption(7, 8)}\n{scene_caption(0, 9, 3)}\n")
    samples = tmp_path / "samples.npz"
    cli(
        [
            "generate",
            str(student),
            "--num-samples",
            "3",
            "--steps",
            "2",
            "--batch-size",
            "2",
            "--prompts",
            str(prompts),
            "--guidance-scale",
            "2",
            "--output",
            str(samples),
            "--device",
            "cpu",
        ]
    )
    images, labels, info = load_samples(samples)
    assert images.shape == (3, 1, 32, 64) and labels == [[7, 8], [0, 9], [7, 8]]
    assert info["prompts"][2] == scene_caption(7, 8)
    capsys.readouterr()
    cli(["evaluate", str(samples), "--cache-dir", str(tmp_path / "fid"), "--device", "cpu"])
    results = json.loads(capsys.readouterr().out)
    assert results["num_scenes"] == 3 and 0 <= results["scene_accuracy"] <= results["object_accuracy"] <= 1
    assert results["reference"] == "fashion-mnist-scenes:test" and results["fid"] > 0


def test_long_captions_are_truncated_with_a_warning(minilm, caplog):
    from diffusers_lit.training.data import encode_captions

    tokenizer, encoder = minilm
    with caplog.at_level("WARNING"):
        embeds, masks = encode_captions([scene_caption(9, 9), "a bag"], tokenizer, encoder, max_sequence_length=6)
    assert embeds.shape == (2, 6, 384) and masks[1].sum() == 4  # [CLS] a bag [SEP]
    assert "1 of 2 captions are longer than 6 tokens" in caplog.text
