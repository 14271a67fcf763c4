"""Hub plumbing shared by the LiT pipelines: resolving a folder or repo id, model cards, saving and pushing."""

import importlib.metadata
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from huggingface_hub import ModelCard, ModelCardData, create_repo, snapshot_download
from huggingface_hub.constants import is_offline_mode
from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError, OfflineModeIsEnabled

from .files import write_atomically
from .remote_code import PACKAGE_TRANSFORMER_MODULE, PIPELINE_MODULE, TRANSFORMER_MODULE, remote_code_files

MODEL_CARD_TEMPLATE = Path(__file__).parent / "model_card_template.md"  # package data; the top level links here
UNRECORDED_ORIGIN = "Saved with diffusers_lit's `save_pretrained`; its origin was not recorded."
CARD_INFO_FILE = "card_info.json"  # the facts a pipeline's model card is rendered from, kept as data


def resolve_pretrained_folder(
    name_or_path: str | os.PathLike,
    *,
    cache_dir: str | os.PathLike | None = None,
    revision: str | None = None,
    token: str | bool | None = None,
    local_files_only: bool = False,
    force_download: bool = False,
) -> Path:
    """A local folder as it is, or a Hub repo id fetched into the Hugging Face cache (its local snapshot)."""
    path = Path(name_or_path)
    if path.is_dir():
        return path
    if path.exists():
        raise ValueError(f"{path} is a file; pass a pipeline folder (with model_index.json) or a Hub repo id.")
    offline = is_offline_mode()
    try:
        return Path(
            snapshot_download(
                str(name_or_path),
                cache_dir=cache_dir,
                revision=revision,
                token=token,
                local_files_only=local_files_only or offline,
                force_download=force_download,
                library_name="diffusers_lit",
                library_version=importlib.metadata.version("diffusers_lit"),
            )
        )
    except HFValidationError as error:
        raise OSError(f"{name_or_path!r} is neither an existing folder nor a valid Hub repo id.") from error
    except (LocalEntryNotFoundError, OfflineModeIsEnabled) as error:
        why = (
            " Offline mode is on (HF_HUB_OFFLINE=1), so only the local cache was searched."
            if offline
            else " It is not in the local cache and could not be fetched from the Hub."
        )
        raise OSError(
            f"Cannot load {name_or_path!r}: it is not a local folder and no snapshot of it (revision "
            f"{revision or 'main'}) was found.{why} Check the name, or download it where there is a network."
        ) from error


def read_pipeline_class_name(folder: Path) -> str:
    """The pipeline class named in a pipeline folder's model_index.json (`"LiTPipeline"` or, as diffusers_lit
    saves it for diffusers, `["pipeline_lit", "LiTPipeline"]`)."""
    index = folder / "model_index.json"
    if not index.is_file():
        raise ValueError(
            f"{folder} has no model_index.json: it is not a diffusers pipeline folder. To turn a DiT or PixArt "
            "checkpoint into a LiT pipeline, use `diffusers-lit convert`."
        )
    return pipeline_class_name(json.loads(index.read_text())["_class_name"])


def pipeline_class_name(recorded: str | list[str]) -> str:
    """The class name of a model_index.json `_class_name`: a name, or diffusers' [module, name] of custom code."""
    return recorded[-1] if isinstance(recorded, list) else recorded


def write_remote_code(folder: Path, with_lit_transformer: bool) -> None:
    """Put in `folder` the code that `DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)` runs
    (`remote_code.remote_code_files`)."""
    for name, text in remote_code_files(with_lit_transformer).items():
        write_atomically(folder / name, text)


def write_model_index(folder: Path, index: dict[str, Any]) -> None:
    """Write a pipeline folder's model_index.json by hand (where no pipeline object is built, as diffusers' own
    `save_pretrained` would write it), naming its code as `remote_code_index` does, with that code beside it."""
    index = remote_code_index(index)
    write_atomically(folder / "model_index.json", json.dumps(index, indent=2, sort_keys=True) + "\n")
    write_remote_code(folder, index.get("transformer") == [TRANSFORMER_MODULE, "LiTTransformer2DModel"])


def remote_code_index(index: dict[str, Any]) -> dict[str, Any]:
    """model_index.json's entries as diffusers alone reads them: the pipeline class and a LiT transformer named
    as custom code in the folder (`write_remote_code`)."""
    index = dict(index, _class_name=[PIPELINE_MODULE, pipeline_class_name(index["_class_name"])])
    if index.get("transformer", [None])[-1] == "LiTTransformer2DModel":
        index["transformer"] = [TRANSFORMER_MODULE, "LiTTransformer2DModel"]
    return index


def read_card_info(folder: Path) -> dict[str, Any]:
    """What a pipeline folder records about the model's origin (its card_info.json, the data its model card is
    rendered from): `base_model`, `license`, `how_made`, and facts such as `training_steps`; {} where none."""
    path = folder / CARD_INFO_FILE
    if not path.is_file():
        return {}
    try:
        info = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error}): fix it or delete it (the card's source).") from None
    if not isinstance(info, dict):
        raise ValueError(f"{path} must hold a JSON object (base_model, license, how_made, ...).")
    return info


def write_card_info(folder: Path, info: dict[str, Any]) -> None:
    """Record `info` (see `read_card_info`; unknown values left out) in `folder`."""
    known = {key: value for key, value in info.items() if value is not None}
    write_atomically(folder / CARD_INFO_FILE, json.dumps(known, indent=2, sort_keys=True) + "\n")


def render_model_card(
    *,
    model_name: str,
    pipeline_tag: str,
    usage: str,
    description: str,
    base_model: str | list[str] | None = None,
    license: str | None = None,
    how_made: str | None = None,
    transformer_class: str = "LiTTransformer2DModel",
) -> ModelCard:
    """A model card from the package's model_card_template.md (the repository's top-level one links to it)."""
    card_data = ModelCardData(
        library_name="diffusers_lit",
        pipeline_tag=pipeline_tag,
        base_model=base_model,
        license=license,
        tags=["diffusers", "diffusers_lit", pipeline_tag]
        + (["lit", "linear-attention"] if transformer_class == "LiTTransformer2DModel" else []),
    )
    return ModelCard.from_template(
        card_data,
        template_path=MODEL_CARD_TEMPLATE,
        model_name=model_name,
        description=description,
        how_made=how_made or UNRECORDED_ORIGIN,
        usage=usage,
        is_lit=transformer_class == "LiTTransformer2DModel",
        transformer_class=transformer_class,
    )


def lit_pipeline_classes() -> dict[str, type]:
    """The LiT pipeline classes by name: every class built on `LiTHubMixin` (so hub needs no import of them)."""
    found, pending = {}, list(LiTHubMixin.__subclasses__())
    while pending:
        cls = pending.pop()
        found[cls.__name__] = cls
        pending.extend(cls.__subclasses__())
    return found


class LiTHubMixin:
    """Model cards on `save_pretrained` / `push_to_hub`, and a record of where the pipeline came from.

    `card_info` holds `base_model`, `license` and `how_made`; it is read back from the card on load.
    """

    pipeline_tag: str
    task: str
    card_info: dict[str, Any]
    loads_any_lit_pipeline = False

    @classmethod
    def load_config(cls, *args: Any, **kwargs: Any) -> Any:
        """diffusers' `load_config`, with `_class_name` read as a plain name: diffusers_lit loads its own class and
        never runs the folder's `pipeline_lit.py` (only `DiffusionPipeline` with `trust_remote_code=True` does)."""
        loaded = super().load_config(*args, **kwargs)
        config = loaded[0] if isinstance(loaded, tuple) else loaded
        if "_class_name" in config:
            config["_class_name"] = pipeline_class_name(config["_class_name"])
        if config.get("transformer") == [TRANSFORMER_MODULE, "LiTTransformer2DModel"]:
            config["transformer"] = [PACKAGE_TRANSFORMER_MODULE, "LiTTransformer2DModel"]
        return loaded

    def to_json_string(self) -> str:
        """model_index.json as diffusers writes it, naming the class as custom code diffusers can find."""
        return json.dumps(remote_code_index(json.loads(super().to_json_string())), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs: Any) -> Any:
        """Load a LiT pipeline from a local folder or a Hub repo id.

        A repo id is fetched with huggingface_hub first (`revision`, `token`, `cache_dir`, `local_files_only`,
        `force_download` and HF_HUB_OFFLINE are honoured), then loaded from the local snapshot. The pipeline
        class comes from model_index.json: `LiTPipeline.from_pretrained` loads either kind. Other keyword
        arguments (`torch_dtype`, components to replace, ...) go to diffusers' `from_pretrained`.
        """
        from diffusers import DiffusionPipeline

        pipelines = lit_pipeline_classes()
        hub_keys = ("cache_dir", "revision", "token", "local_files_only", "force_download")
        folder = resolve_pretrained_folder(
            pretrained_model_name_or_path, **{key: kwargs.pop(key) for key in hub_keys if key in kwargs}
        )
        class_name = read_pipeline_class_name(folder)
        if class_name not in pipelines:
            raise ValueError(
                f"{pretrained_model_name_or_path} holds a {class_name}, not a LiT pipeline ({', '.join(pipelines)}). "
                "To turn a DiT or PixArt pipeline into LiT, use `diffusers-lit convert`."
            )
        pipeline_class = pipelines[class_name]
        if not (cls.loads_any_lit_pipeline or issubclass(pipeline_class, cls)):
            raise ValueError(
                f"{pretrained_model_name_or_path} holds a {class_name}, not a {cls.__name__}: load it with "
                f"{class_name} or LiTPipeline."
            )
        pipeline = DiffusionPipeline.from_pretrained.__func__(pipeline_class, folder, **kwargs)
        pipeline.card_info = read_card_info(folder)
        return pipeline

    @classmethod
    def usage_snippet(cls, repo_id: str, example: str | None = None) -> str:
        """Python that loads `repo_id` and generates one image (`example`: a label or prompt to show)."""
        raise NotImplementedError

    @classmethod
    def render_card(
        cls,
        repo_id: str,
        card_info: dict[str, Any],
        example: str | None = None,
        transformer_class: str = "LiTTransformer2DModel",
    ) -> ModelCard:
        """The model card of a pipeline of this class saved as `repo_id`."""
        return render_model_card(
            model_name=repo_id.rstrip("/").split("/")[-1],
            pipeline_tag=cls.pipeline_tag,
            usage=cls.usage_snippet(repo_id, example),
            description=f"A `{cls.__name__}` for {cls.task}.",
            base_model=card_info.get("base_model"),
            license=card_info.get("license"),
            how_made=card_info.get("how_made"),
            transformer_class=transformer_class,
        )

    def model_card(self, repo_id: str) -> ModelCard:
        return self.render_card(repo_id, self.card_info, self.card_example, type(self.transformer).__name__)

    @property
    def card_example(self) -> str | None:
        return None

    def save_pretrained(self, save_directory: str | os.PathLike, push_to_hub: bool = False, **kwargs: Any) -> None:
        """diffusers' `save_pretrained`, plus a README.md model card (for `repo_id`, else the folder);
        `push_to_hub=True` then uploads. Refused while the transformer holds LoRA adapters: its weights would be
        saved under the adapters' layer names and reload fresh."""
        if getattr(self.transformer, "peft_config", None):
            raise ValueError(
                f"The transformer holds LoRA adapters ({', '.join(self.transformer.peft_config)}): save them with "
                "`pipe.save_lora_weights(folder)`, or merge them into the weights (`pipe.fuse_lora()`, then "
                "`pipe.unload_lora_weights()`) before `save_pretrained`."
            )
        hub_kwargs = {
            key: kwargs.pop(key) for key in ("commit_message", "private", "token", "create_pr") if key in kwargs
        }
        repo_id = kwargs.pop("repo_id", None)
        super().save_pretrained(save_directory, **kwargs)
        write_remote_code(Path(save_directory), type(self.transformer).__name__ == "LiTTransformer2DModel")
        write_card_info(Path(save_directory), self.card_info)
        write_atomically(Path(save_directory) / "README.md", str(self.model_card(repo_id or str(save_directory))))
        if push_to_hub:
            self.push_to_hub(repo_id or Path(save_directory).name, **hub_kwargs, **kwargs)

    def push_to_hub(
        self,
        repo_id: str,
        commit_message: str | None = None,
        private: bool | None = None,
        token: str | None = None,
        create_pr: bool = False,
        safe_serialization: bool = True,
        variant: str | None = None,
    ) -> Any:
        """Save the pipeline with its model card into a temporary folder and upload it to `repo_id`."""
        repo_id = create_repo(repo_id, private=private, token=token, exist_ok=True).repo_id
        with tempfile.TemporaryDirectory() as tmpdir:
            self.save_pretrained(tmpdir, safe_serialization=safe_serialization, variant=variant, repo_id=repo_id)
            return self._upload_folder(
                tmpdir, repo_id, token=token, commit_message=commit_message, create_pr=create_pr
            )

    def upload_saved(
        self,
        folder: str | os.PathLike,
        repo_id: str,
        token: str | None = None,
        commit_message: str | None = None,
        create_pr: bool = False,
        private: bool | None = None,
    ) -> Any:
        """Upload `folder`, where this pipeline was saved (with what was written beside it, e.g. a conversion
        report), to `repo_id`, created if missing."""
        repo_id = create_repo(repo_id, private=private, token=token, exist_ok=True).repo_id
        return self._upload_folder(folder, repo_id, token=token, commit_message=commit_message, create_pr=create_pr)
