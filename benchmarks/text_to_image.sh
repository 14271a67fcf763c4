#!/usr/bin/env bash
# Text-to-image on Fashion-MNIST scenes (docs/results.md, "Text-to-image"): the PixArt-layout teacher trained by
# `make teacher-t2i`, LiT students converted from it and distilled with hybrid KD for at most 20% of its steps,
# every row sampled with the same prompts (the test scenes' captions), sampler, steps, seeds and guidance, then
# scored: scene / object accuracy (the shipped classifier) and FID against as many real test scenes.
#
#   nohup bash benchmarks/text_to_image.sh > runs/text_to_image.log 2>&1 &      ROWS="teacher student" for the target
#
# Every stage of every row is skipped when its output exists, so the script resumes. Knobs (environment): ROWS,
# TEACHER_RUN (the finished `make teacher-t2i` folder, copied to assets/scenes-pixart once), STEPS, BATCH, LR,
# SAMPLES, SAMPLE_STEPS, MIXED_PRECISION, PY, RUNS, OUT, TEACHER, SHIP, and STUDENT (a finished student folder, e.g.
# assets/scenes-lit: the rows student and student-g* sample it instead of distilling one).
set -eu
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}; TEACHER_RUN=${TEACHER_RUN:-runs/scenes-pixart-cpu}; TEACHER=${TEACHER:-assets/scenes-pixart}
SHIP=${SHIP:-1}  # copy the finished student to assets/scenes-lit
STUDENT=${STUDENT:-}
RUNS=${RUNS:-runs/text_to_image}; OUT=${OUT:-benchmarks/results/text_to_image}
STEPS=${STEPS:-2000}; BATCH=${BATCH:-64}; LR=${LR:-1e-3}; SAMPLES=${SAMPLES:-1000}; SAMPLE_STEPS=${SAMPLE_STEPS:-20}
MIXED_PRECISION=${MIXED_PRECISION:-$("$PY" -m diffusers_lit.hardware)}
. scripts/jemalloc.sh
ROWS=${ROWS:-"teacher student teacher-g1 teacher-g2 student-g1 student-g2 student-no-kd student-inherit-none student-inherit-o"}

if [ ! -f "$TEACHER/model_index.json" ]; then  # ship the finished teacher: the pipeline, not the checkpoints
  if [ ! -f "$TEACHER_RUN/model_index.json" ]; then
    echo "error: $TEACHER_RUN holds no finished teacher: run make teacher-t2i first" >&2; exit 2
  fi
  mkdir -p "$TEACHER"
  cp -r "$TEACHER_RUN"/{model_index.json,README.md,card_info.json,scheduler,transformer} "$TEACHER_RUN"/*.py "$TEACHER/"
fi

# row -> "student | convert options | lambda_noise lambda_var | guidance". student: the recipe (Q, K, V inherited,
# lr 1e-3, the paper's text-to-image KD weights 1.0 / 0.05); the others change one thing.
spec() {
  case $1 in
    teacher) echo "teacher | | | 4" ;;                     teacher-g*) echo "teacher | | | ${1#teacher-g}" ;;
    student) echo "student | --inherit qkv | 1.0 0.05 | 4" ;;
    student-g*) echo "student | --inherit qkv | 1.0 0.05 | ${1#student-g}" ;;
    student-no-kd) echo "student-no-kd | --inherit qkv | 0 0 | 4" ;;
    student-inherit-none) echo "student-inherit-none | --inherit none | 1.0 0.05 | 4" ;;
    student-inherit-o) echo "student-inherit-o | --inherit o | 1.0 0.05 | 4" ;;
    *) echo "unknown row $1" >&2; return 2 ;;
  esac
}

run_row() {
  local row=$1 name convert lambdas guidance noise var model=$TEACHER
  IFS='|' read -r name convert lambdas guidance <<< "$(spec "$row")"
  name=$(echo $name); guidance=$(echo $guidance)
  if [ "$name" = student ] && [ -n "$STUDENT" ]; then
    model=$STUDENT
  elif [ "$name" != teacher ]; then
    local dir=$RUNS/$name
    model=$dir/student
    if [ ! -f "$model/model_index.json" ]; then
      read -r noise var <<< "$lambdas"
      # shellcheck disable=SC2086
      [ -f "$dir/init/model_index.json" ] || "$PY" -m diffusers_lit convert "$TEACHER" "$dir/init" --overwrite $convert
      "$PY" examples/distill_lit.py --teacher "$TEACHER" --student "$dir/init" --dataset fashion-mnist-scenes \
        --output_dir "$model" --max_train_steps "$STEPS" --train_batch_size "$BATCH" --learning_rate "$LR" \
        --lambda_noise "$noise" --lambda_var "$var" --use_ema --ema_decay 0.999 --ema_schedule warmup \
        --max_grad_norm 1.0 --mixed_precision "$MIXED_PRECISION" --checkpointing_steps 100 \
        --checkpoints_total_limit 1 --resume_from_checkpoint latest --report_to tensorboard --seed 0
    fi
    mkdir -p "$OUT"
    cp "$model/logs/metrics.jsonl" "$OUT/metrics-$name.jsonl"
  fi
  local samples=$RUNS/samples/$row.npz
  mkdir -p "$OUT" "$RUNS/samples"
  [ -f "$samples" ] || "$PY" -m diffusers_lit generate "$model" --num-samples "$SAMPLES" --steps "$SAMPLE_STEPS" \
    --scheduler dpm++ --guidance-scale "$guidance" --batch-size 100 --seed 0 --prompts scenes --output "$samples"
  [ -f "$OUT/$row.json" ] || "$PY" -m diffusers_lit evaluate "$samples" --output "$OUT/$row.json" \
    --grid "$OUT/grid-$row.png"
}

for row in $ROWS; do spec "$row" > /dev/null; done  # unknown rows refused before any work
for row in $ROWS; do
  run_row "$row"
  if [ "$SHIP" = 1 ] && [ "$row" = student ] && [ ! -f assets/scenes-lit/model_index.json ]; then  # the recipe's
    mkdir -p assets/scenes-lit
    cp -r "$RUNS/student/student"/{model_index.json,README.md,card_info.json,scheduler,transformer} "$RUNS/student/student"/*.py assets/scenes-lit/
  fi
done
# The README's grid: the first prompts, teacher row then student row, from the same samples files.
if [ -f "$RUNS/samples/teacher.npz" ] && [ -f "$RUNS/samples/student.npz" ] && [ ! -f "$OUT/teacher-student.png" ]; then
  "$PY" - "$RUNS/samples" "$OUT/teacher-student.png" <<'GRID'
import sys
import torch
from diffusers_lit.evaluation import image_grid, load_samples, tensor_to_pil
folder, path = sys.argv[1], sys.argv[2]
(teacher, _, info), (student, _, _) = (load_samples(f"{folder}/{name}.npz") for name in ("teacher", "student"))
shown = 4
captions = [f"{who}: {prompt}" for who in ("T", "S") for prompt in info["prompts"][:shown]]
images = tensor_to_pil(torch.cat([teacher[:shown], student[:shown]]).float() / 255)
image_grid(images, captions, columns=shown, scale=4).save(path)
GRID
fi
# The ceiling: the classifier on as many real test scenes (and their FID against themselves is 0 by definition).
[ -f "$OUT/real-scenes.json" ] || "$PY" - "$SAMPLES" "$OUT/real-scenes.json" <<'EOF'
import json, sys
import numpy as np, torch
from diffusers_lit.adherence import load_classifier, scene_adherence
from diffusers_lit.scenes import load_scenes
count, path = int(sys.argv[1]), sys.argv[2]
scenes = load_scenes("test").select(range(count)).with_format("numpy")
images = torch.from_numpy(np.asarray(scenes["image"], dtype=np.uint8))[:, None]
left, right = torch.tensor(scenes["left_label"]), torch.tensor(scenes["right_label"])
result = scene_adherence(load_classifier(), images, left, right)
open(path, "w").write(json.dumps({"model": "real test scenes", **result}, indent=2) + "\n")
print(result)
EOF
