"""Writing files whole: every writer of the package gets a temporary path beside its target and renames it onto
the target once complete, so that no file or folder is ever seen half-written and a failed write leaves nothing."""

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "", keep_existing: bool = False) -> Iterator[Path]:
    """A temporary path beside `path` to write a file or a folder to (ending in `suffix`, for writers such as numpy's
    that append one), renamed onto `path` when the block completes and removed when it raises. `keep_existing`: a
    folder that another process completed first is kept, and this copy dropped (caches of the same content)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}{suffix}")
    try:
        yield tmp
        try:
            os.replace(tmp, path)
        except OSError:
            if not (keep_existing and path.exists()):
                raise
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp)
        elif tmp.exists():
            tmp.unlink()


def write_atomically(path: str | os.PathLike, text: str) -> None:
    """Write `text` to `path` whole (`atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
