"""Sampling over any number of processes (`accelerate launch`), in resumable shards.

Samples 0..N-1 are cut into shards of `shard_size`; process r of P draws shards r, r + P, ... Image i is drawn
from the seed `seed + i` whatever the process count, so the samples are the same for 1 process or 8. Each shard
is written atomically into a folder beside the output, with the run's settings (`run.json`): a killed run resumes
without redrawing its finished shards, and shards of a run with other settings are refused, never mixed. When
every shard is there, the main process merges them, in order, into one samples file.
"""

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from accelerate import PartialState
from accelerate.utils import parse_flag_from_env
from tqdm.auto import tqdm

from .evaluation import load_samples, save_samples
from .files import write_atomically

SETTINGS_FILE = "run.json"


def process_state() -> PartialState:
    """This process's place among those of `accelerate launch` (one process without it); CPU processes where
    ACCELERATE_USE_CPU is set, as `Accelerator` reads it."""
    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))


def shard_ranges(num_samples: int, shard_size: int) -> list[range]:
    """The sample indices of each shard: [0, s), [s, 2 s), ..., the last one shorter where s does not divide N."""
    if num_samples < 1 or shard_size < 1:
        raise ValueError(f"Need at least one sample and a shard size of at least 1, got {num_samples}, {shard_size}.")
    return [range(start, min(start + shard_size, num_samples)) for start in range(0, num_samples, shard_size)]


def shard_folder(output: Path) -> Path:
    """Where the shards of `output` are kept while it is made: `.NAME.shards` beside it."""
    return output.with_name(f".{output.name}.shards")


def _check_settings(folder: Path, settings: dict[str, Any], state: PartialState) -> None:
    """Record the run's settings in a fresh shard folder, or refuse a folder written with other settings."""
    path = folder / SETTINGS_FILE
    if state.is_main_process:
        folder.mkdir(parents=True, exist_ok=True)
        if not path.is_file():
            write_atomically(path, json.dumps(settings, indent=2, sort_keys=True) + "\n")
    state.wait_for_everyone()
    recorded = json.loads(path.read_text())
    if recorded != json.loads(json.dumps(settings)):
        changed = sorted(key for key in set(recorded) | set(settings) if recorded.get(key) != settings.get(key))
        raise ValueError(
            f"{folder} holds shards of a run with other settings ({', '.join(changed)}): they are not mixed in. "
            "Rerun with the same settings to resume it, or delete the folder to start afresh."
        )


def sample_in_shards(
    sample: Callable[[range], tuple[torch.Tensor, list, dict]],
    num_samples: int,
    output: str | Path,
    settings: dict[str, Any],
    *,
    shard_size: int = 100,
    layout: str = "diffusers_lit",
) -> dict[str, Any] | None:
    """Draw samples 0..`num_samples`-1 with `sample(indices) -> (images, labels, info)` over the processes of
    `accelerate launch` (or one), shard by shard, and merge them into the samples file `output` (`save_samples`,
    `layout`). `settings` identify the run (model, sampler, seed, ...: whatever changes the images). Returns the
    merged file's info on the main process, None on the others."""
    state = process_state()
    output = Path(output)
    folder = shard_folder(output)
    _check_settings(folder, {**settings, "shard_size": shard_size}, state)
    shards = shard_ranges(num_samples, shard_size)
    mine = shards[state.process_index :: state.num_processes]
    start = time.perf_counter()
    drawn = 0
    for indices in tqdm(mine, desc="shards", disable=not state.is_local_main_process):
        path = folder / f"shard-{indices.start:08d}-{indices.stop:08d}.npz"
        if path.is_file():  # drawn before the run was stopped
            continue
        images, labels, info = sample(indices)
        save_samples(path, images, labels, info)
        drawn += len(indices)
    seconds = time.perf_counter() - start
    state.wait_for_everyone()
    if not state.is_main_process:
        return None
    parts = [load_samples(folder / f"shard-{r.start:08d}-{r.stop:08d}.npz") for r in shards]
    images = torch.cat([part[0] for part in parts])
    labels = [label for part in parts for label in part[1]]
    info = {key: value for key, value in parts[0][2].items() if key not in ("prompts", "seconds_per_image")}
    if "prompts" in parts[0][2]:
        info["prompts"] = [prompt for part in parts for prompt in part[2]["prompts"]]
    info["num_processes"] = state.num_processes
    if drawn:
        info["seconds_per_image"] = seconds / drawn  # this process's drawing time, per image it drew
    save_samples(output, images, labels, info, layout=layout)
    shutil.rmtree(folder)
    return info
