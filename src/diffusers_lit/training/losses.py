"""Training losses: DiT's learned-sigma diffusion objective and LiT's hybrid knowledge distillation.

Conventions (DiT / improved-DDPM): the model predicts `[eps, v]` along channels, `v` in [-1, 1] interpolates the
log variance between the clipped posterior variance and beta_t ("learned range"). Every term is a mean over the
non-batch dimensions, then over the batch. The VLB is in bits (divided by log 2) and, as in DiT's training
(`LossType.MSE`), is not rescaled by `num_timesteps / 1000`; pass `vlb_scale` for improved-DDPM's RESCALED_MSE.
"""

import math
from dataclasses import dataclass

import torch


@dataclass
class DiffusionSchedule:
    """A discrete DDPM noise schedule and its posterior coefficients, kept in float64 (shape (T,) each)."""

    betas: torch.Tensor

    def __post_init__(self) -> None:
        betas = self.betas.detach().to(torch.float64).cpu()
        if betas.ndim != 1 or not bool(((betas > 0) & (betas <= 1)).all()):
            raise ValueError("`betas` must be a 1-D tensor of values in (0, 1].")
        self.betas = betas
        self.alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
        self.alphas_cumprod_prev = torch.cat([betas.new_ones(1), self.alphas_cumprod[:-1]])
        self.sqrt_alphas_cumprod = self.alphas_cumprod.sqrt()
        self.sqrt_one_minus_alphas_cumprod = (1.0 - self.alphas_cumprod).sqrt()
        self.sqrt_recip_alphas_cumprod = (1.0 / self.alphas_cumprod).sqrt()
        self.sqrt_recipm1_alphas_cumprod = (1.0 / self.alphas_cumprod - 1.0).sqrt()
        self.posterior_variance = betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        # The posterior variance is 0 at t = 0: its log is clipped to the value at t = 1, as improved-DDPM.
        clipped = torch.cat([self.posterior_variance[1:2], self.posterior_variance[1:]])
        self.posterior_log_variance_clipped = clipped.log()
        self.posterior_mean_coef1 = betas * self.alphas_cumprod_prev.sqrt() / (1.0 - self.alphas_cumprod)
        self.posterior_mean_coef2 = (
            (1.0 - self.alphas_cumprod_prev) * (1.0 - betas).sqrt() / (1.0 - self.alphas_cumprod)
        )
        self.log_betas = betas.log()

    @classmethod
    def from_scheduler(cls, scheduler) -> "DiffusionSchedule":
        """The training schedule of a diffusers scheduler (its `betas`); it must predict epsilon."""
        prediction_type = scheduler.config.get("prediction_type", "epsilon")
        if prediction_type != "epsilon":
            raise ValueError(
                f"The teacher's scheduler predicts {prediction_type!r}; LiT's distillation needs a teacher that "
                "predicts epsilon (DiT, PixArt)."
            )
        return cls(torch.as_tensor(scheduler.betas))

    @property
    def num_timesteps(self) -> int:
        return self.betas.shape[0]

    @staticmethod
    def extract(values: torch.Tensor, timesteps: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """`values[timesteps]` as (B, 1, ..., 1) in `like`'s dtype and device, to broadcast over `like`."""
        out = values.to(like.device)[timesteps.to(like.device)].to(like.dtype)
        return out.reshape(-1, *([1] * (like.ndim - 1)))

    def add_noise(self, x_start: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, all (B, C, H, W); `timesteps` (B,)."""
        return (
            self.extract(self.sqrt_alphas_cumprod, timesteps, x_start) * x_start
            + self.extract(self.sqrt_one_minus_alphas_cumprod, timesteps, x_start) * noise
        )

    def posterior_mean(self, x_start: torch.Tensor, x_t: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """Mean of q(x_{t-1} | x_t, x_0)."""
        return (
            self.extract(self.posterior_mean_coef1, timesteps, x_t) * x_start
            + self.extract(self.posterior_mean_coef2, timesteps, x_t) * x_t
        )

    def predict_start_from_noise(self, x_t: torch.Tensor, eps: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        return (
            self.extract(self.sqrt_recip_alphas_cumprod, timesteps, x_t) * x_t
            - self.extract(self.sqrt_recipm1_alphas_cumprod, timesteps, x_t) * eps
        )

    def learned_range_log_variance(self, variance_values: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """log var = frac * log(beta_t) + (1 - frac) * log(posterior var, clipped), frac = (v + 1) / 2."""
        min_log = self.extract(self.posterior_log_variance_clipped, timesteps, variance_values)
        max_log = self.extract(self.log_betas, timesteps, variance_values)
        frac = (variance_values + 1) / 2
        return frac * max_log + (1 - frac) * min_log


def mean_flat(tensor: torch.Tensor) -> torch.Tensor:
    """Mean over all dimensions but the first: (B, ...) -> (B,)."""
    return tensor.mean(dim=list(range(1, tensor.ndim)))


def normal_kl(mean1, logvar1, mean2, logvar2) -> torch.Tensor:
    """KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2))), element-wise, in nats."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def discretized_gaussian_log_likelihood(
    x: torch.Tensor, means: torch.Tensor, log_scales: torch.Tensor, bin_width: float = 2.0 / 255
) -> torch.Tensor:
    """
    Element-wise log-likelihood (nats) of `x` in [-1, 1], quantised into bins of `bin_width`, under N(means, scales).

    The edge bins reach to -inf / +inf (improved-DDPM's decoder). Unlike improved-DDPM, which uses a tanh
    approximation of the normal CDF, this uses the exact CDF (`torch.special.ndtr` / `log_ndtr`).
    """
    centered = x - means
    inv_stdv = torch.exp(-log_scales)
    plus_in = inv_stdv * (centered + bin_width / 2)
    min_in = inv_stdv * (centered - bin_width / 2)
    log_cdf_plus = torch.special.log_ndtr(plus_in)
    log_one_minus_cdf_min = torch.special.log_ndtr(-min_in)
    cdf_delta = torch.special.ndtr(plus_in) - torch.special.ndtr(min_in)
    log_cdf_delta = torch.log(cdf_delta.clamp(min=1e-12))
    return torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, log_cdf_delta))


def variational_bound(
    variance_values: torch.Tensor,
    eps_prediction: torch.Tensor,
    x_start: torch.Tensor,
    x_t: torch.Tensor,
    timesteps: torch.Tensor,
    schedule: DiffusionSchedule,
) -> torch.Tensor:
    """
    Per-sample VLB term (B,) in bits: KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t)) for t > 0, and the
    discretized Gaussian NLL of x_0 for t = 0. The model's mean comes from `eps_prediction`, detached, so that
    this term trains the variance only (improved-DDPM's hybrid objective). All tensors (B, C, H, W).
    """
    true_mean = schedule.posterior_mean(x_start, x_t, timesteps)
    true_log_variance = schedule.extract(schedule.posterior_log_variance_clipped, timesteps, x_t)
    pred_start = schedule.predict_start_from_noise(x_t, eps_prediction.detach(), timesteps)
    model_mean = schedule.posterior_mean(pred_start, x_t, timesteps)
    model_log_variance = schedule.learned_range_log_variance(variance_values, timesteps)

    kl = mean_flat(normal_kl(true_mean, true_log_variance, model_mean, model_log_variance)) / math.log(2.0)
    nll = -mean_flat(discretized_gaussian_log_likelihood(x_start, model_mean, 0.5 * model_log_variance))
    nll = nll / math.log(2.0)
    return torch.where(timesteps.to(kl.device) == 0, nll, kl)


def split_learned_sigma(model_output: torch.Tensor, channels: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(B, 2C, H, W) -> eps (B, C, H, W), raw variance v (B, C, H, W); (B, C, H, W) -> eps, None."""
    if model_output.shape[1] == 2 * channels:
        return model_output[:, :channels], model_output[:, channels:]
    if model_output.shape[1] == channels:
        return model_output, None
    raise ValueError(f"Model output has {model_output.shape[1]} channels; expected {channels} or {2 * channels}.")


def diffusion_loss(
    model_output: torch.Tensor,
    noise: torch.Tensor,
    x_start: torch.Tensor,
    x_t: torch.Tensor,
    timesteps: torch.Tensor,
    schedule: DiffusionSchedule,
    vlb_scale: float = 1.0,
) -> dict[str, torch.Tensor]:
    """
    DiT's training loss for a learned-sigma model: MSE(eps_pred, eps) + vlb_scale * L_vlb.

    `model_output` (B, 2C, H, W); `noise`, `x_start`, `x_t` (B, C, H, W); `timesteps` (B,) in [0, T).
    Returns scalars {"loss", "mse", "vlb"}, computed in float32.
    """
    channels = x_start.shape[1]
    model_output, noise, x_start, x_t = (tensor.float() for tensor in (model_output, noise, x_start, x_t))
    eps, variance_values = split_learned_sigma(model_output, channels)
    if variance_values is None:
        raise ValueError("The student must predict its variance (learned sigma, out_channels = 2 * in_channels).")
    mse = mean_flat((eps - noise) ** 2)
    vlb = variational_bound(variance_values, eps, x_start, x_t, timesteps, schedule)
    return {"loss": (mse + vlb_scale * vlb).mean(), "mse": mse.mean(), "vlb": vlb.mean()}


def hybrid_distillation_loss(
    student_output: torch.Tensor,
    teacher_output: torch.Tensor | None,
    noise: torch.Tensor,
    x_start: torch.Tensor,
    x_t: torch.Tensor,
    timesteps: torch.Tensor,
    schedule: DiffusionSchedule,
    lambda_noise: float = 0.5,
    lambda_var: float = 0.05,
    vlb_scale: float = 1.0,
) -> dict[str, torch.Tensor]:
    """
    LiT's hybrid knowledge distillation loss:
    MSE(eps_s, eps) + L_vlb + lambda_noise * MSE(eps_s, eps_t) + lambda_var * MSE(v_s, v_t).

    `student_output` (B, 2C, H, W); `teacher_output` (B, 2C, H, W), or (B, C, H, W) when `lambda_var` is 0, or
    None when both lambdas are 0 (plain diffusion training). Returns scalars {"loss", "mse", "vlb", "noise_kd",
    "variance_kd"}; the teacher's output carries no gradient.
    """
    terms = diffusion_loss(student_output, noise, x_start, x_t, timesteps, schedule, vlb_scale=vlb_scale)
    zero = terms["loss"].new_zeros(())
    terms["noise_kd"], terms["variance_kd"] = zero, zero
    if lambda_noise == 0 and lambda_var == 0:
        return terms
    if teacher_output is None:
        raise ValueError("`teacher_output` is needed when `lambda_noise` or `lambda_var` is not 0.")
    channels = x_start.shape[1]
    eps_student, v_student = split_learned_sigma(student_output.float(), channels)
    eps_teacher, v_teacher = split_learned_sigma(teacher_output.detach().float(), channels)
    terms["noise_kd"] = mean_flat((eps_student - eps_teacher) ** 2).mean()
    if lambda_var != 0:
        if v_teacher is None:
            raise ValueError("The teacher predicts no variance (no learned sigma): set `lambda_var` to 0.")
        terms["variance_kd"] = mean_flat((v_student - v_teacher) ** 2).mean()
    terms["loss"] = terms["loss"] + lambda_noise * terms["noise_kd"] + lambda_var * terms["variance_kd"]
    return terms
