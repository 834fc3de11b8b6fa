"""The import rule of docs/architecture.md: measuring never loads the network.

Measuring modules (metrics, sharpening, masks, evaluate, report, plots, the independent-halves
check, and the files, maps and errors they build on) import neither the pipeline, the runtime nor
torch: not at import, not inside a function, not through a package ``__init__``. Checked twice: by
reading every import statement of the engine and the plugin (the whole closure, lazy imports
included), and by importing the modules in a fresh interpreter (the plugin's with Scipion set up
as for the plugin's tests, where Scipion is installed).
"""
from __future__ import annotations

import ast
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# docs/architecture.md, "measuring": what these import (even lazily) must be measuring too.
MEASURING = ("deepemhancer", "deepemhancer.errors", "deepemhancer.files", "deepemhancer.mapio",
             "deepemhancer.metrics", "deepemhancer.sharpen", "deepemhancer.molecule_masks", "deepemhancer.evaluate",
             "deepemhancer.report", "deepemhancer.plots")
# The plugin's measuring modules (the FSC, sharpening and mask protocols, the comparison viewer and
# what they share): every engine module they import, anywhere, must be a measuring one.
PLUGIN_MEASURING = ("deepemhancer_plugin.constants", "deepemhancer_plugin.convert",
                    "deepemhancer_plugin.protocols.inputs", "deepemhancer_plugin.protocols.protocol_fsc",
                    "deepemhancer_plugin.protocols.protocol_sharpen", "deepemhancer_plugin.protocols.protocol_mask",
                    "deepemhancer_plugin.viewers.comparison", "deepemhancer_plugin.viewers.viewer_comparison")
# Inference: the network and what runs it. Named here so that the rule is seen to bite.
INFERENCE = ("deepemhancer.pipeline", "deepemhancer.tiling", "deepemhancer.predict", "deepemhancer.devices",
             "deepemhancer.confidence", "deepemhancer.nn")


def is_measuring(module: str) -> bool:
    return any(module == m or (m != "deepemhancer" and module.startswith(m + ".")) for m in MEASURING)


def module_files() -> dict[str, Path]:
    """Module name -> file for the engine and the plugin (tests left out)."""
    found = {}
    for package in ("deepemhancer", "deepemhancer_plugin"):
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if "tests" in parts:
                continue
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


MODULES = module_files()


def _is_type_checking(node: ast.If) -> bool:
    return isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING" or \
        isinstance(node.test, ast.Attribute) and node.test.attr == "TYPE_CHECKING"


def imports_of(module: str) -> set[str]:
    """Every module ``module`` imports, anywhere in its code: internal ones by full name, external
    ones by top-level package. Left out: ``if TYPE_CHECKING`` blocks (never run) and a package's
    ``__getattr__`` (its lazy API, run only when that attribute is asked for)."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.FunctionDef) and node.name == "__getattr__":
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.update(_loaded(alias.name, ()))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            found.update(_loaded(base, [alias.name for alias in node.names]))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return found - {module}


def _loaded(base: str, names) -> set[str]:
    """What one import statement loads: our modules by full name (a from-import's submodules when
    it names them), others by their top-level package."""
    if base.split(".")[0] not in ("deepemhancer", "deepemhancer_plugin"):
        return {base.split(".")[0]}
    return {f"{base}.{n}" if f"{base}.{n}" in MODULES else base for n in names} or {base}


def closure(module: str) -> set[str]:
    """Everything importing ``module`` may load: its imports, theirs, and each one's parent packages."""
    seen, todo = set(), [module]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        if current in MODULES:
            parents = [".".join(current.split(".")[:i]) for i in range(1, current.count(".") + 1)]
            todo += [p for p in parents if p in MODULES]
            todo += sorted(imports_of(current))
    return seen - {module}


def test_the_module_table_covers_every_named_module():
    for name in MEASURING + PLUGIN_MEASURING + INFERENCE:
        assert name in MODULES, f"{name} is named in docs/architecture.md's rule but does not exist"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if is_measuring(m)))
def test_measuring_modules_import_only_measuring_modules_even_lazily(module):
    loaded = closure(module)
    engine = {m for m in loaded if m.startswith("deepemhancer")}
    assert {m for m in engine if not is_measuring(m)} == set(), f"{module} may load inference code"
    assert "torch" not in loaded, f"{module} may load torch"


@pytest.mark.parametrize("module", PLUGIN_MEASURING)
def test_the_plugins_measuring_steps_and_viewer_use_only_measuring_engine_modules(module):
    imported = imports_of(module)
    engine = {m for m in imported if m.split(".")[0] == "deepemhancer"}
    assert {m for m in engine if not is_measuring(m)} == set(), f"{module} calls into inference"
    assert "torch" not in imported


def test_the_rule_bites_on_inference_modules():
    """The reading of imports sees what inference loads (else the tests above would prove nothing)."""
    assert "torch" in closure("deepemhancer.pipeline")
    assert "deepemhancer.pipeline" in closure("deepemhancer.confidence")
    assert "deepemhancer.pipeline" in imports_of("deepemhancer_plugin.protocols.protocol_enhance")


def loaded_in_fresh_interpreter(modules, environment: dict[str, str] | None = None) -> set[str]:
    """The names in sys.modules after importing ``modules`` in a new Python process."""
    code = f"import sys\nfor name in {list(modules)!r}:\n    __import__(name)\nprint('\\n'.join(sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env=environment)
    assert done.returncode == 0, done.stderr
    return set(done.stdout.split())


def test_importing_every_measuring_module_loads_no_torch():
    loaded = loaded_in_fresh_interpreter(sorted(m for m in MODULES if is_measuring(m)))
    assert "deepemhancer.metrics.independent_halves" in loaded and "deepemhancer.evaluate" in loaded
    assert "torch" not in loaded
    assert not any(m in loaded for m in INFERENCE)


def test_importing_the_plugins_measuring_modules_loads_no_torch(tmp_path):
    pytest.importorskip("pyworkflow", reason="Scipion is not installed")
    pytest.importorskip("pwem", reason="Scipion is not installed")
    # Scipion reads its configuration once, at import: the plugin tests' own set-up (the root conftest).
    spec = importlib.util.spec_from_file_location("repository_conftest", ROOT / "conftest.py")
    setup = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(setup)
    (tmp_path / "hosts.conf").write_text("[localhost]\n")
    loaded = loaded_in_fresh_interpreter(PLUGIN_MEASURING, {**os.environ, **setup.scipion_environment(tmp_path)})
    assert "deepemhancer_plugin.viewers.viewer_comparison" in loaded and "pwem" in loaded
    assert "torch" not in loaded
    assert not any(m in loaded for m in INFERENCE)
