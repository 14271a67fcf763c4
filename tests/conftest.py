"""Tests run offline, against a Hugging Face home of their own; Triton kernels run in its interpreter without CUDA."""

import importlib.util
import os
import tempfile

import torch

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("HF_HOME", tempfile.mkdtemp(prefix="diffusers_lit_hf_home_"))
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"  # read when a kernel is defined: before diffusers_lit is imported

# LoRA needs the `lora` extra (peft); without it its tests are not collected.
collect_ignore = [] if importlib.util.find_spec("peft") else ["test_lora.py"]
