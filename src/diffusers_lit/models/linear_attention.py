"""LiT's self-attention: ReLU linear attention plus a depth-wise convolution on the values.

For each head, with phi = ReLU and the token grid of N = H * W tokens:

    O_i = phi(q_i)^T S / (phi(q_i)^T z + eps),   S = mean_j phi(k_j) v_j^T  (d x d),   z = mean_j phi(k_j)
    out = to_out(O + DWC(V))

Keys and values are contracted first, so the cost is O(N d^2) per head and no N x N matrix is ever built.
Means instead of sums keep S and z in range; both, and the division, are computed in float32 whatever the
input dtype. The DWC is one depth-wise `Conv2d` over a head's channels, shared by all heads (heads are
folded into the batch), applied to V laid out on the 2-D token grid.
"""

import torch
import torch.nn.functional as F
from torch import nn


class LiTLinearAttention(nn.Module):
    r"""
    ReLU linear self-attention with a depth-wise convolution (DWC) on the values.

    Parameters:
        dim (`int`): Width of the tokens, in and out.
        heads (`int`): Number of heads; `dim` must be divisible by it (head dim `d = dim // heads`).
        kernel_size (`int`, defaults to 5): Kernel of the DWC, odd.
        bias (`bool`, defaults to `True`): Bias of the query, key and value projections.
        out_bias (`bool`, defaults to `True`): Bias of the output projection.
        dropout (`float`, defaults to 0.0): Dropout after the output projection.
        eps (`float`, defaults to 1e-6): Added to the normaliser `phi(q)^T z`.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        kernel_size: int = 5,
        bias: bool = True,
        out_bias: bool = True,
        dropout: float = 0.0,
        eps: float = 1e-6,
    ):
        super().__init__()
        if heads < 1 or dim % heads != 0:
            raise ValueError(
                f"The width {dim} is not divisible by `linear_attention_heads={heads}`: choose a head count that "
                f"divides it (LiT uses 2 for S, 3 for B, 4 for L and XL)."
            )
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"`dwc_kernel_size` must be a positive odd number, got {kernel_size}.")
        self.heads = heads
        self.head_dim = dim // heads
        self.eps = eps

        self.to_q = nn.Linear(dim, dim, bias=bias)
        self.to_k = nn.Linear(dim, dim, bias=bias)
        self.to_v = nn.Linear(dim, dim, bias=bias)
        self.dwc = nn.Conv2d(self.head_dim, self.head_dim, kernel_size, padding=kernel_size // 2, groups=self.head_dim)
        self.to_out = nn.ModuleList([nn.Linear(dim, dim, bias=out_bias), nn.Dropout(dropout)])
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Fresh weights as LiT starts them: Xavier-uniform projections, zero biases, PyTorch's default DWC."""
        for linear in (self.to_q, self.to_k, self.to_v, self.to_out[0]):
            nn.init.xavier_uniform_(linear.weight)
            if linear.bias is not None:
                nn.init.zeros_(linear.bias)
        self.dwc.reset_parameters()

    def forward(self, hidden_states: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """(B, N, D) tokens of an `height x width` grid (N = height * width) -> (B, N, D)."""
        batch, tokens, dim = hidden_states.shape
        if tokens != height * width:
            raise ValueError(f"Got {tokens} tokens for a {height}x{width} grid; they must be equal in number.")
        h, d = self.heads, self.head_dim

        q = self.to_q(hidden_states).view(batch, tokens, h, d).transpose(1, 2)  # (B, h, N, d)
        k = self.to_k(hidden_states).view(batch, tokens, h, d).transpose(1, 2)  # (B, h, N, d)
        v = self.to_v(hidden_states).view(batch, tokens, h, d).transpose(1, 2)  # (B, h, N, d)

        out = linear_attention(q, k, v, eps=self.eps).to(v.dtype)  # (B, h, N, d)

        v_grid = v.reshape(batch * h, height, width, d).permute(0, 3, 1, 2)  # (B*h, d, H, W)
        dwc = self.dwc(v_grid).permute(0, 2, 3, 1).reshape(batch, h, tokens, d)  # (B, h, N, d)

        out = (out + dwc).transpose(1, 2).reshape(batch, tokens, dim)  # (B, N, D)
        return self.to_out[1](self.to_out[0](out))


def linear_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """ReLU linear attention of (B, h, N, d) queries, keys and values -> (B, h, N, d), in float32 or float64."""
    acc = torch.promote_types(q.dtype, torch.float32)  # float32, or float64 for float64 inputs
    with torch.autocast(q.device.type, enabled=False):  # autocast would take the matmuls back to 16 bits
        q, k, v = F.relu(q.to(acc)), F.relu(k.to(acc)), v.to(acc)
        state = torch.matmul(k.transpose(-1, -2), v) / k.shape[-2]  # (B, h, d, d)
        normaliser = k.mean(dim=-2, keepdim=True)  # (B, h, 1, d)
        denominator = (q * normaliser).sum(dim=-1, keepdim=True) + eps  # (B, h, N, 1)
        return torch.matmul(q, state) / denominator  # (B, h, N, d)
