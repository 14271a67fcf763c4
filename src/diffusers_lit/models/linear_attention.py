"""LiT's self-attention: ReLU linear attention plus a depth-wise convolution on the values.

For each head, with phi = ReLU and the token grid of N = H * W tokens:

    O_i = phi(q_i)^T S / (phi(q_i)^T z + eps),   S = mean_j phi(k_j) v_j^T  (d x d),   z = mean_j phi(k_j)
    out = to_out(O + DWC(V))

Keys and values are contracted first, so the cost is O(N d^2) per head and no N x N matrix is ever built.
Means instead of sums keep S and z in range; both, and the division, are computed in float32 whatever the
input dtype. The DWC is one depth-wise `Conv2d` over a head's channels, shared by all heads (heads are
folded into the batch), applied to V laid out on the 2-D token grid.

The module takes part in diffusers' attention system (`AttentionModuleMixin`, as diffusers' `FluxAttention`):
its weights live on the module, the computation in a processor, so `model.attn_processors` lists it and
`set_attn_processor` swaps it without touching a weight. Two processors compute the same function:
`LiTLinearAttnProcessor` ("torch", the default: any device, trainable) and `LiTLinearAttnTritonProcessor`
("triton": two fused kernels for CUDA inference, `linear_attention_triton.py`).
"""

import torch
import torch.nn.functional as F
from diffusers.models.attention import AttentionModuleMixin
from torch import nn

from ..choices import LINEAR_ATTENTION_BACKENDS, MODEL_SIZES

PAPER_HEADS = ", ".join(f"{size['linear_attention_heads']} for {name}" for name, size in MODEL_SIZES.items())


class LiTLinearAttnProcessor:
    """LiT's linear attention in PyTorch operations: any device, any dtype, trainable (the reference path)."""

    backend = "torch"

    def __call__(self, attn: "LiTLinearAttention", hidden_states: torch.Tensor, height: int, width: int):
        batch, tokens, dim = hidden_states.shape
        q, k, v = attn.project_qkv(hidden_states)  # (B, N, D) each, heads side by side: (B, N, h, d)
        # The DWC of all heads at once: (B, N, D) read as a channels-last (B, D, H, W) grid costs no copy, and the
        # head-shared kernel repeated over the heads makes one depth-wise conv over D channels.
        dwc = None
        if attn.dwc is not None:
            v_grid = v.view(batch, height, width, dim).permute(0, 3, 1, 2)  # (B, D, H, W), channels-last strides
            dwc = attn.dwc(v_grid)  # (B, D, H, W), through the module: diffusers' weight hooks see the call
            dwc = dwc.permute(0, 2, 3, 1).reshape(batch, tokens, dim)  # (B, N, D); a view when channels-last
        # q and k are this call's own: ReLU may overwrite them (the projections do not keep their outputs).
        out = _linear_attention_tokens(q, k, v, attn.heads, attn.eps, residual=dwc, owns_qk=True)  # (B, N, D)
        return attn.to_out[1](attn.to_out[0](out.to(v.dtype)))


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


class HeadSharedDepthwiseConv2d(nn.Conv2d):
    """LiT's DWC: a depth-wise conv with one kernel per head channel (`head_dim` channels), shared by the heads.

    It takes all heads at once, (B, heads * head_dim, H, W), as one depth-wise conv over every channel with the
    kernel repeated over the heads (a channels-last input costs no copy). A `nn.Conv2d` with its own weights, so
    that diffusers' layer hooks (layerwise casting, group offloading) cast and fetch them when it runs."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        heads = x.shape[1] // self.in_channels
        weight = self.weight.repeat(heads, 1, 1, 1)  # (D, 1, k, k)
        bias = None if self.bias is None else self.bias.repeat(heads)
        return F.conv2d(x, weight, bias, padding=self.padding, groups=x.shape[1])  # (B, D, H, W)


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
            self.dwc = HeadSharedDepthwiseConv2d(
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
        if self.fused_projections:  # three tensors of their own, so that ReLU may overwrite q and k in place
            q, k, v = self.to_qkv(hidden_states).chunk(3, dim=-1)
            return q.contiguous(), k.contiguous(), v.contiguous()
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


def linear_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """ReLU linear attention of (B, h, N, d) queries, keys and values -> (B, h, N, d), in float32 or float64."""
    batch, heads, tokens, head_dim = q.shape

    def tokens_first(t: torch.Tensor) -> torch.Tensor:
        return t.transpose(1, 2).reshape(batch, tokens, heads * head_dim)  # (B, N, h * d)

    out = _linear_attention_tokens(tokens_first(q), tokens_first(k), tokens_first(v), heads, eps)  # (B, N, h * d)
    return out.view(batch, tokens, heads, head_dim).transpose(1, 2)  # (B, h, N, d)


def _linear_attention_tokens(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    heads: int,
    eps: float,
    residual: torch.Tensor | None = None,
    owns_qk: bool = False,
) -> torch.Tensor:
    """
    ReLU linear attention of (B, N, h * d) queries, keys and values, heads side by side -> (B, N, h * d), plus
    `residual` (B, N, h * d) when given, in float32 (float64 for float64 inputs).

    Per head, O = (phi(q) / (phi(q) z + eps)) S with S = phi(k)^T v / N and z = mean phi(k): each step is one
    batched matrix product over strided (B, N, d) views of the token-major tensors, so no head is ever copied out
    and no N x N matrix is built. The rows of phi(q) are divided before the product, so that the product can add
    into `residual` in place. `owns_qk`: q and k may be overwritten (they are the caller's temporaries).
    """
    batch, tokens, dim = q.shape
    head_dim = dim // heads
    acc = torch.promote_types(q.dtype, torch.float32)  # float32, or float64 for float64 inputs
    with torch.autocast(q.device.type, enabled=False):  # autocast would take the matmuls back to 16 bits
        in_place = not (torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v)))
        q = q.to(acc) if owns_qk or q.dtype != acc else q.clone()  # .to copies 16-bit inputs: ours to overwrite
        k = k.to(acc) if owns_qk or k.dtype != acc else k.clone()
        v = v.to(acc)
        q, k = q.relu_(), k.relu_()  # autograd allows it: the projections save their inputs, not their outputs
        normaliser = k.mean(dim=1, keepdim=True).transpose(1, 2)  # (B, D, 1)
        if residual is None:
            out = q.new_zeros(batch, tokens, dim)
        else:
            out = residual.to(acc)  # the caller's own temporary: written in place
        for head in range(heads):
            cols = slice(head * head_dim, (head + 1) * head_dim)
            q_h, k_h, v_h = q[:, :, cols], k[:, :, cols], v[:, :, cols]  # (B, N, d), strided views
            state = torch.bmm(k_h.transpose(1, 2), v_h).div_(tokens)  # (B, d, d)
            denominator = torch.bmm(q_h, normaliser[:, cols]).add_(eps)  # (B, N, 1)
            q_h = q_h.div_(denominator) if in_place else q_h / denominator  # (B, N, d)
            out[:, :, cols].baddbmm_(q_h, state)  # out += (phi(q) / denominator) S, in place
        return out
