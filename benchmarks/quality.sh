#!/usr/bin/env bash
# The embedded default's quality benchmark (docs/results.md): the shipped Fashion-MNIST DiT teacher, a LiT student
# converted from it and distilled with hybrid KD for 500 steps (20% of the teacher's 2,500), then FID of both with
# the same sampler, steps, sample count and seeds. Resumable: rerun it and finished parts are skipped.
#
#   nohup bash benchmarks/quality.sh > runs/quality.log 2>&1 &
set -eu
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
RUNS=${RUNS:-runs/quality}
OUT=${OUT:-benchmarks/results/quality}
STEPS=${STEPS:-500}; BATCH=${BATCH:-64}; SAMPLES=${SAMPLES:-2000}; SAMPLER=${SAMPLER:-ddim}; SAMPLE_STEPS=${SAMPLE_STEPS:-25}
mkdir -p "$RUNS" "$OUT"

if [ ! -f "$RUNS/student/model_index.json" ]; then
  "$BIN/python" examples/distill_lit.py --teacher assets/fmnist-dit --dataset fashion-mnist \
    --output_dir "$RUNS/student" --cache_dir "$RUNS/cache" --max_train_steps "$STEPS" --train_batch_size "$BATCH" \
    --learning_rate 1e-4 --use_ema --ema_decay 0.999 --checkpointing_steps 50 --checkpoints_total_limit 2 \
    --resume_from_checkpoint latest --report_to tensorboard --validation_steps 250 --seed 0
fi
for model in teacher student; do
  path=assets/fmnist-dit; [ "$model" = student ] && path="$RUNS/student"
  if [ ! -f "$OUT/fid-$model.json" ]; then
    "$BIN/diffusers-lit" evaluate "$path" --num-samples "$SAMPLES" --steps "$SAMPLE_STEPS" --scheduler "$SAMPLER" \
      --guidance-scale 1.0 --batch-size 100 --seed 0 --output "$OUT/fid-$model.json" --grid "$OUT/grid-$model.png"
  fi
done
echo "done: $OUT"
