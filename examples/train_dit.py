#!/usr/bin/env python
"""Train a class-conditional DiT from scratch: the teacher of the embedded default.

    accelerate launch examples/train_dit.py --dataset fashion-mnist --output_dir runs/fmnist-dit \
        --resolution 32 --patch_size 2 --width 192 --depth 6 --heads 3 \
        --max_train_steps 20000 --train_batch_size 128 --use_ema --checkpointing_steps 1000

diffusers' `DiTTransformer2DModel` with learned sigma, in pixel space, trained with DiT's loss (MSE + the
learned-range VLB) by the loop of `examples/distill_lit.py` with no teacher: the same data path, caches,
checkpoints, exact resume (`--resume_from_checkpoint latest`), EMA, logging and validation grids. Every flag other
than the model's is distill_lit's (`python examples/distill_lit.py --help`). The code is
`diffusers_lit.training.train_dit`.
"""

from diffusers_lit.training import train_dit

if __name__ == "__main__":
    train_dit()
