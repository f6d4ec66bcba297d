"""The house rules that keep the package untangled, checked on the source with ``ast``.

- A module imports only modules of lower layers (:data:`LAYERS`, bottom first): no cycles, no reaching up.
- Imports inside functions only for optional or heavy dependencies that a plain ``import`` must not need
  (:data:`LAZY_OK`); never of the package's own modules.
- ``import conditioned_sep`` is cheap: it does not import torch.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "conditioned_sep"

LAYERS: list[set[str]] = [
    {"stems", "fileio", "distributed"},
    {"audio", "hardware"},
    {"metrics", "spectral", "film"},
    {"museval_io", "report", "chunking"},
    {"page"},
    {"models"},
    {"checkpoint"},
    {"separator"},
    {"runs"},
    {"data"},
    {"evaluation", "recipe"},
    {"training"},
    {"cli"},
]
"""Bottom first. A module of layer k imports modules of layers below k only. ``data`` and ``models`` are packages:
their modules may import each other (their own order is checked by the no-cycle test below)."""

LAZY_OK = {
    "musdb", "museval", "stempeg", "yaml", "matplotlib", "tensorboard", "torch.utils.tensorboard",
}
"""The optional dependencies (extras, or packages that need ffmpeg at import): the only imports allowed inside a
function."""


def _layer(module: str) -> int:
    top = module.split(".")[0]
    for k, names in enumerate(LAYERS):
        if top in names:
            return k
    raise AssertionError(f"conditioned_sep.{module} has no layer in tests/test_layers.py: add it to LAYERS")


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).with_suffix("")
        parts = [p for p in rel.parts if p != "__init__"]
        if parts:
            out[".".join(parts)] = path
    return out


def _own_imports(module: str, path: Path, tree: ast.AST) -> list[tuple[str, ast.AST]]:
    """The package modules that ``module`` imports: ``(dotted name relative to the package, node)``."""
    package = module.split(".")[:-1] if path.name != "__init__.py" else module.split(".")
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
                target = [*base, *(node.module.split(".") if node.module else [])]
                names = [".".join([*target, a.name]) for a in node.names] if not node.module else [".".join(target)]
                found += [(n, node) for n in names if n]
            elif node.module and node.module.startswith("conditioned_sep"):
                rest = node.module.split(".")[1:]
                found += [(".".join(rest) or a.name, node) for a in node.names]
        elif isinstance(node, ast.Import):
            found += [(a.name.split(".", 1)[1], node) for a in node.names if a.name.startswith("conditioned_sep.")]
    return found


def _existing(name: str, modules: dict[str, Path]) -> str | None:
    """The module (or package) that an imported dotted name refers to (``models.unet.X`` -> ``models.unet``)."""
    parts = name.split(".")
    while parts:
        if ".".join(parts) in modules:
            return ".".join(parts)
        parts.pop()
    return None


def test_no_module_imports_from_a_layer_above_or_its_own():
    modules = _modules()
    problems = []
    for module, path in modules.items():
        if module == "" or path.name == "__init__.py" and module == "":
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        for name, node in _own_imports(module, path, tree):
            target = _existing(name, modules)
            if target is None or target.split(".")[0] == module.split(".")[0]:
                continue  # the package's own __init__ names, or a sibling inside the same package
            if _layer(target) >= _layer(module):
                problems.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: {module} imports {target}, "
                                f"which is not in a lower layer")
    assert not problems, "\n".join(problems)


def test_no_import_cycle_inside_packages():
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        graph[module] = {t for name, _ in _own_imports(module, path, tree)
                         if (t := _existing(name, modules)) is not None and t != module}
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in graph.get(node, ()):
            if state.get(nxt) == 1:
                pytest.fail("import cycle: " + " -> ".join([*stack[stack.index(nxt):], nxt]))
            if nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for module in graph:
        if module not in state:
            visit(module, [module])


def test_imports_inside_functions_are_only_optional_dependencies():
    problems = []
    for module, path in _modules().items():
        tree = ast.parse(path.read_text(), filename=str(path))
        for func in ast.walk(tree):
            if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(func):
                if isinstance(node, ast.ImportFrom):
                    names = ["." * node.level + (node.module or "")]
                elif isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                else:
                    continue
                for name in names:
                    if name.startswith((".", "conditioned_sep")) or not ({name, name.split(".")[0]} & LAZY_OK):
                        problems.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: import {name} inside "
                                        f"{func.name}()")
    assert not problems, "\n".join(problems)


def test_importing_the_package_is_cheap():
    code = "import sys, conditioned_sep; print('torch' in sys.modules, conditioned_sep.__version__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == "False" and out[1] != ""


def test_training_does_not_load_the_compiled_metrics():
    """Training needs a 17-line SDR, not numba and the BSS Eval kernels (seconds of import and memory per worker)."""
    code = ("import sys, conditioned_sep.training, conditioned_sep.metrics as m; m.new_sdr; "
            "print('numba' in sys.modules, 'conditioned_sep.metrics.decomposition' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]
