#!/bin/sh
# Prints the mixed precision for CPU training on this machine: "bf16" where the CPU has bf16 instructions
# (AVX512-BF16 or AMX-BF16), "no" elsewhere, where bf16 is emulated and a training step runs about 15x slower than
# in fp32 (docs/benchmarks.md). Used by the Makefile and the benchmark scripts; MIXED_PRECISION overrides it there.
if grep -qwE 'avx512_bf16|amx_bf16' /proc/cpuinfo 2>/dev/null; then echo bf16; else echo no; fi
