import argparse
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    DDPMScheduler,
    DiTPipeline,
    DiTTransformer2DModel,
    DPMSolverMultistepScheduler,
    PixArtAlphaPipeline,
    PixArtSigmaPipeline,
    PixArtTransformer2DModel,
    UNet2DModel,
)
from diffusers.models.embeddings import get_2d_sincos_pos_embed
from helpers import diffusers_to_original_dit, exactly, put_in_hf_cache, tiny_text_encoder, tiny_vae
from safetensors.torch import load_file, save_file

from diffusers_lit import LiTPipeline, LiTTextToImagePipeline, LiTTransformer2DModel
from diffusers_lit.cli import main
from diffusers_lit.conversion import (
    SELF_ATTENTION,
    SourceCheckpoint,
    _heads,
    _sample_size,
    convert_to_lit,
    convert_transformer,
    default_scheduler,
    embedder_copies_differ,
    lit_config,
    load_source,
    map_state_dict,
    original_to_diffusers,
    read_source,
)

DIT = dict(
    num_attention_heads=4,
    attention_head_dim=8,
    in_channels=4,
    out_channels=8,
    num_layers=2,
    sample_size=8,
    num_embeds_ada_norm=3,
)
PIXART = dict(
    num_attention_heads=4,
    attention_head_dim=8,
    in_channels=4,
    out_channels=8,
    num_layers=2,
    sample_size=8,
    cross_attention_dim=32,
    caption_channels=24,
    norm_eps=1e-6,
)
UNET = dict(
    block_out_channels=(8, 16),
    norm_num_groups=8,
    layers_per_block=1,
    sample_size=8,
    down_block_types=("DownBlock2D",) * 2,
    up_block_types=("UpBlock2D",) * 2,
)
ATTENTION = ("to_q", "to_k", "to_v", "to_out.0")


def tiny_dit(seed: int = 0) -> DiTTransformer2DModel:
    torch.manual_seed(seed)
    dit = DiTTransformer2DModel(**DIT)
    for block in dit.transformer_blocks[1:]:  # a trained DiT holds one embedder, copied into every block
        block.norm1.emb.load_state_dict(dit.transformer_blocks[0].norm1.emb.state_dict())
    return dit


def dit_source(dit: DiTTransformer2DModel, **fields) -> SourceCheckpoint:
    """A diffusers DiT as `read_source` gives it: its public config and its tensors (`fields` replace either)."""
    config = {key: value for key, value in dict(dit.config).items() if not key.startswith("_")}
    return SourceCheckpoint(
        **{"name": "tiny", "layout": "dit", "config": config, "state_dict": dit.state_dict()} | fields
    )


def save_dit_pipeline(folder: Path, legacy: bool = False) -> Path:
    DiTPipeline(transformer=tiny_dit(), vae=tiny_vae(), scheduler=DDIMScheduler()).save_pretrained(folder)
    index = json.loads((folder / "model_index.json").read_text())
    index["id2label"] = {"0": "tench, Tinca tinca", "1": "goldfish", "2": "great white shark"}  # as on the Hub
    if legacy:  # facebook/DiT-XL-2-256 as published: a Transformer2DModel
        index["transformer"] = ["diffusers", "Transformer2DModel"]
        config = json.loads((folder / "transformer" / "config.json").read_text())
        config["_class_name"] = "Transformer2DModel"
        (folder / "transformer" / "config.json").write_text(json.dumps(config))
    (folder / "model_index.json").write_text(json.dumps(index))
    return folder


def save_pixart_pipeline(folder: Path, sigma: bool, tmp_path: Path) -> Path:
    torch.manual_seed(0)
    tokenizer, text_encoder = tiny_text_encoder(tmp_path)
    pipeline_class = PixArtSigmaPipeline if sigma else PixArtAlphaPipeline
    pipe = pipeline_class(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=tiny_vae(),
        transformer=PixArtTransformer2DModel(**PIXART),
        scheduler=DDIMScheduler(),
    )
    pipe.save_pretrained(folder)
    return folder


def diffusers_to_original_pixart(model: PixArtTransformer2DModel, tokens: int) -> dict[str, torch.Tensor]:
    """A diffusers PixArt in PixArt-alpha / Sigma's key layout, wrapped as their .pth files are."""
    s = {key: value.clone() for key, value in model.state_dict().items()}
    renames = {
        "pos_embed.proj": "x_embedder.proj",
        "adaln_single.emb.timestep_embedder.linear_1": "t_embedder.mlp.0",
        "adaln_single.emb.timestep_embedder.linear_2": "t_embedder.mlp.2",
        "adaln_single.linear": "t_block.1",
        "caption_projection.linear_1": "y_embedder.y_proj.fc1",
        "caption_projection.linear_2": "y_embedder.y_proj.fc2",
        "proj_out": "final_layer.linear",
    }
    if model.config.use_additional_conditions:  # PixArt-alpha at 1024 px: size and aspect-ratio embedders
        for name, original in (("resolution_embedder", "csize_embedder"), ("aspect_ratio_embedder", "ar_embedder")):
            renames[f"adaln_single.emb.{name}.linear_1"] = f"{original}.mlp.0"
            renames[f"adaln_single.emb.{name}.linear_2"] = f"{original}.mlp.2"
    out = {f"{new}.{p}": s[f"{old}.{p}"] for old, new in renames.items() for p in ("weight", "bias")}
    out["final_layer.scale_shift_table"] = s["scale_shift_table"]
    out["y_embedder.y_embedding"] = torch.randn(tokens, model.config.caption_channels)
    grid = model.config.sample_size // 2
    # the fixed grid as the originals store it: PixArt-Sigma's pe_interpolation is sample_size / 64 (0.5 at 256 px)
    scale = model.config.sample_size / 64 if tokens == 300 else max(model.config.sample_size // 64, 1)
    out["pos_embed"] = get_2d_sincos_pos_embed(32, grid, base_size=grid, interpolation_scale=scale)[None]
    for i in range(model.config.num_layers):
        b = f"transformer_blocks.{i}."
        out[f"blocks.{i}.scale_shift_table"] = s[b + "scale_shift_table"]
        for p in ("weight", "bias"):
            out[f"blocks.{i}.attn.qkv.{p}"] = torch.cat([s[b + f"attn1.to_{x}.{p}"] for x in "qkv"])
            out[f"blocks.{i}.attn.proj.{p}"] = s[b + f"attn1.to_out.0.{p}"]
            out[f"blocks.{i}.cross_attn.q_linear.{p}"] = s[b + f"attn2.to_q.{p}"]
            out[f"blocks.{i}.cross_attn.kv_linear.{p}"] = torch.cat([s[b + f"attn2.to_{x}.{p}"] for x in "kv"])
            out[f"blocks.{i}.cross_attn.proj.{p}"] = s[b + f"attn2.to_out.0.{p}"]
            out[f"blocks.{i}.mlp.fc1.{p}"] = s[b + f"ff.net.0.proj.{p}"]
            out[f"blocks.{i}.mlp.fc2.{p}"] = s[b + f"ff.net.2.{p}"]
    return {"state_dict": out}


def lit_tensors(folder: Path) -> dict[str, torch.Tensor]:
    return LiTTransformer2DModel.from_pretrained(folder / "transformer").state_dict()


@pytest.mark.parametrize("legacy", [False, True], ids=["DiTTransformer2DModel", "legacy-Transformer2DModel"])
def test_dit_pipeline_folder(tmp_path, legacy):
    source = save_dit_pipeline(tmp_path / "dit", legacy=legacy)
    out = convert_to_lit(source, tmp_path / "lit")
    report = json.loads((out / "conversion_report.json").read_text())
    dit, lit = tiny_dit().state_dict(), lit_tensors(out)
    assert report["layout"] == "dit" and report["lit_config"]["linear_attention_heads"] == 2  # max(2, 4 // 4)
    fresh = {
        f"transformer_blocks.{i}.attn1.{n}.{p}"
        for i in range(2)
        for n in (*ATTENTION, "dwc")
        for p in ("weight", "bias")
    }
    assert set(report["fresh"]["keys"]) == fresh
    for key, source_key in report["copied"]["keys"].items():
        assert torch.equal(lit[key], dit[source_key]), key
    assert torch.equal(
        lit["time_class_embed.class_embedder.embedding_table.weight"],
        dit["transformer_blocks.1.norm1.emb.class_embedder.embedding_table.weight"],
    )
    unused = report["unused"]["keys"]
    assert {key for key, why in unused.items() if "self-attention" in why} == {
        f"transformer_blocks.{i}.attn1.{n}.{p}" for i in range(2) for n in ATTENTION for p in ("weight", "bias")
    }
    assert all(key.startswith("transformer_blocks.1.norm1.emb.") for key, why in unused.items() if "folded" in why)
    assert report["parameters"]["source"] == sum(t.numel() for t in dit.values())
    # The other components come along; the folder is a LiT pipeline that generates images.
    assert (out / "vae" / "config.json").is_file() and (out / "README.md").is_file()
    pipe = LiTPipeline.from_pretrained(out)
    pipe.set_progress_bar_config(disable=True)
    assert pipe.labels["goldfish"] == 1 and pipe.labels["tench"] == 0
    images = pipe(["goldfish", 2], num_inference_steps=2, output_type="np").images
    assert images.shape == (2, 16, 16, 3) and np.isfinite(images).all()
    card = (out / "README.md").read_text()
    assert "Converted from" in card and 'class_labels=["tench"]' in card


@pytest.mark.parametrize("sigma", [False, True], ids=["alpha", "sigma"])
def test_pixart_pipeline_folder(tmp_path, sigma):
    source = save_pixart_pipeline(tmp_path / "pixart", sigma, tmp_path)
    out = convert_to_lit(source, tmp_path / "lit", linear_attention_heads=4)
    report = json.loads((out / "conversion_report.json").read_text())
    assert report["layout"] == ("pixart-sigma" if sigma else "pixart-alpha")
    original = PixArtTransformer2DModel.from_pretrained(source / "transformer").state_dict()
    lit = lit_tensors(out)
    for key, source_key in report["copied"]["keys"].items():
        assert torch.equal(lit[key], original[source_key]), key
    assert report["copied"]["count"] == len(original) - 2 * 8  # all but 2 blocks x 4 projections x (w, b)
    pipe = LiTPipeline.from_pretrained(out)
    assert isinstance(pipe, LiTTextToImagePipeline) and pipe.transformer.config.linear_attention_heads == 4
    pipe.set_progress_bar_config(disable=True)
    images = pipe("a red cat", num_inference_steps=2, output_type="np", max_sequence_length=8).images
    assert images.shape == (1, 16, 16, 3)


def test_transformer_folder_and_repo_id_in_the_cache(tmp_path):
    tiny_dit().save_pretrained(tmp_path / "transformer_only")
    with pytest.raises(ValueError, match="4-channel latents and comes without a VAE"):  # it could not be sampled
        convert_to_lit(tmp_path / "transformer_only", tmp_path / "a")
    dit_pipeline = save_dit_pipeline(tmp_path / "dit")
    from_folder = convert_to_lit(tmp_path / "transformer_only", tmp_path / "a", components=dit_pipeline)
    assert json.loads((from_folder / "model_index.json").read_text())["vae"] == ["diffusers", "AutoencoderKL"]
    assert LiTPipeline.from_pretrained(from_folder).vae is not None
    put_in_hf_cache(dit_pipeline, "lit-tests/tiny-dit")
    from_hub = convert_to_lit("lit-tests/tiny-dit", tmp_path / "b")
    for key, value in lit_tensors(from_folder).items():
        assert torch.equal(value, lit_tensors(from_hub)[key]), key  # same seed: fresh weights equal too
    assert "base_model: lit-tests/tiny-dit" in (from_hub / "README.md").read_text()


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_original_dit_checkpoint_equals_the_diffusers_version(tmp_path, suffix):
    original = diffusers_to_original_dit(tiny_dit())
    path = tmp_path / f"DiT-tiny{suffix}"
    torch.save(original, path) if suffix == ".pt" else save_file(original, path)
    with pytest.raises(ValueError, match="4-channel latents and comes without a VAE: pass `components`"):
        convert_to_lit(path, tmp_path / "from_original", num_attention_heads=4)  # it would sample latents as pixels
    assert not (tmp_path / "from_original").exists()
    dit_pipeline = save_dit_pipeline(tmp_path / "dit")
    out = convert_to_lit(path, tmp_path / "from_original", num_attention_heads=4, components=dit_pipeline)
    expected = convert_to_lit(dit_pipeline, tmp_path / "from_diffusers")
    got, want = lit_tensors(out), lit_tensors(expected)
    assert got.keys() == want.keys()
    for key in want:
        assert torch.equal(got[key], want[key]), key
    report = json.loads((out / "conversion_report.json").read_text())
    assert report["source_config"]["sample_size"] == 8 and report["source_config"]["num_embeds_ada_norm"] == 3
    assert "fixed sin-cos" in report["unused"]["keys"]["pos_embed"]


def test_original_pixart_checkpoint_equals_the_diffusers_version(tmp_path):
    model = PixArtTransformer2DModel.from_pretrained(
        save_pixart_pipeline(tmp_path / "p", True, tmp_path) / "transformer"
    )
    path = tmp_path / "PixArt-Sigma-tiny.pth"
    torch.save(diffusers_to_original_pixart(model, tokens=300), path)
    source = read_source(path, num_attention_heads=4)
    assert source.layout == "pixart-sigma" and source.config["caption_channels"] == 24
    assert "null-caption buffer" in source.dropped["y_embedder.y_embedding"]
    out = convert_to_lit(path, tmp_path / "from_original", components=tmp_path / "p", num_attention_heads=4)
    want = lit_tensors(convert_to_lit(tmp_path / "p", tmp_path / "from_diffusers"))
    got = lit_tensors(out)
    for key in want:
        assert torch.equal(got[key], want[key]), key
    assert isinstance(LiTPipeline.from_pretrained(out), LiTTextToImagePipeline)  # components taken from `p`


DIT_XL = dict(num_layers=28, num_attention_heads=16, attention_head_dim=72, out_channels=8)
PIXART_SIGMA_XL = dict(sample_size=128, caption_channels=4096, interpolation_scale=2, use_additional_conditions=False)


@pytest.mark.parametrize(
    ("name", "model_class", "config"),
    [
        ("DiT-XL/2 256", DiTTransformer2DModel, dict(DIT_XL, sample_size=32)),
        ("DiT-XL/2 512", DiTTransformer2DModel, dict(DIT_XL, sample_size=64)),
        ("PixArt-Sigma-XL/2 1024", PixArtTransformer2DModel, PIXART_SIGMA_XL),
    ],
)
def test_full_size_configs_map_every_key_and_shape(name, model_class, config):
    with torch.device("meta"):
        source_model = model_class(**config)
        source = SourceCheckpoint(
            name=name, layout="x", config=dict(source_model.config), state_dict=source_model.state_dict()
        )
        lit = LiTTransformer2DModel(**lit_config(source.config, None, 5))
    mapped, _, unused = map_state_dict(source)
    lit_state = lit.state_dict()
    fresh = set(lit_state) - set(mapped)
    assert fresh == {key for key in lit_state if ".attn1." in key}
    assert set(mapped) <= set(lit_state)
    assert all(mapped[key].shape == lit_state[key].shape for key in mapped)
    source_count = sum(t.numel() for t in source.state_dict.values())
    lit_count = sum(t.numel() for t in lit_state.values())
    print(
        f"{name}: {source_count:,} parameters -> LiT {lit_count:,} (linear heads {lit.config.linear_attention_heads})"
    )
    assert lit.config.linear_attention_heads == 4
    assert len(unused) == 28 * 8 + (27 * 5 if model_class is DiTTransformer2DModel else 0)


@pytest.mark.parametrize("inherit", ["none", "v", "kv", "qkv", "qkvo"])
def test_inherit_copies_exactly_the_named_projections(inherit):
    dit = tiny_dit()
    source = dit_source(dit)
    lit, report = convert_transformer(source, inherit=inherit)
    named = {"none": (), "v": ("to_v",), "kv": ("to_k", "to_v"), "qkv": ("to_q", "to_k", "to_v"), "qkvo": ATTENTION}[
        inherit
    ]
    for i in range(2):
        for projection in ATTENTION:
            for p in ("weight", "bias"):
                ours = lit.state_dict()[f"transformer_blocks.{i}.attn1.{projection}.{p}"]
                theirs = dit.state_dict()[f"transformer_blocks.{i}.attn1.{projection}.{p}"]
                assert torch.equal(ours, theirs) == (projection in named), (projection, p)
                if projection not in named and p == "bias":
                    assert torch.count_nonzero(ours) == 0  # fresh: zero bias
    assert report["fresh"]["count"] == 2 * 2 * (5 - len(named))


def test_fp16_output_and_load_source(tmp_path):
    out = convert_to_lit(save_dit_pipeline(tmp_path / "dit"), tmp_path / "lit", dtype="fp16")
    saved = load_file(out / "transformer" / "diffusion_pytorch_model.safetensors")
    assert {tensor.dtype for tensor in saved.values()} == {torch.float16}
    teacher = load_source(tmp_path / "dit")
    assert isinstance(teacher.transformer, DiTTransformer2DModel) and set(teacher.components) == {"vae", "scheduler"}
    assert teacher.id2label[1] == "goldfish"
    for key, value in tiny_dit().state_dict().items():
        assert torch.equal(teacher.transformer.state_dict()[key], value)


def test_cli_and_example_script(tmp_path, capsys):
    source = save_dit_pipeline(tmp_path / "dit")
    main(["convert", str(source), str(tmp_path / "cli"), "--inherit", "qkvo", "--dwc-kernel-size", "3"])
    assert "tensors copied" in capsys.readouterr().out
    assert LiTTransformer2DModel.from_pretrained(tmp_path / "cli" / "transformer").config.dwc_kernel_size == 3
    script = Path(__file__).parents[1] / "examples" / "convert_to_lit.py"
    result = subprocess.run(
        [sys.executable, str(script), str(source), str(tmp_path / "script"), "--linear-attention-heads", "4"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "script" / "conversion_report.json").read_text())["fresh"]["count"] == 20


def test_bad_sources(tmp_path):
    UNet2DModel(**UNET).save_pretrained(tmp_path / "unet")
    with pytest.raises(ValueError, match="holds a UNet2DModel"):
        convert_to_lit(tmp_path / "unet", tmp_path / "out")
    torch.save(UNet2DModel(**UNET).state_dict(), tmp_path / "unet.pt")
    with pytest.raises(ValueError, match="is not a DiT or PixArt checkpoint"):
        convert_to_lit(tmp_path / "unet.pt", tmp_path / "out")
    good = tmp_path / "good.pt"
    torch.save(diffusers_to_original_dit(tiny_dit()), good)
    (tmp_path / "truncated.pt").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ValueError, match="Could not read .*truncated.pt"):
        convert_to_lit(tmp_path / "truncated.pt", tmp_path / "out")
    torch.save({"model": Path("not a tensor")}, tmp_path / "objects.pt")
    with pytest.raises(ValueError, match="Could not read .*objects.pt"):
        convert_to_lit(tmp_path / "objects.pt", tmp_path / "out")
    bad_shape = diffusers_to_original_dit(tiny_dit())
    bad_shape["blocks.1.mlp.fc2.weight"] = torch.zeros(32, 100)
    torch.save(bad_shape, tmp_path / "bad_shape.pt")
    with pytest.raises(ValueError, match="does not fit the LiT built from its config"):
        convert_to_lit(tmp_path / "bad_shape.pt", tmp_path / "out", num_attention_heads=4)
    with pytest.raises(ValueError, match="Cannot infer the attention heads .* 32 wide .* does not record them"):
        convert_to_lit(good, tmp_path / "out")  # 32 is a multiple of neither 64 nor a known width: never guessed
    with pytest.raises(ValueError, match="`num_attention_heads` 3 does not divide the transformer's width 32"):
        convert_to_lit(good, tmp_path / "out", num_attention_heads=3)
    assert not (tmp_path / "out").exists()


def test_differing_embedder_copies_are_kept_per_block_and_compute_the_dit(tmp_path):
    """A DiT trained in diffusers (its per-block embedders apart) converts with one embedder per block: with the
    self-attention silenced in both, the LiT computes exactly the DiT; identical copies still fold into one."""
    dit = tiny_dit().eval()
    torch.nn.init.normal_(dit.transformer_blocks[1].norm1.emb.timestep_embedder.linear_1.weight)
    source = dit_source(dit)
    assert embedder_copies_differ(source) == [1]
    lit, report = convert_transformer(source)
    assert lit.config.per_block_embedders and len(lit.time_class_embed) == DIT["num_layers"]
    assert not [key for key in report["unused"]["keys"] if ".norm1.emb." in key]  # every copy used
    lit, dit = lit.double().eval(), dit.double()  # the same float32 values, compared in float64
    for model in (lit, dit):
        for block in model.transformer_blocks:
            torch.nn.init.zeros_(block.attn1.to_out[0].weight)
            torch.nn.init.zeros_(block.attn1.to_out[0].bias)
    x, t, y = torch.randn(2, 4, 8, 8, dtype=torch.float64), torch.tensor([10, 700]), torch.tensor([0, 2])
    with torch.no_grad():
        expected = dit(x, timestep=t, class_labels=y).sample
        torch.testing.assert_close(lit(x, timestep=t, class_labels=y).sample, expected, rtol=1e-12, atol=1e-12)
    folded, _ = convert_transformer(dit_source(tiny_dit()))
    assert not folded.config.per_block_embedders  # identical copies: LiT's one shared embedder


def test_output_dir_is_never_half_written(tmp_path, monkeypatch):
    source = save_dit_pipeline(tmp_path / "dit")
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "my_checkpoint.bin").write_text("precious")
    with pytest.raises(ValueError, match="exists and is not empty"):
        convert_to_lit(source, existing)
    with pytest.raises(ValueError, match="overlaps the source"):
        convert_to_lit(source, source / "lit", overwrite=True)

    import diffusers_lit.conversion

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(diffusers_lit.conversion, "write_atomically", interrupted)
    with pytest.raises(KeyboardInterrupt):
        convert_to_lit(source, existing, overwrite=True)
    assert (existing / "my_checkpoint.bin").read_text() == "precious"  # the old folder is untouched
    assert sorted(path.name for path in tmp_path.iterdir()) == ["dit", "existing"]  # no temporary left
    monkeypatch.undo()
    convert_to_lit(source, existing, overwrite=True)
    assert not (existing / "my_checkpoint.bin").exists() and (existing / "model_index.json").is_file()


def test_conversion_saves_the_components_it_loaded_in_their_stored_dtype(tmp_path):
    """The converted folder is written by the LiT pipeline's save_pretrained from the components it loaded: a
    half-precision VAE stays half precision (diffusers would load it as fp32), with the same values."""
    folder = save_dit_pipeline(tmp_path / "dit")
    vae = AutoencoderKL.from_pretrained(folder / "vae").half()
    vae.save_pretrained(folder / "vae")
    out = convert_to_lit(folder, tmp_path / "lit")
    saved = load_file(out / "vae" / "diffusion_pytorch_model.safetensors")
    assert {tensor.dtype for tensor in saved.values()} == {torch.float16}
    assert all(torch.equal(saved[key], value) for key, value in vae.state_dict().items())
    assert json.loads((out / "model_index.json").read_text())["vae"] == ["diffusers", "AutoencoderKL"]


def test_a_model_index_naming_another_module_for_a_component_is_refused_unimported(tmp_path, monkeypatch):
    """model_index.json names each component's library; LiT imports diffusers' and transformers' only, so a
    folder cannot make conversion (or a teacher's loading) import a module of its choosing."""
    planted = tmp_path / "modules"
    planted.mkdir()
    (planted / "planted_module.py").write_text("import os\nos.environ['PLANTED_MODULE_RAN'] = '1'\n")
    monkeypatch.syspath_prepend(str(planted))
    monkeypatch.delenv("PLANTED_MODULE_RAN", raising=False)
    folder = save_dit_pipeline(tmp_path / "dit")
    index = json.loads((folder / "model_index.json").read_text())
    (folder / "model_index.json").write_text(json.dumps({**index, "vae": ["planted_module", "AutoencoderKL"]}))
    for load in (lambda: convert_to_lit(folder, tmp_path / "lit"), lambda: load_source(folder)):
        with pytest.raises(ValueError, match=r"names vae \['planted_module', 'AutoencoderKL'\], but LiT loads"):
            load()
    assert "PLANTED_MODULE_RAN" not in os.environ and not (tmp_path / "lit").exists()


def test_push_to_hub_uploads_the_finished_folder(tmp_path, monkeypatch):
    import diffusers.utils.hub_utils
    from huggingface_hub import RepoUrl

    import diffusers_lit.hub

    uploads = []
    monkeypatch.setattr(diffusers_lit.hub, "create_repo", lambda repo_id, **kw: RepoUrl(f"https://hf.co/{repo_id}"))
    monkeypatch.setattr(diffusers.utils.hub_utils, "upload_folder", lambda **kwargs: uploads.append(kwargs))
    out = convert_to_lit(save_dit_pipeline(tmp_path / "dit"), tmp_path / "lit", push_to_hub="someone/lit-tiny")
    assert uploads[0]["repo_id"] == "someone/lit-tiny" and Path(uploads[0]["folder_path"]) == out
    assert 'LiTPipeline.from_pretrained("someone/lit-tiny")' in (out / "README.md").read_text()


def test_the_copy_verification_catches_a_tensor_changed_after_the_copy(monkeypatch):
    """convert_transformer compares every copied tensor with its source after loading: a copy that went wrong
    (here: one weight nudged inside load_state_dict) is refused, not saved."""
    dit = tiny_dit()
    source = dit_source(dit)
    convert_transformer(source)  # the honest copy passes
    load = LiTTransformer2DModel.load_state_dict

    def corrupting_load(self, state_dict, *args, **kwargs):
        result = load(self, state_dict, *args, **kwargs)
        with torch.no_grad():
            self.proj_out_2.weight.view(-1)[0] += 1e-3
        return result

    monkeypatch.setattr(LiTTransformer2DModel, "load_state_dict", corrupting_load)
    with pytest.raises(RuntimeError, match="proj_out_2.weight differs from its source"):
        convert_transformer(source)


def test_a_conversions_report_is_whole_and_its_fresh_attention_follows_the_seed():
    """Every copy under its source key, every fresh and unused tensor with its reason, sorted; the options and the
    parameter counts; the fresh self-attention drawn as a LiT of that config built after torch.manual_seed(seed)."""
    dit = tiny_dit()
    source = dit_source(dit, dropped={"pos_embed": "fixed sin-cos"})
    config = source.config
    torch.manual_seed(123)  # the conversion draws from its own seed, not the global stream
    lit, report = convert_transformer(source, linear_attention_heads=1, dwc_kernel_size=3, inherit="v", seed=7)
    torch.manual_seed(7)
    drawn = LiTTransformer2DModel(**lit_config(config, 1, 3)).state_dict()
    tensors, emb = dit.state_dict(), ".norm1.emb."
    fresh = [f"transformer_blocks.{i}.attn1.{n}" for i in range(2) for n in ("to_q", "to_k", "to_out.0", "dwc")]
    fresh = [f"{prefix}.{p}" for prefix in fresh for p in ("weight", "bias")]
    for key in fresh:
        assert torch.equal(lit.state_dict()[key], drawn[key]), key
    not_inherited = {key: SELF_ATTENTION for key in tensors if ".attn1." in key and ".to_v." not in key}
    folded = "copy of the timestep + class embedder: folded into LiT's shared `time_class_embed`"
    block_1_embedder = {key: folded for key in tensors if key.startswith(f"transformer_blocks.1{emb}")}
    unused = {"pos_embed": "fixed sin-cos"} | not_inherited | block_1_embedder
    copied = {key.replace(f"transformer_blocks.0{emb}", "time_class_embed."): key for key in tensors}
    copied = {new: key for new, key in copied.items() if key not in unused}
    source_parameters = sum(tensor.numel() for tensor in tensors.values())
    lit_parameters = source_parameters - sum(tensors[key].numel() for key in block_1_embedder) + 2 * (32 * 9 + 32)
    assert report == {
        "source": "tiny",
        "layout": "dit",
        "source_config": config,
        "lit_config": lit_config(config, 1, 3),
        "options": {
            "linear_attention_heads": 1,
            "dwc_kernel_size": 3,
            "inherit": "v",
            "seed": 7,
            "softmax_blocks": [],
        },
        "copied": {"count": len(copied), "keys": copied},
        "fresh": {"count": 16, "keys": sorted(fresh)},
        "unused": {"count": len(unused), "keys": unused},
        "parameters": {"source": source_parameters, "lit": lit_parameters},  # 2 fresh 32-channel 3x3 DWCs
    }
    assert list(report["copied"]["keys"]) == sorted(copied) and list(report["unused"]["keys"]) == sorted(unused)
    assert report["lit_config"]["dwc_kernel_size"] == 3 and report["lit_config"]["linear_attention_heads"] == 1
    _, default = convert_transformer(source)
    assert default["options"] == {
        "linear_attention_heads": 2,
        "dwc_kernel_size": 5,
        "inherit": "none",
        "seed": 0,
        "softmax_blocks": [],
    }


def test_a_half_precision_source_is_copied_exactly_into_a_float32_lit():
    """PixArt-Sigma and many DiT fine-tunes ship fp16 / bf16 weights: the float32 LiT holds their exact values, and
    the verification compares them in the LiT's dtype."""
    dit = tiny_dit()
    for dtype in (torch.float16, torch.bfloat16):
        half = {key: value.to(dtype) for key, value in dit.state_dict().items()}
        lit, report = convert_transformer(dit_source(dit, state_dict=half))
        assert {tensor.dtype for tensor in lit.state_dict().values()} == {torch.float32}
        for key, source_key in report["copied"]["keys"].items():
            assert torch.equal(lit.state_dict()[key], half[source_key].float()), key


def test_a_conversion_that_does_not_map_cleanly_is_refused_by_name():
    dit = tiny_dit()
    source = dit_source(dit)
    with pytest.raises(
        ValueError, match=exactly("`inherit` must be one of ['none', 'v', 'kv', 'qkv', 'qkvo', 'o'], got 'q'.")
    ):
        convert_transformer(source, inherit="q")
    extras = {f"extra.{i}": torch.zeros(1) for i in range(6)}  # the first five of six named
    message = "tiny did not map onto LiT cleanly: unexpected {}, missing outside the self-attention {}."
    with pytest.raises(ValueError, match=exactly(message.format(sorted(extras)[:5], []))):
        convert_transformer(dit_source(dit, state_dict=dit.state_dict() | extras))
    outside = [
        "pos_embed.proj.bias",
        "pos_embed.proj.weight",
        "proj_out_1.bias",
        "proj_out_1.weight",
        "proj_out_2.bias",
    ]
    state = {key: value for key, value in dit.state_dict().items() if key not in [*outside, "proj_out_2.weight"]}
    with pytest.raises(ValueError, match=exactly(message.format([], outside))):
        convert_transformer(dit_source(dit, state_dict=state))


def test_lit_config_is_the_source_config_with_lits_two_settings():
    """The source's LiT arguments kept by name (a legacy Transformer2DModel's others left out), out_channels as
    diffusers' DiT / PixArt read it (None or absent: in_channels), the head rule max(2, heads // 4) unless given."""
    dit = {"_class_name": "Transformer2DModel", "num_attention_heads": 16, "attention_head_dim": 72, "in_channels": 4}
    dit |= {"out_channels": 8, "norm_type": "ada_norm_zero", "num_vector_embeds": None, "cross_attention_dim": None}
    kept = {key: value for key, value in dit.items() if key not in ("_class_name", "num_vector_embeds")}
    assert lit_config(dit, None, 5) == kept | {"linear_attention_heads": 4, "dwc_kernel_size": 5}
    assert dit["_class_name"] == "Transformer2DModel" and "linear_attention_heads" not in dit  # the source untouched
    assert lit_config(dit | {"num_attention_heads": 7}, 1, 3) == kept | {
        "num_attention_heads": 7,
        "linear_attention_heads": 1,
        "dwc_kernel_size": 3,
    }
    for out_channels in ({"out_channels": None}, {}):
        source = {key: value for key, value in dit.items() if key != "out_channels"} | out_channels
        assert lit_config(source, None, 5)["out_channels"] == 4
    pixart = {"num_attention_heads": 12, "in_channels": 4, "norm_type": "ada_norm_single"}
    pixart |= {"cross_attention_dim": 1152, "caption_channels": 4096, "use_additional_conditions": False}
    assert lit_config(pixart, None, 5) == pixart | {
        "out_channels": 4,
        "linear_attention_heads": 3,
        "dwc_kernel_size": 5,
    }
    for heads in (0, -2):
        with pytest.raises(ValueError, match=exactly(f"`linear_attention_heads` must be at least 1, got {heads}.")):
            lit_config(dit, heads, 5)


def test_an_original_dit_keeps_dits_timestep_frequencies(tmp_path):
    """facebookresearch/DiT's TimestepEmbedder: freqs exp(-ln(10000) i / half), [cos, sin], MLP. A converted LiT and
    the teacher as the project loads it (load_source) embed timesteps with exactly that formula, not diffusers'
    DiT frequencies (which divide by half - 1); a diffusers DiT folder keeps diffusers' own."""
    original = diffusers_to_original_dit(tiny_dit())
    path = tmp_path / "DiT-tiny.pt"
    torch.save(original, path)
    t = torch.tensor([0.0, 100.0, 500.0, 999.0], dtype=torch.float64)
    half = 128
    freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float64) / half)
    args = t[:, None] * freqs[None]
    embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    w1, b1, w2, b2 = (original[f"t_embedder.mlp.{i}.{p}"].double() for i in (0, 2) for p in ("weight", "bias"))
    expected = torch.nn.functional.silu(embedding @ w1.T + b1) @ w2.T + b2  # (4, width)

    def embed(embedder) -> torch.Tensor:
        with torch.no_grad():
            return embedder.timestep_embedder(embedder.time_proj(t.float())).double()

    dit_pipeline = save_dit_pipeline(tmp_path / "dit")
    lit = LiTPipeline.from_pretrained(
        convert_to_lit(path, tmp_path / "lit", num_attention_heads=4, components=dit_pipeline)
    ).transformer
    assert lit.config.timestep_freq_shift == 0
    torch.testing.assert_close(embed(lit.time_class_embed), expected, rtol=0, atol=1e-5)
    teacher = load_source(str(path), num_attention_heads=4).transformer  # a diffusers DiT, DiT's frequencies
    for block in teacher.transformer_blocks:
        torch.testing.assert_close(embed(block.norm1.emb), expected, rtol=0, atol=1e-5)
    from_diffusers = convert_to_lit(dit_pipeline, tmp_path / "lit-from-diffusers")
    diffusers_lit = LiTPipeline.from_pretrained(from_diffusers).transformer
    assert diffusers_lit.config.timestep_freq_shift is None  # diffusers' DiT: its own frequencies, as trained
    assert (embed(diffusers_lit.time_class_embed) - expected).abs().max() > 1e-2


def test_original_pixart_without_pos_embed_converts_given_its_sample_size(tmp_path):
    model = PixArtTransformer2DModel.from_pretrained(
        save_pixart_pipeline(tmp_path / "p", True, tmp_path) / "transformer"
    )
    original = diffusers_to_original_pixart(model, tokens=300)
    state = original.get("state_dict", original)
    state.pop("pos_embed")  # as some released PixArt checkpoints: the grid is computed, not stored
    path = tmp_path / "no-pos.pth"
    torch.save(original, path)
    with pytest.raises(ValueError, match=r"no `pos_embed`.*pass `sample_size` \(--sample-size\)"):
        read_source(path, num_attention_heads=4)
    with pytest.raises(ValueError, match="must be a positive multiple of the patch size 2"):
        read_source(path, num_attention_heads=4, sample_size=7)
    out = convert_to_lit(path, tmp_path / "lit", components=tmp_path / "p", num_attention_heads=4, sample_size=8)
    want = lit_tensors(convert_to_lit(tmp_path / "p", tmp_path / "from_diffusers"))
    got = lit_tensors(out)
    assert all(torch.equal(got[key], want[key]) for key in want)
    assert json.loads((out / "transformer" / "config.json").read_text())["sample_size"] == 8


def original_dit_forward(
    weights: dict[str, torch.Tensor], x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, *, heads: int, patch: int
) -> torch.Tensor:
    """facebookresearch/DiT's `DiT.forward` (models.py) in float64, read from its own key layout; self-attention
    is left out where `heads` is 0 (the path a LiT inherits)."""
    w = {key: value.double() for key, value in weights.items()}

    def linear(name: str, v: torch.Tensor) -> torch.Tensor:
        return v @ w[f"{name}.weight"].T + w[f"{name}.bias"]

    def norm(v: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(v, v.shape[-1:], eps=1e-6)

    batch, channels, size, _ = x.shape
    h = F.conv2d(x.double(), w["x_embedder.proj.weight"], w["x_embedder.proj.bias"], stride=patch)
    h = h.flatten(2).transpose(1, 2) + w["pos_embed"]  # (B, N, D)
    half = 128
    freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float64) / half)
    args = t.double()[:, None] * freqs[None]
    t_emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # (B, 256)
    c = linear("t_embedder.mlp.2", F.silu(linear("t_embedder.mlp.0", t_emb)))
    c = c + w["y_embedder.embedding_table.weight"][y]  # (B, D)
    depth = 1 + max(int(key.split(".")[1]) for key in w if key.startswith("blocks."))
    for i in range(depth):
        b = f"blocks.{i}."
        modulation = linear(b + "adaLN_modulation.1", F.silu(c))[:, None]  # (B, 1, 6 D)
        shift1, scale1, gate1, shift2, scale2, gate2 = modulation.chunk(6, -1)
        if heads:
            a = norm(h) * (1 + scale1) + shift1
            q, k, v = linear(b + "attn.qkv", a).unflatten(-1, (3, heads, -1)).permute(2, 0, 3, 1, 4)  # (B, h, N, d)
            attention = torch.softmax(q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5, dim=-1) @ v
            h = h + gate1 * linear(b + "attn.proj", attention.transpose(1, 2).flatten(2))
        m = norm(h) * (1 + scale2) + shift2
        h = h + gate2 * linear(b + "mlp.fc2", F.gelu(linear(b + "mlp.fc1", m), approximate="tanh"))
    shift, scale = linear("final_layer.adaLN_modulation.1", F.silu(c))[:, None].chunk(2, -1)
    h = linear("final_layer.linear", norm(h) * (1 + scale) + shift)  # (B, N, p * p * C_out)
    grid = size // patch
    h = h.reshape(batch, grid, grid, patch, patch, -1)
    return torch.einsum("nhwpqc->nchpwq", h).reshape(batch, -1, size, size)


def test_an_original_dit_converted_computes_the_original_forward(tmp_path):
    """An original DiT `.pt` (random weights): the teacher as the project loads it computes DiT's forward, and the
    converted LiT with its (fresh) self-attention silenced computes DiT's forward without self-attention: every
    inherited weight is used as the original uses it, to float32 precision."""
    original = diffusers_to_original_dit(tiny_dit(seed=3))
    path = tmp_path / "DiT-tiny.pt"
    torch.save(original, path)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(3, 4, 8, 8, generator=generator)
    t = torch.tensor([0, 412, 999])
    y = torch.tensor([0, 2, 3])  # 3 is the null class of classifier-free guidance
    teacher = load_source(str(path), num_attention_heads=4).transformer
    with torch.no_grad():
        out = teacher(x, timestep=t, class_labels=y).sample.double()
    expected = original_dit_forward(original, x, t, y, heads=4, patch=2)
    assert out.shape == expected.shape == (3, 8, 8, 8)
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)

    lit = LiTPipeline.from_pretrained(
        convert_to_lit(path, tmp_path / "lit", num_attention_heads=4, components=save_dit_pipeline(tmp_path / "c"))
    ).transformer
    for block in lit.transformer_blocks:
        torch.nn.init.zeros_(block.attn1.to_out[0].weight)
        torch.nn.init.zeros_(block.attn1.to_out[0].bias)
    with torch.no_grad():
        out = lit(x, timestep=t, class_labels=y).sample.double()
    expected = original_dit_forward(original, x, t, y, heads=0, patch=2)
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)
    assert (out - original_dit_forward(original, x, t, y, heads=4, patch=2)).abs().max() > 1e-3  # attention counts


def test_a_converted_folder_loads_with_diffusers_own_loader(tmp_path):
    from diffusers import DiffusionPipeline

    out = convert_to_lit(save_dit_pipeline(tmp_path / "dit"), tmp_path / "lit")
    assert json.loads((out / "model_index.json").read_text())["_class_name"] == ["pipeline_lit", "LiTPipeline"]
    loaded = DiffusionPipeline.from_pretrained(out, trust_remote_code=True)  # the folder's own code, as pushed
    assert type(loaded).__name__ == "LiTPipeline" and loaded.labels["goldfish"] == 1
    assert type(loaded.transformer).__name__ == "LiTTransformer2DModel"


def test_what_a_killed_conversion_left_is_tidied_by_the_next(tmp_path):
    """A conversion SIGKILLed midway leaves its hidden `.lit.converting-PID-*` folder; the next conversion into the
    same output removes it. An earlier output moved aside (`.lit.replaced-PID`) when the kill came is put back."""
    import signal

    source = save_dit_pipeline(tmp_path / "dit")
    code = (
        "import os, signal, sys\n"
        "import diffusers_lit.conversion as c\n"
        "c.write_atomically = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)\n"
        f"c.convert_to_lit({str(source)!r}, {str(tmp_path / 'lit')!r})\n"
    )
    killed = subprocess.run([sys.executable, "-c", code], capture_output=True)
    assert killed.returncode == -signal.SIGKILL
    left = [path.name for path in tmp_path.iterdir() if path.name.startswith(".lit.converting-")]
    assert len(left) == 1 and (tmp_path / left[0] / "transformer").is_dir() and not (tmp_path / "lit").exists()

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    moved_aside = tmp_path / f".lit.replaced-{int(dead.stdout)}"
    moved_aside.mkdir()
    (moved_aside / "my_run.txt").write_text("precious")
    with pytest.raises(ValueError, match="exists and is not empty"):  # the earlier output is back, so refused
        convert_to_lit(source, tmp_path / "lit")
    assert (tmp_path / "lit" / "my_run.txt").read_text() == "precious"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["dit", "lit"]  # the half-written folder is gone


def test_an_original_checkpoints_heads_and_sample_size_come_from_its_tensors_or_exact_refusals():
    """Heads: given (any divisor of the width, 1 included) or known for DiT / PixArt widths, never guessed. Sample
    size: the `pos_embed` grid times the patch (a given one must agree), or given where there is none. Anything else
    is refused on its message, as is a state dict that is not DiT's or PixArt's or lacks a tensor."""
    state = diffusers_to_original_dit(tiny_dit())  # 32 wide, patch 2, a 4x4 grid
    one_head = original_to_diffusers(state, "x", num_attention_heads=1, sample_size=8).config
    assert (one_head["num_attention_heads"], one_head["attention_head_dim"], one_head["sample_size"]) == (1, 32, 8)
    assert (_heads(384, None), _heads(768, None), _heads(1024, None), _heads(1152, None)) == (6, 12, 16, 16)

    def refusal(original: dict, **kwargs) -> str:
        with pytest.raises(ValueError) as error:
            original_to_diffusers(original, "x", **kwargs)
        return str(error.value)

    heads_refused = "`num_attention_heads` 0 does not divide the transformer's width 32."
    assert refusal(state, num_attention_heads=0) == heads_refused
    assert refusal(state) == (
        "Cannot infer the attention heads of a transformer 32 wide (not a DiT / PixArt size; the checkpoint does not "
        "record them): pass `num_attention_heads` (convert --num-attention-heads; examples/distill_lit.py "
        "--teacher_num_attention_heads)."
    )
    assert refusal(state, num_attention_heads=4, sample_size=4) == (
        "x was trained at sample size 8 (its `pos_embed`), not 4."
    )
    assert refusal({**state, "pos_embed": state["pos_embed"][:, :15]}, num_attention_heads=4) == (
        "x: `pos_embed` does not hold a square grid of positions."
    )
    assert refusal({k: v for k, v in state.items() if k != "x_embedder.proj.bias"}, num_attention_heads=4) == (
        "The checkpoint lacks 'x_embedder.proj.bias': it is not a complete DiT or PixArt checkpoint."
    )
    for extra in ("blocks.0.attn.q_norm.weight", "blocks.1.attn.sr.weight"):  # each refused on its own
        assert refusal({**state, extra: torch.zeros(1)}, num_attention_heads=4) == (
            "x uses query-key norms or key-value compression, which LiT does not convert."
        )
    extras = {f"extra.{i:02d}": torch.zeros(1) for i in range(11)}  # the first 10 named, sorted
    assert refusal({**state, **dict(reversed(extras.items()))}, num_attention_heads=4) == (
        f"x holds tensors this converter does not know: {sorted(extras)[:10]}."
    )
    not_dit = {f"layer{i}.weight": torch.zeros(1) for i in range(7)}
    assert refusal(not_dit) == (
        "x is not a DiT or PixArt checkpoint (no `y_embedder`; its first keys: layer0.weight, layer1.weight, "
        "layer2.weight, layer3.weight, layer4.weight). LiT converts class-conditional DiT and PixArt-alpha / Sigma "
        "transformers."
    )
    assert _sample_size({}, 1, "x", given=1) == 1  # a patch-1 model at sample size 1 is a valid model
    with pytest.raises(ValueError, match=exactly("`sample_size` 0 must be a positive multiple of the patch size 1.")):
        _sample_size({}, 1, "x", given=0)
    with pytest.raises(ValueError) as error:
        _sample_size({}, 2, "x")
    assert str(error.value) == (
        "x has no `pos_embed`, so its sample size cannot be inferred: pass `sample_size` (--sample-size), the latent "
        "(or pixel) side it was trained at, e.g. 128 for PixArt at 1024 px."
    )


@pytest.mark.parametrize("latent", [True, False])
def test_a_source_without_a_scheduler_gets_dits_ddpm_or_pixarts_dpm_solver(latent):
    """DiT's sampler: DDPM over 1000 linear betas from 1e-4 to 0.02 with the learned variance, clipping x_0 only
    in pixel space; PixArt's: DPM-Solver++ over the same betas."""
    dit = default_scheduler("dit", latent=latent)
    assert type(dit) is DDPMScheduler
    config = {key: dit.config[key] for key in ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule")}
    assert config == {"num_train_timesteps": 1000, "beta_start": 0.0001, "beta_end": 0.02, "beta_schedule": "linear"}
    assert (dit.config.variance_type, dit.config.clip_sample) == ("learned_range", not latent)
    assert default_scheduler("dit").config.clip_sample is False  # latent by default
    for layout in ("pixart-alpha", "pixart-sigma", "pixart"):
        pixart = default_scheduler(layout, latent=latent)
        assert type(pixart) is DPMSolverMultistepScheduler
        assert (pixart.config.beta_schedule, pixart.config.algorithm_type) == ("linear", "dpmsolver++")


def test_a_conversion_in_progress_is_left_alone(tmp_path, monkeypatch):
    """A hidden folder of a live conversion (its process id alive, or another user's: kill answers "not
    permitted") is not touched by the next conversion into the same output."""
    import diffusers_lit.conversion as conversion

    source = save_dit_pipeline(tmp_path / "dit")
    # a live converter that any signal but 0 (the existence check) would end: SIGHUP's default restored
    code = (
        "import signal, time; signal.signal(signal.SIGHUP, signal.SIG_DFL); print('ready', flush=True); time.sleep(99)"
    )
    converter = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert converter.stdout.readline() == "ready\n"  # its handler is in place (nohup would ignore SIGHUP)
        mine = tmp_path / f".lit.converting-{converter.pid}-abc"
        mine.mkdir()
        convert_to_lit(source, tmp_path / "lit")
        assert mine.is_dir() and converter.poll() is None
    finally:
        converter.kill()
        converter.wait()

    def not_permitted(pid: int, signal: int) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(conversion.os, "kill", not_permitted)
    theirs = tmp_path / ".other.converting-1-abc"
    theirs.mkdir()
    convert_to_lit(source, tmp_path / "other")
    assert theirs.is_dir() and (tmp_path / "other" / "model_index.json").is_file()


def test_an_original_checkpoints_config_is_read_from_its_tensors():
    """Every config value of an original DiT / PixArt comes from its tensors or from DiT's / PixArt's fixed choices:
    a DiT of 4 output channels (its final layer is not as wide as the model), a PixArt-alpha with its size and
    aspect-ratio embedders, a PixArt without its null-caption buffer; `pos_embed` is reported dropped only where it
    was."""
    torch.manual_seed(0)
    dit = DiTTransformer2DModel(**{**DIT, "out_channels": 4})
    read = original_to_diffusers(diffusers_to_original_dit(dit), "x", num_attention_heads=4)
    assert (read.name, read.layout) == ("x", "dit")  # the name every later message and the report use
    shared = dict(
        num_attention_heads=4, attention_head_dim=8, in_channels=4, num_layers=2, sample_size=8, patch_size=2
    )
    assert read.config == dict(
        **shared,
        out_channels=4,
        norm_eps=1e-6,
        norm_type="ada_norm_zero",
        num_embeds_ada_norm=3,
        timestep_freq_shift=0,
    )
    assert read.dropped == {"pos_embed": "fixed sin-cos position embedding: PatchEmbed computes it"}
    no_pos = {key: value for key, value in diffusers_to_original_dit(dit).items() if key != "pos_embed"}
    assert original_to_diffusers(no_pos, "x", num_attention_heads=4, sample_size=8).dropped == {}

    torch.manual_seed(0)
    alpha = PixArtTransformer2DModel(**{**PIXART, "use_additional_conditions": True})
    state = diffusers_to_original_pixart(alpha, tokens=120)["state_dict"]
    read = original_to_diffusers(state, "x", num_attention_heads=4)
    assert read.layout == "pixart-alpha" and set(read.state_dict) == set(alpha.state_dict())
    assert read.dropped == {
        "pos_embed": "fixed sin-cos position embedding: PatchEmbed computes it",
        "y_embedder.y_embedding": "PixArt's fixed random null-caption buffer: pipelines encode ''",
    }
    assert read.config == dict(
        **shared,
        out_channels=8,
        norm_eps=1e-6,
        norm_type="ada_norm_single",
        num_embeds_ada_norm=1000,
        cross_attention_dim=32,
        caption_channels=24,
        use_additional_conditions=True,
        interpolation_scale=1,
    )
    del state["y_embedder.y_embedding"]
    read = original_to_diffusers(state, "x", num_attention_heads=4)
    assert read.layout == "pixart" and "y_embedder.y_embedding" not in read.dropped
    # the position grid's interpolation scale: PixArt-alpha's whole multiples of 64, at least 1; Sigma's ratio
    for tokens, sample_size, layout, scale in (
        (120, 128, "pixart-alpha", 2),
        (120, 160, "pixart-alpha", 2),
        (300, 8, "pixart-sigma", 0.125),
        (300, 160, "pixart-sigma", 2.5),
    ):
        state = diffusers_to_original_pixart(alpha, tokens)["state_dict"]
        del state["pos_embed"]
        read = original_to_diffusers(state, "x", num_attention_heads=4, sample_size=sample_size)
        assert (read.layout, read.config["interpolation_scale"]) == (layout, scale)


def test_affine_norms_map_and_folded_embedder_copies_are_reported():
    """A DiT with affine norms: its feed-forward norm (diffusers' `norm3`) becomes the LiT block's `norm2`; the
    identical embedder copies of blocks after the first are left out with the reason."""
    torch.manual_seed(0)
    dit = DiTTransformer2DModel(**{**DIT, "norm_elementwise_affine": True})
    torch.nn.init.normal_(dit.transformer_blocks[1].norm3.weight)
    mapped, origin, unused = map_state_dict(dit_source(dit))
    for i in range(DIT["num_layers"]):
        for suffix in ("weight", "bias"):
            key = f"transformer_blocks.{i}.norm2.{suffix}"
            assert origin[key] == f"transformer_blocks.{i}.norm3.{suffix}"
            assert torch.equal(mapped[key], dit.state_dict()[origin[key]])
    folded = {key: reason for key, reason in unused.items() if ".norm1.emb." in key}
    assert folded and all(key.startswith("transformer_blocks.1.") for key in folded)
    assert set(folded.values()) == {
        "copy of the timestep + class embedder: folded into LiT's shared `time_class_embed`"
    }


def dit_training_checkpoint(model: DiTTransformer2DModel, ema: DiTTransformer2DModel) -> dict:
    """What facebookresearch/DiT's train.py saves: the raw and EMA weights, AdamW's state and the arguments."""
    parameters = list(model.parameters())
    optimizer = torch.optim.AdamW(parameters, lr=1e-4, weight_decay=0)
    sum(p.sum() for p in parameters).backward()
    optimizer.step()
    arguments = argparse.Namespace(model="DiT-S/2", image_size=16, num_classes=3, vae="ema", ckpt=None)
    return {
        "model": diffusers_to_original_dit(model),
        "ema": diffusers_to_original_dit(ema),
        "opt": optimizer.state_dict(),
        "args": arguments,
    }


def components_only(folder: Path) -> Path:
    """A DiT pipeline folder without its transformer: the VAE, scheduler and labels beside an original `.pt`."""
    save_dit_pipeline(folder)
    shutil.rmtree(folder / "transformer")
    index = json.loads((folder / "model_index.json").read_text())
    del index["transformer"]
    (folder / "model_index.json").write_text(json.dumps(index))
    return folder


def test_a_dit_training_checkpoint_converts_its_ema_weights_or_its_raw_ones_with_a_components_only_folder(
    tmp_path, capsys
):
    """DiT's train.py output reads safely (only a Namespace of plain values is allowed beyond tensors) and gives
    its EMA weights as DiT's sample.py does, or "model" when asked; a folder of components alone lends the rest."""
    model, ema = tiny_dit(seed=1), tiny_dit(seed=2)
    path = tmp_path / "0400000.pt"
    torch.save(dit_training_checkpoint(model, ema), path)
    components = components_only(tmp_path / "components")

    main(["convert", str(path), str(tmp_path / "ema"), "--num-attention-heads", "4", "--components", str(components)])
    assert "(dit, its 'ema' weights) into" in capsys.readouterr().out
    main(
        ["convert", str(path), str(tmp_path / "raw"), "--num-attention-heads", "4", "--components", str(components)]
        + ["--checkpoint-weights", "model"]
    )
    for name, expected in (("ema", ema), ("raw", model)):
        report = json.loads((tmp_path / name / "conversion_report.json").read_text())
        assert report["source_weights"] == {"ema": "ema", "raw": "model"}[name]
        assert f"(dit, its {report['source_weights']!r} weights)" in (tmp_path / name / "README.md").read_text()
        got = lit_tensors(tmp_path / name)
        want = expected.state_dict()
        for lit_key, source_key in report["copied"]["keys"].items():
            assert torch.equal(got[lit_key], want[source_key]), (name, lit_key)
    pipe = LiTPipeline.from_pretrained(tmp_path / "ema")
    assert pipe.labels["goldfish"] == 1 and pipe.vae is not None  # from the components folder

    bare = tmp_path / "released.pt"
    torch.save(diffusers_to_original_dit(ema), bare)
    assert read_source(bare, num_attention_heads=4).weights is None  # a released file is a state dict
    assert torch.equal(
        load_source(str(path), num_attention_heads=4, checkpoint_weights="model").transformer.proj_out_2.weight,
        model.proj_out_2.weight,
    )
    torch.save({"model": diffusers_to_original_dit(model), "opt": {}}, tmp_path / "no-ema.pt")
    with pytest.raises(ValueError) as error:
        read_source(tmp_path / "no-ema.pt", num_attention_heads=4)
    assert str(error.value) == (
        f"{tmp_path / 'no-ema.pt'} is a training checkpoint without 'ema' weights (it holds ['model', 'opt']): pass "
        "checkpoint_weights='model' (--checkpoint-weights model)."
    )
    with pytest.raises(ValueError, match=exactly("`checkpoint_weights` must be one of ['ema', 'model'], got 'EMA'.")):
        read_source(path, checkpoint_weights="EMA")
    with pytest.raises(ValueError, match="has no model_index.json, so its components cannot be named"):
        convert_to_lit(path, tmp_path / "out", num_attention_heads=4, components=tmp_path / "components" / "vae")


class RunsCode:
    def __reduce__(self):
        return (os.system, ("touch ran",))


def test_a_training_checkpoint_with_any_other_object_is_refused_without_running_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    checkpoint = dit_training_checkpoint(tiny_dit(), tiny_dit())
    torch.save({**checkpoint, "args": RunsCode()}, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match="Could not read .*evil.pt as a checkpoint"):
        read_source(tmp_path / "evil.pt", num_attention_heads=4)
    assert not (tmp_path / "ran").exists()


def test_a_stored_pos_embed_other_than_the_fixed_grid_is_refused():
    """Every DiT / PixArt stores the fixed sin-cos grid (the rebuilt one matches it, also in fp16); a learned or
    otherwise scaled one is refused rather than silently replaced."""
    state = diffusers_to_original_dit(tiny_dit())
    assert original_to_diffusers(state, "x", num_attention_heads=4).dropped["pos_embed"].startswith("fixed sin-cos")
    half = {key: value.half() for key, value in state.items()}
    assert original_to_diffusers(half, "x", num_attention_heads=4).layout == "dit"
    for changed in (state["pos_embed"] + 1e-3, state["pos_embed"] * 0.5):
        with pytest.raises(ValueError) as error:
            original_to_diffusers({**state, "pos_embed": changed}, "x", num_attention_heads=4)
        assert str(error.value).startswith(
            "x: its `pos_embed` is not the fixed sin-cos grid of a 4x4 patch grid at interpolation scale 1 "
            "(largest difference"
        )
    with pytest.raises(ValueError, match="its `pos_embed` is not the fixed sin-cos grid"):  # another width
        original_to_diffusers({**state, "pos_embed": state["pos_embed"][..., :16]}, "x", num_attention_heads=4)
