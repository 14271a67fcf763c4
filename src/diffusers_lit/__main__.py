"""`python -m diffusers_lit`: the `diffusers-lit` command line."""

from .cli import main

main()
