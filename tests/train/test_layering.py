"""The import structure of train/ (issue: no cycles, no upward imports): nothing in models/ imports
train/ (checkpoint lookup lives in torchssm.runs), truncated BPTT and the loss helpers do not import
the loop, and the run layout module imports nothing else of torchssm. Imports inside functions count."""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "torchssm"


def imported_modules(path: Path) -> set:
    """Every module a file imports (absolute names; ``from torchssm.x import y`` gives ``torchssm.x``
    and ``torchssm.x.y``, as y may be a module)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_models_do_not_import_train():
    for path in sorted((SRC / "models").rglob("*.py")):
        upward = sorted(m for m in imported_modules(path) if m == "torchssm.train" or m.startswith("torchssm.train."))
        assert not upward, f"{path.relative_to(SRC)} imports {upward}"


def test_tbptt_losses_and_epoch_do_not_import_the_loop():
    for name in ("tbptt", "losses", "epoch", "metrics_log", "run_dir", "checkpoint"):
        imported = imported_modules(SRC / "train" / f"{name}.py")
        assert "torchssm.train.loop" not in imported and "torchssm.train.cli" not in imported, name


def test_the_run_layout_imports_nothing_of_torchssm():
    assert not [m for m in imported_modules(SRC / "runs.py") if m.startswith("torchssm")]
