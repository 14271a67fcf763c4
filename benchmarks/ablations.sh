#!/usr/bin/env bash
# The paper's ablations at the embedded default's scale (docs/results.md): one LiT student per row, converted from
# the shipped Fashion-MNIST DiT teacher (or built fresh), distilled for the same schedule, then FID with the same
# sample count, sampler and seeds. Resumable: each finished row is skipped, a stopped distillation resumes.
#
#   nohup bash benchmarks/ablations.sh > runs/ablations.log 2>&1 &       (ROWS="full no-kd" for a subset)
set -eu
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}; TEACHER=${TEACHER:-assets/fmnist-dit}
RUNS=${RUNS:-runs/ablations}; OUT=${OUT:-benchmarks/results/ablations}
STEPS=${STEPS:-500}; BATCH=${BATCH:-64}; SAMPLES=${SAMPLES:-1000}; SAMPLE_STEPS=${SAMPLE_STEPS:-25}
ROWS=${ROWS:-"teacher full no-kd noise-kd-only no-inheritance no-dwc heads-1 heads-4 heads-3 inherit-qkv"}
mkdir -p "$RUNS" "$OUT"

# row -> "convert options | lambda_noise lambda_var" (heads-2 is the full recipe: LiT's default for 3 teacher heads)
spec() {
  case $1 in
    full) echo "| 0.5 0.05" ;;               no-kd) echo "| 0 0" ;;
    noise-kd-only) echo "| 0.5 0" ;;         no-inheritance) echo "fresh | 0.5 0.05" ;;
    no-dwc) echo "--dwc-kernel-size 0 | 0.5 0.05" ;;
    heads-1) echo "--linear-attention-heads 1 | 0.5 0.05" ;;   heads-3) echo "--linear-attention-heads 3 | 0.5 0.05" ;;
    heads-4) echo "--linear-attention-heads 4 | 0.5 0.05" ;;   inherit-qkv) echo "--inherit qkv | 0.5 0.05" ;;
    *) echo "unknown row $1" >&2; exit 2 ;;
  esac
}

for row in $ROWS; do
  [ -f "$OUT/$row.json" ] && { echo "== $row: done"; continue; }
  echo "== $row"
  model=$TEACHER
  if [ "$row" != teacher ]; then
    IFS='|' read -r convert lambdas <<< "$(spec "$row")"
    read -r noise var <<< "$lambdas"
    if [ ! -f "$RUNS/$row/init/model_index.json" ]; then
      if [ "$(echo $convert)" = fresh ]; then  # no weight inheritance: every weight of the LiT starts fresh
        "$BIN/diffusers-lit" convert "$TEACHER" "$RUNS/$row/init" --overwrite
        "$BIN/python" -c "import sys; from diffusers_lit import LiTPipeline, LiTTransformer2DModel
p = LiTPipeline.from_pretrained(sys.argv[1]); p.transformer = LiTTransformer2DModel.from_config(p.transformer.config)
p.save_pretrained(sys.argv[1])" "$RUNS/$row/init"
        rm "$RUNS/$row/init/conversion_report.json"  # nothing was copied
      else
        "$BIN/diffusers-lit" convert "$TEACHER" "$RUNS/$row/init" --overwrite $convert
      fi
    fi
    if [ ! -f "$RUNS/$row/student/model_index.json" ]; then
      "$BIN/python" examples/distill_lit.py --teacher "$TEACHER" --student "$RUNS/$row/init" --dataset fashion-mnist \
        --output_dir "$RUNS/$row/student" --cache_dir "$RUNS/cache" --max_train_steps "$STEPS" \
        --train_batch_size "$BATCH" --lambda_noise "$noise" --lambda_var "$var" --use_ema --ema_decay 0.999 \
        --checkpointing_steps 50 --checkpoints_total_limit 1 --resume_from_checkpoint latest --report_to tensorboard
    fi
    model=$RUNS/$row/student
  fi
  "$BIN/diffusers-lit" evaluate "$model" --num-samples "$SAMPLES" --steps "$SAMPLE_STEPS" --scheduler ddim \
    --guidance-scale 1.0 --batch-size 100 --seed 0 --output "$OUT/$row.json"
done
echo "done: $OUT"
