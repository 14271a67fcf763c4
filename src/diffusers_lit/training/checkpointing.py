"""Checkpoints of a distillation run: `checkpoint-<step>` folders written by `accelerator.save_state`, a record
of the run that wrote them (`training_state.json`), the total limit and resolving `latest`."""

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

CHECKPOINT_PREFIX = "checkpoint-"
STATE_FILE = "training_state.json"


def checkpoint_step(path: str | os.PathLike) -> int:
    """The global step of a `checkpoint-<step>` folder."""
    name = Path(path).name
    if not name.startswith(CHECKPOINT_PREFIX) or not name[len(CHECKPOINT_PREFIX) :].isdigit():
        raise ValueError(f"{path} is not a checkpoint folder (expected a name like {CHECKPOINT_PREFIX}500).")
    return int(name[len(CHECKPOINT_PREFIX) :])


def list_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """The complete checkpoints in `output_dir` (those with a training_state.json), oldest first."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return []
    found = [
        path
        for path in folder.iterdir()
        if path.is_dir() and path.name.startswith(CHECKPOINT_PREFIX) and path.name[len(CHECKPOINT_PREFIX) :].isdigit()
        and (path / STATE_FILE).is_file()
    ]  # fmt: skip
    return sorted(found, key=checkpoint_step)


def resolve_checkpoint(output_dir: str | os.PathLike, resume_from: str | None) -> Path | None:
    """`--resume_from_checkpoint`: "latest" (the newest checkpoint in `output_dir`, or None when there is none),
    a checkpoint folder, or the name of one inside `output_dir`."""
    if not resume_from:
        return None
    if resume_from == "latest":
        checkpoints = list_checkpoints(output_dir)
        return checkpoints[-1] if checkpoints else None
    path = Path(resume_from)
    if not path.is_dir():
        path = Path(output_dir) / resume_from
    if not (path / STATE_FILE).is_file():
        raise ValueError(
            f"--resume_from_checkpoint {resume_from}: no checkpoint of distill_lit.py there ({path} has no "
            f"{STATE_FILE}). Give 'latest', a checkpoint folder or its name in --output_dir."
        )
    return path


def prune_checkpoints(output_dir: str | os.PathLike, total_limit: int | None) -> list[Path]:
    """Before saving a new checkpoint, remove the oldest so that at most `total_limit` remain after it."""
    if total_limit is None:
        return []
    if total_limit < 1:
        raise ValueError("--checkpoints_total_limit must be at least 1.")
    checkpoints = list_checkpoints(output_dir)
    removed = checkpoints[: max(0, len(checkpoints) - total_limit + 1)]
    for path in removed:
        shutil.rmtree(path)
    return removed


def write_training_state(checkpoint_dir: str | os.PathLike, state: dict[str, Any]) -> None:
    """Write the run's record into a checkpoint, last, so that its presence marks the checkpoint complete."""
    path = Path(checkpoint_dir) / STATE_FILE
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{STATE_FILE}.", delete=False) as tmp:
        json.dump(state, tmp, indent=2, sort_keys=True, default=str)
    os.replace(tmp.name, path)


def read_training_state(checkpoint_dir: str | os.PathLike) -> dict[str, Any]:
    return json.loads((Path(checkpoint_dir) / STATE_FILE).read_text())


def check_resume_compatible(checkpoint_dir: str | os.PathLike, signature: dict[str, Any]) -> dict[str, Any]:
    """Refuse to resume from a checkpoint of another model: its student, teacher or data layout must be the same.

    `signature` has "student" and "teacher" (`config_signature`) and "data" (input kind and shape); returns the
    checkpoint's training state."""
    state = read_training_state(checkpoint_dir)
    recorded = state.get("signature", {})
    for part in ("student", "teacher", "data"):
        if json.loads(json.dumps(recorded.get(part), default=str)) != json.loads(
            json.dumps(signature.get(part), default=str)
        ):
            raise ValueError(
                f"Cannot resume from {checkpoint_dir}: it was written for another {part} "
                f"({_difference(recorded.get(part), signature.get(part))}). Resume a checkpoint of this run, or "
                "use another --output_dir."
            )
    return state


def _difference(recorded: Any, current: Any) -> str:
    if isinstance(recorded, dict) and isinstance(current, dict):
        recorded, current = recorded.get("config", recorded), current.get("config", current)
        keys = sorted(
            key for key in set(recorded) | set(current) if json.dumps(recorded.get(key), default=str)
            != json.dumps(current.get(key), default=str)
        )  # fmt: skip
        if keys:
            return ", ".join(
                f"{key}: {recorded.get(key)} in the checkpoint, {current.get(key)} now" for key in keys[:4]
            )
    return f"{recorded} in the checkpoint, {current} now"


def check_output_dir_writable(output_dir: str | os.PathLike) -> Path:
    """Create `output_dir` if needed and prove it writable by writing a file there; clear error otherwise."""
    path = Path(output_dir)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as error:
        raise ValueError(f"--output_dir {output_dir} is not a writable folder: {error}") from error
    return path
