"""The benchmark of `diffusers-lit bench` (benchmarks/): speed and memory of LiT against diffusers' DiT, PixArt
and Sana transformers, measured against the FLOP floor.

Architectures ("arch"), all at the same width and depth (a size of `BENCH_SIZES`), at equal token counts:
- "lit": a LiT block in the DiT layout (`LiTTransformer2DModel`, "ada_norm_zero").
- "dit": diffusers' `DiTTransformer2DModel` block (softmax self-attention through SDPA).
- "lit-attn" / "dit-attn": the self-attention alone of those two blocks.
- "lit-t2i": a LiT block in the PixArt layout (linear self-attention + softmax cross-attention).
- "pixart": diffusers' `PixArtTransformer2DModel` block.
- "sana": diffusers' `SanaTransformer2DModel` block (ReLU linear attention, Mix-FFN), with Sana's head dim 32.

One concept per module: `options` (the architectures, sizes and command options, plain data), `flops` (the FLOP
model), `measuring` (timers, the matmul rate, peak memory, the machine), `models` (the randomly built models and
their forwards), `runs` (the two runners and the command), `report` (markdown and plots), `pipelines` (whole
pipelines timed).
"""
