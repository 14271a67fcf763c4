"""LiTPipeline: class-conditional generation with a LiT (or a plain diffusers DiT) transformer."""

import contextlib
import inspect
import math
import numbers
from collections.abc import Callable

import torch
from diffusers import AutoencoderKL, DiTTransformer2DModel
from diffusers.image_processor import VaeImageProcessor
from diffusers.models.cache_utils import CacheMixin
from diffusers.pipelines.pipeline_utils import DiffusionPipeline, ImagePipelineOutput
from diffusers.schedulers import SchedulerMixin
from diffusers.utils.torch_utils import randn_tensor

from ..hub import LiTHubMixin
from ..models import LiTTransformer2DModel
from .lora import LiTLoraLoaderMixin
from .schedulers import SAMPLES_WITH_VARIANCE, uses_learned_variance

OUTPUT_TYPES = ("pil", "np", "pt", "latent")


def vae_scale_factor(vae: AutoencoderKL | None) -> int:
    """Pixels per latent along each side: 2 per VAE down block after the first (8 for Stable Diffusion's); 1 in
    pixel space (`vae=None`)."""
    return 2 ** (len(vae.config.block_out_channels) - 1) if vae is not None else 1


def check_guidance_scale(guidance_scale: float) -> None:
    """Refuse a guidance scale that is not a finite number (NaN or inf guide every pixel to NaN)."""
    if not isinstance(guidance_scale, numbers.Real) or not math.isfinite(guidance_scale):
        raise ValueError(f"`guidance_scale` must be a finite number, got {guidance_scale!r}.")


def check_pixel_space(transformer, vae) -> None:
    """Without a VAE a pipeline samples pixels: refuse a transformer of latent channels (it would decode nothing)."""
    if vae is None and transformer.config.in_channels not in (1, 3):
        raise ValueError(
            f"Without a VAE the transformer works on pixels, but it takes {transformer.config.in_channels} channels "
            "(latents): pass the `vae` its latents come from."
        )


def denoiser_context(transformer: torch.nn.Module) -> contextlib.AbstractContextManager:
    """The context diffusers' cache hooks (`transformer.enable_cache`) key their state by: one name for the whole
    loop, since the conditional and unconditional halves go through the transformer as one batch."""
    cached = isinstance(transformer, CacheMixin)
    return transformer.cache_context("cond_uncond") if cached else contextlib.nullcontext()


class LiTPipeline(LiTHubMixin, LiTLoraLoaderMixin, DiffusionPipeline):
    r"""
    Class-conditional image generation with a LiT transformer (or a diffusers `DiTTransformer2DModel`).

    Parameters:
        transformer ([`LiTTransformer2DModel`] or [`DiTTransformer2DModel`]): A class-conditional ("ada_norm_zero")
            transformer; with learned sigma its variance goes to schedulers that use it.
        scheduler ([`SchedulerMixin`]): Any diffusers scheduler (DDPM, DDIM, DPM-Solver++, Euler, ...).
        vae ([`AutoencoderKL`], *optional*): Decodes latents into images; `None` when the model works in pixels.
        id2label (`dict`, *optional*): Class names by id (comma-separated synonyms allowed), kept in the config.
    """

    model_cpu_offload_seq = "transformer->vae"
    _optional_components = ["vae"]
    _callback_tensor_inputs = ["latents"]
    pipeline_tag = "unconditional-image-generation"  # the Hub's closest task to class-conditional generation
    task = "class-conditional image generation"
    loads_any_lit_pipeline = True  # `LiTPipeline.from_pretrained` also loads text-to-image folders

    def __init__(
        self,
        transformer: LiTTransformer2DModel | DiTTransformer2DModel,
        scheduler: SchedulerMixin,
        vae: AutoencoderKL | None = None,
        id2label: dict | None = None,
    ):
        super().__init__()
        norm_type = getattr(transformer.config, "norm_type", None)
        if norm_type != "ada_norm_zero":
            raise ValueError(
                f"LiTPipeline needs a class-conditional transformer (norm_type='ada_norm_zero'), got one with "
                f"norm_type={norm_type!r}: use LiTTextToImagePipeline for prompts."
            )
        check_pixel_space(transformer, vae)
        self.register_modules(transformer=transformer, scheduler=scheduler, vae=vae)
        id2label = {int(key): value for key, value in (id2label or {}).items()}
        self.register_to_config(id2label={str(key): value for key, value in sorted(id2label.items())} or None)
        self.labels = {name.strip(): key for key, value in id2label.items() for name in value.split(",")}
        self.vae_scale_factor = vae_scale_factor(vae)
        self.image_processor = VaeImageProcessor(vae_scale_factor=self.vae_scale_factor)
        self.card_info = {}
        self._current_timestep = None

    @property
    def card_example(self) -> str | None:
        return next(iter(self.labels), None)

    @property
    def guidance_scale(self) -> float:
        return self._guidance_scale

    @property
    def do_classifier_free_guidance(self) -> bool:
        return self._guidance_scale > 1.0

    @property
    def num_timesteps(self) -> int:
        return self._num_timesteps

    @property
    def current_timestep(self) -> torch.Tensor | None:
        """The timestep being denoised (read by pyramid attention broadcast's `current_timestep_callback`)."""
        return self._current_timestep

    @classmethod
    def usage_snippet(cls, repo_id: str, example: str | None = None) -> str:
        labels = f'["{example}"]' if example is not None else "[0]"
        return (
            "from diffusers_lit import LiTPipeline\n\n"
            f'pipe = LiTPipeline.from_pretrained("{repo_id}")\n'
            f"image = pipe(class_labels={labels}, num_inference_steps=50).images[0]\n"
            'image.save("lit.png")'
        )

    def get_label_ids(self, label: str | list[str]) -> list[int]:
        """Class ids of label names (any of the comma-separated names in `id2label`)."""
        names = [label] if isinstance(label, str) else list(label)
        for name in names:
            if name not in self.labels:
                known = ", ".join(sorted(self.labels)) or "none: this pipeline has no id2label"
                raise ValueError(f"Unknown class label {name!r} in `class_labels`; known labels: {known}.")
        return [self.labels[name] for name in names]

    def _label_tensor(self, class_labels: int | str | list[int | str] | torch.Tensor) -> torch.Tensor:
        num_classes = self.transformer.config.num_embeds_ada_norm
        if isinstance(class_labels, torch.Tensor):
            if torch.is_floating_point(class_labels):
                raise ValueError(f"`class_labels` must hold class ids (an integer tensor), got {class_labels.dtype}.")
            class_labels = class_labels.reshape(-1).tolist()
        elif isinstance(class_labels, int | str):
            class_labels = [class_labels]
        elif any(isinstance(label, list | tuple) for label in class_labels):  # batched, as DiTPipeline takes them
            class_labels = [
                label for group in class_labels for label in (group if isinstance(group, list | tuple) else [group])
            ]
        bad = [label for label in class_labels if not isinstance(label, str | int) or isinstance(label, bool)]
        if bad:
            raise ValueError(f"`class_labels` must be class ids (int) or names (str), got {bad[:3]}.")
        ids = [self.get_label_ids(label)[0] if isinstance(label, str) else int(label) for label in class_labels]
        if not ids:
            raise ValueError("`class_labels` is empty: give at least one class id or name.")
        bad = [label for label in ids if not 0 <= label < num_classes]
        if bad:
            raise ValueError(f"`class_labels` {bad} out of range: this model has classes 0 to {num_classes - 1}.")
        return torch.tensor(ids, device=self._execution_device)

    def check_inputs(self, height: int, width: int, num_inference_steps: int, output_type: str) -> None:
        multiple = self.vae_scale_factor * self.transformer.config.patch_size
        if height % multiple or width % multiple or height <= 0 or width <= 0:
            raise ValueError(
                f"`height` and `width` must be positive multiples of {multiple} (VAE scale {self.vae_scale_factor} x "
                f"patch {self.transformer.config.patch_size}), got {height}x{width}."
            )
        if num_inference_steps < 1:
            raise ValueError(f"`num_inference_steps` must be at least 1, got {num_inference_steps}.")
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"`output_type` must be one of {OUTPUT_TYPES}, got {output_type!r}.")

    def scheduler_uses_learned_variance(self) -> bool:
        """Whether the scheduler takes the model's variance (e.g. DDPM with variance_type="learned_range")."""
        return uses_learned_variance(self.scheduler)

    @torch.no_grad()
    def __call__(
        self,
        class_labels: int | str | list[int | str] | torch.Tensor,
        guidance_scale: float = 4.0,
        num_inference_steps: int = 50,
        height: int | None = None,
        width: int | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: Callable[[DiffusionPipeline, int, int, dict], dict] | None = None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
    ) -> ImagePipelineOutput | tuple:
        r"""
        Generate one image per class label.

        Args:
            class_labels (`int`, `str`, `list[int | str]` or `torch.Tensor`):
                Class ids or names (`id2label`, synonyms included), one per image; a nested list is flattened.
            guidance_scale (`float`, *optional*, defaults to 4.0):
                Classifier-free guidance on every noise channel, `eps_uncond + s (eps_cond - eps_uncond)`; at 1.0
                the model runs once per step, on the conditional batch only.
            num_inference_steps (`int`, *optional*, defaults to 50):
                Denoising steps of the scheduler.
            height (`int`, *optional*), width (`int`, *optional*):
                Image size in pixels, multiples of the VAE scale times the patch size. Default: the model's size.
            generator (`torch.Generator` or `list[torch.Generator]`, *optional*):
                A generator, or one per image (each image then equals a call with that generator alone).
            latents (`torch.Tensor`, *optional*):
                Starting noise, (B, C, H / vae_scale, W / vae_scale), instead of drawing it.
            output_type (`str`, *optional*, defaults to `"pil"`):
                `"pil"`, `"np"` ((B, H, W, C) in [0, 1]), `"pt"` ((B, C, H, W) in [0, 1]) or `"latent"`.
            return_dict (`bool`, *optional*, defaults to `True`):
                Return an [`ImagePipelineOutput`] rather than a tuple.
            callback_on_step_end (`Callable`, *optional*):
                Called as `callback(pipe, step, timestep, tensors)` after each step; the dict it returns may replace
                `latents`. `pipe.guidance_scale`, `pipe.num_timesteps` and `pipe.current_timestep` are readable.
            callback_on_step_end_tensor_inputs (`list[str]`, *optional*, defaults to `["latents"]`):
                The tensors passed to the callback.

        Examples:
            ```py
            >>> import torch
            >>> from diffusers_lit import LiTPipeline

            >>> pipe = LiTPipeline.from_pretrained("assets/fmnist-dit")
            >>> generator = torch.Generator().manual_seed(0)
            >>> images = pipe(["Sneaker", "Bag"], num_inference_steps=25, generator=generator).images
            ```

        Returns:
            [`ImagePipelineOutput`] or `tuple`: the images (as `output_type` says), in the order of `class_labels`.
        """
        sample_size = self.transformer.config.sample_size * self.vae_scale_factor
        height, width = sample_size if height is None else height, sample_size if width is None else width
        self.check_inputs(height, width, num_inference_steps, output_type)
        check_guidance_scale(guidance_scale)
        tensor_inputs = callback_on_step_end_tensor_inputs or ["latents"]
        if not set(tensor_inputs) <= set(self._callback_tensor_inputs):
            raise ValueError(f"`callback_on_step_end_tensor_inputs` must be among {self._callback_tensor_inputs}.")
        device = self._execution_device
        labels = self._label_tensor(class_labels)  # (B,)
        batch = labels.shape[0]
        if isinstance(generator, list) and len(generator) != batch:
            raise ValueError(f"Got {len(generator)} generators for {batch} class labels: give one per image.")

        channels = self.transformer.config.in_channels
        shape = (batch, channels, height // self.vae_scale_factor, width // self.vae_scale_factor)
        dtype = self.transformer.dtype
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
        elif latents.shape != shape:
            raise ValueError(f"`latents` must have shape {shape}, got {tuple(latents.shape)}.")
        latents = latents.to(device=device, dtype=dtype) * self.scheduler.init_noise_sigma

        self._guidance_scale = guidance_scale  # read by callbacks, as in diffusers' pipelines
        guided = guidance_scale > 1.0
        null = torch.full_like(labels, self.transformer.config.num_embeds_ada_norm)
        model_labels = torch.cat([labels, null]) if guided else labels  # (B,) or (2B,)
        learned_sigma = self.transformer.out_channels == 2 * channels
        keep_variance = learned_sigma and self.scheduler_uses_learned_variance()
        if keep_variance and type(self.scheduler).__name__ not in SAMPLES_WITH_VARIANCE and channels != 3:
            raise ValueError(
                f"{type(self.scheduler).__name__} with variance_type={self.scheduler.config.variance_type!r} keeps "
                f"only 3 channels of the model output; this model has {channels}: build it with variance_type=None "
                "(diffusers_lit.pipelines.scheduler_from_name does), or use DDPM for the learned variance."
            )

        self.scheduler.set_timesteps(num_inference_steps, device=device)
        self._num_timesteps = len(self.scheduler.timesteps)
        step_kwargs = (
            {"generator": generator} if "generator" in inspect.signature(self.scheduler.step).parameters else {}
        )
        for i, t in enumerate(self.progress_bar(self.scheduler.timesteps)):
            self._current_timestep = t
            model_input = torch.cat([latents, latents]) if guided else latents
            model_input = self.scheduler.scale_model_input(model_input, t)
            timesteps = t.reshape(1).to(device).expand(model_input.shape[0])
            with denoiser_context(self.transformer):
                output = self.transformer(model_input, timestep=timesteps, class_labels=model_labels).sample
            eps, variance = output.split(channels, dim=1) if learned_sigma else (output, None)
            if guided:
                eps_cond, eps_uncond = eps.chunk(2)
                eps = eps_uncond + guidance_scale * (eps_cond - eps_uncond)
                variance = variance.chunk(2)[0] if variance is not None else None
            model_output = torch.cat([eps, variance], dim=1) if keep_variance else eps
            latents = self.scheduler.step(model_output, t, latents, **step_kwargs).prev_sample

            if callback_on_step_end is not None:
                tensors = {"latents": latents}
                outputs = callback_on_step_end(self, i, t, {name: tensors[name] for name in tensor_inputs})
                latents = outputs.get("latents", latents)

        self._current_timestep = None
        if output_type == "latent":
            images = latents
        else:
            if self.vae is not None:
                images = self.vae.decode(latents.to(self.vae.dtype) / self.vae.config.scaling_factor).sample
            else:
                images = latents
            images = self.image_processor.postprocess(images, output_type=output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images,)
        return ImagePipelineOutput(images=images)
