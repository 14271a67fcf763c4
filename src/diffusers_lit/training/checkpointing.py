"""Checkpoints of a distillation run: `checkpoint-<step>` folders written by `accelerator.save_state`, a record
of the run that wrote them (`training_state.json`), the total limit and resolving `latest`."""

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ..files import atomic_path, write_atomically

CHECKPOINT_PREFIX = "checkpoint-"
STATE_FILE = "training_state.json"
EMA_WEIGHTS, EMA_STATE = "ema.safetensors", "ema.json"
# What a run writes into its output folder besides checkpoints: the final pipeline and the logs.
RUN_OUTPUTS = (
    "model_index.json",
    "README.md",
    "transformer",
    "scheduler",
    "vae",
    "tokenizer",
    "text_encoder",
    "logs",
    "validation",
    "pytorch_lora_weights.safetensors",
)


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
        if path.is_dir()
        and path.name.startswith(CHECKPOINT_PREFIX)
        and path.name[len(CHECKPOINT_PREFIX) :].isdigit()
        and (path / STATE_FILE).is_file()
    ]
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
            f"Cannot resume from {resume_from}: no checkpoint of a diffusers_lit run there ({path} has no "
            f"{STATE_FILE}). Give 'latest', a checkpoint folder or its name in the output folder."
        )
    return path


def prune_checkpoints(output_dir: str | os.PathLike, total_limit: int | None) -> list[Path]:
    """After a new checkpoint is complete, remove the oldest complete ones so that `total_limit` remain: a run
    killed at any moment keeps its newest complete checkpoint."""
    if total_limit is None:
        return []
    if total_limit < 1:
        raise ValueError(f"`total_limit` must be at least 1 (None keeps every checkpoint), got {total_limit}.")
    checkpoints = list_checkpoints(output_dir)
    removed = checkpoints[: max(0, len(checkpoints) - total_limit)]
    for path in removed:
        shutil.rmtree(path)
    return removed


def previous_run(output_dir: str | os.PathLike) -> list[str]:
    """What an earlier run left in `output_dir`: its checkpoints, final pipeline and metrics (empty if none)."""
    folder = Path(output_dir)
    found = [path.name for path in list_checkpoints(folder)]
    outputs = ("model_index.json", "pytorch_lora_weights.safetensors", "logs/metrics.jsonl")
    found += [name for name in outputs if (folder / name).is_file()]
    return found


def clear_previous_run(output_dir: str | os.PathLike) -> None:
    """Remove an earlier run's checkpoints, final pipeline and logs from `output_dir` (what `--overwrite_output_dir`
    asks for); other files stay."""
    folder = Path(output_dir)
    for path in folder.iterdir():
        is_run = path.name.startswith(CHECKPOINT_PREFIX) or path.name in RUN_OUTPUTS
        if is_run:
            shutil.rmtree(path) if path.is_dir() else path.unlink()


def save_ema(ema, checkpoint_dir: str | os.PathLike) -> None:
    """The EMA weights as safetensors and its step counter as JSON (never a pickle, so reading runs no code)."""
    from safetensors.torch import save_file

    folder = Path(checkpoint_dir)
    tensors = {f"shadow.{index}": param.detach().cpu().contiguous() for index, param in enumerate(ema.shadow_params)}
    with atomic_path(folder / EMA_WEIGHTS) as tmp:
        save_file(tensors, str(tmp))
    state = {
        "optimization_step": int(ema.optimization_step),
        "decay": ema.decay,
        "min_decay": ema.min_decay,
        "num_tensors": len(tensors),
    }
    write_json(folder / EMA_STATE, state)


def check_no_pickled_objects(checkpoint_dir: str | os.PathLike) -> None:
    """Refuse a checkpoint holding accelerate's pickles of registered objects (`custom_checkpoint_*.pkl`: an older
    run's EMA, or a doctored file): unpickling runs code, so they are never loaded."""
    found = sorted(path.name for path in Path(checkpoint_dir).glob("custom_checkpoint_*.pkl"))
    if found:
        raise ValueError(
            f"{checkpoint_dir} holds pickled objects ({', '.join(found)}), which are never loaded (unpickling can run "
            "code): resume a checkpoint written by this version, or start a new run."
        )


def load_ema(ema, checkpoint_dir: str | os.PathLike) -> None:
    """Restore `ema` from `save_ema`'s files, refusing (with the file's name) anything that does not fit it."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(checkpoint_dir)
    weights, state_file = folder / EMA_WEIGHTS, folder / EMA_STATE
    if not weights.is_file() or not state_file.is_file():
        raise ValueError(
            f"{folder} has no EMA weights ({EMA_WEIGHTS}, {EMA_STATE}): resume it without --use_ema, or start a "
            "new run."
        )
    try:
        state = json.loads(state_file.read_text())
        step = int(state["optimization_step"])
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{state_file} is not an EMA state of distill_lit.py: {error}") from error
    try:
        tensors = load_file(str(weights))
    except (SafetensorError, OSError) as error:
        raise ValueError(f"{weights} is not a readable safetensors file: {error}") from error
    expected = {f"shadow.{index}": param for index, param in enumerate(ema.shadow_params)}
    if set(tensors) != set(expected) or any(tensors[key].shape != expected[key].shape for key in expected):
        raise ValueError(f"{weights} holds EMA weights of another model ({len(tensors)} tensors for {len(expected)}).")
    for key, param in expected.items():
        param.data.copy_(tensors[key].to(param.dtype))
    ema.optimization_step = step


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write `data` as JSON to `path`, whole."""
    write_atomically(path, json.dumps(data, indent=2, sort_keys=True, default=str))


def write_training_state(checkpoint_dir: str | os.PathLike, state: dict[str, Any]) -> None:
    """Write the run's record into a checkpoint, last, so that its presence marks the checkpoint complete."""
    write_json(Path(checkpoint_dir) / STATE_FILE, state)


def read_training_state(checkpoint_dir: str | os.PathLike) -> dict[str, Any]:
    return json.loads((Path(checkpoint_dir) / STATE_FILE).read_text())


def check_resume_compatible(checkpoint_dir: str | os.PathLike, signature: dict[str, Any]) -> dict[str, Any]:
    """Refuse to resume from a checkpoint of another model: its student, teacher or data layout must be the same.

    `signature` has "student" and "teacher" (`config_signature`) and "data" (input kind and shape); a part that is
    None (a from-scratch run's teacher) is not compared. Returns the checkpoint's training state."""
    state = read_training_state(checkpoint_dir)
    recorded = state.get("signature", {})
    for part in (name for name in ("student", "teacher", "data") if signature.get(name) is not None):
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
            key
            for key in set(recorded) | set(current)
            if json.dumps(recorded.get(key), default=str) != json.dumps(current.get(key), default=str)
        )
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
        raise ValueError(f"The output folder {output_dir} is not writable: {error}") from error
    return path


def check_run_folder(output_dir: str | os.PathLike, *, resume: str | None, overwrite: bool) -> Path:
    """`output_dir` created and proven writable, refused if it holds an earlier run (`previous_run`) that is
    neither to be resumed (`resume`, "latest" or a checkpoint) nor replaced (`overwrite`)."""
    folder = check_output_dir_writable(output_dir)
    earlier = previous_run(folder)
    if earlier and not resume and not overwrite:
        raise ValueError(
            f"--output_dir {folder} holds an earlier run ({', '.join(earlier[:4])}): pass "
            "--resume_from_checkpoint latest to continue it, --overwrite_output_dir to replace it, or choose "
            "another folder."
        )
    return folder
