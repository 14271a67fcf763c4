"""Writing files whole: every writer of the package gets a temporary path beside its target and renames it onto
the target once complete, so that no file or folder is ever seen half-written and a failed write leaves nothing."""

import contextlib
import hashlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path


def check_output_path(path: str | os.PathLike, folder: bool = False) -> None:
    """Refuse to write a file (or with `folder`, a folder) where something else is: a device such as /dev/null, a
    pipe or a socket is never replaced, nor a folder by a file, nor a file by a folder."""
    path = Path(path)
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"Cannot write {path}: {parent} is not a folder.")
            break
    if not path.exists():
        return
    wanted, found = ("folder", path.is_dir()) if folder else ("regular file", path.is_file())
    if not found:
        what = "a folder" if path.is_dir() else "a file" if path.is_file() else "a device, pipe or socket"
        raise ValueError(f"{path} exists and is {what}, not a {wanted}: choose another path (it is never replaced).")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "", keep_existing: bool = False) -> Iterator[Path]:
    """A temporary path beside `path` to write a file or a folder to (ending in `suffix`, for writers such as numpy's
    that append one), renamed onto `path` when the block completes and removed when it raises. `keep_existing`: a
    folder that another process completed first is kept, and this copy dropped (caches of the same content).
    `path` must be free or a regular file (with `keep_existing`, a folder): `check_output_path`."""
    path = Path(path)
    check_output_path(path, folder=keep_existing)
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


def folder_hash(folder: str | os.PathLike) -> str:
    """sha256 over the relative paths and contents of a folder's files, to recognise a model by what it holds: the
    model card (README.md) and hidden files aside; a file of a Hugging Face cache snapshot by its blob's name, which
    is the hash of its content already."""
    folder = Path(folder)
    digest = hashlib.sha256()
    files = (path for path in folder.rglob("*") if path.is_file() and path.name != "README.md")
    for path in sorted(files):
        relative = path.relative_to(folder)
        if any(part.startswith(".") for part in relative.parts):
            continue
        digest.update(f"{relative.as_posix()}\0".encode())
        blob = path.resolve()
        if blob.parent.name == "blobs":
            digest.update(blob.name.encode())
            continue
        with open(path, "rb") as file:
            for chunk in iter(lambda: file.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()
