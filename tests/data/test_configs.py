"""configs/lra and configs/synthetic: every preset loads, names a registered task, and its layer accepts
its layer_kwargs; every file cites its source."""

import inspect
from pathlib import Path

import pytest

from torchssm.data.registry import _TASK_MODULES
from torchssm.layers.registry import get_layer_class
from torchssm.train.config import load_config

ROOT = Path(__file__).resolve().parents[2] / "configs"
FILES = sorted((ROOT / "lra").glob("*.yaml")) + sorted((ROOT / "synthetic").glob("*.yaml"))


@pytest.mark.parametrize("path", FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_preset_is_consistent(path):
    cfg = load_config(path)
    assert cfg.task_name in _TASK_MODULES
    cls = get_layer_class(cfg.model.layer)
    params = inspect.signature(cls.__init__).parameters
    unknown = set(cfg.model.layer_kwargs) - set(params)
    assert not unknown, f"{path.name}: {cfg.model.layer} does not take {sorted(unknown)}"
    text = path.read_text()
    assert text.startswith("#") and any(w in text for w in ("commit", "Sec.", "App.", "NO PUBLISHED", "UNVERIFIED"))


def test_all_lra_tasks_have_s5_s4d_lru_presets():
    names = {p.stem for p in (ROOT / "lra").glob("*.yaml")}
    for task in ("listops", "text", "retrieval", "image", "pathfinder", "pathx"):
        assert {f"{task}_s5", f"{task}_s4d", f"{task}_lru"} <= names
    assert "listops_mamba" in names
