"""The Python a LiT pipeline folder carries so that diffusers alone runs it (`trust_remote_code=True`).

diffusers takes a pipeline class outside diffusers from the module named in model_index.json's `_class_name`
(`["pipeline_lit", "LiTPipeline"]`: the file pipeline_lit.py beside it), and a custom component from the
component's own folder (`"transformer": ["transformer_lit", "LiTTransformer2DModel"]`: transformer/transformer_lit.py).
pipeline_lit.py is the package's own modules joined into one, their relative imports dropped; the fused Triton
kernels stay a module of their own beside it (imported only when chosen, where `triton` is installed).
diffusers_lit's loaders read the names and never run these files.
"""

import ast
import importlib.metadata
from pathlib import Path

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
