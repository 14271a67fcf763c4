import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import diffusers_lit.models
from diffusers_lit.models.linear_attention import LiTLinearAttention, linear_attention


def reference_attention(q, k, v, eps=1e-6):
    """The same function through the explicit N x N matrix phi(Q) phi(K)^T, row-normalised."""
    scores = F.relu(q) @ F.relu(k).transpose(-1, -2) / k.shape[-2]  # (B, h, N, N)
    return scores @ v / (scores.sum(dim=-1, keepdim=True) + eps)


def reference_dwc(v_grid, weight, bias):
    """Depth-wise convolution written as a sum over kernel offsets: (C, H, W) grids, zero padding."""
    channels, height, width = v_grid.shape[-3:]
    size = weight.shape[-1]
    pad = size // 2
    padded = torch.zeros(*v_grid.shape[:-2], height + 2 * pad, width + 2 * pad, dtype=v_grid.dtype)
    padded[..., pad : pad + height, pad : pad + width] = v_grid
    out = torch.zeros_like(v_grid) + bias[:, None, None]
    for dy in range(size):
        for dx in range(size):
            out += weight[:, 0, dy, dx][:, None, None] * padded[..., dy : dy + height, dx : dx + width]
    return out


def reference_module(attn: LiTLinearAttention, x, height, width):
    """LiTLinearAttention computed from its weights with the N x N reference and the loop DWC."""
    batch, tokens, dim = x.shape
    h, d = attn.heads, attn.head_dim

    def split(t):
        return t.view(batch, tokens, h, d).transpose(1, 2)

    q, k, v = split(attn.to_q(x)), split(attn.to_k(x)), split(attn.to_v(x))
    out = reference_attention(q, k, v, attn.eps)
    if attn.dwc is not None:
        grid = v.reshape(batch, h, height, width, d).permute(0, 1, 4, 2, 3)  # (B, h, d, H, W)
        dwc = reference_dwc(grid, attn.dwc.weight, attn.dwc.bias)  # (B, h, d, H, W)
        out = out + dwc.permute(0, 1, 3, 4, 2).reshape(batch, h, tokens, d)
    return attn.to_out[0](out.transpose(1, 2).reshape(batch, tokens, dim))


def relative_error(a, b):
    return ((a - b).norm() / b.norm()).item()


DEVICE = "cuda" if torch.cuda.is_available() else "cpu"  # the "triton" backend's; interpreted on a CPU


def with_backend(attn: LiTLinearAttention, backend: str, dtype: torch.dtype) -> LiTLinearAttention:
    """A copy of `attn` in `dtype` computed by `backend` ("triton": on DEVICE)."""
    copy = LiTLinearAttention(
        attn.to_q.in_features, attn.heads, kernel_size=attn.dwc.kernel_size[0] if attn.dwc else 0
    )
    copy.load_state_dict(attn.state_dict())
    copy.set_backend(backend)
    return copy.to(DEVICE if backend == "triton" else "cpu", dtype)


@pytest.mark.parametrize("tokens", [1, 7, 64, 300])
@pytest.mark.parametrize("heads", [1, 2, 4, 16])
def test_linear_attention_equals_quadratic_reference(tokens, heads):
    gen = torch.Generator().manual_seed(tokens * 100 + heads)
    q, k, v = (torch.randn(3, heads, tokens, 8, generator=gen, dtype=torch.float64) for _ in range(3))
    out = linear_attention(q, k, v)
    assert out.dtype == torch.float64
    assert relative_error(out, reference_attention(q, k, v)) <= 1e-10


@pytest.mark.parametrize(("height", "width", "heads"), [(4, 4, 1), (3, 5, 2), (8, 2, 4), (6, 10, 16), (1, 9, 4)])
def test_module_equals_reference_on_non_square_grids(height, width, heads):
    torch.manual_seed(height * width + heads)
    attn = LiTLinearAttention(dim=64, heads=heads, kernel_size=5).double()
    torch.nn.init.normal_(attn.to_q.bias)  # non-zero biases so that they are exercised too
    torch.nn.init.normal_(attn.to_out[0].bias)
    x = torch.randn(3, height * width, 64, dtype=torch.float64)
    out = attn(x, height, width)
    assert out.shape == (3, height * width, 64)
    assert relative_error(out, reference_module(attn, x, height, width)) <= 1e-10


def test_gradients_equal_the_references():
    """The in-place steps (ReLU, eps, the division into the DWC output) keep autograd exact: the gradients of the
    input and of every weight equal those of the N x N reference in float64."""
    torch.manual_seed(0)
    attn = LiTLinearAttention(dim=48, heads=3, kernel_size=3).double()
    x = torch.randn(2, 4 * 5, 48, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(2, 20, 48, dtype=torch.float64)
    grads = []
    for forward in (attn, lambda *a: reference_module(attn, *a)):
        attn.zero_grad()
        x.grad = None
        (forward(x, 4, 5) * weights).sum().backward()
        grads.append([x.grad.clone()] + [p.grad.clone() for p in attn.parameters()])
    for got, expected in zip(*grads, strict=True):
        assert relative_error(got, expected) <= 1e-10


def test_dwc_is_one_kernel_per_head_channel_shared_by_heads():
    attn = LiTLinearAttention(dim=96, heads=4, kernel_size=5)
    assert attn.dwc.weight.shape == (24, 1, 5, 5)
    assert attn.dwc.groups == 24 and attn.dwc.padding == (2, 2)


def test_the_callers_queries_keys_and_values_are_left_as_they_were():
    """ReLU is taken in place on copies: q, k and v passed in float32 (the accumulation dtype) come back unchanged,
    with and without gradients; one head makes the token-major layout a view of the caller's tensors."""
    for heads in (1, 2):
        q, k, v = (torch.randn(2, heads, 10, 4) for _ in range(3))
        before = [t.clone() for t in (q, k, v)]
        for grad in (False, True):
            with torch.set_grad_enabled(grad):
                linear_attention(q, k, v)
            for given, kept in zip((q, k, v), before, strict=True):
                torch.testing.assert_close(given, kept, rtol=0, atol=0)


def test_projection_biases_follow_bias_and_out_bias():
    for bias, out_bias in ((True, False), (False, True)):
        attn = LiTLinearAttention(dim=16, heads=2, bias=bias, out_bias=out_bias)
        assert [attn.to_q.bias is not None, attn.to_k.bias is not None, attn.to_v.bias is not None] == [bias] * 3
        assert (attn.to_out[0].bias is not None) == out_bias and attn.use_bias == bias


def test_batch_elements_do_not_leak():
    torch.manual_seed(0)
    attn = LiTLinearAttention(dim=32, heads=2).double()
    x = torch.randn(4, 30, 32, dtype=torch.float64)
    out = attn(x, 5, 6)
    changed = x.clone()
    changed[1:] = 100 * torch.randn_like(changed[1:])
    out_changed = attn(changed, 5, 6)
    torch.testing.assert_close(out_changed[0], out[0], rtol=0, atol=0)
    assert not torch.allclose(out_changed[1], out[1])
    torch.testing.assert_close(attn(x[2:3], 5, 6)[0], out[2], rtol=1e-12, atol=1e-12)


def test_fresh_weights():
    attn = LiTLinearAttention(dim=64, heads=2)
    for linear in (attn.to_q, attn.to_k, attn.to_v, attn.to_out[0]):
        assert torch.count_nonzero(linear.bias) == 0
        bound = (6 / (64 + 64)) ** 0.5  # Xavier-uniform
        assert linear.weight.abs().max() <= bound and linear.weight.abs().max() > 0.9 * bound


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_stays_finite_where_half_accumulation_overflows(dtype, backend):
    if backend == "triton":
        pytest.importorskip("triton")
    torch.manual_seed(0)
    attn = LiTLinearAttention(dim=64, heads=2)
    x = 40 * torch.randn(2, 32 * 32, 64)  # large activations: sum_j phi(k_j) v_j^T reaches ~1e6
    half = with_backend(attn, backend, dtype)
    with torch.no_grad():
        if dtype == torch.float16:  # bfloat16 has float32's range: only its precision is at stake
            k = F.relu(half.to_k(x[0].to(half.to_k.weight)))[:, :32]  # (N, d) of the first head
            v = half.to_v(x[0].to(half.to_v.weight))[:, :32]
            assert not torch.isfinite(k.T @ v).all(), "the test input should overflow a float16 state"
        out = half(x.to(half.to_q.weight), 32, 32).cpu()
        expected = attn(x, 32, 32)
    assert out.dtype == dtype and torch.isfinite(out).all()
    # Triton's interpreter truncates float32 to bfloat16 where GPUs round to nearest: its bf16 output error is
    # about 1.3x the torch backend's on a CPU (LiT-XL's attention: 5.2e-3 against 4.6e-3 from float64 weights).
    assert relative_error(out.float(), expected) < (2e-2 if dtype == torch.bfloat16 else 5e-3)


def test_autocast_leaves_the_products_in_the_inputs_dtype():
    """bfloat16 inputs multiply in bfloat16 with or without autocast (float32 ones are not cast down); float16
    inputs are computed in float32, whose range their products need."""
    q, k, v = (torch.randn(1, 2, 50, 8, dtype=torch.bfloat16) for _ in range(3))
    expected = linear_attention(q, k, v)
    assert expected.dtype == torch.bfloat16
    with torch.autocast("cpu", dtype=torch.bfloat16):
        torch.testing.assert_close(linear_attention(q, k, v), expected, rtol=0, atol=0)
        assert linear_attention(q.float(), k.float(), v.float()).dtype == torch.float32
    assert linear_attention(q.half(), k.half(), v.half()).dtype == torch.float32
    torch.testing.assert_close(
        linear_attention(q.half(), k.half(), v.half()),
        linear_attention(q.float(), k.float(), v.float()).half().float(),
        rtol=1e-3,
        atol=1e-3,
    )


def test_without_dwc_is_plain_relu_linear_attention():
    torch.manual_seed(0)
    attn = LiTLinearAttention(dim=32, heads=2, kernel_size=0).double()
    assert attn.dwc is None and not any("dwc" in name for name, _ in attn.named_parameters())
    x = torch.randn(2, 12, 32, dtype=torch.float64)
    assert relative_error(attn(x, 3, 4), reference_module(attn, x, 3, 4)) <= 1e-10


def identity_attention(eps=None, dropout=0.0) -> LiTLinearAttention:
    """A one-head, no-DWC attention of width 2 whose projections are the identity, in float64; queries scaled by
    1e-6 so that the normaliser phi(q)^T z is of the order of eps."""
    kwargs = {} if eps is None else {"eps": eps}
    attn = LiTLinearAttention(dim=2, heads=1, kernel_size=0, dropout=dropout, **kwargs).double()
    with torch.no_grad():
        for linear in (attn.to_q, attn.to_k, attn.to_v, attn.to_out[0]):
            linear.weight.copy_(torch.eye(2))
        attn.to_q.weight.mul_(1e-6)
    return attn


def test_default_eps_is_one_in_a_million_and_is_added_to_the_normaliser():
    """Tokens e1 and e2: S = I / 2 and z = (1/2, 1/2), so with q_i = 1e-6 e_i, O_i = (1e-6 / 2) e_i / (1e-6 / 2 + eps)
    = e_i / 3 at eps = 1e-6 (1 without eps), for the module and for `linear_attention`."""
    x = torch.eye(2, dtype=torch.float64)[None]  # (1, 2 tokens, 2)
    with torch.no_grad():
        torch.testing.assert_close(identity_attention()(x, 1, 2), x / 3, rtol=1e-12, atol=0)
        torch.testing.assert_close(identity_attention(eps=1e-7)(x, 1, 2), x * 0.5 / 0.6, rtol=1e-12, atol=0)
    q = 1e-6 * x[:, None]  # (1, 1 head, 2, 2)
    torch.testing.assert_close(linear_attention(q, x[:, None], x[:, None]), x[:, None] / 3, rtol=1e-12, atol=0)


def test_dropout_follows_the_output_projection_in_training_only():
    """Each output is 0 or 1 / (1 - p) times the eval-mode output, both occurring; eval mode drops nothing."""
    torch.manual_seed(0)
    attn = LiTLinearAttention(dim=16, heads=2, dropout=0.5).double()
    x = torch.randn(2, 12, 16, dtype=torch.float64)
    with torch.no_grad():
        expected = attn.eval()(x, 3, 4)
        dropped = attn.train()(x, 3, 4)
    kept = dropped != 0
    assert 0.3 < kept.double().mean() < 0.7
    torch.testing.assert_close(dropped[kept], 2 * expected[kept], rtol=1e-12, atol=0)


def test_bad_heads_and_kernel():
    with pytest.raises(ValueError, match="not divisible by `linear_attention_heads=5`"):
        LiTLinearAttention(dim=64, heads=5)
    with pytest.raises(ValueError, match="odd"):
        LiTLinearAttention(dim=64, heads=2, kernel_size=4)
    with pytest.raises(ValueError, match="Got 10 tokens for a 3x3 grid"):
        LiTLinearAttention(dim=64, heads=2)(torch.randn(1, 10, 64), 3, 3)


# ------------------------------------------------------------------ the "triton" backend (interpreted without CUDA)


@pytest.mark.parametrize(
    ("height", "width", "dim", "heads", "kernel_size"),
    [(5, 7, 80, 2, 5), (9, 10, 96, 3, 3), (1, 9, 48, 1, 5), (3, 4, 64, 2, 0), (8, 8, 144, 4, 5)],
)
def test_triton_backend_equals_reference(height, width, dim, heads, kernel_size):
    """Head dims 40, 32, 48, 32, 36 (partial channel tiles), 90 tokens (two token tiles), a grid of one row."""
    pytest.importorskip("triton")
    torch.manual_seed(height * width + dim)
    attn = LiTLinearAttention(dim=dim, heads=heads, kernel_size=kernel_size).double()
    torch.nn.init.normal_(attn.to_k.bias)
    if attn.dwc is not None:
        torch.nn.init.normal_(attn.dwc.bias)
    x = torch.randn(2, height * width, dim, dtype=torch.float64)
    with torch.no_grad():
        out = with_backend(attn, "triton", torch.float32)(x.to(DEVICE, torch.float32), height, width)
        expected = reference_module(attn, x, height, width)
    assert out.dtype == torch.float32 and out.shape == x.shape
    assert relative_error(out.double().cpu(), expected) <= 1e-5


def test_triton_backend_refuses_what_it_cannot_run(monkeypatch):
    attn = LiTLinearAttention(dim=32, heads=2)
    with pytest.raises(ValueError, match="Unknown linear-attention backend 'flash'"):
        attn.set_backend("flash")
    with monkeypatch.context() as patch:
        patch.setitem(sys.modules, "triton", None)  # as if it were not installed
        patch.setitem(sys.modules, "diffusers_lit.models.linear_attention_triton", None)
        patch.delattr(diffusers_lit.models, "linear_attention_triton", raising=False)
        with pytest.raises(ImportError, match="pip install triton"):
            attn.set_backend("triton")
    assert attn.backend == "torch"
    pytest.importorskip("triton")
    attn.to(DEVICE).set_backend("triton")
    x = torch.randn(1, 16, 32, device=DEVICE)
    with pytest.raises(RuntimeError, match="forward-only"):
        attn(x, 4, 4)  # the weights require grad
    with torch.no_grad(), pytest.raises(ValueError, match="not torch.float64"):
        attn.double()(x.double(), 4, 4)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with torch.no_grad(), pytest.raises(ValueError, match="runs on CUDA tensors; got cpu tensors"):
        attn.cpu()(x.cpu().double(), 4, 4)


def test_triton_kernels_compile_for_nvidia_gpus():
    """Both kernels go through Triton's whole NVIDIA toolchain (ptxas included) without a GPU, in a process of its
    own (this one interprets them); the bf16 output kernel spills no registers on sm_90."""
    pytest.importorskip("triton")
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    script = Path(__file__).with_name("triton_compile_check.py")
    run = subprocess.run([sys.executable, script], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    usage = json.loads(run.stdout)
    assert sorted(usage) == [
        "output bf16 sm_90",
        "output fp16 sm_80",
        "output fp32 sm_90",
        "state bf16 sm_90",
        "state fp16 sm_80",
        "state fp32 sm_90",
    ]
    bf16 = usage["output bf16 sm_90"]  # None: a Triton without cuobjdump
    if bf16 is not None:  # 227 registers with Triton 3.9 (255 and 216 B spilled with the DWC unrolled)
        assert bf16["STACK"] == 0 and bf16["LOCAL"] == 0 and bf16["REG"] <= 240, bf16


def test_triton_operator_passes_opcheck_and_refuses_bad_calls():
    """The registered operator's fake (torch.compile's view of it) agrees with the real one, strides included."""
    pytest.importorskip("triton")
    from diffusers_lit.models.linear_attention_triton import _linear_attention_op, fused_linear_attention

    gen = torch.Generator().manual_seed(0)
    q, k = (torch.randn(2, 12, 64, generator=gen).to(DEVICE) for _ in range(2))
    v = torch.randn(2, 64, 12, generator=gen).to(DEVICE).transpose(1, 2)  # not contiguous
    weight, bias = torch.randn(32, 9, device=DEVICE), torch.randn(32, device=DEVICE)
    torch.library.opcheck(_linear_attention_op, (q, k, v, weight, bias, 2, 3, 4, 1e-6))
    torch.library.opcheck(_linear_attention_op, (q, k, v.contiguous(), None, None, 2, 3, 4, 1e-6))
    with pytest.raises(ValueError, match="one shape, dtype and device"):
        fused_linear_attention(q, k[:, :6], v, 2, 3, 4, 1e-6)
    with pytest.raises(ValueError, match="one shape, dtype and device"):
        fused_linear_attention(q, k, v, 3, 3, 4, 1e-6)  # 64 is not divisible by 3
    with pytest.raises(ValueError, match="12 tokens for a 3x3 grid"):
        fused_linear_attention(q, k, v, 2, 3, 3, 1e-6)
    with pytest.raises(ValueError, match="The DWC has 16 channels; it needs one per head channel \\(32\\)"):
        fused_linear_attention(q, k, v, 2, 3, 4, 1e-6, torch.nn.Conv2d(16, 16, 3, groups=16).to(DEVICE))


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_nan_inputs_give_nan_outputs(backend):
    """A NaN is not hidden by ReLU: it poisons its head (through S) as in the float64 reference."""
    if backend == "triton":
        pytest.importorskip("triton")
    torch.manual_seed(0)
    attn = with_backend(LiTLinearAttention(dim=64, heads=2, kernel_size=3), backend, torch.float32)
    x = torch.randn(1, 16, 64)
    with torch.no_grad():
        k = attn.to_k(x.to(attn.to_k.weight.device))
        k[0, 5, 3] = float("nan")  # head 0
        q, v = attn.to_q(x.to(k.device)), attn.to_v(x.to(k.device))
        if backend == "triton":
            from diffusers_lit.models.linear_attention_triton import fused_linear_attention

            out = fused_linear_attention(q, k, v, 2, 4, 4, attn.eps, attn.dwc).cpu()
        else:
            heads = [t.unflatten(-1, (2, -1)).transpose(1, 2) for t in (q, k, v)]  # (B, h, N, d)
            out = linear_attention(*heads, attn.eps).transpose(1, 2).flatten(2)
    assert torch.isnan(out[..., :32]).all() and not torch.isnan(out[..., 32:]).any()


# diffusers' attention machinery


def test_diffusers_sees_every_attention_and_swaps_processors_without_touching_weights():
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    from diffusers_lit import LiTLinearAttnProcessor, LiTTransformer2DModel

    torch.manual_seed(0)
    model = LiTTransformer2DModel(
        norm_type="ada_norm_single",
        num_attention_heads=2,
        attention_head_dim=8,
        in_channels=1,
        num_layers=2,
        sample_size=8,
        patch_size=2,
        cross_attention_dim=16,
        caption_channels=12,
        linear_attention_heads=2,
    ).eval()
    processors = model.attn_processors
    assert sorted(processors) == [f"transformer_blocks.{i}.attn{j}.processor" for i in (0, 1) for j in (1, 2)]
    assert all(
        isinstance(processors[f"transformer_blocks.{i}.attn1.processor"], LiTLinearAttnProcessor) for i in (0, 1)
    )
    x, text = torch.randn(2, 1, 8, 12), torch.randn(2, 5, 12)
    kwargs = dict(
        timestep=torch.tensor([3, 900]),
        encoder_hidden_states=text,
        added_cond_kwargs={"resolution": None, "aspect_ratio": None},
    )
    with torch.no_grad():
        before = model(x, **kwargs).sample
        keys = set(model.state_dict())
        model.set_attn_processor(
            {name: LiTLinearAttnProcessor() if "attn1" in name else AttnProcessor() for name in processors}
        )
        torch.testing.assert_close(model(x, **kwargs).sample, before, rtol=1e-5, atol=1e-6)
        model.set_default_attn_processor()
        assert isinstance(model.attn_processors["transformer_blocks.0.attn2.processor"], AttnProcessor2_0)
        model.fuse_qkv_projections()
        torch.testing.assert_close(model(x, **kwargs).sample, before, rtol=1e-5, atol=1e-5)
        model.unfuse_qkv_projections()
        assert set(model.state_dict()) == keys  # the same weights, the same keys
        torch.testing.assert_close(model(x, **kwargs).sample, before, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="number of processors 1 does not match the number of attention layers: 4"):
        model.set_attn_processor({"transformer_blocks.0.attn1.processor": LiTLinearAttnProcessor()})
    with pytest.raises(
        ValueError, match="LiTLinearAttention runs LiTLinearAttnProcessor, LiTLinearAttnTritonProcessor, not AttnProc"
    ):
        model.set_attn_processor(AttnProcessor2_0())  # one softmax processor for every layer
    processors = model.attn_processors
    wrong = {name.replace("blocks.1.", "blocks.7."): LiTLinearAttnProcessor() for name in processors}
    missing = r"\(missing: \['transformer_blocks.1.attn1.processor', 'transformer_blocks.1.attn2.processor'\]\)"
    with pytest.raises(
        ValueError, match=r"names \['transformer_blocks.7.attn1.processor', .*not attention la.*" + missing
    ):
        model.set_attn_processor(wrong)
    assert all(model.attn_processors[name] is processor for name, processor in processors.items())  # none set
    given = {name: LiTLinearAttnProcessor() for name in processors}
    model.set_attn_processor(given)
    assert len(given) == len(processors)  # the caller's dict is not emptied


def test_fused_projections_train_like_separate_ones():
    torch.manual_seed(0)
    attn = LiTLinearAttention(16, 2)
    for projection in (attn.to_q, attn.to_k, attn.to_v):  # LiT starts them at zero: the fused bias would go unseen
        torch.nn.init.normal_(projection.bias)
    x = torch.randn(2, 12, 16, requires_grad=True)
    attn(x, 3, 4).square().sum().backward()
    grad = x.grad.clone()
    x.grad = None
    attn.fuse_projections()
    attn(x, 3, 4).square().sum().backward()
    torch.testing.assert_close(x.grad, grad, rtol=1e-5, atol=1e-6)
