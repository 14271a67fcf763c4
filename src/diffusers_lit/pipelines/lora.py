"""LoRA adapters of a LiT pipeline's transformer, in diffusers' LoRA file format (pytorch_lora_weights.safetensors).

diffusers' `SanaLoraLoaderMixin` loads, saves, fuses and unloads adapters of a pipeline's `transformer` with
nothing specific to Sana's model: LiT's pipelines reuse it, so LiT adapters travel like any diffusers LoRA.
"""

import math

from diffusers.loaders.lora_pipeline import SanaLoraLoaderMixin

# The layers adapters train by default: the projections of the self-attention (LiT's linear attention) and of the
# cross-attention, which share these names.
LORA_TARGET_MODULES = ("to_q", "to_k", "to_v", "to_out.0")


class LiTLoraLoaderMixin(SanaLoraLoaderMixin):
    """`load_lora_weights`, `save_lora_weights`, `fuse_lora`, `unfuse_lora`, `unload_lora_weights`, `set_adapters`
    for the LiT transformer (a `PeftAdapterMixin`), as diffusers' Sana pipeline has them."""

    def load_lora_weights(self, pretrained_model_name_or_path_or_dict, adapter_name: str | None = None, **kwargs):
        """diffusers' `load_lora_weights`, refusing weights that adapt none of this transformer's layers (an adapter
        of another architecture)."""
        if any(getattr(module, "fused_projections", False) for module in self.transformer.modules()):
            raise ValueError(
                "The transformer's q / k / v projections are fused (`fuse_qkv_projections`): adapters of to_q / to_k "
                "/ to_v would not reach them. Call `pipe.transformer.unfuse_qkv_projections()` first."
            )
        before = set(self.transformer.peft_config) if getattr(self.transformer, "peft_config", None) else set()
        state_dict = pretrained_model_name_or_path_or_dict
        if not isinstance(state_dict, dict):
            state_dict = self.lora_state_dict(state_dict, **{k: v for k, v in kwargs.items() if k != "hotswap"})
        names = {key.removeprefix("transformer.").split(".lora_")[0] for key in state_dict if "lora" in key}
        modules = dict(self.transformer.named_modules())
        unknown = sorted(name for name in names if name not in modules)
        if unknown:
            raise ValueError(
                f"The LoRA weights adapt layers this {type(self.transformer).__name__} does not have ({unknown[:3]}"
                f"{' ...' if len(unknown) > 3 else ''}): they belong to another architecture."
            )
        super().load_lora_weights(dict(state_dict), adapter_name=adapter_name, **kwargs)
        if set(getattr(self.transformer, "peft_config", {})) == before:
            raise ValueError("The LoRA weights added no adapter to the transformer.")

    def fuse_lora(self, components: list[str] | None = None, lora_scale: float = 1.0, **kwargs):
        """diffusers' `fuse_lora`, refusing a non-finite `lora_scale` (it would write NaN into the weights)."""
        if not math.isfinite(lora_scale):
            raise ValueError(f"`lora_scale` must be a finite number, got {lora_scale}.")
        super().fuse_lora(components=components or ["transformer"], lora_scale=lora_scale, **kwargs)
