"""LiT's self-attention in two fused Triton kernels (inference): the `"triton"` linear-attention backend.

The same function as `linear_attention._linear_attention_tokens` plus the DWC, per head of the (B, N, h * d)
token-major q, k, v:

    S = mean_j phi(k_j) v_j^T (d x d),  z = mean_j phi(k_j),  out_i = phi(q_i)^T S / (phi(q_i)^T z + eps) + DWC(v)_i

1. `_state_kernel`, one program per (batch x head, row tile, column tile) of S: one pass over the tokens, ReLU,
   float32 accumulation of S and z.
2. `_output_kernel`, one program per (token tile, batch x head, column tile) of the output: phi(q) times S, the
   normaliser, the DWC of v's tile with its halo, one write in the input dtype.

Two launches and two passes over the tokens replace the torch backend's dozen kernels and float32 copies of q, k
and v; both launches are one registered operator, `diffusers_lit::fused_linear_attention`, which torch.compile
keeps whole in a full graph. Tiles are read in the input dtype and computed in float32 (`dot_precisions`).
With `TRITON_INTERPRET=1` the kernels run on CPU tensors, which is how the tests check them without a GPU.
"""

import contextlib
import math
import os

import torch
import triton
import triton.language as tl

BLOCK_TOKENS = 64  # tokens per tile
BLOCK_DIM = 32  # head channels per tile (tl.dot needs at least 16)


@triton.jit
def _state_kernel(
    k_ptr,
    v_ptr,
    state_ptr,
    norm_ptr,
    tokens,
    dim,
    head_dim,
    inv_tokens,
    PRECISION: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """S[bh, rows, cols] = mean_n phi(k)[n, rows]^T v[n, cols]; z[bh, rows] = mean_n phi(k)[n, rows]."""
    bh, row_tile, col_tile = tl.program_id(0).to(tl.int64), tl.program_id(1), tl.program_id(2)
    heads = dim // head_dim
    base = (bh // heads) * tokens * dim + (bh % heads) * head_dim  # (b, 0, h * d)
    rows = row_tile * BLOCK_D + tl.arange(0, BLOCK_D)
    cols = col_tile * BLOCK_D + tl.arange(0, BLOCK_D)
    state = tl.zeros((BLOCK_D, BLOCK_D), dtype=tl.float32)
    norm = tl.zeros((BLOCK_D,), dtype=tl.float32)
    for start in range(0, tokens, BLOCK_N):
        n = start + tl.arange(0, BLOCK_N)
        offsets = base + n[:, None].to(tl.int64) * dim  # (BLOCK_N, 1)
        k = tl.load(k_ptr + offsets + rows[None, :], mask=(n[:, None] < tokens) & (rows[None, :] < head_dim), other=0)
        v = tl.load(v_ptr + offsets + cols[None, :], mask=(n[:, None] < tokens) & (cols[None, :] < head_dim), other=0)
        k = k.to(tl.float32)
        k = tl.where(k < 0, 0.0, k)  # ReLU that keeps NaN, as torch's (BLOCK_N, BLOCK_D)
        state = tl.dot(tl.trans(k), v.to(tl.float32), state, input_precision=PRECISION)  # (BLOCK_D, BLOCK_D)
        norm += tl.sum(k, axis=0)
    square = head_dim * head_dim
    ok = (rows[:, None] < head_dim) & (cols[None, :] < head_dim)
    tl.store(state_ptr + bh * square + rows[:, None] * head_dim + cols[None, :], state * inv_tokens, mask=ok)
    if col_tile == 0:
        tl.store(norm_ptr + bh * head_dim + rows, norm * inv_tokens, mask=rows < head_dim)


@triton.jit
def _output_kernel(
    q_ptr,
    v_ptr,
    state_ptr,
    norm_ptr,
    weight_ptr,
    bias_ptr,
    out_ptr,
    tokens,
    dim,
    head_dim,
    height,
    width,
    eps,
    KERNEL: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """out[n, cols] = phi(q)[n] S[:, cols] / (phi(q)[n] z + eps) + DWC(v)[n, cols] for one tile of tokens n."""
    token_tile, bh, col_tile = tl.program_id(0), tl.program_id(1).to(tl.int64), tl.program_id(2)
    heads = dim // head_dim
    base = (bh // heads) * tokens * dim + (bh % heads) * head_dim
    n = token_tile * BLOCK_N + tl.arange(0, BLOCK_N)
    cols = col_tile * BLOCK_D + tl.arange(0, BLOCK_D)
    col_ok = cols < head_dim
    offsets = base + n[:, None].to(tl.int64) * dim  # (BLOCK_N, 1)

    numerator = tl.zeros((BLOCK_N, BLOCK_D), dtype=tl.float32)  # phi(q) S
    denominator = tl.zeros((BLOCK_N,), dtype=tl.float32)  # phi(q) z
    for start in range(0, head_dim, BLOCK_D):
        rows = start + tl.arange(0, BLOCK_D)
        q_mask = (n[:, None] < tokens) & (rows[None, :] < head_dim)
        q = tl.load(q_ptr + offsets + rows[None, :], mask=q_mask, other=0).to(tl.float32)
        q = tl.where(q < 0, 0.0, q)  # (BLOCK_N, BLOCK_D)
        s_offsets = bh * head_dim * head_dim + rows[:, None] * head_dim + cols[None, :]
        s = tl.load(state_ptr + s_offsets, mask=(rows[:, None] < head_dim) & col_ok[None, :], other=0)
        z = tl.load(norm_ptr + bh * head_dim + rows, mask=rows < head_dim, other=0)
        numerator = tl.dot(q, s, numerator, input_precision=PRECISION)
        denominator += tl.sum(q * z[None, :], axis=1)
    out = numerator / (denominator[:, None] + eps)

    if KERNEL > 0:  # the DWC: v's tile and its halo on the height x width grid, zero padding
        y, x = n // width, n % width
        for dy in range(KERNEL):
            for dx in range(KERNEL):
                yy, xx = y + (dy - KERNEL // 2), x + (dx - KERNEL // 2)
                inside = (n < tokens) & (yy >= 0) & (yy < height) & (xx >= 0) & (xx < width)
                neighbour = base + (yy * width + xx)[:, None].to(tl.int64) * dim + cols[None, :]
                v = tl.load(v_ptr + neighbour, mask=inside[:, None] & col_ok[None, :], other=0)
                w = tl.load(weight_ptr + cols * (KERNEL * KERNEL) + dy * KERNEL + dx, mask=col_ok, other=0)
                w = w.to(tl.float32)
                out += v.to(tl.float32) * w[None, :]
        if HAS_BIAS:
            out += tl.load(bias_ptr + cols, mask=col_ok, other=0).to(tl.float32)[None, :]
    ok = (n[:, None] < tokens) & col_ok[None, :]
    tl.store(out_ptr + offsets + cols[None, :], out.to(out_ptr.dtype.element_ty), mask=ok)


def dot_precisions(dtype: torch.dtype) -> tuple[str, str]:
    """`tl.dot`'s input precision in the state kernel and in the output kernel for inputs of `dtype`: for 16-bit
    inputs TF32 holds their values exactly (phi(K)^T V), but S needs three TF32 products to keep float32's
    precision (one truncates it); float32 inputs take IEEE float32."""
    return ("ieee", "ieee") if dtype == torch.float32 else ("tf32", "tf32x3")


def check_device(device: torch.device) -> None:
    """Refuse a device the kernels cannot run on: anything but CUDA, unless Triton interprets them."""
    if device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        raise ValueError(
            f"The triton linear-attention backend runs on CUDA tensors; got {device.type} tensors. Move the "
            f"model to a GPU or call `set_linear_attention_backend('torch')` (TRITON_INTERPRET=1 runs it on a CPU)."
        )


def fused_linear_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    heads: int,
    height: int,
    width: int,
    eps: float,
    dwc: torch.nn.Conv2d | None = None,
) -> torch.Tensor:
    """
    (B, N, h * d) q, k, v, heads side by side, of a `height x width` token grid -> (B, N, h * d) in their dtype:
    ReLU linear attention plus `dwc` (a depth-wise `Conv2d` over one head's d channels, shared by the heads).
    """
    check_device(q.device)
    batch, tokens, dim = q.shape
    same = k.shape == v.shape == q.shape and len({(t.dtype, t.device) for t in (q, k, v)}) == 1
    if not same or dim % heads:
        raise ValueError(
            f"q, k and v must be (B, N, heads * d) tensors of one shape, dtype and device, `heads` dividing their "
            f"width; got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)} ({q.dtype}, {k.dtype}, {v.dtype}; "
            f"{q.device}, {k.device}, {v.device}), heads={heads}."
        )
    if tokens != height * width:
        raise ValueError(f"Got {tokens} tokens for a {height}x{width} grid; they must be equal in number.")
    if dwc is not None and dwc.weight.shape[0] != dim // heads:
        raise ValueError(
            f"The DWC has {dwc.weight.shape[0]} channels; it needs one per head channel ({dim // heads})."
        )
    if q.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(f"The triton backend computes in float32, float16 or bfloat16, not {q.dtype}: use 'torch'.")
    if torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v)):
        raise RuntimeError(
            "The triton linear-attention kernels are forward-only (inference): run under `torch.no_grad()`, or "
            "call `set_linear_attention_backend('torch')` to train."
        )
    weight = bias = None
    if dwc is not None:
        weight = dwc.weight.detach().flatten(1)  # (d, k * k), a view: cast in the kernel, no launch here
        bias = None if dwc.bias is None else dwc.bias.detach()  # (d,)
    return _linear_attention_op(q, k, v, weight, bias, heads, height, width, eps)


@torch.library.custom_op("diffusers_lit::fused_linear_attention", mutates_args=())
def _linear_attention_op(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    heads: int,
    height: int,
    width: int,
    eps: float,
) -> torch.Tensor:
    """The two launches, as one operator that torch.compile keeps whole. `weight`: (d, k * k) or None."""
    batch, tokens, dim = q.shape
    head_dim = dim // heads
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    tiles = triton.cdiv(head_dim, BLOCK_DIM)
    state = q.new_empty(batch * heads, head_dim, head_dim, dtype=torch.float32)  # (B * h, d, d)
    norm = q.new_empty(batch * heads, head_dim, dtype=torch.float32)  # (B * h, d)
    exact, split = dot_precisions(q.dtype)
    blocks = dict(BLOCK_N=BLOCK_TOKENS, BLOCK_D=BLOCK_DIM)
    kernel = 0 if weight is None else math.isqrt(weight.shape[1])
    out = v.new_empty(v.shape)  # (B, N, h * d), contiguous
    grid = (triton.cdiv(tokens, BLOCK_TOKENS), batch * heads, tiles)  # the most tiles on the axis of 2^31
    # Triton launches on the current CUDA device: make it the tensors' (a model on cuda:1, say).
    with torch.cuda.device(q.device) if q.device.type == "cuda" else contextlib.nullcontext():
        _state_kernel[(batch * heads, tiles, tiles)](
            k, v, state, norm, tokens, dim, head_dim, 1.0 / tokens, PRECISION=exact, **blocks
        )
        _output_kernel[grid](
            q,
            v,
            state,
            norm,
            state if weight is None else weight.contiguous(),
            state if bias is None else bias.contiguous(),  # `state`: a placeholder pointer
            out,
            tokens,
            dim,
            head_dim,
            height,
            width,
            eps,
            KERNEL=kernel,
            HAS_BIAS=bias is not None,
            PRECISION=split,
            **blocks,
        )
    return out


@_linear_attention_op.register_fake
def _(q, k, v, weight, bias, heads, height, width, eps):
    return v.new_empty(v.shape)
