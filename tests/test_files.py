"""Files are written whole: a temporary path beside the target, renamed onto it once complete."""

import pytest

from diffusers_lit.files import atomic_path, write_atomically


def test_a_file_appears_whole_or_not_at_all(tmp_path):
    target = tmp_path / "state.json"
    write_atomically(target, "first")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "first" and sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_a_folder_another_process_completed_first_is_kept_only_when_asked(tmp_path):
    target = tmp_path / "cache"
    target.mkdir()
    (target / "data").write_text("theirs")
    with atomic_path(target, keep_existing=True) as tmp:
        tmp.mkdir()
        (tmp / "data").write_text("ours")
    assert (target / "data").read_text() == "theirs" and sorted(p.name for p in tmp_path.iterdir()) == ["cache"]
    with pytest.raises(ValueError, match="cache exists and is a folder"), atomic_path(target) as tmp:
        tmp.mkdir()  # refused before: a file's writer never replaces a folder
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache"]


def test_a_target_that_is_not_a_regular_file_is_refused_before_writing(tmp_path):
    """A device node, a pipe or a folder is never replaced by a file (nor a file by a folder)."""
    import os

    from diffusers_lit.files import check_output_path

    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "folder").mkdir()
    (tmp_path / "file").write_text("mine")
    for target, what in (
        ("/dev/null", "a device, pipe or socket"),
        (tmp_path / "pipe", "a device, pipe or socket"),
        (tmp_path / "folder", "a folder"),
    ):
        with pytest.raises(ValueError) as error, atomic_path(target) as tmp:
            tmp.write_text("x")
        assert str(error.value) == (
            f"{target} exists and is {what}, not a regular file: choose another path (it is never replaced)."
        )
    with pytest.raises(ValueError, match="file exists and is a file, not a folder"):
        check_output_path(tmp_path / "file", folder=True)
    with pytest.raises(ValueError, match=f"Cannot write {tmp_path / 'file' / 'x.json'}: .*file is not a folder"):
        write_atomically(tmp_path / "file" / "x.json", "x")
    assert (tmp_path / "file").read_text() == "mine" and (tmp_path / "pipe").exists()
    assert os.path.exists("/dev/null") and not os.path.isfile("/dev/null")
    check_output_path(tmp_path / "file")  # a regular file is replaced whole, as before
    check_output_path(tmp_path / "new" / "deeper.json")  # missing folders are made by the writers


def test_a_folders_hash_follows_its_content_not_its_path_or_card(tmp_path):
    from diffusers_lit.files import folder_hash

    (tmp_path / "a" / "transformer").mkdir(parents=True)
    (tmp_path / "a" / "transformer" / "weights").write_bytes(b"\x00" * 10)
    (tmp_path / "a" / "model_index.json").write_text("{}")
    first = folder_hash(tmp_path / "a")
    (tmp_path / "a").rename(tmp_path / "b")
    (tmp_path / "b" / "README.md").write_text("a card")
    (tmp_path / "b" / ".cache").mkdir()
    (tmp_path / "b" / ".cache" / "x").write_text("y")
    assert folder_hash(tmp_path / "b") == first
    (tmp_path / "b" / "transformer" / "weights").write_bytes(b"\x00" * 9 + b"\x01")
    assert folder_hash(tmp_path / "b") != first
