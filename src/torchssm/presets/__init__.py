"""Presets: the experiment configs shipped inside the package, found by name.

    torchssm presets                          one line per preset
    torchssm presets mnist1d_lru              its file (copy it to start your own: --path prints the path)
    torchssm train --preset mnist1d_lru
    torchssm train --preset lra/listops_s4d   (or listops_s4d: a unique file name is enough)
    torchssm train --config my.yaml           any file, as before

A preset is a YAML file in this folder or a sub-folder (one per area: ``lra/``, ``synthetic/``, ...);
its name is its path here without ``.yaml``. Each file cites the paper, table or equation behind its
values in its header comment. They live inside the package so that a wheel (``pip install torchssm``,
not a clone) ships them.
"""

from __future__ import annotations

import difflib
import fnmatch
import os
from pathlib import Path

import yaml

PRESET_DIR = Path(__file__).resolve().parent
SUFFIXES = (".yaml", ".yml")
# Presets that another command runs (name pattern -> command); the rest are `torchssm train --preset NAME`.
OTHER_COMMANDS = {
    "rl/*": "torchssm rl train --preset NAME --model MODEL (names without rl/; torchssm rl presets)",
    "audio/asr_*": "torchssm speech train --preset audio/NAME",
    "vision/*": "torchssm vision restore|classify|pretrain|longvq|video --preset NAME (names without vision/)",
}


def other_command(name: str) -> str | None:
    """The command that runs preset ``name`` when it is not ``torchssm train`` (see OTHER_COMMANDS)."""
    return next((cmd for pattern, cmd in OTHER_COMMANDS.items() if fnmatch.fnmatchcase(name, pattern)), None)


def list_presets(root: str | os.PathLike = PRESET_DIR, *, recursive: bool = True) -> list[str]:
    """Every preset name under ``root`` (sub-folders included), sorted: ``["lra/image_lru", ..., "mnist1d_lru"]``.
    Hidden or private files and folders (``.x.yaml``, ``_draft/``) are not presets. An area's own presets are
    ``list_presets(PRESET_DIR / "vision")``; ``recursive=False`` leaves out its sub-folders (``rl/models/``)."""
    root = Path(root)
    candidates = root.rglob("*") if recursive else root.glob("*")
    found = (p.relative_to(root) for p in candidates if p.suffix in SUFFIXES and p.is_file())
    public = (rel for rel in found if not any(part.startswith((".", "_")) for part in rel.parts))
    return sorted(rel.with_suffix("").as_posix() for rel in public)


def preset_path(name: str, root: str | os.PathLike = PRESET_DIR, *, recursive: bool = True) -> Path:
    """The file of preset ``name``: ``"mnist1d_lru"``, ``"lra/listops_s4d"`` (``.yaml`` optional), or a file
    name found in exactly one sub-folder (``"listops_s4d"``). Unknown or ambiguous names raise ValueError.
    ``root`` and ``recursive`` choose the presets searched, as in :func:`list_presets`."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"a preset name must be a non-empty string like 'mnist1d_lru', got {name!r}")
    root = Path(root)
    key = name.strip().removesuffix(".yaml").removesuffix(".yml")
    names = list_presets(root, recursive=recursive)
    if key in names:
        return _file(root, key)
    by_file = [n for n in names if n.rsplit("/", 1)[-1] == key]
    if len(by_file) == 1:
        return _file(root, by_file[0])
    if len(by_file) > 1:
        raise ValueError(f"preset name {name!r} is ambiguous: {', '.join(by_file)}")
    hint = ""
    if Path(name).is_file():
        hint = f"; {name!r} is a file: pass it with --config"
    else:
        close = difflib.get_close_matches(key, names, n=3, cutoff=0.6)
        if close:
            hint = f"; did you mean {' or '.join(close)}?"
    raise ValueError(f"unknown preset {name!r}{hint} (`torchssm presets` lists all {len(names)})")


def _file(root: Path, name: str) -> Path:
    for suffix in SUFFIXES:
        if (root / (name + suffix)).is_file():
            return root / (name + suffix)
    raise FileNotFoundError(f"preset {name!r} vanished from {root}")  # pragma: no cover - a race with a delete


def describe(name: str, root: str | os.PathLike = PRESET_DIR) -> str:
    """One line about a preset: its task, model and length from the YAML, then its header comment's first line.

    A file that is not a train config (no task/model sections) or not valid YAML is still described."""
    text = preset_path(name, root).read_text(encoding="utf-8")
    header = next(
        (line.lstrip("#").strip() for line in text.splitlines() if line.startswith("#") and line.lstrip("#").strip()),
        "",
    )
    try:
        cfg = yaml.safe_load(text)
    except yaml.YAMLError as err:
        return f"(not valid YAML: {str(err).splitlines()[0]}) {header}".strip()
    facts = []
    if isinstance(cfg, dict):
        task, model, train = (_section(cfg, k) for k in ("task", "model", "train"))
        if task.get("name"):
            facts.append(str(task["name"]))
        if model.get("layer"):
            size = f" (H={model['d_model']})" if model.get("d_model") else ""
            facts.append(f"{model['layer']} x{model.get('n_layers', '?')}{size}")
        if train.get("epochs"):
            facts.append(f"{train['epochs']} epochs")
    return " | ".join(facts + [header]) if facts else header


def _section(cfg: dict, key: str) -> dict:
    value = cfg.get(key)
    return value if isinstance(value, dict) else {}
