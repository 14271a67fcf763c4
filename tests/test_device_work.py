"""What a forward and a denoising loop ask of the device, counted on the CPU (`OperationRecorder`): operations
(about one kernel launch each on a GPU), host-device synchronisations, and the dtypes of the matrix products."""

import pytest
import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler
from helpers import (
    class_pipeline,
    text_pipeline,
    tiny_class_transformer,
    tiny_dit_transformer,
    tiny_pixart_transformer,
    tiny_text_transformer,
)

from diffusers_lit.benchmarking.operations import OperationRecorder, record
from diffusers_lit.benchmarking.options import BenchSize
from diffusers_lit.models.linear_attention import LiTLinearAttention

SIZE = BenchSize(heads=4, head_dim=16, depth=1, lit_heads=2)


def _block(arch: str, dtype: torch.dtype):
    from diffusers_lit.benchmarking.models import build, make_runner

    model = build(arch, SIZE, 128, 1, torch.device("cpu"), dtype, "torch")
    return make_runner(arch, model, 128, batch=2, dtype=dtype)


def _model_inputs(model, dtype):
    gen = torch.Generator().manual_seed(0)
    sample = torch.randn(2, model.config.in_channels, 8, 12, generator=gen).to(dtype)
    if model.config.norm_type == "ada_norm_zero":
        return dict(hidden_states=sample, timestep=torch.tensor([10, 900]), class_labels=torch.tensor([0, 3]))
    text = torch.randn(2, 5, model.config.caption_channels, generator=gen).to(dtype)
    return dict(hidden_states=sample, timestep=torch.tensor([10, 900]), encoder_hidden_states=text)


@pytest.mark.parametrize("make_model", [tiny_class_transformer, tiny_text_transformer])
def test_a_bf16_forward_reads_no_device_value_and_multiplies_in_bf16(make_model):
    model = make_model().to(torch.bfloat16).eval()
    recorder = record(model, **_model_inputs(model, torch.bfloat16))
    assert recorder.syncs == []
    assert recorder.products and all(set(dtypes) == {torch.bfloat16} for _, dtypes in recorder.products)
    assert {name for name, _ in recorder.products} >= {"bmm", "baddbmm"}  # the linear attention's two products


def test_the_recorder_sees_syncs_and_float32_products():
    """The counter itself: a value read and a float32 product of bf16 data are recorded."""
    x = torch.randn(4, 4, dtype=torch.bfloat16)
    with OperationRecorder() as recorder:
        if x.max() > 100:  # a Python bool of a tensor
            pass
        x.float() @ x.float()
    assert recorder.syncs == ["_local_scalar_dense"]
    assert recorder.products == [("mm", (torch.float32, torch.float32))]
    assert recorder.summary()["by_name"] == {"_to_copy": 2, "max": 1, "gt": 1, "_local_scalar_dense": 1, "mm": 1}


@pytest.mark.parametrize(("lit", "softmax"), [("lit", "dit"), ("lit-t2i", "dit")])
def test_a_lit_block_runs_no_more_operations_than_diffusers_dit_block(lit, softmax):
    counts = {arch: len(record(_block(arch, torch.bfloat16)).operations) for arch in (lit, softmax)}
    assert counts[lit] <= counts[softmax], counts


def test_linear_attention_runs_all_heads_at_once_with_one_division():
    """All heads at once: no loop over heads, no weight rebuilt per call, one layout copy each way."""
    attn = LiTLinearAttention(dim=64, heads=4, kernel_size=5).to(torch.bfloat16)
    x = torch.randn(2, 6 * 8, 64, dtype=torch.bfloat16)
    counts = record(attn, x, 6, 8).summary()["by_name"]
    assert counts == {
        "addmm": 4,  # q, k, v, out
        "stack": 1,  # q, k, v laid out head by head
        "relu_": 1,
        "baddbmm": 1,  # S
        "mean": 1,  # z
        "bmm": 2,  # numerator, normaliser
        "add_": 1,  # eps
        "convolution": 1,  # the DWC
        "addcdiv_": 1,  # DWC + numerator / normaliser
        "clone": 1,  # back to tokens
    }


def _syncs_per_step(pipe, call) -> int:
    """Host syncs of a 4-step call minus those of a 2-step call, halved: the denoising loop's own per step."""
    counts = []
    for steps in (2, 4):
        with OperationRecorder() as recorder:
            call(pipe, steps)
        counts.append(len(recorder.syncs))
    return (counts[1] - counts[0]) / 2


def test_the_class_pipeline_syncs_per_step_as_with_diffusers_dit():
    """DDIM syncs 6 times a step, all in diffusers' own `step` (it indexes `alphas_cumprod` with the tensor timestep
    and compares `prev_timestep >= 0`); LiT's transformer adds nothing to it."""
    lit = class_pipeline()
    lit.scheduler = DDIMScheduler.from_config(lit.scheduler.config)
    dit = class_pipeline()
    dit.transformer = tiny_dit_transformer()
    dit.scheduler = lit.scheduler

    def call(pipe, steps):
        pipe([0, 2], num_inference_steps=steps, guidance_scale=3.0, output_type="np")

    lit_syncs, dit_syncs = _syncs_per_step(lit, call), _syncs_per_step(dit, call)
    assert lit_syncs == dit_syncs == 6


def test_the_text_pipeline_syncs_per_step_as_with_diffusers_pixart(tmp_path):
    lit = text_pipeline(tmp_path, vae=False)
    pixart = text_pipeline(tmp_path, vae=False)
    pixart.transformer = tiny_pixart_transformer()
    assert isinstance(lit.scheduler, DPMSolverMultistepScheduler)

    def call(pipe, steps):
        pipe("a cat", num_inference_steps=steps, guidance_scale=3.0, output_type="np")

    assert _syncs_per_step(lit, call) == _syncs_per_step(pixart, call)


@pytest.mark.parametrize("make_model", [tiny_class_transformer, tiny_text_transformer])
def test_the_whole_forward_is_one_graph(make_model):
    """torch.compile(fullgraph=True) traces the transformer without a graph break (Dynamo raises at one)."""
    torch._dynamo.reset()
    model = make_model().eval()
    inputs = _model_inputs(model, torch.float32)
    with torch.no_grad():
        expected = model(**inputs).sample
        out = torch.compile(model, fullgraph=True, backend="eager")(**inputs).sample
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
