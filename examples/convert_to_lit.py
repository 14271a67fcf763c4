"""Convert a DiT or PixArt-alpha / Sigma checkpoint into a LiT pipeline folder.

    python examples/convert_to_lit.py facebook/DiT-XL-2-256 ./lit-xl-256 [--inherit none] [--dtype fp16]

The same as `diffusers-lit convert`; the logic lives in `diffusers_lit.conversion.convert_to_lit`.
"""

import argparse

from diffusers_lit.cli import add_convert_arguments, convert

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_convert_arguments(parser)
    convert(parser.parse_args())
