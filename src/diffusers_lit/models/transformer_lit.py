"""LiTTransformer2DModel: a DiT / PixArt transformer whose self-attention is LiT's linear attention.

One class, two layouts chosen by `norm_type`, as in diffusers:
- "ada_norm_zero": DiT. Class labels, one timestep + class embedder shared by all blocks, adaLN-Zero per
  block, a final adaLN layer, learned sigma.
- "ada_norm_single": PixArt-alpha / Sigma. `adaln_single`, `caption_projection`, a `scale_shift_table` per
  block, softmax cross-attention `attn2` over the text tokens.
Everything except the self-attention (`attn1`, a `LiTLinearAttention`) is a diffusers building block with
diffusers' name, so that DiT and PixArt checkpoints map onto it with few renames.
"""

import math
from typing import Any

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.hooks._helpers import TransformerBlockMetadata, TransformerBlockRegistry
from diffusers.loaders import PeftAdapterMixin
from diffusers.models.attention import AttentionMixin, FeedForward
from diffusers.models.attention_processor import Attention
from diffusers.models.cache_utils import CacheMixin
from diffusers.models.embeddings import CombinedTimestepLabelEmbeddings, PatchEmbed, PixArtAlphaTextProjection
from diffusers.models.modeling_outputs import Transformer2DModelOutput
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.normalization import AdaLayerNormSingle, AdaLayerNormZero
from torch import nn

from ..choices import MODEL_SIZES
from .linear_attention import PROCESSORS, LiTLinearAttention, LiTLinearAttnProcessor, check_backend

NORM_TYPES = ("ada_norm_zero", "ada_norm_single")


class LiTTransformerBlock(nn.Module):
    r"""
    A LiT block: linear self-attention (+ softmax cross-attention in the text layout) and a feed-forward,
    modulated by adaLN-Zero ("ada_norm_zero") or by a scale-shift table ("ada_norm_single"). With
    `softmax_attention=True` the self-attention is the teacher's: diffusers' softmax `Attention` with
    `num_attention_heads` heads (a hybrid model's softmax block).

    `forward(hidden_states (B, N, D), conditioning, height, width, ...)`, where `conditioning` is the shared
    timestep + class embedding (B, D) for "ada_norm_zero", or `adaln_single`'s (B, 6 * D) for "ada_norm_single".
    """

    def __init__(
        self,
        dim: int,
        num_attention_heads: int,
        attention_head_dim: int,
        linear_attention_heads: int,
        dwc_kernel_size: int = 5,
        dropout: float = 0.0,
        cross_attention_dim: int | None = None,
        activation_fn: str = "gelu-approximate",
        attention_bias: bool = True,
        upcast_attention: bool = False,
        norm_type: str = "ada_norm_zero",
        norm_elementwise_affine: bool = False,
        norm_eps: float = 1e-5,
        softmax_attention: bool = False,
    ):
        super().__init__()
        self.norm_type = norm_type
        if norm_type == "ada_norm_zero":
            self.norm1 = AdaLayerNormZero(dim)  # modulation only: the embedder is shared, on the model
        else:
            self.norm1 = nn.LayerNorm(dim, eps=norm_eps, elementwise_affine=norm_elementwise_affine)
            self.scale_shift_table = nn.Parameter(torch.randn(6, dim) / dim**0.5)

        # diffusers' softmax attention with the teacher's heads: a hybrid's self-attention, and the cross-attention.
        softmax = dict(
            query_dim=dim,
            heads=num_attention_heads,
            dim_head=attention_head_dim,
            dropout=dropout,
            bias=attention_bias,
            upcast_attention=upcast_attention,
        )
        if softmax_attention:
            self.attn1 = Attention(**softmax)
        else:
            self.attn1 = LiTLinearAttention(
                dim, linear_attention_heads, kernel_size=dwc_kernel_size, bias=attention_bias, dropout=dropout
            )

        self.attn2 = None
        if cross_attention_dim is not None:
            self.attn2 = Attention(**softmax, cross_attention_dim=cross_attention_dim)

        self.norm2 = nn.LayerNorm(dim, eps=norm_eps, elementwise_affine=norm_elementwise_affine)
        self.ff = FeedForward(dim, dropout=dropout, activation_fn=activation_fn)

    def forward(
        self,
        hidden_states: torch.Tensor,
        conditioning: torch.Tensor,
        height: int,
        width: int,
        encoder_hidden_states: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        cross_attention_kwargs: dict[str, Any] | None = None,
    ) -> torch.Tensor:
        if self.norm_type == "ada_norm_zero":
            norm_hidden_states, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.norm1(hidden_states, emb=conditioning)
            gate_msa, shift_mlp, scale_mlp, gate_mlp = (x[:, None] for x in (gate_msa, shift_mlp, scale_mlp, gate_mlp))
        else:
            modulation = self.scale_shift_table[None] + conditioning.reshape(-1, 6, hidden_states.shape[-1])
            shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = modulation.chunk(6, dim=1)  # (B, 1, D)
            norm_hidden_states = self.norm1(hidden_states) * (1 + scale_msa) + shift_msa

        if isinstance(self.attn1, LiTLinearAttention):
            attention = self.attn1(norm_hidden_states, height, width)  # (B, N, D)
        else:
            attention = self.attn1(norm_hidden_states)  # (B, N, D), softmax over all N tokens
        hidden_states = hidden_states + gate_msa * attention

        if self.attn2 is not None:
            hidden_states = hidden_states + self.attn2(
                hidden_states,
                encoder_hidden_states=encoder_hidden_states,
                attention_mask=encoder_attention_mask,
                **(cross_attention_kwargs or {}),
            )

        norm_hidden_states = self.norm2(hidden_states) * (1 + scale_mlp) + shift_mlp
        return hidden_states + gate_mlp * self.ff(norm_hidden_states)  # (B, N, D)


# diffusers' block-level cache hooks (first-block cache) read a block's output through this registry.
TransformerBlockRegistry.register(LiTTransformerBlock, TransformerBlockMetadata(return_hidden_states_index=0))


class LiTTransformer2DModel(ModelMixin, AttentionMixin, ConfigMixin, PeftAdapterMixin, CacheMixin):
    r"""
    LiT: a DiT / PixArt diffusion transformer with ReLU linear self-attention and a depth-wise convolution.

    The configuration keeps DiT's and PixArt's argument names; LiT adds two.

    Parameters:
        num_attention_heads (`int`, defaults to 16): Heads of the teacher's attention. Width is
            `num_attention_heads * attention_head_dim`; the cross-attention (text layout) uses these heads.
        attention_head_dim (`int`, defaults to 72): Channels of each of those heads.
        in_channels (`int`, defaults to 4): Channels of the input.
        out_channels (`int`, *optional*): Channels of the output; defaults to `2 * in_channels` (learned sigma).
        num_layers (`int`, defaults to 28): Number of blocks.
        dropout (`float`, defaults to 0.0): Dropout in attention and feed-forward.
        cross_attention_dim (`int`, *optional*): Width of the text tokens seen by `attn2` (text layout): the model
            width when `caption_channels` is set.
        attention_bias (`bool`, defaults to `True`): Bias in the attention projections.
        sample_size (`int`, defaults to 32): Side of the (latent) image seen in training; sets the position grid.
        patch_size (`int`, defaults to 2): Side of a patch.
        activation_fn (`str`, defaults to `"gelu-approximate"`): Activation of the feed-forward.
        num_embeds_ada_norm (`int`, defaults to 1000): Number of classes ("ada_norm_zero"); the id
            `num_embeds_ada_norm` is the null class of classifier-free guidance.
        upcast_attention (`bool`, defaults to `False`): Upcast the cross-attention scores.
        norm_type (`str`, defaults to `"ada_norm_zero"`): `"ada_norm_zero"` (DiT) or `"ada_norm_single"` (PixArt).
        norm_elementwise_affine (`bool`, defaults to `False`): Affine parameters in the block norms.
        norm_eps (`float`, defaults to 1e-5): Epsilon of the block norms.
        interpolation_scale (`float`, *optional*): Scale of the sin-cos position grid. `None`: the layout's diffusers
            value (DiT: 1, PixArt: `max(sample_size // 64, 1)`).
        use_additional_conditions (`bool`, *optional*): Resolution / aspect-ratio conditioning ("ada_norm_single");
            defaults to `sample_size == 128`, as PixArt.
        caption_channels (`int`, *optional*): Width of the text encoder's output, projected to the model width.
        linear_attention_heads (`int`, defaults to 4): Heads of the linear self-attention (LiT: 2 S, 3 B, 4 L/XL).
        dwc_kernel_size (`int`, defaults to 5): Kernel of the depth-wise convolution on the values; 0: none.
        per_block_embedders (`bool`, defaults to `False`): "ada_norm_zero" only: one timestep + class embedder per
            block (as diffusers' DiT stores them; for a DiT whose copies were trained apart), instead of one shared.
        timestep_freq_shift (`float`, *optional*): The sinusoidal timestep embedding's frequencies are
            exp(-ln(10000) i / (half - shift)). `None`: the layout's diffusers value (DiT: 1, PixArt: 0). An original
            facebookresearch/DiT checkpoint was trained with 0, and conversion sets it so.
        softmax_attention_blocks (`list[int]`, *optional*): Blocks that keep softmax self-attention
            (diffusers' `Attention`, `num_attention_heads` heads, the teacher's weights after conversion): a hybrid
            LiT. `None` or empty: every block is linear (the paper's LiT).
    """

    _supports_gradient_checkpointing = True
    _no_split_modules = ["LiTTransformerBlock", "PatchEmbed"]
    _repeated_blocks = ["LiTTransformerBlock"]  # compile_repeated_blocks compiles one block, used by all
    _skip_layerwise_casting_patterns = ["pos_embed", "norm", "adaln_single", "time_class_embed"]

    @register_to_config
    def __init__(
        self,
        num_attention_heads: int = 16,
        attention_head_dim: int = 72,
        in_channels: int = 4,
        out_channels: int | None = None,
        num_layers: int = 28,
        dropout: float = 0.0,
        cross_attention_dim: int | None = None,
        attention_bias: bool = True,
        sample_size: int = 32,
        patch_size: int = 2,
        activation_fn: str = "gelu-approximate",
        num_embeds_ada_norm: int | None = 1000,
        upcast_attention: bool = False,
        norm_type: str = "ada_norm_zero",
        norm_elementwise_affine: bool = False,
        norm_eps: float = 1e-5,
        interpolation_scale: float | None = None,
        use_additional_conditions: bool | None = None,
        caption_channels: int | None = None,
        linear_attention_heads: int = 4,
        dwc_kernel_size: int = 5,
        per_block_embedders: bool = False,
        timestep_freq_shift: float | None = None,
        softmax_attention_blocks: list[int] | None = None,
    ):
        super().__init__()
        inner_dim = num_attention_heads * attention_head_dim
        if norm_type not in NORM_TYPES:
            raise ValueError(f"`norm_type` must be one of {NORM_TYPES} (DiT or PixArt layout), got {norm_type!r}.")
        if sample_size % patch_size != 0:
            raise ValueError(
                f"`sample_size={sample_size}` is not divisible by `patch_size={patch_size}`: the patch grid must "
                "cover the sample exactly."
            )
        if inner_dim % linear_attention_heads != 0:
            raise ValueError(
                f"The width {inner_dim} (num_attention_heads * attention_head_dim) is not divisible by "
                f"`linear_attention_heads={linear_attention_heads}`: choose a head count that divides it."
            )
        if norm_type == "ada_norm_zero" and num_embeds_ada_norm is None:
            raise ValueError("The class layout ('ada_norm_zero') needs `num_embeds_ada_norm`, the number of classes.")
        if norm_type == "ada_norm_single" and cross_attention_dim is None:
            raise ValueError(
                "The text layout ('ada_norm_single') needs `cross_attention_dim` for its cross-attention."
            )
        if caption_channels is not None and cross_attention_dim not in (None, inner_dim):
            raise ValueError(
                f"`caption_channels` projects the captions to the model width {inner_dim}, so `cross_attention_dim` "
                f"must be {inner_dim}, not {cross_attention_dim} (or leave `caption_channels` unset to feed the "
                f"cross-attention {cross_attention_dim}-wide tokens directly)."
            )
        if timestep_freq_shift is not None and not math.isfinite(timestep_freq_shift):
            raise ValueError(f"`timestep_freq_shift` must be a finite number, got {timestep_freq_shift}.")
        if norm_type == "ada_norm_single" and per_block_embedders:
            raise ValueError("`per_block_embedders` is for the class layout ('ada_norm_zero'), not PixArt's.")
        if norm_type == "ada_norm_zero" and (cross_attention_dim is not None or caption_channels is not None):
            raise ValueError(
                "The class layout ('ada_norm_zero') has no text conditioning: leave `cross_attention_dim` and "
                "`caption_channels` unset, or use norm_type='ada_norm_single'."
            )

        softmax_blocks = check_softmax_blocks(softmax_attention_blocks or (), num_layers)
        self.inner_dim = inner_dim
        self.out_channels = 2 * in_channels if out_channels is None else out_channels
        self.register_to_config(out_channels=self.out_channels)  # resolved, for pipelines that read the config
        self.gradient_checkpointing = False
        if interpolation_scale is None:  # diffusers' DiT keeps PatchEmbed's 1; PixArt grows it with the size
            interpolation_scale = 1 if norm_type == "ada_norm_zero" else max(sample_size // 64, 1)
        self.pos_embed = PatchEmbed(
            height=sample_size,
            width=sample_size,
            patch_size=patch_size,
            in_channels=in_channels,
            embed_dim=inner_dim,
            interpolation_scale=interpolation_scale,
        )

        if norm_type == "ada_norm_zero":
            # One timestep + class embedder for all blocks (DiT), or one per block; the extra row is the null class.
            count = num_layers if per_block_embedders else 1
            embedders = [CombinedTimestepLabelEmbeddings(num_embeds_ada_norm, inner_dim) for _ in range(count)]
            for embedder in embedders:
                embedder.class_embedder.dropout_prob = 0.0  # label dropout belongs to the training loop
            self.time_class_embed = nn.ModuleList(embedders) if per_block_embedders else embedders[0]
            time_projs = [embedder.time_proj for embedder in embedders]
        else:
            if use_additional_conditions is None:
                use_additional_conditions = sample_size == 128
            self.use_additional_conditions = use_additional_conditions
            self.adaln_single = AdaLayerNormSingle(inner_dim, use_additional_conditions=use_additional_conditions)
            time_projs = [self.adaln_single.emb.time_proj]
            self.caption_projection = None
            if caption_channels is not None:
                self.caption_projection = PixArtAlphaTextProjection(caption_channels, hidden_size=inner_dim)

        if timestep_freq_shift is not None:
            for time_proj in time_projs:
                time_proj.downscale_freq_shift = timestep_freq_shift

        self.transformer_blocks = nn.ModuleList(
            [
                LiTTransformerBlock(
                    inner_dim,
                    num_attention_heads,
                    attention_head_dim,
                    linear_attention_heads,
                    dwc_kernel_size=dwc_kernel_size,
                    dropout=dropout,
                    cross_attention_dim=cross_attention_dim,
                    activation_fn=activation_fn,
                    attention_bias=attention_bias,
                    upcast_attention=upcast_attention,
                    norm_type=norm_type,
                    norm_elementwise_affine=norm_elementwise_affine,
                    norm_eps=norm_eps,
                    softmax_attention=index in softmax_blocks,
                )
                for index in range(num_layers)
            ]
        )

        self.norm_out = nn.LayerNorm(inner_dim, elementwise_affine=False, eps=1e-6)
        if norm_type == "ada_norm_zero":
            self.proj_out_1 = nn.Linear(inner_dim, 2 * inner_dim)
            self.proj_out_2 = nn.Linear(inner_dim, patch_size * patch_size * self.out_channels)
        else:
            self.scale_shift_table = nn.Parameter(torch.randn(2, inner_dim) / inner_dim**0.5)
            self.proj_out = nn.Linear(inner_dim, patch_size * patch_size * self.out_channels)

    def set_linear_attention_backend(self, backend: str) -> None:
        """
        Compute every block's linear self-attention (`attn1`) with `backend`: "torch" (`LiTLinearAttnProcessor`, the
        default: any device, trainable) or "triton" (`LiTLinearAttnTritonProcessor`: two fused kernels, CUDA
        inference only), through diffusers' `set_attn_processor`; the cross-attention keeps its processor. Not saved
        with the model.
        """
        check_backend(backend)
        linear = self._linear_attention_processor_names()
        self.set_attn_processor(
            {
                name: PROCESSORS[backend]() if name in linear else processor
                for name, processor in self.attn_processors.items()
            }
        )

    def _linear_attention_processor_names(self) -> set[str]:
        """The `attn_processors` names of the linear self-attentions (not a hybrid's softmax blocks)."""
        return {f"{name}.processor" for name, module in self.named_modules() if isinstance(module, LiTLinearAttention)}

    def set_attn_processor(self, processor: Any) -> None:
        """diffusers' `set_attn_processor` (one processor for every layer, or a dict by `attn_processors`' names),
        with a dict's names checked before any processor is set, and the dict left as it was given."""
        if isinstance(processor, dict) and len(processor) == len(self.attn_processors):  # diffusers checks counts
            unknown = sorted(set(processor) - set(self.attn_processors))
            if unknown:
                missing = sorted(set(self.attn_processors) - set(processor))
                raise ValueError(
                    f"The processor dict names {unknown}, which are not attention layers of this model (missing: "
                    f"{missing}): use the names of `attn_processors`, e.g. {next(iter(self.attn_processors))!r}."
                )
            processor = dict(processor)  # diffusers takes the processors out of the dict it is given
        super().set_attn_processor(processor)

    def fuse_qkv_projections(self) -> None:
        """diffusers' `fuse_qkv_projections`, refused while LoRA adapters are loaded: the fused projections are new
        layers that the adapters of to_q / to_k / to_v would no longer reach."""
        if getattr(self, "peft_config", None):
            raise ValueError(
                f"The transformer holds LoRA adapters ({', '.join(self.peft_config)}), which fused projections would "
                "drop: merge them first (`pipe.fuse_lora()`, then `pipe.unload_lora_weights()`), then fuse."
            )
        super().fuse_qkv_projections()

    def set_default_attn_processor(self) -> None:
        """The default processors: `LiTLinearAttnProcessor` for the linear attentions, diffusers' `AttnProcessor2_0`
        for the softmax ones (attn2, a hybrid's softmax blocks)."""
        from diffusers.models.attention_processor import AttnProcessor2_0

        linear = self._linear_attention_processor_names()
        self.set_attn_processor(
            {name: LiTLinearAttnProcessor() if name in linear else AttnProcessor2_0() for name in self.attn_processors}
        )

    def forward(
        self,
        hidden_states: torch.Tensor,
        timestep: torch.Tensor | float | None = None,
        class_labels: torch.LongTensor | None = None,
        *,
        encoder_hidden_states: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        added_cond_kwargs: dict[str, torch.Tensor] | None = None,
        attention_mask: torch.Tensor | None = None,
        cross_attention_kwargs: dict[str, Any] | None = None,
        return_dict: bool = True,
    ) -> Transformer2DModelOutput | tuple[torch.Tensor]:
        """
        Denoise `hidden_states` (B, C, H, W) at `timestep` (scalar or (B,)) -> `sample` (B, out_channels, H, W).

        Class layout: `class_labels` (B,) in [0, num_embeds_ada_norm] (the last id is the null class). Their
        values are not read here (on a GPU that would wait for the device at every step): the pipelines check them
        before their denoising loop.
        Text layout: `encoder_hidden_states` (B, L, caption_channels), `encoder_attention_mask` (B, L) with
        1 = keep, and `added_cond_kwargs` {"resolution", "aspect_ratio"} when `use_additional_conditions`.
        The arguments are those of diffusers' `DiTTransformer2DModel` and `PixArtTransformer2DModel`.
        """
        self._check_inputs(
            hidden_states, timestep, class_labels, encoder_hidden_states, added_cond_kwargs, attention_mask
        )
        batch = hidden_states.shape[0]
        patch = self.config.patch_size
        height, width = hidden_states.shape[-2] // patch, hidden_states.shape[-1] // patch
        timestep = torch.as_tensor(timestep, device=hidden_states.device).reshape(-1).expand(batch)

        # 1. Input: patch and position embeddings, then the conditioning (timestep + class, or timestep + caption)
        hidden_states = self.pos_embed(hidden_states)  # (B, N, D)
        if self.config.norm_type == "ada_norm_zero":
            embedders = self.time_class_embed if self.config.per_block_embedders else [self.time_class_embed]
            conditionings = [embed(timestep, class_labels, hidden_dtype=hidden_states.dtype) for embed in embedders]
            embedded = conditionings[0]  # (B, D); the final layer's, as in diffusers' DiT (block 0's embedder)
        else:
            conditioning, embedded = self.adaln_single(
                timestep, added_cond_kwargs, batch_size=batch, hidden_dtype=hidden_states.dtype
            )  # (B, 6 D), (B, D)
            if self.caption_projection is not None:
                encoder_hidden_states = self.caption_projection(encoder_hidden_states)  # (B, L, D)
            if encoder_attention_mask is not None and encoder_attention_mask.ndim == 2:
                # (B, L) keep mask -> (B, 1, L) additive bias, as diffusers' PixArt.
                encoder_attention_mask = (1 - encoder_attention_mask.to(hidden_states.dtype)) * -10000.0
                encoder_attention_mask = encoder_attention_mask.unsqueeze(1)
            conditionings = [conditioning]

        # 2. Blocks
        for index, block in enumerate(self.transformer_blocks):
            args = (
                hidden_states,
                conditionings[index if len(conditionings) > 1 else 0],
                height,
                width,
                encoder_hidden_states,
                encoder_attention_mask,
                cross_attention_kwargs,
            )
            if torch.is_grad_enabled() and self.gradient_checkpointing:
                hidden_states = self._gradient_checkpointing_func(block, *args)
            else:
                hidden_states = block(*args)

        # 3. Output: the final modulated norm and linear layer, then patches back to an image
        if self.config.norm_type == "ada_norm_zero":
            shift, scale = self.proj_out_1(F.silu(embedded)).chunk(2, dim=1)  # (B, D) each
            hidden_states = self.norm_out(hidden_states) * (1 + scale[:, None]) + shift[:, None]
            hidden_states = self.proj_out_2(hidden_states)  # (B, N, p * p * C_out)
        else:
            shift, scale = (self.scale_shift_table[None] + embedded[:, None]).chunk(2, dim=1)  # (B, 1, D) each
            hidden_states = self.norm_out(hidden_states) * (1 + scale) + shift
            hidden_states = self.proj_out(hidden_states)  # (B, N, p * p * C_out)
        output = self.unpatchify(hidden_states, height, width)  # (B, C_out, H, W)
        if not return_dict:
            return (output,)
        return Transformer2DModelOutput(sample=output)

    def unpatchify(self, tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """(B, height * width, p * p * C) patch tokens -> (B, C, height * p, width * p) image."""
        p, c = self.config.patch_size, self.out_channels
        tokens = tokens.reshape(-1, height, width, p, p, c)
        return torch.einsum("nhwpqc->nchpwq", tokens).reshape(-1, c, height * p, width * p)

    def _check_inputs(
        self, hidden_states, timestep, class_labels, encoder_hidden_states, added_cond_kwargs, attention_mask
    ) -> None:
        config = self.config
        if hidden_states.ndim != 4 or hidden_states.shape[1] != config.in_channels:
            raise ValueError(
                f"`hidden_states` must be (batch, {config.in_channels}, height, width), "
                f"got {tuple(hidden_states.shape)}."
            )
        height, width = hidden_states.shape[-2:]
        if height % config.patch_size or width % config.patch_size:
            raise ValueError(
                f"Height and width ({height}x{width}) must be multiples of the patch size {config.patch_size}."
            )
        if timestep is None:
            raise ValueError("`timestep` is required: a number or a tensor of shape (batch,).")
        if attention_mask is not None:
            raise ValueError(
                "LiT's linear self-attention takes no `attention_mask`; "
                "pass the text mask as `encoder_attention_mask`."
            )
        if config.norm_type == "ada_norm_zero":
            if encoder_hidden_states is not None:
                raise ValueError(
                    "This is a class-conditional LiT ('ada_norm_zero'): it takes `class_labels`, not "
                    "`encoder_hidden_states`. Use a text-to-image LiT ('ada_norm_single') for prompts."
                )
            if class_labels is None:
                raise ValueError("This is a class-conditional LiT: pass `class_labels` of shape (batch,).")
            if class_labels.shape != (hidden_states.shape[0],):
                raise ValueError(
                    f"`class_labels` must have shape ({hidden_states.shape[0]},), got {tuple(class_labels.shape)}."
                )
        else:
            if class_labels is not None:
                raise ValueError(
                    "This is a text-to-image LiT ('ada_norm_single'): it takes `encoder_hidden_states`, not "
                    "`class_labels`. Use a class-conditional LiT ('ada_norm_zero') for labels."
                )
            if encoder_hidden_states is None:
                raise ValueError(
                    "This is a text-to-image LiT: pass `encoder_hidden_states` (batch, tokens, channels)."
                )
            if self.use_additional_conditions and added_cond_kwargs is None:
                raise ValueError(
                    "This model is conditioned on resolution and aspect ratio: pass `added_cond_kwargs` with "
                    "'resolution' (batch, 2) and 'aspect_ratio' (batch, 1)."
                )
            expected = config.caption_channels or config.cross_attention_dim
            if encoder_hidden_states.ndim != 3 or encoder_hidden_states.shape[-1] != expected:
                raise ValueError(
                    f"`encoder_hidden_states` must be (batch, tokens, {expected}) to match `caption_channels`, got "
                    f"{tuple(encoder_hidden_states.shape)}: use the text encoder this model was trained with."
                )


def check_softmax_blocks(blocks, num_layers: int) -> set[int]:
    """Refuse a `softmax_attention_blocks` that is not distinct block indices in [0, num_layers), or all of them."""
    blocks = list(blocks)
    if any(isinstance(b, bool) or not isinstance(b, int) or not 0 <= b < num_layers for b in blocks):
        raise ValueError(f"`softmax_attention_blocks` must be block indices in [0, {num_layers - 1}], got {blocks}.")
    if len(set(blocks)) != len(blocks):
        raise ValueError(f"`softmax_attention_blocks` names a block twice: {blocks}; give each block once.")
    if num_layers and len(blocks) == num_layers:
        raise ValueError(
            f"`softmax_attention_blocks` names all {num_layers} blocks: that is the softmax teacher, not a LiT. "
            "Leave at least one block linear."
        )
    return set(blocks)


# The paper's models (`MODEL_SIZES`, patch 2): DiT's layout, and the PixArt-Sigma-XL student.
LIT_PRESETS: dict[str, dict[str, Any]] = {
    **{f"LiT-{name}/2": dict(size) for name, size in MODEL_SIZES.items()},
    "LiT-PixArt-Sigma-XL/2": dict(
        **MODEL_SIZES["XL"],
        norm_type="ada_norm_single",
        out_channels=8,
        sample_size=128,
        interpolation_scale=2,
        norm_eps=1e-6,
        cross_attention_dim=1152,
        caption_channels=4096,
        use_additional_conditions=False,
    ),
}


def lit_preset(name: str, **overrides: Any) -> LiTTransformer2DModel:
    """A randomly initialised LiT of the paper's sizes (`LIT_PRESETS`), e.g. `lit_preset("LiT-XL/2")`."""
    if name not in LIT_PRESETS:
        raise ValueError(f"Unknown preset {name!r}; choose one of {sorted(LIT_PRESETS)}.")
    return LiTTransformer2DModel(**{**LIT_PRESETS[name], **overrides})
