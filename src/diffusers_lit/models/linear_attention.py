"""LiT's self-attention: ReLU linear attention plus a depth-wise convolution on the values.

For each head, with phi = ReLU and the token grid of N = H * W tokens:

    O_i = phi(q_i)^T S / (phi(q_i)^T z + eps),   S = mean_j phi(k_j) v_j^T  (d x d),   z = mean_j phi(k_j)
    out = to_out(O + DWC(V))

Keys and values are contracted first, so the cost is O(N d^2) per head and no N x N matrix is ever built. All heads
run at once, folded into the batch: one copy lays q, k and v out head by head, batched products give S and z,
then the numerator phi(q) S and the normaliser phi(q) z, and one division adds them into the DWC's output. Means
instead of sums keep S and z in range. Products take the inputs'
dtype and accumulate in float32 (what CPU and GPU GEMMs do for bfloat16); the division runs in float32 arithmetic.
float16 inputs are computed in float32: float16's range (65504) does not hold phi(q)^T S for large activations,
where bfloat16 has float32's range. The DWC is one depth-wise `Conv2d` over a head's d channels, shared by all heads
(they are in the batch), applied to V laid out on the 2-D token grid.

The module takes part in diffusers' attention system (`AttentionModuleMixin`, as diffusers' `FluxAttention`):
its weights live on the module, the computation in a processor, so `model.attn_processors` lists it and
`set_attn_processor` swaps it without touching a weight. Two processors compute the same function:
`LiTLinearAttnProcessor` ("torch", the default: any device, trainable) and `LiTLinearAttnTritonProcessor`
("triton": two fused kernels for CUDA inference, `linear_attention_triton.py`).
"""

import torch
from diffusers.models.attention import AttentionModuleMixin
from torch import nn

from ..choices import LINEAR_ATTENTION_BACKENDS, MODEL_SIZES

PAPER_HEADS = ", ".join(f"{size['linear_attention_heads']} for {name}" for name, size in MODEL_SIZES.items())


class LiTLinearAttnProcessor:
    """LiT's linear attention in PyTorch operations: any device, any dtype, trainable (the reference path)."""

    backend = "torch"

    def __call__(self, attn: "LiTLinearAttention", hidden_states: torch.Tensor, height: int, width: int):
        batch, tokens, _ = hidden_states.shape
        q, k, v = attn.project_qkv(hidden_states)  # (B, N, D) each, heads side by side: (B, N, h, d)
        dtype = v.dtype
        # One copy puts each head's tokens together, heads in the batch: (3, B * h, N, d).
        qkv = torch.stack([t.unflatten(-1, (attn.heads, -1)).transpose(1, 2) for t in (q, k, v)]).flatten(1, 2)
        qkv = qkv.to(computation_dtype(dtype))
        qkv[:2].relu_()  # phi(q), phi(k); in place, before the DWC saves V (a view of the same tensor) for autograd
        dwc = None
        if attn.dwc is not None:  # V of every head on the grid: (B * h, d, H, W), channels-last strides, no copy
            v_grid = qkv[2].to(dtype).unflatten(1, (height, width)).permute(0, 3, 1, 2)
            dwc = attn.dwc(v_grid).permute(0, 2, 3, 1).flatten(1, 2)  # (B * h, N, d); a view when channels-last
        with torch.autocast(hidden_states.device.type, enabled=False):  # the dtypes are chosen above
            out = _attend(*qkv, attn.eps, residual=dwc)  # (B * h, N, d)
        out = out.to(dtype).unflatten(0, (batch, -1)).transpose(1, 2).reshape(batch, tokens, -1)  # (B, N, D)
        return attn.to_out[1](attn.to_out[0](out))


class LiTLinearAttnTritonProcessor:
    """The same function in two fused Triton kernels, for inference on CUDA (float32, float16, bfloat16); needs
    the `triton` package (shipped with CUDA builds of PyTorch)."""

    backend = "triton"

    def __init__(self):
        check_backend("triton")

    def __call__(self, attn: "LiTLinearAttention", hidden_states: torch.Tensor, height: int, width: int):
        from .linear_attention_triton import fused_linear_attention

        q, k, v = attn.project_qkv(hidden_states)
        out = fused_linear_attention(q, k, v, attn.heads, height, width, attn.eps, attn.dwc)  # (B, N, D)
        return attn.to_out[1](attn.to_out[0](out))


# By the names of `LINEAR_ATTENTION_BACKENDS`.
PROCESSORS = {processor.backend: processor for processor in (LiTLinearAttnProcessor, LiTLinearAttnTritonProcessor)}


class LiTLinearAttention(nn.Module, AttentionModuleMixin):
    r"""
    ReLU linear self-attention with a depth-wise convolution (DWC) on the values.

    Parameters:
        dim (`int`): Width of the tokens, in and out.
        heads (`int`): Number of heads; `dim` must be divisible by it (head dim `d = dim // heads`).
        kernel_size (`int`, defaults to 5): Kernel of the DWC, odd; 0 for no DWC (the paper's "ReLU linear" ablation).
        bias (`bool`, defaults to `True`): Bias of the query, key and value projections.
        out_bias (`bool`, defaults to `True`): Bias of the output projection.
        dropout (`float`, defaults to 0.0): Dropout after the output projection.
        eps (`float`, defaults to 1e-6): Added to the normaliser `phi(q)^T z`.
        processor (*optional*): A `LiTLinearAttnProcessor` (default) or `LiTLinearAttnTritonProcessor`.
    """

    _default_processor_cls = LiTLinearAttnProcessor
    _available_processors = [LiTLinearAttnProcessor, LiTLinearAttnTritonProcessor]
    is_cross_attention = False

    def __init__(
        self,
        dim: int,
        heads: int,
        kernel_size: int = 5,
        bias: bool = True,
        out_bias: bool = True,
        dropout: float = 0.0,
        eps: float = 1e-6,
        processor=None,
    ):
        super().__init__()
        if heads < 1 or dim % heads != 0:
            raise ValueError(
                f"The width {dim} is not divisible by `linear_attention_heads={heads}`: choose a head count that "
                f"divides it (the paper's LiT sizes use {PAPER_HEADS})."
            )
        if kernel_size < 0 or (kernel_size > 0 and kernel_size % 2 == 0):
            raise ValueError(f"`dwc_kernel_size` must be a positive odd number (or 0: no DWC), got {kernel_size}.")
        self.heads = heads
        self.head_dim = dim // heads
        self.eps = eps
        self.use_bias = bias  # read by diffusers' fuse_projections

        self.to_q = nn.Linear(dim, dim, bias=bias)
        self.to_k = nn.Linear(dim, dim, bias=bias)
        self.to_v = nn.Linear(dim, dim, bias=bias)
        self.dwc = None
        if kernel_size:
            # One kernel per head channel, shared by the heads (they are in the batch when it runs).
            self.dwc = nn.Conv2d(
                self.head_dim, self.head_dim, kernel_size, padding=kernel_size // 2, groups=self.head_dim
            )
        self.to_out = nn.ModuleList([nn.Linear(dim, dim, bias=out_bias), nn.Dropout(dropout)])
        self.set_processor(processor or self._default_processor_cls())
        self.reset_parameters()

    def set_processor(self, processor) -> None:
        """Use `processor` (one of `_available_processors`) for the computation; the weights stay where they are."""
        if not isinstance(processor, tuple(self._available_processors)):
            names = ", ".join(cls.__name__ for cls in self._available_processors)
            raise ValueError(
                f"LiTLinearAttention runs {names}, not {type(processor).__name__}: a softmax attention processor "
                "cannot compute linear attention (set processors per layer with a dict to change only attn2)."
            )
        super().set_processor(processor)

    @property
    def backend(self) -> str:
        """The processor's name: "torch" or "triton"."""
        return self.processor.backend

    def set_backend(self, backend: str) -> None:
        """Pick the processor by name: "torch" (`LiTLinearAttnProcessor`) or "triton" (the Triton one)."""
        check_backend(backend)
        self.set_processor(PROCESSORS[backend]())

    def reset_parameters(self) -> None:
        """Fresh weights as LiT starts them: Xavier-uniform projections, zero biases, PyTorch's default DWC."""
        for linear in (self.to_q, self.to_k, self.to_v, self.to_out[0]):
            nn.init.xavier_uniform_(linear.weight)
            if linear.bias is not None:
                nn.init.zeros_(linear.bias)
        if self.dwc is not None:
            self.dwc.reset_parameters()

    def project_qkv(self, hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries, keys and values (B, N, D) of tokens (B, N, D): one fused matmul after `fuse_projections`."""
        if self.fused_projections:
            return self.to_qkv(hidden_states).chunk(3, dim=-1)  # views: the processors copy them head by head
        return self.to_q(hidden_states), self.to_k(hidden_states), self.to_v(hidden_states)

    def forward(self, hidden_states: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """(B, N, D) tokens of an `height x width` grid (N = height * width) -> (B, N, D)."""
        if hidden_states.shape[1] != height * width:
            raise ValueError(
                f"Got {hidden_states.shape[1]} tokens for a {height}x{width} grid; they must be equal in number."
            )
        return self.processor(self, hidden_states, height, width)


def check_backend(backend: str, device: torch.device | str | None = None) -> None:
    """Refuse an unknown backend, "triton" without the `triton` package, or (given `device`) one it cannot run on."""
    if backend not in PROCESSORS:
        raise ValueError(f"Unknown linear-attention backend {backend!r}; choose one of {LINEAR_ATTENTION_BACKENDS}.")
    if backend == "triton":
        try:
            from .linear_attention_triton import check_device
        except ImportError as error:
            raise ImportError(
                "The 'triton' linear-attention backend needs the `triton` package: `pip install triton` (CUDA "
                "builds of PyTorch ship it), or keep the 'torch' backend."
            ) from error
        if device is not None:
            check_device(torch.device(device))


def computation_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the products take for inputs of `dtype`: their own, but float32 for float16 (too little range)."""
    return torch.float32 if dtype == torch.float16 else dtype


def linear_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """ReLU linear attention of (B, h, N, d) queries, keys and values -> (B, h, N, d), in `computation_dtype`."""
    batch, heads, tokens, head_dim = q.shape
    qkv = torch.stack([q, k, v]).flatten(1, 2).to(computation_dtype(v.dtype))  # (3, B * h, N, d)
    qkv[:2].relu_()  # phi(q), phi(k)
    with torch.autocast(q.device.type, enabled=False):
        return _attend(*qkv, eps).unflatten(0, (batch, heads))


def _attend(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, eps: float, residual: torch.Tensor | None = None
) -> torch.Tensor:
    """
    Linear attention of (M, N, d) phi(q), phi(k) and v (M = batch x heads) -> (M, N, d), plus `residual` (M, N, d)
    when given (added in place: the caller's own temporary).

    Batched products for every head at once: S = phi(k)^T v / N (M, d, d) and z = mean phi(k), then the numerator
    phi(q) S and the normaliser phi(q) z + eps; one division, fused with the residual's addition.
    """
    # beta=0: the first argument only gives a shape to broadcast and is never read; alpha=1/N makes the sum a mean.
    state = torch.baddbmm(v.new_empty(()), k.mT, v, beta=0, alpha=1 / k.shape[1])  # (M, d, d)
    normaliser = k.mean(dim=1, keepdim=True).mT  # (M, d, 1)
    numerator = torch.bmm(q, state)  # (M, N, d)
    denominator = torch.bmm(q, normaliser).add_(eps)  # (M, N, 1)
    if residual is None:
        return numerator / denominator
    return residual.addcdiv_(numerator, denominator)  # residual + numerator / denominator
