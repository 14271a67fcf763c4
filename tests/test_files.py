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
    with pytest.raises(OSError), atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "data").write_text("ours")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache"]  # the temporary folder is removed
