"""The FLOP model of the benchmark's blocks and models.

FLOPs count 2 per multiply-add of every matrix product and convolution; element-wise work (norms, activations,
divisions, softmax) is not counted. The floor of a row is its FLOPs divided by the matrix-multiply rate measured in
the same run (on the same device and dtype), so measured / floor says how far from matmul speed a row runs.
"""

from .options import ARCHS, MODEL_ARCHS, BenchSize

PATCH, IN_CHANNELS, OUT_CHANNELS = 2, 4, 8  # latent diffusion with learned sigma, as DiT / PixArt
TEXT_TOKENS = 300  # PixArt-Sigma's and Sana's caption length
CAPTION_CHANNELS = {"lit-t2i": 4096, "pixart": 4096, "sana": 2304}  # T5-XXL, Gemma-2-2B
SANA_HEAD_DIM = 32
DWC_KERNEL = 5


def tokens_of_resolution(resolution: int) -> int:
    """Pixels per side -> tokens: an 8x VAE and patch 2 (256 px -> 256 tokens, 2048 px -> 16,384)."""
    return (resolution // 8 // PATCH) ** 2


def block_flops(arch: str, size: BenchSize, tokens: int, batch: int = 1, text_tokens: int = TEXT_TOKENS) -> int:
    """FLOPs (2 per multiply-add) of one forward of a block (or of its self-attention, for "*-attn")."""
    n, w, t = tokens, size.width, text_tokens
    lit_attn = 8 * n * w * w + 4 * n * w * (w // size.lit_heads) + 2 * n * w + 2 * DWC_KERNEL**2 * n * w
    softmax_attn = 8 * n * w * w + 4 * n * n * w  # projections + QK^T + PV
    cross_attn = 4 * n * w * w + 4 * t * w * w + 4 * n * t * w  # q, out of the image; k, v of the text; scores
    ff = 16 * n * w * w  # 4x GELU MLP
    modulation = 2 * w * 6 * w  # adaLN-Zero: SiLU -> linear(D, 6D)
    timestep_mlp = 2 * (256 * w + w * w)  # the sinusoid -> D -> D embedder (DiT repeats it in every block)
    if arch == "lit-attn":
        flops = lit_attn
    elif arch == "dit-attn":
        flops = softmax_attn
    elif arch == "lit":
        flops = lit_attn + ff + modulation
    elif arch == "dit":
        flops = softmax_attn + ff + modulation + timestep_mlp
    elif arch == "lit-t2i":
        flops = lit_attn + cross_attn + ff
    elif arch == "pixart":
        flops = softmax_attn + cross_attn + ff
    elif arch == "sana":
        hidden = int(2.5 * w)  # GLUMBConv: 1x1 to 2 * hidden, depth-wise 3x3, gate, 1x1 back
        sana_attn = 8 * n * w * w + 4 * n * w * (SANA_HEAD_DIM + 1)  # V padded with a row of ones
        flops = sana_attn + cross_attn + 2 * n * w * 2 * hidden + 2 * 9 * n * 2 * hidden + 2 * n * hidden * w
    else:
        raise ValueError(f"Unknown arch {arch!r}; choose one of {ARCHS}.")
    return batch * flops


def model_flops(
    arch: str,
    size: BenchSize,
    tokens: int,
    batch: int = 1,
    text_tokens: int = TEXT_TOKENS,
    softmax_blocks: int = 0,
) -> int:
    """FLOPs of a whole-model forward: `depth` blocks, patch embedding, conditioning and final layer. For LiT
    ("lit", "lit-t2i"), `softmax_blocks` of the blocks keep softmax self-attention (a hybrid)."""
    if arch not in MODEL_ARCHS:
        raise ValueError(f"{arch!r} has no whole model; choose one of {MODEL_ARCHS}.")
    if softmax_blocks and (arch not in ("lit", "lit-t2i") or not 0 < softmax_blocks < size.depth):
        raise ValueError(
            f"A hybrid is a LiT with 1 to {size.depth - 1} softmax blocks; got {arch!r}, {softmax_blocks}."
        )
    n, w = tokens, size.width
    patches = 2 * n * w * PATCH * PATCH * IN_CHANNELS + 2 * n * w * PATCH * PATCH * OUT_CHANNELS  # embed + unembed
    timestep_mlp = 2 * (256 * w + w * w)
    if arch in ("lit", "dit"):
        extra = patches + timestep_mlp + 2 * w * 2 * w  # shared embedder (LiT) or block 0's (DiT); final adaLN
    else:
        caption = CAPTION_CHANNELS[arch]
        extra = patches + timestep_mlp + 2 * w * 6 * w + 2 * text_tokens * (caption * w + w * w)  # adaln_single
    swap = block_flops("dit-attn", size, tokens, batch) - block_flops("lit-attn", size, tokens, batch)
    return size.depth * block_flops(arch, size, tokens, batch, text_tokens) + softmax_blocks * swap + batch * extra
