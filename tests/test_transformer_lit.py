import pytest
import torch
from diffusers import DiTTransformer2DModel, PixArtTransformer2DModel

from diffusers_lit import LIT_PRESETS, LiTTransformer2DModel, lit_preset
from diffusers_lit.models.linear_attention import LiTLinearAttention

DIT_KWARGS = dict(
    num_attention_heads=2, attention_head_dim=16, in_channels=4, num_layers=2, sample_size=8, num_embeds_ada_norm=10
)
PIXART_KWARGS = dict(
    num_attention_heads=2,
    attention_head_dim=16,
    in_channels=4,
    out_channels=8,
    num_layers=2,
    sample_size=8,
    cross_attention_dim=32,
    caption_channels=24,
    norm_type="ada_norm_single",
    norm_eps=1e-6,
)


def class_model(**kwargs) -> LiTTransformer2DModel:
    torch.manual_seed(0)
    return LiTTransformer2DModel(**{**DIT_KWARGS, "linear_attention_heads": 2, **kwargs})


def text_model(**kwargs) -> LiTTransformer2DModel:
    torch.manual_seed(0)
    return LiTTransformer2DModel(**{**PIXART_KWARGS, "linear_attention_heads": 2, **kwargs})


def class_inputs(batch=2, height=8, width=8, dtype=torch.float32):
    gen = torch.Generator().manual_seed(1)
    return dict(
        hidden_states=torch.randn(batch, 4, height, width, generator=gen).to(dtype),
        timestep=torch.randint(0, 1000, (batch,), generator=gen),
        class_labels=torch.randint(0, 11, (batch,), generator=gen),
    )


def text_inputs(batch=2, height=8, width=8, dtype=torch.float32):
    gen = torch.Generator().manual_seed(2)
    mask = torch.ones(batch, 7)
    mask[0, 5:] = 0
    return dict(
        hidden_states=torch.randn(batch, 4, height, width, generator=gen).to(dtype),
        timestep=torch.randint(0, 1000, (batch,), generator=gen),
        encoder_hidden_states=torch.randn(batch, 7, 24, generator=gen).to(dtype),
        encoder_attention_mask=mask,
    )


LAYOUTS = [(class_model, class_inputs), (text_model, text_inputs)]


@pytest.mark.parametrize(("make_model", "make_inputs"), LAYOUTS)
@pytest.mark.parametrize(("height", "width"), [(8, 8), (8, 12), (16, 4)])
def test_output_shapes(make_model, make_inputs, height, width):
    model = make_model()
    out = model(**make_inputs(3, height, width)).sample
    assert out.shape == (3, 8, height, width)
    assert torch.isfinite(out).all()


def test_class_layout_shares_one_embedder():
    model = class_model()
    names = [name for name, _ in model.named_parameters()]
    assert sum(name.startswith("time_class_embed.") for name in names) == 5
    assert not any(".emb." in name for name in names)
    assert model.time_class_embed.class_embedder.embedding_table.num_embeddings == 11  # 10 classes + null


def test_class_embedder_never_drops_labels_in_training():
    model = class_model().train()
    inputs = class_inputs(batch=64)
    torch.manual_seed(0)
    first = model(**inputs).sample
    torch.manual_seed(1)
    torch.testing.assert_close(model(**inputs).sample, first)


def _copy_into_lit(lit: LiTTransformer2DModel, source: torch.nn.Module, silence: bool = True) -> None:
    """Load a diffusers DiT / PixArt state dict into `lit` (renames of the DiT layout), then (`silence`) silence
    every self-attention: the two models are then the same function, which pins every other part of LiT."""
    state = {}
    for key, value in source.state_dict().items():
        if ".norm1.emb." in key:
            if not key.startswith("transformer_blocks.0."):
                continue
            key = "time_class_embed." + key.split(".norm1.emb.")[1]
        if ".attn1." not in key:
            state[key] = value
    missing, unexpected = lit.load_state_dict(state, strict=False)
    assert unexpected == [] and set(missing) == {key for key in lit.state_dict() if ".attn1." in key}
    for model in (lit, source) if silence else ():
        for block in model.transformer_blocks:
            torch.nn.init.zeros_(block.attn1.to_out[0].weight)
            torch.nn.init.zeros_(block.attn1.to_out[0].bias)


def _dit_reference() -> DiTTransformer2DModel:
    """diffusers' DiT of DIT_KWARGS in float64 and eval mode (no label dropout), holding one timestep + class
    embedder repeated in every block, as trained DiTs do."""
    torch.manual_seed(0)
    dit = DiTTransformer2DModel(**DIT_KWARGS, out_channels=8).double().eval()
    for block in dit.transformer_blocks[1:]:
        block.norm1.emb.load_state_dict(dit.transformer_blocks[0].norm1.emb.state_dict())
    return dit


def test_class_layout_equals_diffusers_dit_outside_the_self_attention():
    dit = _dit_reference()
    lit = class_model().double()
    _copy_into_lit(lit, dit)
    inputs = class_inputs(dtype=torch.float64)
    expected = dit(**inputs).sample
    assert expected.abs().mean() > 0.1
    torch.testing.assert_close(lit(**inputs).sample, expected, rtol=1e-12, atol=1e-12)


def test_text_layout_equals_diffusers_pixart_outside_the_self_attention():
    torch.manual_seed(0)
    pixart = PixArtTransformer2DModel(**PIXART_KWARGS).double()
    lit = text_model().double()
    _copy_into_lit(lit, pixart)
    inputs = text_inputs(dtype=torch.float64)
    inputs["encoder_hidden_states"] = inputs["encoder_hidden_states"].double()
    expected = pixart(**inputs).sample
    torch.testing.assert_close(lit(**inputs).sample, expected, rtol=1e-12, atol=1e-12)
    for dtype in (torch.bool, torch.long):  # a tokenizer's mask, as it comes
        keep = dict(inputs, encoder_attention_mask=inputs["encoder_attention_mask"].to(dtype))
        torch.testing.assert_close(lit(**keep).sample, expected, rtol=1e-12, atol=1e-12)
    other_mask = dict(inputs, encoder_attention_mask=torch.ones(2, 7))
    assert not torch.allclose(lit(**other_mask).sample[0], expected[0])  # the text mask is used


class _LinearAttentionStandIn(torch.nn.Module):
    """In a diffusers block's place of `attn1`: a LiT block's linear attention on a fixed (height, width) grid."""

    def __init__(self, attention: LiTLinearAttention, height: int, width: int):
        super().__init__()
        self.attention, self.height, self.width = attention, height, width

    def forward(self, hidden_states, encoder_hidden_states=None, attention_mask=None, **kwargs):
        return self.attention(hidden_states, self.height, self.width)


@pytest.mark.parametrize("layout", ["class", "text"])
def test_lit_is_diffusers_dit_and_pixart_with_linear_attention_in_place_of_softmax(layout):
    """The self-attention's own path: with every weight shared and each diffusers block's softmax attention
    replaced by the LiT block's linear one, the models agree (on a non-square 4x6 token grid in PixArt's layout;
    diffusers' DiT unpatchifies square grids only). Pins what goes in (the modulated norm, height then width) and
    how it comes out (gated, added)."""
    if layout == "class":
        reference = _dit_reference()
        lit, (height, width) = class_model().double(), (8, 8)
        inputs = class_inputs(height=height, width=width, dtype=torch.float64)
    else:
        torch.manual_seed(0)
        reference = PixArtTransformer2DModel(**PIXART_KWARGS).double()
        lit, (height, width) = text_model().double(), (8, 12)
        inputs = text_inputs(height=height, width=width, dtype=torch.float64)
    _copy_into_lit(lit, reference, silence=False)
    for ours, theirs in zip(lit.transformer_blocks, reference.transformer_blocks, strict=True):
        theirs.attn1 = _LinearAttentionStandIn(ours.attn1, height // 2, width // 2)  # patch 2
    expected = reference(**inputs).sample
    torch.testing.assert_close(lit(**inputs).sample, expected, rtol=1e-12, atol=1e-12)
    for block in lit.transformer_blocks:
        torch.nn.init.zeros_(block.attn1.to_out[0].weight)
    assert (lit(**inputs).sample - expected).abs().max() > 1e-3  # the linear attention counts in both


@pytest.mark.parametrize("layout", ["class", "text"])
def test_configuration_defaults_follow_diffusers_dit_and_pixart(layout):
    """What the small models of the other tests leave at its default, against diffusers' model of the same config:
    the position grid's scale and the micro-conditions at sizes 32, 64 and 128, and the biases of every attention
    projection with and without `attention_bias`."""
    make, reference_class = (
        (class_model, DiTTransformer2DModel) if layout == "class" else (text_model, PixArtTransformer2DModel)
    )
    kwargs = {} if layout == "class" else dict(attention_head_dim=24, cross_attention_dim=48)  # width % 3 == 0
    base = DIT_KWARGS if layout == "class" else PIXART_KWARGS
    for sample_size in (32, 64, 128):
        lit = make(sample_size=sample_size, **kwargs)
        reference = reference_class(**{**base, **kwargs, "sample_size": sample_size})
        torch.testing.assert_close(lit.pos_embed.pos_embed, reference.pos_embed.pos_embed, rtol=0, atol=0)
        if layout == "text":
            assert lit.use_additional_conditions is reference.use_additional_conditions is (sample_size == 128)
    for bias in (True, False):
        lit, reference = make(attention_bias=bias), reference_class(**{**base, "attention_bias": bias})
        for name in ("attn1", "attn2") if layout == "text" else ("attn1",):
            ours, theirs = (
                {
                    key: m.bias is not None
                    for key, m in getattr(model.transformer_blocks[0], name).named_modules()
                    if isinstance(m, torch.nn.Linear)
                }
                for model in (lit, reference)
            )
            assert ours == theirs and ours["to_q"] is bias and ours["to_out.0"]  # diffusers' out_bias stays


@pytest.mark.parametrize("layout", ["class", "text"])
def test_timestep_freq_shift_sets_the_sinusoidal_frequencies(layout):
    """cos / sin of t * exp(-ln(10000) i / (128 - shift)), i < 128, in float64; `None`: DiT's 1, PixArt's 0."""
    t = torch.tensor([0.0, 1.0, 10.0, 500.0, 999.0])
    for shift, expected_shift in ((None, 1 if layout == "class" else 0), (0, 0), (1, 1)):
        model = (class_model if layout == "class" else text_model)(timestep_freq_shift=shift)
        time_proj = model.time_class_embed.time_proj if layout == "class" else model.adaln_single.emb.time_proj
        frequencies = torch.exp(
            -torch.log(torch.tensor(10000.0, dtype=torch.float64)) * torch.arange(128) / (128 - expected_shift)
        )
        angles = t.double()[:, None] * frequencies[None]  # (5, 128)
        expected = torch.cat([angles.cos(), angles.sin()], dim=1)
        torch.testing.assert_close(time_proj(t).double(), expected, rtol=0, atol=2e-4)


def test_text_layout_additional_conditions():
    model = text_model(use_additional_conditions=True, attention_head_dim=24, cross_attention_dim=48)  # width % 3 == 0
    inputs = text_inputs()
    with pytest.raises(ValueError, match="added_cond_kwargs"):
        model(**inputs)
    cond = {"resolution": torch.tensor([[64.0, 64.0]] * 2), "aspect_ratio": torch.tensor([[1.0]] * 2)}
    out = model(**inputs, added_cond_kwargs=cond).sample
    other = {"resolution": torch.tensor([[64.0, 128.0]] * 2), "aspect_ratio": torch.tensor([[2.0]] * 2)}
    assert not torch.allclose(model(**inputs, added_cond_kwargs=other).sample, out)


@pytest.mark.parametrize(("make_model", "make_inputs"), LAYOUTS)
def test_save_and_load_round_trip(make_model, make_inputs, tmp_path):
    model = make_model(dwc_kernel_size=3)
    inputs = make_inputs()
    with torch.no_grad():
        expected = model(**inputs).sample
    model.save_pretrained(tmp_path)
    assert (tmp_path / "diffusion_pytorch_model.safetensors").is_file()
    loaded = LiTTransformer2DModel.from_pretrained(tmp_path)
    assert {k: v for k, v in loaded.config.items() if not k.startswith("_")} == {
        k: v for k, v in model.config.items() if not k.startswith("_")
    }
    assert loaded.config.dwc_kernel_size == 3 and loaded.config.linear_attention_heads == 2
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    with torch.no_grad():
        torch.testing.assert_close(loaded(**inputs).sample, expected, rtol=0, atol=0)


@pytest.mark.parametrize(("make_model", "make_inputs"), LAYOUTS)
def test_gradient_checkpointing_gives_the_same_gradients(make_model, make_inputs):
    inputs = make_inputs()
    grads = []
    for checkpointing in (False, True):
        model = make_model()
        if checkpointing:
            model.enable_gradient_checkpointing()
            assert model.gradient_checkpointing
        model(**inputs).sample.square().mean().backward()
        grads.append({name: p.grad for name, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) == len(list(model.parameters()))
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-5, atol=1e-7, msg=name)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize(("make_model", "make_inputs"), LAYOUTS)
def test_half_precision_forward(make_model, make_inputs, dtype):
    model = make_model()
    inputs = make_inputs()
    with torch.no_grad():
        expected = model(**inputs).sample
        out = model.to(dtype)(**make_inputs(dtype=dtype)).sample
    assert out.dtype == dtype and torch.isfinite(out).all()
    assert ((out.float() - expected).norm() / expected.norm()).item() < 3e-2


@pytest.mark.parametrize(("make_model", "make_inputs"), LAYOUTS)
def test_triton_linear_attention_backend_matches_torch(make_model, make_inputs):
    pytest.importorskip("triton")
    device = "cuda" if torch.cuda.is_available() else "cpu"  # interpreted on a CPU (tests/conftest.py)
    model = make_model().to(device).eval()
    inputs = {name: value.to(device) for name, value in make_inputs(height=8, width=12).items()}
    with torch.no_grad():
        expected = model(**inputs).sample
        model.set_linear_attention_backend("triton")
        out = model(**inputs).sample
    assert {m.backend for m in model.modules() if isinstance(m, LiTLinearAttention)} == {"triton"}
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="Unknown linear-attention backend"):
        model.set_linear_attention_backend("sdpa")


def test_triton_backend_compiles_as_one_graph():
    """The fused kernels are one registered operator: torch.compile(fullgraph=True) takes the model whole."""
    pytest.importorskip("triton")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = class_model().to(device).eval()
    inputs = {name: value.to(device) for name, value in class_inputs().items()}
    with torch.no_grad():
        expected = model(**inputs).sample
        model.set_linear_attention_backend("triton")
        out = torch.compile(model, fullgraph=True)(**inputs).sample
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)


def test_torch_compile_matches_eager():
    model = class_model().eval()
    inputs = class_inputs()
    with torch.no_grad():
        expected = model(**inputs).sample
        compiled = torch.compile(model, fullgraph=False)
        out = compiled(**inputs).sample
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)


def test_xl_preset_parameters_against_diffusers_dit():
    with torch.device("meta"):
        lit = lit_preset("LiT-XL/2")
        dit = DiTTransformer2DModel(num_attention_heads=16, attention_head_dim=72, num_layers=28, out_channels=8)
    lit_count = sum(p.numel() for p in lit.parameters())
    dit_count = sum(p.numel() for p in dit.parameters())
    print(f"LiT-XL/2: {lit_count:,} parameters; diffusers DiT-XL/2: {dit_count:,}")
    head_dim = 1152 // 4
    dwc = 28 * (head_dim * 5 * 5 + head_dim)  # one depth-wise kernel + bias per block
    embedder = sum(p.numel() for p in dit.transformer_blocks[0].norm1.emb.parameters())
    assert embedder == 256 * 1152 + 1152 + 1152 * 1152 + 1152 + 1001 * 1152
    assert lit_count - dit_count == dwc - 27 * embedder  # DiT repeats the embedder in every block
    assert lit.transformer_blocks[0].attn1.heads == 4 and lit.transformer_blocks[0].attn1.head_dim == 288


def test_presets():
    assert LIT_PRESETS["LiT-S/2"]["linear_attention_heads"] == 2
    assert LIT_PRESETS["LiT-B/2"]["linear_attention_heads"] == 3
    with torch.device("meta"):
        pixart = lit_preset("LiT-PixArt-Sigma-XL/2")
    assert pixart.caption_projection is not None and pixart.transformer_blocks[0].attn2 is not None
    assert isinstance(pixart.transformer_blocks[27].attn1, LiTLinearAttention)
    with pytest.raises(ValueError, match="Unknown preset"):
        lit_preset("LiT-XXL/2")


def test_cross_attention_kwargs_reach_every_cross_attention_processor():
    """As in diffusers' PixArt: `cross_attention_kwargs` go to each block's attn2 processor (here one that takes a
    `tag`), and the output is the same as without them."""
    from diffusers.models.attention_processor import AttnProcessor2_0

    seen = []

    class TaggedProcessor(AttnProcessor2_0):
        def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, tag=None):
            seen.append(tag)
            return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask)

    model = text_model()
    inputs = text_inputs()
    with torch.no_grad():
        expected = model(**inputs).sample
        model.set_attn_processor(
            {name: TaggedProcessor() if ".attn2." in name else p for name, p in model.attn_processors.items()}
        )
        out = model(**inputs, cross_attention_kwargs={"tag": 7}).sample
    assert seen == [7] * PIXART_KWARGS["num_layers"]
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("layout", ["class", "text"])
def test_a_block_alone_defaults_to_the_models_configuration(layout):
    """`LiTTransformerBlock` built on its own, given only what it requires (and the text layout's two), is the
    block of a model on its defaults: the same parameters, modules (norm eps and affinity, DWC kernel, biases,
    dropout, activation) and cross-attention upcasting. Built, not read from the signature: mutmut's wrapper
    reports the original signature for a mutated default."""
    from diffusers_lit.models.transformer_lit import LiTTransformerBlock

    text = dict(norm_type="ada_norm_single", cross_attention_dim=32) if layout == "text" else {}
    model = LiTTransformer2DModel(
        num_attention_heads=2, attention_head_dim=16, linear_attention_heads=2, num_layers=1, sample_size=8, **text
    )
    block = LiTTransformerBlock(32, 2, 16, 2, **text)
    block.load_state_dict(model.transformer_blocks[0].state_dict())  # strict: the same parameters
    assert repr(block) == repr(model.transformer_blocks[0])
    if layout == "text":
        assert block.attn2.upcast_attention is model.transformer_blocks[0].attn2.upcast_attention is False


def test_each_block_is_built_with_the_models_settings():
    """The model hands every block its DWC size, dropout, norm affinity, upcasting and text width."""
    model = text_model(
        dwc_kernel_size=3,
        dropout=0.25,
        norm_elementwise_affine=True,
        upcast_attention=True,
        caption_channels=None,
        cross_attention_dim=24,
    )
    for block in model.transformer_blocks:
        assert block.attn1.dwc.kernel_size == (3, 3)
        assert block.norm1.weight.shape == block.norm2.weight.shape == (32,)
        assert block.attn2.upcast_attention and block.attn2.to_k.in_features == 24
        dropouts = {name: module.p for name, module in block.named_modules() if isinstance(module, torch.nn.Dropout)}
        assert dropouts == {"attn1.to_out.1": 0.25, "attn2.to_out.1": 0.25, "ff.net.1": 0.25}
    assert model.eval()(**text_inputs()).sample.shape == (2, 8, 8, 8)  # captions at 24 wide, not projected


def test_a_fresh_text_blocks_scale_shift_table_is_drawn_as_pixarts():
    """PixArt starts each block's table as randn(6, D) / sqrt(D): its standard deviation is 1 / sqrt(D)."""
    model = text_model(attention_head_dim=64, cross_attention_dim=128)  # D = 128: 768 values a block
    tables = torch.stack([block.scale_shift_table for block in model.transformer_blocks])  # (layers, 6, D)
    assert tables.shape == (2, 6, 128)
    assert tables.std().item() == pytest.approx(128**-0.5, rel=0.08) and abs(tables.mean().item()) < 0.01


def test_attention_mixin_finds_every_attention():
    text, classes = text_model().attn_processors, class_model().attn_processors
    assert len(text) == 4 and sum(name.endswith("attn1.processor") for name in text) == 2  # attn1 and attn2
    assert all(name.endswith("attn1.processor") for name in classes)
    assert len(classes) == len(class_model().transformer_blocks)


def test_bad_configs():
    with pytest.raises(ValueError, match="not divisible by `linear_attention_heads=3`"):
        class_model(linear_attention_heads=3)
    with pytest.raises(ValueError, match="not divisible by `patch_size=2`"):
        class_model(sample_size=7)
    with pytest.raises(ValueError, match="norm_type"):
        class_model(norm_type="layer_norm")
    with pytest.raises(ValueError, match="cross_attention_dim"):
        text_model(cross_attention_dim=None)
    with pytest.raises(ValueError, match="model width 32, so `cross_attention_dim` must be 32, not 24"):
        text_model(cross_attention_dim=24)


def test_bad_inputs():
    lit_class, lit_text = class_model(), text_model()
    inputs = class_inputs()
    with pytest.raises(ValueError, match="pass `class_labels`"):
        lit_class(inputs["hidden_states"], inputs["timestep"])
    with pytest.raises(ValueError, match="takes `class_labels`, not `encoder_hidden_states`"):
        lit_class(**inputs, encoder_hidden_states=torch.randn(2, 7, 24))
    with pytest.raises(ValueError, match="multiples of the patch size 2"):
        lit_class(**dict(inputs, hidden_states=torch.randn(2, 4, 8, 9)))
    with pytest.raises(ValueError, match=r"must be \(batch, 4, height, width\)"):
        lit_class(**dict(inputs, hidden_states=torch.randn(2, 3, 8, 8)))
    with pytest.raises(ValueError, match=r"`class_labels` must have shape \(2,\), got \(1, 2\)"):
        lit_class(**dict(inputs, class_labels=inputs["class_labels"][None]))
    with pytest.raises(ValueError, match="`timestep` is required"):
        lit_class(**dict(inputs, timestep=None))
    with pytest.raises(ValueError, match="takes no `attention_mask`; pass the text mask as `encoder_attention_mask`"):
        lit_class(**inputs, attention_mask=torch.ones(2, 16))
    text = text_inputs()
    with pytest.raises(ValueError, match="takes `encoder_hidden_states`, not `class_labels`"):
        lit_text(**text, class_labels=torch.tensor([1, 2]))
    with pytest.raises(ValueError, match=r"\(batch, tokens, 24\) to match `caption_channels`"):
        lit_text(**dict(text, encoder_hidden_states=torch.randn(2, 7, 32)))
    with pytest.raises(ValueError, match="pass `encoder_hidden_states`"):
        lit_text(text["hidden_states"], text["timestep"])


# diffusers' model hooks on LiT


@pytest.mark.parametrize("layout", ["class", "text"])
def test_layerwise_casting_stores_float8_and_computes_in_bf16(layout):
    model = (class_model if layout == "class" else text_model)().eval()
    inputs = class_inputs() if layout == "class" else text_inputs()
    with torch.no_grad():
        reference = model(**inputs).sample
        model.to(torch.bfloat16)  # as diffusers documents it: a bf16 model, its layers then stored in float8
        model.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=torch.bfloat16)
        attn = model.transformer_blocks[0].attn1
        assert attn.to_q.weight.dtype == attn.dwc.weight.dtype == torch.float8_e4m3fn  # the DWC is cast too
        cast = model(**{k: v.to(torch.bfloat16) if torch.is_floating_point(v) else v for k, v in inputs.items()})
    error = (cast.sample.float() - reference).norm() / reference.norm()
    assert error < 0.15  # float8 weights: a coarse but faithful copy of the function


def test_group_offload_and_repeated_block_compile_keep_the_function():
    model = class_model().eval()
    inputs = class_inputs()
    with torch.no_grad():
        reference = model(**inputs).sample
        model.enable_group_offload(torch.device("cpu"), offload_type="block_level", num_blocks_per_group=1)
        torch.testing.assert_close(model(**inputs).sample, reference)
    compiled = class_model().eval()
    assert compiled._repeated_blocks == ["LiTTransformerBlock"]
    compiled.compile_repeated_blocks(backend="eager")  # the block compiled once, used by every block
    with torch.no_grad():
        torch.testing.assert_close(compiled(**inputs).sample, reference)


# The checks of diffusers' own model testers (tests/models/testing_utils: common, memory, cache), on both layouts.
@pytest.mark.parametrize(("make_model", "make_inputs"), LAYOUTS)
def test_model_tester_conventions(make_model, make_inputs, tmp_path):
    model, inputs = make_model().eval(), make_inputs()
    with torch.no_grad():
        out = model(**inputs).sample
        torch.testing.assert_close(model(**inputs).sample, out, rtol=0, atol=0)  # determinism
        (as_tuple,) = model(**inputs, return_dict=False)
    torch.testing.assert_close(as_tuple, out, rtol=0, atol=0)

    model.save_pretrained(tmp_path / "fp16", variant="fp16")  # variants
    assert (tmp_path / "fp16" / "diffusion_pytorch_model.fp16.safetensors").is_file()
    loaded = LiTTransformer2DModel.from_pretrained(tmp_path / "fp16", variant="fp16").eval()
    model.save_pretrained(tmp_path / "sharded", max_shard_size="20KB")  # sharded checkpoints
    assert len(list((tmp_path / "sharded").glob("diffusion_pytorch_model-*-of-*.safetensors"))) > 1
    sharded = LiTTransformer2DModel.from_pretrained(tmp_path / "sharded").eval()
    bf16 = LiTTransformer2DModel.from_pretrained(tmp_path / "sharded", torch_dtype=torch.bfloat16)
    assert bf16.dtype == torch.bfloat16
    assert {key: bf16.config[key] for key in model.config if not key.startswith("_")} == {
        key: value for key, value in model.config.items() if not key.startswith("_")
    }
    with torch.no_grad():
        for other in (loaded, sharded):
            torch.testing.assert_close(other(**inputs).sample, out, rtol=0, atol=0)

    offloaded = make_model().eval()  # group offloading to disk
    offloaded.enable_group_offload(
        torch.device("cpu"), offload_type="leaf_level", offload_to_disk_path=str(tmp_path / "offload")
    )
    with torch.no_grad():
        torch.testing.assert_close(offloaded(**inputs).sample, out, rtol=0, atol=1e-6)
    assert any((tmp_path / "offload").iterdir())


@pytest.mark.parametrize(("make_model", "make_inputs"), LAYOUTS)
def test_cache_hooks_enable_disable_and_context(make_model, make_inputs):
    from diffusers import FirstBlockCacheConfig, PyramidAttentionBroadcastConfig

    model, inputs = make_model().eval(), make_inputs()
    with torch.no_grad():
        reference = model(**inputs).sample
    for config in (
        FirstBlockCacheConfig(threshold=0.0),
        PyramidAttentionBroadcastConfig(
            spatial_attention_block_skip_range=2,
            current_timestep_callback=lambda: 500,
            spatial_attention_timestep_skip_range=(-1, 1001),
        ),
    ):
        model.enable_cache(config)
        assert model.is_cache_enabled
        with pytest.raises(ValueError, match="already"):
            model.enable_cache(config)
        with torch.no_grad(), model.cache_context("cond"):
            torch.testing.assert_close(model(**inputs).sample, reference, rtol=0, atol=1e-6)  # first call computes
        model.disable_cache()
        assert not model.is_cache_enabled
        with torch.no_grad():
            torch.testing.assert_close(model(**inputs).sample, reference, rtol=0, atol=0)
