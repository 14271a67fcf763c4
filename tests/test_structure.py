"""The shape of the package: no module imports one that imports it back, directly or through others."""

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "diffusers_lit"


def module_names() -> dict[str, Path]:
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def imported(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package modules `name` imports, anywhere in its code (imports inside functions run too)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            for alias in node.names:  # `from . import x` imports the module x where there is one
                found.add(f"{module}.{alias.name}" if f"{module}.{alias.name}" in modules else module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {module for module in found if module in modules and module != name}


def import_graph() -> dict[str, set[str]]:
    """Module -> the modules importing it runs: each imported module and the sub-packages above it (their
    __init__ runs first), but not the packages the importer itself sits in (already running), nor the
    top-level package (the facade of public names, which no module imports: see the test below)."""
    modules = module_names()
    graph = {}
    for name, path in modules.items():
        edges = set()
        for target in imported(name, path, modules):
            parts = target.split(".")
            for module in (".".join(parts[:end]) for end in range(len(parts), 1, -1)):
                if module != name and not name.startswith(module + "."):
                    edges.add(module)
        graph[name] = edges
    return graph


def cycle_through(graph: dict[str, set[str]], start: str) -> list[str] | None:
    stack = [(start, [start])]
    while stack:
        node, path = stack.pop()
        for following in sorted(graph[node]):
            if following == start:
                return [*path, start]
            if following not in path:
                stack.append((following, [*path, following]))
    return None


def test_no_module_imports_the_top_level_package():
    modules = module_names()
    importers = [name for name, path in modules.items() if "diffusers_lit" in imported(name, path, modules)]
    assert importers == []


def test_no_import_cycles():
    graph = import_graph()
    assert {"diffusers_lit.training.data", "diffusers_lit.pipelines"} <= graph["diffusers_lit.training.loop"]
    assert "diffusers_lit.conversion" in graph["diffusers_lit.demo"]  # imports inside functions count
    cycles = [cycle for name in graph if (cycle := cycle_through(graph, name))]
    assert cycles == [], "import cycles:\n" + "\n".join(" -> ".join(cycle) for cycle in cycles)


def test_the_command_line_parses_without_torch_or_diffusers():
    """`diffusers-lit --help` and a mistyped option answer at once: building the parser imports no heavy library."""
    code = (
        "import sys; from diffusers_lit.cli import build_parser; build_parser(); "
        "print(sorted(m for m in ('torch', 'diffusers', 'transformers', 'numpy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    mistake = (  # a user's mistake is answered before the heavy imports too
        "import sys\nfrom diffusers_lit.cli import main\ntry:\n    main(['generate', 'm', '--output', 'x.png'])\n"
        "except SystemExit as e:\n    print(e.code, 'torch' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", mistake], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["2", "False"] and "error: --output must name a .npz file" in result.stderr


def test_the_choices_name_what_the_modules_act_on():
    import diffusers

    from diffusers_lit.choices import INHERIT, LINEAR_ATTENTION_BACKENDS, SCHEDULERS
    from diffusers_lit.models.linear_attention import PROCESSORS, LiTLinearAttention

    assert tuple(PROCESSORS) == LINEAR_ATTENTION_BACKENDS
    assert all(hasattr(diffusers, name) for name in SCHEDULERS.values())
    attention = LiTLinearAttention(32, heads=2)
    for projections in INHERIT.values():
        for name in projections:  # each a linear layer of LiT's self-attention (and of diffusers' Attention)
            assert isinstance(attention.get_submodule(name), torch.nn.Linear)


def test_the_paper_sizes_have_one_table():
    from diffusers_lit import LIT_PRESETS
    from diffusers_lit.benchmarking.options import BENCH_SIZES
    from diffusers_lit.choices import MODEL_SIZES
    from diffusers_lit.conversion import KNOWN_HEADS, default_linear_heads

    xl = dict(num_layers=28, num_attention_heads=16, attention_head_dim=72, linear_attention_heads=4)
    assert MODEL_SIZES["XL"] == xl  # the paper's Table: DiT-XL/2 with 4 linear-attention heads
    for name, size in MODEL_SIZES.items():
        assert {key: LIT_PRESETS[f"LiT-{name}/2"][key] for key in size} == size
        assert BENCH_SIZES[name].width == size["num_attention_heads"] * size["attention_head_dim"]
        assert BENCH_SIZES[name].lit_heads == size["linear_attention_heads"]
        assert KNOWN_HEADS[BENCH_SIZES[name].width] == size["num_attention_heads"]
        assert default_linear_heads(size["num_attention_heads"]) == size["linear_attention_heads"]


def test_the_remote_code_joins_the_package_modules_and_refuses_what_it_cannot_join(tmp_path, monkeypatch):
    """pipeline_lit.py is every source module in one namespace (each top-level name once) and compiles; a
    relative import of a name no earlier source defines, and a name two sources define, are refused."""
    from diffusers_lit import remote_code

    joined = remote_code.joined_module(remote_code.PIPELINE_SOURCES, "test")
    tree = ast.parse(joined)
    names = [name for node in tree.body for name in remote_code.top_level_names(node)]
    assert len(names) == len(set(names)) and {"LiTPipeline", "LiTTransformer2DModel", "atomic_path"} <= set(names)
    assert not [
        node for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level and node.col_offset == 0
    ]
    # What a statement binds: stored names only; an item or attribute set on a name defined earlier binds nothing.
    statements = ast.parse("a, (b, c) = 1, (2, 3)\nd: dict = {}\nd['k'] = a\nd.x = b\n").body
    assert [remote_code.top_level_names(node) for node in statements] == [["a", "b", "c"], ["d"], [], []]
    (tmp_path / "__init__.py").write_text("")
    (tmp_path / "a.py").write_text('"""A."""\n\nimport os\n\nX = os.sep\n')
    (tmp_path / "b.py").write_text("import os\n\nfrom .a import X\n\n\ndef f():\n    return X\n")
    monkeypatch.setattr(remote_code, "PACKAGE", tmp_path)
    joined = remote_code.joined_module(("a.py", "b.py"), "T")
    assert joined.count("import os") == 1 and "from .a" not in joined and '"""A."""' not in joined
    namespace = {}
    exec(compile(joined, "joined", "exec"), namespace)
    assert namespace["f"]() == os.sep
    with pytest.raises(ValueError, match=r"b.py imports \['X'\] relatively"):
        remote_code.joined_module(("b.py", "a.py"), "T")
    with pytest.raises(ValueError, match="b.py and a.py both define 'X'"):
        (tmp_path / "b.py").write_text("X = 2\n")
        remote_code.joined_module(("a.py", "b.py"), "T")
    (tmp_path / "__init__.py").unlink()  # the joined module itself, run without the package, cannot save
    with pytest.raises(RuntimeError, match="pip install diffusers_lit"):
        remote_code.joined_module(("a.py",), "T")


def test_the_shipped_folders_hold_no_code():
    """assets/ holds weights, configs and cards: the code diffusers alone runs is written when a folder is saved."""
    assets = PACKAGE.parents[1] / "assets"
    assert len(list(assets.glob("*/model_index.json"))) == 4
    assert sorted(assets.rglob("*.py")) == []
