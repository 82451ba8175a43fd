"""Rules about the project itself: the import layering and the README/CI contract."""

from __future__ import annotations

import ast
import re

from conftest import REPO

PACKAGE = REPO / "autocompress"
# Pure computation never talks to the search engine or the tracker.
PURE = {"errors", "config", "plan", "models", "data", "prune", "quantize", "distill",
        "finetune", "size", "compress", "teacher", "resources", "_imports", "structured",
        "latency", "artifact", "bitpack"}  # fmt: skip
ENGINES = {"optuna", "mlflow"}


def imports(module: str) -> set[str]:
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_pure_modules_import_no_engine() -> None:
    for module in PURE:
        found = {name.split(".")[0] for name in imports(module)} & ENGINES
        assert not found, f"{module} imports {found}"


def test_each_engine_has_one_adapter_and_nothing_imports_cli() -> None:
    adapters = {"mlflow": "tracking", "torch_pruning": "structured"}
    for path in PACKAGE.glob("*.py"):
        names = {name.split(".")[0] for name in imports(path.stem)}
        for engine, adapter in adapters.items():
            assert path.stem == adapter or engine not in names, (path.stem, engine)
        if path.stem not in ("cli", "__main__"):
            assert "autocompress.cli" not in names, path.stem


def test_ci_runs_the_readme_commands() -> None:
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    assert re.search(r"^ +pip install torch==2\.13\.0 -e '\.\[test\]' && python -m pytest$",
                     readme, re.M)  # fmt: skip
    assert re.search(r"^ +pip install torch==2\.13\.0 \. && autocompress search$", readme, re.M)
    assert 'eval "$test_cmd"' in ci and 'eval "$main_cmd' in ci
