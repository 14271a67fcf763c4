"""LiTTextToImagePipeline: text-to-image generation with a LiT (or a plain diffusers PixArt) transformer."""

from typing import Any

from diffusers import AutoencoderKL, PixArtSigmaPipeline, PixArtTransformer2DModel
from diffusers.schedulers import SchedulerMixin
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..hub import LiTHubMixin
from ..models import LiTTransformer2DModel

BINNED_SAMPLE_SIZES = (32, 64, 128, 256)  # latent sizes of PixArt's aspect-ratio tables (256 to 2048 px)


class LiTTextToImagePipeline(LiTHubMixin, PixArtSigmaPipeline):
    r"""
    Text-to-image generation with a LiT transformer in the PixArt layout, used as diffusers' PixArt-Sigma pipeline:
    prompts and negative prompts, `prompt_embeds` / `negative_prompt_embeds` with their attention masks,
    `max_sequence_length`, resolution binning, guidance, output types "pil", "np", "pt" and "latent".

    Parameters:
        tokenizer ([`PreTrainedTokenizerBase`]): The text encoder's tokenizer.
        text_encoder ([`PreTrainedModel`]): T5, or any encoder whose hidden size is the transformer's
            `caption_channels`.
        vae ([`AutoencoderKL`]): Decodes latents into images.
        transformer ([`LiTTransformer2DModel`] or [`PixArtTransformer2DModel`]): A text layout ("ada_norm_single")
            transformer without resolution micro-conditions (PixArt-Sigma, or PixArt-alpha below 1024 px).
        scheduler ([`SchedulerMixin`]): Any diffusers scheduler.
    """

    pipeline_tag = "text-to-image"
    task = "text-to-image generation"

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        text_encoder: PreTrainedModel,
        vae: AutoencoderKL,
        transformer: LiTTransformer2DModel | PixArtTransformer2DModel,
        scheduler: SchedulerMixin,
    ):
        if getattr(transformer.config, "norm_type", None) != "ada_norm_single":
            raise ValueError(
                f"LiTTextToImagePipeline needs a text-to-image transformer (norm_type='ada_norm_single'), got one "
                f"with norm_type={getattr(transformer.config, 'norm_type', None)!r}: use LiTPipeline for class labels."
            )
        if getattr(transformer, "use_additional_conditions", False):
            raise ValueError(
                "This transformer is conditioned on resolution and aspect ratio (PixArt-alpha at 1024 px), which "
                "the PixArt-Sigma sampling loop does not pass: use diffusers' PixArtAlphaPipeline with it."
            )
        text_width = getattr(text_encoder.config, "d_model", None) or getattr(text_encoder.config, "hidden_size", None)
        expected = transformer.config.caption_channels or transformer.config.cross_attention_dim
        if text_encoder is not None and text_width != expected:
            raise ValueError(
                f"The text encoder's hidden size {text_width} does not match the transformer's caption_channels "
                f"{expected}: use the text encoder the transformer was trained with."
            )
        super().__init__(tokenizer, text_encoder, vae, transformer, scheduler)
        self.card_info = {}

    def __call__(self, *args: Any, use_resolution_binning: bool | None = None, **kwargs: Any) -> Any:
        """PixArt-Sigma's generation (see `PixArtSigmaPipeline.__call__`), with defaults that fit any encoder:
        `use_resolution_binning` is on where PixArt has an aspect-ratio table for the model's sample size
        (32, 64, 128, 256), and `max_sequence_length` is 300 or the tokenizer's maximum if that is shorter."""
        if use_resolution_binning is None:
            use_resolution_binning = self.transformer.config.sample_size in BINNED_SAMPLE_SIZES
        if "max_sequence_length" not in kwargs and self.tokenizer is not None:
            kwargs["max_sequence_length"] = min(300, self.tokenizer.model_max_length)
        return super().__call__(*args, use_resolution_binning=use_resolution_binning, **kwargs)

    def check_inputs(self, prompt, height, width, negative_prompt, *args, **kwargs) -> None:
        super().check_inputs(prompt, height, width, negative_prompt, *args, **kwargs)
        if isinstance(prompt, list) and isinstance(negative_prompt, list) and len(prompt) != len(negative_prompt):
            raise ValueError(
                f"`prompt` has {len(prompt)} entries but `negative_prompt` has {len(negative_prompt)}: give one "
                "negative prompt per prompt, or a single string for all."
            )

    @classmethod
    def usage_snippet(cls, repo_id: str, example: str | None = None) -> str:
        prompt = example or "a photograph of an astronaut riding a horse"
        return (
            "from diffusers_lit import LiTPipeline\n\n"
            f'pipe = LiTPipeline.from_pretrained("{repo_id}")\n'
            f'image = pipe("{prompt}", num_inference_steps=20).images[0]\n'
            'image.save("lit.png")'
        )
