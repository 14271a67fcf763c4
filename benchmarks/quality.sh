#!/usr/bin/env bash
# Quality of the embedded default and the paper's ablations at its scale (docs/results.md). One row per model: the
# shipped Fashion-MNIST DiT teacher, or a LiT student converted from it (or built fresh) and distilled for one
# schedule; each row is sampled with the same sampler, steps and seeds into a .npz file, then scored (FID against as
# many Fashion-MNIST test images, and at --fid-at counts on the first images of the same draw).
#
#   nohup bash benchmarks/quality.sh > runs/quality.log 2>&1 &         ROWS="teacher full" for the target alone
#
# Every stage of every row is skipped when its output exists, so the script resumes, and the stages can run on
# different machines: `SCORE=0 JOBS=12` on a GPU writes the samples (runs/quality/samples/*.npz), and a later run
# here scores them. Knobs (environment): ROWS, STEPS, BATCH, LR, SAMPLES (drawn), SCORE_SAMPLES (scored: the first
# ones), FID_AT, SAMPLE_STEPS, JOBS (rows at a time), DISTILL_ARGS (e.g. "--allow_tf32", or "--mixed_precision bf16"
# on a CPU with bf16 instructions), SCORE, PY, RUNS, OUT, JEMALLOC.
set -eu
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}; TEACHER=${TEACHER:-assets/fmnist-dit}
RUNS=${RUNS:-runs/quality}; OUT=${OUT:-benchmarks/results/quality}
STEPS=${STEPS:-500}; BATCH=${BATCH:-256}; LR=${LR:-2e-4}; DISTILL_ARGS=${DISTILL_ARGS:-}
SAMPLES=${SAMPLES:-2000}; SCORE_SAMPLES=${SCORE_SAMPLES:-$SAMPLES}; FID_AT=${FID_AT-1000}; SAMPLE_STEPS=${SAMPLE_STEPS:-25}
SCORE=${SCORE:-1}; JOBS=${JOBS:-1}
# On a CPU, jemalloc where it is installed (`make jemalloc`): distillation steps about 2x faster than with glibc's
# allocator (docs/benchmarks.md, "CPU memory allocator"). JEMALLOC= turns it off.
. scripts/jemalloc.sh
ROWS=${ROWS:-"teacher full no-kd noise-kd-only no-inheritance no-dwc heads-1 heads-3 heads-4 inherit-qkv"}
export PY TEACHER RUNS OUT STEPS BATCH LR DISTILL_ARGS SAMPLES SCORE_SAMPLES FID_AT SAMPLE_STEPS SCORE

# row -> "convert options | lambda_noise lambda_var | distillation options". heads-2 is the full recipe (LiT's
# default for a 3-head teacher); full-lr* and full-steps* rows try the recipe with another learning rate / length,
# inherit-qkv-lr1e-3 the two strongest knobs found together.
spec() {
  case $1 in
    full) echo "| 0.5 0.05 |" ;;                no-kd) echo "| 0 0 |" ;;
    noise-kd-only) echo "| 0.5 0 |" ;;          no-inheritance) echo "fresh | 0.5 0.05 |" ;;
    no-dwc) echo "--dwc-kernel-size 0 | 0.5 0.05 |" ;;
    heads-1) echo "--linear-attention-heads 1 | 0.5 0.05 |" ;;
    heads-3) echo "--linear-attention-heads 3 | 0.5 0.05 |" ;;
    heads-4) echo "--linear-attention-heads 4 | 0.5 0.05 |" ;;
    inherit-qkv) echo "--inherit qkv | 0.5 0.05 |" ;;
    inherit-qkv-lr1e-3) echo "--inherit qkv | 0.5 0.05 | --learning_rate 1e-3" ;;
    hybrid-block3-lr1e-3) echo "--inherit qkv --softmax-blocks 3 | 0.5 0.05 | --learning_rate 1e-3" ;;
    full-lr*) echo "| 0.5 0.05 | --learning_rate ${1#full-lr}" ;;
    full-steps*) echo "| 0.5 0.05 | --max_train_steps ${1#full-steps}" ;;
    *) echo "unknown row $1" >&2; return 2 ;;
  esac
}

run_row() {
  local row=$1 model=$TEACHER dir=$RUNS/$1
  local samples=$RUNS/samples/$row.npz
  if [ "$row" != teacher ] && [ ! -f "$samples" ]; then
    local convert lambdas extra noise var
    IFS='|' read -r convert lambdas extra <<< "$(spec "$row")"
    read -r noise var <<< "$lambdas"
    if [ ! -f "$dir/init/model_index.json" ]; then
      # shellcheck disable=SC2086
      "$PY" -m diffusers_lit convert "$TEACHER" "$dir/init" --overwrite ${convert/fresh/}
      if [ "$(echo $convert)" = fresh ]; then  # no weight inheritance: every weight of the LiT starts fresh
        "$PY" -c "import sys; from diffusers_lit import LiTPipeline, LiTTransformer2DModel
p = LiTPipeline.from_pretrained(sys.argv[1]); p.transformer = LiTTransformer2DModel.from_config(p.transformer.config)
p.save_pretrained(sys.argv[1])" "$dir/init"
        rm "$dir/init/conversion_report.json"  # nothing was copied
      fi
    fi
    if [ ! -f "$dir/student/model_index.json" ]; then
      # shellcheck disable=SC2086
      "$PY" examples/distill_lit.py --teacher "$TEACHER" --student "$dir/init" --dataset fashion-mnist \
        --output_dir "$dir/student" --cache_dir "$RUNS/cache" --max_train_steps "$STEPS" --train_batch_size "$BATCH" \
        --learning_rate "$LR" --lambda_noise "$noise" --lambda_var "$var" --use_ema --ema_decay 0.999 \
        --ema_schedule warmup --max_grad_norm 1.0 \
        --checkpointing_steps 100 --checkpoints_total_limit 1 --resume_from_checkpoint latest --report_to tensorboard \
        --seed 0 $DISTILL_ARGS $extra
    fi
    model=$dir/student
  fi
  mkdir -p "$OUT"
  [ -f "$dir/student/logs/metrics.jsonl" ] && cp "$dir/student/logs/metrics.jsonl" "$OUT/metrics-$row.jsonl"
  [ -f "$samples" ] || "$PY" -m diffusers_lit generate "$model" --num-samples "$SAMPLES" --steps "$SAMPLE_STEPS" \
    --scheduler ddim --guidance-scale 1.0 --batch-size 500 --seed 0 --output "$samples"
  if [ "$SCORE" = 1 ] && [ ! -f "$OUT/$row.json" ]; then
    # shellcheck disable=SC2086
    "$PY" -m diffusers_lit evaluate "$samples" --num-samples "$SCORE_SAMPLES" ${FID_AT:+--fid-at $FID_AT} \
      --output "$OUT/$row.json" --grid "$OUT/grid-$row.png"
  fi
  echo "== $row: done"
}
export -f spec run_row

if [ $# -gt 0 ]; then run_row "$1"; exit; fi
for row in $ROWS; do [ "$row" = teacher ] || spec "$row" > /dev/null; done  # unknown rows: refused before any work
mkdir -p "$RUNS/samples" "$OUT"
# Each row in its own bash, so that `set -e` stops the row at its first failing stage.
# shellcheck disable=SC2086
printf '%s\n' $ROWS | xargs -P "$JOBS" -I{} bash -c \
  'bash -c "set -eu; run_row {}" > "$RUNS/{}.log" 2>&1 || echo "== {}: FAILED (see $RUNS/{}.log)"'
echo "done: $OUT"
