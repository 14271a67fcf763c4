import os
import re
from pathlib import Path

import pytest

README = Path(__file__).parents[1] / "README.md"


def test_quick_start_runs_as_written(tmp_path, capsys):
    section = README.read_text().split("## Quick start", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) >= 2
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        exec(compile("\n".join(blocks), "README.md", "exec"), {})
    finally:
        os.chdir(cwd)
    assert "torch.Size([2, 2, 32, 48])" in capsys.readouterr().out
    assert (tmp_path / "lit-tiny-pipeline" / "model_index.json").is_file()


@pytest.mark.parametrize(
    "pipeline_class, count, size", [("LiTPipeline", 2, (32, 32)), ("LiTTextToImagePipeline", 1, (64, 32))]
)
def test_the_pipeline_docstring_examples_run(pipeline_class, count, size, monkeypatch):
    import diffusers_lit

    docstring = getattr(diffusers_lit, pipeline_class).__call__.__doc__
    code = "\n".join(line.strip()[4:] for line in docstring.splitlines() if line.strip().startswith(">>> "))
    assert "from_pretrained" in code
    monkeypatch.chdir(README.parent)  # the examples load the shipped assets/
    namespace = {}
    exec(compile(code, f"{pipeline_class}.__call__", "exec"), namespace)
    images = namespace.get("images") or [namespace["image"]]
    assert len(images) == count and all(image.size == size for image in images)  # PIL: (width, height)
