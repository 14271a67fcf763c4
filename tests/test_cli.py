import pytest
from helpers import class_pipeline, text_pipeline
from PIL import Image

from diffusers_lit.cli import main


def test_sample_class_labels(tmp_path):
    class_pipeline().save_pretrained(tmp_path / "pipe")
    output = tmp_path / "grid.png"
    main(
        [
            "sample",
            str(tmp_path / "pipe"),
            "--class-labels",
            "cat",
            "2",
            "dog",
            "--steps",
            "2",
            "--output",
            str(output),
            "--scheduler",
            "euler",
            "--width",
            "16",
        ]
    )
    assert Image.open(output).size == (2 * 16, 2 * (8 + 12))


def test_sample_prompt(tmp_path):
    text_pipeline(tmp_path).save_pretrained(tmp_path / "pipe")
    output = tmp_path / "grid.png"
    main(
        [
            "sample",
            str(tmp_path / "pipe"),
            "--prompt",
            "a cat",
            "--steps",
            "1",
            "--output",
            str(output),
            "--height",
            "16",
            "--width",
            "16",
        ]
    )
    assert Image.open(output).size == (4 * 16, 4 * 16 + 12)  # small images enlarged 4x under their prompt


def test_sample_needs_the_right_condition(tmp_path):
    class_pipeline().save_pretrained(tmp_path / "pipe")
    with pytest.raises(ValueError, match="give --class-labels, not --prompt"):
        main(["--debug", "sample", str(tmp_path / "pipe"), "--prompt", "a cat"])
    with pytest.raises(ValueError, match="either --class-labels or --prompt"):
        main(["--debug", "sample", str(tmp_path / "pipe")])


def test_python_dash_m_runs_the_command_line():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "diffusers_lit", "--help"], capture_output=True, text=True, check=True)
    assert "generate" in out.stdout and "evaluate" in out.stdout


def test_a_users_mistake_prints_error_and_exits_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit:
        main(["sample", str(tmp_path / "missing"), "--class-labels", "0"])
    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "missing" in err and "Traceback" not in err
    with pytest.raises(OSError):  # --debug: the error itself, with its traceback
        main(["--debug", "sample", str(tmp_path / "missing"), "--class-labels", "0"])


def test_prompts_from_a_file_and_its_mistakes(tmp_path):
    from diffusers_lit.cli import _prompts

    with pytest.raises(ValueError, match="no such file"):
        _prompts(str(tmp_path / "missing.txt"), 3)
    (tmp_path / "empty.txt").write_text("\n  \n")
    with pytest.raises(ValueError, match="holds no prompts"):
        _prompts(str(tmp_path / "empty.txt"), 3)
    (tmp_path / "two.txt").write_text("a cat\n\na dog\n")
    assert _prompts(str(tmp_path / "two.txt"), 3) == ["a cat", "a dog", "a cat"]  # repeated in turn
