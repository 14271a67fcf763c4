"""The samplers the command line offers, and one way to swap a pipeline's scheduler for one of them."""

import inspect

import diffusers
from diffusers.schedulers import SchedulerMixin

from ..choices import SCHEDULERS

LEARNED_VARIANCE = ("learned", "learned_range")  # the variance types that take the model's variance
# Schedulers that sample with a learned variance of any channel count. DPM-Solver also accepts
# variance_type="learned_range", but then keeps only the first 3 channels of the model output, whatever the model.
SAMPLES_WITH_VARIANCE = ("DDPMScheduler", "DDPMParallelScheduler")


def scheduler_from_name(name: str, config) -> SchedulerMixin:
    """The scheduler `name` (a key of SCHEDULERS) built from another scheduler's `config` (betas, steps,
    prediction type). The learned variance stays only with the schedulers that sample with it."""
    if name not in SCHEDULERS:
        raise ValueError(f"Unknown scheduler {name!r}: choose one of {', '.join(SCHEDULERS)}.")
    scheduler_class = getattr(diffusers, SCHEDULERS[name])
    takes_variance = "variance_type" in inspect.signature(scheduler_class).parameters
    drop_variance = takes_variance and SCHEDULERS[name] not in SAMPLES_WITH_VARIANCE
    return scheduler_class.from_config(config, **({"variance_type": None} if drop_variance else {}))


def uses_learned_variance(scheduler: SchedulerMixin) -> bool:
    """Whether `scheduler` samples with the model's variance (DDPM with variance_type "learned" / "learned_range")."""
    # A config converted from another scheduler may carry a `variance_type` its new class ignores.
    takes_variance = "variance_type" in inspect.signature(type(scheduler).__init__).parameters
    return takes_variance and scheduler.config.get("variance_type") in LEARNED_VARIANCE
