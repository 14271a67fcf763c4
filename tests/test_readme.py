import os
import re
from pathlib import Path

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
