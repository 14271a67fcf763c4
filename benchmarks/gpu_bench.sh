#!/usr/bin/env bash
# LiT vs DiT / PixArt / Sana on one CUDA GPU (H100 / H200), bf16 and fp16, and LiT's fused Triton kernels, in
# at most 13 minutes (the sum of the steps' time limits; the script goes on past a failed step).
#
#   OUT=/path/to/results bash benchmarks/gpu_bench.sh        (from the repository root)
#
# Needs a Python with torch (CUDA build, with its triton) and diffusers 0.42; pytest for the kernels' tests;
# nothing is installed. Writes into $OUT: env.txt (what was found), log.txt, and results.json / results.md /
# latency.png / memory.png (plots when matplotlib is there) in
#   triton/           LiT-XL blocks and self-attention on the fused kernels (bf16), to compare with bf16/
#   bf16/, fp16/      every arch's XL blocks and whole models (measured up to 4,096 tokens), LiT / DiT in fp16
#   pipeline/         LiT (both backends) vs DiT class-conditional pipelines, 10 DDIM steps, bf16
#   compile/          torch.compile of the blocks, bf16 (triton-compile/: LiT's, on the fused kernels)
#   attention/        LiT's self-attention before / after the CPU rewrite (needs git), bf16
set -u
OUT=${OUT:-benchmarks/results/gpu}
PY=${PYTHON:-python}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/log.txt") 2>&1

echo "== environment"
"$PY" - <<'PYEOF' | tee "$OUT/env.txt"
import importlib, sys
print("python", sys.version.split()[0])
missing = []
for name in ("torch", "diffusers", "transformers", "triton", "pytest", "matplotlib", "numpy"):
    try:
        module = importlib.import_module(name)
        print(name, getattr(module, "__version__", "?"))
    except Exception as error:  # noqa: BLE001
        print(name, "MISSING:", error)
        missing.append(name)
if "torch" in missing or "diffusers" in missing:
    print("FATAL: the benchmark needs torch and diffusers:", ", ".join(missing))
    sys.exit(3)
import torch
if not torch.cuda.is_available():
    print("FATAL: torch", torch.__version__, "sees no CUDA device (CPU-only build?)")
    sys.exit(4)
print("device", torch.cuda.get_device_name(0), "capability", torch.cuda.get_device_capability(0))
print("optional missing (triton: fused kernels; pytest: their tests; matplotlib: plots):", ", ".join(missing) or "-")
PYEOF
status=${PIPESTATUS[0]}
if [ "$status" -ne 0 ]; then echo "environment check failed ($status): see $OUT/env.txt"; exit "$status"; fi
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,power.limit --format=csv >> "$OUT/env.txt" 2>/dev/null

run() {  # run NAME SECONDS ARGS...: one benchmark with a time limit, the script goes on whatever happens
    local name=$1 limit=$2; shift 2
    echo "== $name (limit ${limit}s)"
    local start=$SECONDS
    timeout "$limit" "$PY" "$@"
    echo "== $name: exit $?, $((SECONDS - start)) s"
}

# The fused kernels first: their tests on this GPU (against the float64 reference), then their timings.
run triton-tests 150 -m pytest -q -p no:cacheprovider tests/test_linear_attention.py tests/test_transformer_lit.py \
    -k "triton or half_precision"
run triton 60 benchmarks/bench.py --device cuda --dtype bf16 --sizes XL --archs lit lit-attn \
    --resolutions 256 512 1024 2048 --repeats 20 --warmup 5 --whole-model-max-tokens 4096 \
    --linear-attention-backend triton --output-dir "$OUT/triton"
# Blocks at 256..16384 tokens, all archs; whole models measured up to 4096 tokens, derived at 16384.
run bf16 150 benchmarks/bench.py --device cuda --dtype bf16 --sizes XL --resolutions 256 512 1024 2048 \
    --repeats 20 --warmup 5 --whole-model-max-tokens 4096 --output-dir "$OUT/bf16"
run fp16 70 benchmarks/bench.py --device cuda --dtype fp16 --sizes XL --archs lit dit lit-attn dit-attn \
    --resolutions 256 512 1024 2048 --repeats 20 --warmup 5 --whole-model-max-tokens 4096 --output-dir "$OUT/fp16"
run pipeline-triton 60 benchmarks/pipeline_throughput.py --sizes XL --archs lit --resolutions 512 1024 --steps 10 \
    --dtype bf16 --repeats 3 --linear-attention-backend triton --output-dir "$OUT/pipeline/triton"
run pipeline-torch 60 benchmarks/pipeline_throughput.py --sizes XL --resolutions 512 1024 --steps 10 \
    --dtype bf16 --repeats 3 --output-dir "$OUT/pipeline/torch"
run triton-compile 80 benchmarks/bench.py --device cuda --dtype bf16 --sizes XL --archs lit lit-attn \
    --resolutions 1024 2048 --repeats 20 --warmup 3 --no-whole-model --compile --linear-attention-backend triton \
    --output-dir "$OUT/triton-compile"
run compile 100 benchmarks/bench.py --device cuda --dtype bf16 --sizes XL --archs lit dit lit-attn \
    --resolutions 1024 2048 --repeats 20 --warmup 3 --no-whole-model --compile --output-dir "$OUT/compile"
run attention 40 benchmarks/compare_attention.py --device cuda --dtype bf16 --tokens 4096 16384 --repeats 20 \
    --output-dir "$OUT/attention"
echo "== done in $SECONDS s; results under $OUT"
