"""Tests run offline, against a Hugging Face home of their own."""

import os
import tempfile

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("HF_HOME", tempfile.mkdtemp(prefix="diffusers_lit_hf_home_"))
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
