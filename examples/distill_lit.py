#!/usr/bin/env python
"""Hybrid knowledge distillation of a LiT student from a frozen DiT / PixArt teacher, with accelerate.

    accelerate launch examples/distill_lit.py --teacher facebook/DiT-XL-2-256 --student ./lit-xl-256 \
        --dataset ./imagenet-folder --output_dir ./lit-xl-256-distilled --max_train_steps 400000 \
        --train_batch_size 32 --mixed_precision bf16 --use_ema --checkpointing_steps 5000 --report_to tensorboard

The loss is MSE(eps_s, eps) + L_vlb + lambda_noise * MSE(eps_s, eps_t) + lambda_var * MSE(v_s, v_t); `--help`
lists every flag. The loop is `diffusers_lit.training.distill`.
"""

from diffusers_lit.training import distill, parse_distill_args

if __name__ == "__main__":
    distill(parse_distill_args())
