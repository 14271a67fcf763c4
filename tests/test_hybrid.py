"""Hybrid LiT: chosen blocks keep the teacher's softmax self-attention (diffusers' `Attention`), the rest are LiT."""

import json

import pytest
import torch
from diffusers.models.attention_processor import Attention, AttnProcessor2_0
from helpers import exactly, tiny_class_transformer
from test_conversion import dit_source, save_dit_pipeline, tiny_dit

from diffusers_lit import LiTLinearAttnProcessor, LiTTransformer2DModel
from diffusers_lit.cli import main
from diffusers_lit.conversion import convert_transformer
from diffusers_lit.models.linear_attention import LiTLinearAttention


def test_softmax_blocks_are_diffusers_attention_with_the_teachers_heads(tmp_path):
    model = tiny_class_transformer(num_layers=3, softmax_attention_blocks=(1,))
    kinds = [type(block.attn1) for block in model.transformer_blocks]
    assert kinds == [LiTLinearAttention, Attention, LiTLinearAttention]
    assert model.transformer_blocks[1].attn1.heads == 2  # num_attention_heads, not linear_attention_heads
    assert tiny_class_transformer().config.softmax_attention_blocks is None  # all-linear by default
    model.save_pretrained(tmp_path)
    loaded = LiTTransformer2DModel.from_pretrained(tmp_path)
    assert list(loaded.config.softmax_attention_blocks) == [1]
    inputs = dict(
        hidden_states=torch.randn(2, 1, 8, 8), timestep=torch.tensor([3, 700]), class_labels=torch.tensor([0, 2])
    )
    with torch.no_grad():
        torch.testing.assert_close(loaded(**inputs).sample, model(**inputs).sample, rtol=0, atol=0)


def test_processors_and_the_backend_switch_leave_softmax_blocks_softmax():
    model = tiny_class_transformer(num_layers=2, softmax_attention_blocks=(0,))
    model.set_default_attn_processor()
    processors = model.attn_processors
    assert isinstance(processors["transformer_blocks.0.attn1.processor"], AttnProcessor2_0)
    assert isinstance(processors["transformer_blocks.1.attn1.processor"], LiTLinearAttnProcessor)
    model.set_linear_attention_backend("torch")
    assert isinstance(model.attn_processors["transformer_blocks.0.attn1.processor"], AttnProcessor2_0)


@pytest.mark.parametrize(
    ("blocks", "message"),
    [
        ((2,), "`softmax_attention_blocks` must be block indices in [0, 1], got [2]."),
        ((-1,), "`softmax_attention_blocks` must be block indices in [0, 1], got [-1]."),
        ((1, 1), "`softmax_attention_blocks` names a block twice: [1, 1]; give each block once."),
        (
            (0, 1),
            "`softmax_attention_blocks` names all 2 blocks: that is the softmax teacher, not a LiT. "
            "Leave at least one block linear.",
        ),
    ],
)
def test_bad_softmax_blocks_are_refused(blocks, message):
    with pytest.raises(ValueError, match=exactly(message)):
        tiny_class_transformer(softmax_attention_blocks=blocks)
    with pytest.raises(ValueError, match=exactly(message)):
        convert_transformer(dit_source(tiny_dit()), softmax_blocks=blocks)


def test_conversion_copies_the_softmax_blocks_attention_exactly_and_they_compute_the_teachers():
    dit = tiny_dit()
    lit, report = convert_transformer(dit_source(dit), softmax_blocks=[1])
    assert report["options"]["softmax_blocks"] == [1] and lit.config.softmax_attention_blocks == [1]
    teacher = dit.state_dict()
    for name, tensor in lit.transformer_blocks[1].attn1.state_dict().items():
        assert torch.equal(tensor, teacher[f"transformer_blocks.1.attn1.{name}"]), name
        assert report["copied"]["keys"][f"transformer_blocks.1.attn1.{name}"] == f"transformer_blocks.1.attn1.{name}"
    assert all(key.startswith("transformer_blocks.0.attn1.") for key in report["fresh"]["keys"])
    x = torch.randn(2, 16, 32)
    with torch.no_grad():
        torch.testing.assert_close(lit.transformer_blocks[1].attn1(x), dit.transformer_blocks[1].attn1(x))


def test_convert_command_takes_softmax_blocks_and_names_them(tmp_path, capsys):
    source = save_dit_pipeline(tmp_path / "dit")
    main(["convert", str(source), str(tmp_path / "hybrid"), "--softmax-blocks", "0"])
    report = json.loads((tmp_path / "hybrid" / "conversion_report.json").read_text())
    assert report["options"]["softmax_blocks"] == [0] and report["fresh"]["count"] == 10
    assert "Blocks [0] keep the source's softmax self-attention" in (tmp_path / "hybrid" / "README.md").read_text()
    for bad, message in (("0,x", "give block indices separated by commas"), ("5", "block indices in [0, 1]")):
        with pytest.raises(SystemExit):
            main(["convert", str(source), str(tmp_path / "bad"), "--softmax-blocks", bad])
        assert message in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_the_flop_model_prices_a_hybrid_block_by_block():
    """Each softmax block costs DiT's attention in place of LiT's; a hybrid must keep 1 to depth - 1 of them."""
    from diffusers_lit.benchmarking.flops import block_flops, model_flops
    from diffusers_lit.benchmarking.options import BENCH_SIZES

    xl, tokens = BENCH_SIZES["XL"], 4096
    swap = block_flops("dit-attn", xl, tokens) - block_flops("lit-attn", xl, tokens)
    assert swap > 0
    for arch in ("lit", "lit-t2i"):
        assert model_flops(arch, xl, tokens, softmax_blocks=7) == model_flops(arch, xl, tokens) + 7 * swap
    for arch, count in (("dit", 1), ("lit", 28), ("lit", -1)):
        with pytest.raises(ValueError, match="A hybrid is a LiT with 1 to 27 softmax blocks"):
            model_flops(arch, xl, tokens, softmax_blocks=count)
