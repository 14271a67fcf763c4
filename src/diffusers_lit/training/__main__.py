"""`python -m diffusers_lit.training`: hybrid knowledge distillation, as examples/distill_lit.py (same flags)."""

from .loop import distill, parse_distill_args

if __name__ == "__main__":
    distill(parse_distill_args())
