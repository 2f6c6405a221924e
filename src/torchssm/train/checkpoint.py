"""Training checkpoints: a directory written atomically, file by file.

    <dir>/model.safetensors    weights (``model.save_pretrained`` when the model has it, so
    <dir>/config.json          ``torchssm.from_pretrained(<dir>)`` loads a checkpoint directly)
    <dir>/optimizer.pt         {"optimizer": ..., "scheduler": ...} via torch.save; read back with
                               ``torch.load(weights_only=True)`` (no pickled code is executed)
    <dir>/trainer_state.json   the sidecar: experiment config, epoch, step, metrics, RNG states
                               (torch, numpy, python, cuda) and the sha256 of every other file

Atomicity: every file is first written in full to a temporary directory next to ``<dir>``; only
then are they moved in with ``os.replace`` (atomic on POSIX and Windows), the sidecar last. A
save that fails midway leaves the previous checkpoint untouched and no temporary file behind;
the recorded hashes make a torn set (a crash between two renames) a clear error at load time
instead of a silent mix of two steps.

Rotation (crash safety across saves): the loop also keeps the last K epochs as
``<out_dir>/checkpoints/epoch-NNNNNN`` (:func:`snapshot_checkpoint`: hard links of ``last``'s files,
made complete in a temporary directory and renamed in one step) and :func:`find_latest_checkpoint`
picks the newest intact one, warning about (and skipping) a torn or corrupt ``last``. Temporary
directories left by a killed save are removed by the next save.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_model, save_model
from torch import nn

from torchssm.fileio import PathLike
from torchssm.runs import SIDECAR, SNAPSHOTS  # noqa: F401  (the run layout: torchssm/runs.py)

FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
MODEL_CONFIG = "config.json"
OPTIMIZER = "optimizer.pt"
# Test hook (crash tests only): "POINT:EPOCH:SECONDS:MARKER" pauses the save of a checkpoint named
# "last" whose state has epoch EPOCH, at POINT ("before_rename": temp files written and fsynced;
# "mid_rename": sidecar removed, one file moved), after creating the file MARKER, so that a test
# can SIGKILL the process inside the save.
PAUSE_ENV = "TORCHSSM_TEST_CHECKPOINT_PAUSE"


# --- RNG states <-> JSON ------------------------------------------------------------------------
def _b64(t: torch.Tensor) -> str:
    return base64.b64encode(t.cpu().numpy().tobytes()).decode("ascii")


def _unb64(s: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(s)), dtype=torch.uint8).clone()


def get_rng_states() -> dict[str, Any]:
    """Every global RNG state (python, numpy, torch CPU, CUDA) as JSON-serialisable values."""
    kind, keys, pos, has_gauss, cached = cast(tuple[str, np.ndarray, int, int, float], np.random.get_state())
    states = {
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "torch": _b64(torch.get_rng_state()),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = [_b64(s) for s in torch.cuda.get_rng_state_all()]
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    """Restore the states saved by :func:`get_rng_states`."""
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(_unb64(states["torch"]))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([_unb64(s) for s in states["cuda"]])


# --- save ---------------------------------------------------------------------------------------
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _write_weights(model: nn.Module, tmp: Path) -> None:
    save_pretrained = getattr(model, "save_pretrained", None)
    if save_pretrained is not None:
        save_pretrained(tmp)  # model.safetensors + config.json
    else:
        save_model(model, str(tmp / WEIGHTS))  # handles shared tensors
    if not (tmp / WEIGHTS).is_file():
        raise RuntimeError(f"{type(model).__name__}.save_pretrained did not write {WEIGHTS}")


def _test_pause(point: str, path: Path, epoch: Any) -> None:
    spec = os.environ.get(PAUSE_ENV)
    if not spec:
        return
    where, at_epoch, seconds, marker = spec.split(":", 3)
    if where == point and path.name == "last" and str(epoch) == at_epoch:
        Path(marker).write_text(point)
        time.sleep(float(seconds))


def _remove_stale_temps(path: Path) -> None:
    """Temporary directories of a save that was killed (one writer per checkpoint path)."""
    for stale in path.parent.glob(f".{path.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)


def save_checkpoint(
    path: PathLike,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    *,
    optimizer_state: dict | None = None,
    **state: Any,
) -> Path:
    """Write a checkpoint directory at ``path`` (see the module docstring); returns ``path``.

    ``state`` (epoch, step, metrics, config, ...) must be JSON-serialisable; the RNG states are
    added here. Non-finite weights are refused (a NaN checkpoint is never written).
    ``optimizer_state``: an optimizer state dict to store instead of ``optimizer.state_dict()``
    (FSDP's gathered full state, keyed by parameter names).
    """
    path = Path(path)
    for name, p in model.state_dict().items():
        if p.is_floating_point() and not bool(torch.isfinite(p).all()):
            raise ValueError(f"refusing to save a checkpoint with non-finite values in {name!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        _write_weights(model, tmp)
        if optimizer_state is None and optimizer is not None:
            optimizer_state = optimizer.state_dict()
        if optimizer_state is not None:
            torch.save(
                {
                    "optimizer": optimizer_state,
                    "scheduler": scheduler.state_dict() if scheduler is not None else None,
                },
                tmp / OPTIMIZER,
            )
        files = sorted(p.name for p in tmp.iterdir())
        sidecar = {
            "format_version": FORMAT_VERSION,
            **state,
            "rng": get_rng_states(),
            "files": {name: _sha256(tmp / name) for name in files},
        }
        (tmp / SIDECAR).write_text(json.dumps(sidecar, indent=1, allow_nan=False))
        for name in files + [SIDECAR]:  # fsync before the renames so a crash cannot expose empty files
            with open(tmp / name, "rb") as f:
                os.fsync(f.fileno())
        _test_pause("before_rename", path, state.get("epoch"))
        path.mkdir(exist_ok=True)
        if (path / SIDECAR).exists():
            os.unlink(path / SIDECAR)  # while files are swapped the directory is marked incomplete
        for i, name in enumerate(files):
            os.replace(tmp / name, path / name)
            if i == 0:
                _test_pause("mid_rename", path, state.get("epoch"))
        for stale in {OPTIMIZER} - set(files):
            if (path / stale).exists():
                os.unlink(path / stale)
        os.replace(tmp / SIDECAR, path / SIDECAR)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


# --- load ---------------------------------------------------------------------------------------
def read_checkpoint_state(path: PathLike, verify: bool = True) -> dict[str, Any]:
    """The sidecar of checkpoint ``path`` (a directory), after checking that its files are intact."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path} (expected a directory holding {SIDECAR} and {WEIGHTS})")
    if not path.is_dir():
        raise ValueError(f"{path} is not a checkpoint directory (expected a directory holding {SIDECAR} and {WEIGHTS})")
    sidecar = path / SIDECAR
    if not sidecar.is_file():
        raise ValueError(f"checkpoint {path} is incomplete: {SIDECAR} is missing (interrupted save?)")
    try:
        state = json.loads(sidecar.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"checkpoint {path} is corrupt: {SIDECAR} is not valid JSON ({err})") from None
    if not isinstance(state, dict) or state.get("format_version") != FORMAT_VERSION or "files" not in state:
        raise ValueError(
            f"checkpoint {path} is corrupt or of an unknown format: {SIDECAR} lacks "
            f"format_version={FORMAT_VERSION} / files"
        )
    if verify:
        for name, digest in state["files"].items():
            if not (path / name).is_file():
                raise ValueError(f"checkpoint {path} is incomplete: {name} is missing")
            if _sha256(path / name) != digest:
                raise ValueError(
                    f"checkpoint {path} is corrupt: {name} does not match the sha256 recorded in {SIDECAR}"
                )
    return state


def load_checkpoint(
    path: PathLike,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    restore_rng: bool = False,
    map_location: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Load weights (and optimizer/scheduler state, and the RNG states if asked) into the given objects.

    Returns the sidecar dict. A missing or damaged checkpoint raises FileNotFoundError/ValueError.
    """
    path = Path(path)
    state = read_checkpoint_state(path)
    try:
        missing, unexpected = load_model(model, str(path / WEIGHTS), strict=False, device=str(map_location))
    except (SafetensorError, OSError) as err:
        raise ValueError(f"checkpoint {path} is corrupt: cannot read {WEIGHTS} ({err})") from None
    except RuntimeError as err:  # load_state_dict: shape mismatch (one line per tensor; keep three)
        lines = [line.strip() for line in str(err).splitlines()[1:] if line.strip()]
        more = f"; ... ({len(lines) - 3} more)" if len(lines) > 3 else ""
        raise ValueError(f"checkpoint {path} does not fit this model: {'; '.join(lines[:3])}{more}") from None
    if missing or unexpected:
        raise ValueError(
            f"checkpoint {path} does not fit this model: missing {sorted(missing)}, unexpected {sorted(unexpected)}"
        )
    if optimizer is not None:
        if OPTIMIZER not in state["files"]:
            raise ValueError(f"checkpoint {path} has no optimizer state ({OPTIMIZER}); it cannot be resumed")
        try:
            extra = torch.load(path / OPTIMIZER, map_location=map_location, weights_only=True)
        except Exception as err:  # torch raises several types for a damaged pickle
            raise ValueError(f"checkpoint {path} is corrupt: cannot read {OPTIMIZER} ({err})") from None
        optimizer.load_state_dict(extra["optimizer"])
        if scheduler is not None:
            if extra.get("scheduler") is None:
                raise ValueError(f"checkpoint {path} holds no scheduler state")
            scheduler.load_state_dict(extra["scheduler"])
    if restore_rng:
        set_rng_states(state["rng"])
    return state


# --- rotation and recovery ----------------------------------------------------------------------
def snapshot_checkpoint(src: PathLike, dst: PathLike) -> Path:
    """Copy checkpoint ``src`` to a new directory ``dst`` atomically (hard links where possible).

    The copy is complete in a temporary sibling before one ``os.rename`` makes it visible, so
    ``dst`` either does not exist or is whole. Hard links stay valid when ``src``'s files are
    later replaced (``os.replace`` swaps directory entries, not file contents).
    """
    src, dst = Path(src), Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(dst)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.tmp-", dir=dst.parent))
    try:
        for f in src.iterdir():
            try:
                os.link(f, tmp / f.name)
            except OSError:  # file systems without hard links
                shutil.copy2(f, tmp / f.name)
        if dst.exists():
            shutil.rmtree(dst)
        os.rename(tmp, dst)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dst


def prune_checkpoints(root: PathLike, keep: int) -> list[Path]:
    """Delete all but the ``keep`` newest ``epoch-*`` directories under ``root``; returns the deleted ones."""
    dirs = sorted(Path(root).glob("epoch-*")) if Path(root).is_dir() else []
    removed = dirs[: max(len(dirs) - keep, 0)]
    for old in removed:
        shutil.rmtree(old, ignore_errors=True)
    return removed


def find_latest_checkpoint(out_dir: PathLike) -> Path | None:
    """The newest intact checkpoint of a run: ``<out_dir>/last`` or a ``checkpoints/epoch-*`` snapshot.

    Candidates are verified (sidecar + sha256 of every file); a torn or corrupt one is skipped
    with a warning naming it. Returns None when the run has no intact checkpoint.
    """
    out_dir = Path(out_dir)
    candidates: list[Path] = [out_dir / "last"] + sorted((out_dir / SNAPSHOTS).glob("epoch-*"))
    best, best_key = None, None
    for path in candidates:
        if not path.exists():
            continue
        try:
            state = read_checkpoint_state(path)
        except (ValueError, OSError) as err:
            warnings.warn(f"skipping checkpoint {path}: {err}", RuntimeWarning, stacklevel=2)
            continue
        key = (int(state.get("step", 0)), int(state.get("epoch", 0)), path.name == "last")
        if best_key is None or key > best_key:
            best, best_key = path, key
    return best
