"""Crash safety of checkpoints: SIGKILL inside a save, resume from the last good checkpoint with
identical subsequent losses; rotation of the last K; corrupt checkpoints skipped with a warning;
loading never executes pickled code; a checkpoint from another model is refused."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from _loop_common import tiny_train

from torchssm.cli import main as cli_main
from torchssm.train.checkpoint import (
    OPTIMIZER,
    PAUSE_ENV,
    SIDECAR,
    WEIGHTS,
    find_latest_checkpoint,
    load_checkpoint,
    read_checkpoint_state,
    save_checkpoint,
)
from torchssm.train.config import load_config
from torchssm.train.loop import train

# Tiny run: adding problem (regression) of length 12, 3 steps per epoch, LayerNorm, one LRU block.
CONFIG = {
    "task": {"name": "adding", "length": 12, "n_train": 48, "n_val": 16, "n_test": 16},
    "model": {"layer": "lru", "d_model": 8, "n_layers": 1, "norm": "layer", "layer_kwargs": {"d_state": 4}},
    "train": tiny_train(keep_checkpoints=2),
}
# threads pinned: the reference run happens in the pytest process, whose torch thread count earlier tests may
# have changed, and the killed run in a fresh subprocess; a different count changes float32 reduction order
# (a 1e-8 difference in the first epoch's loss was seen in a full-suite run).


def write_config(tmp_path: Path, out_dir: Path) -> Path:
    cfg = json.loads(json.dumps(CONFIG))
    cfg["train"]["out_dir"] = str(out_dir)
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def records(run_dir: Path):
    out = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for r in out:
        r.pop("time_s")
    return out


def quiet(msg):
    pass


@pytest.mark.parametrize("point", [pytest.param("before_rename", marks=pytest.mark.slow), "mid_rename"])
def test_sigkill_during_save_then_resume_gives_identical_losses(tmp_path, point):
    data_dir = tmp_path / "data"
    reference = tmp_path / "reference"
    train(load_config(write_config(tmp_path, reference)), data_dir=data_dir, log=quiet)

    run = tmp_path / "run"
    cfg_path = write_config(tmp_path, run)
    marker = tmp_path / "in_save"
    env = {**os.environ, PAUSE_ENV: f"{point}:2:120:{marker}", "TORCHSSM_DATA": str(data_dir)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "torchssm", "train", "--config", str(cfg_path)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():  # the save of epoch 2's last/ is paused
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "the training process never reached the save"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    last_intact = point == "before_rename"  # mid_rename: last/ has lost its sidecar
    assert (run / "last" / SIDECAR).exists() == last_intact
    assert list(run.glob(".last.tmp-*"))  # the killed save's temporary directory is left behind

    if last_intact:
        assert cli_main(["train", "--config", str(cfg_path), "--resume", "--data-dir", str(data_dir)]) == 0
    else:
        with pytest.warns(RuntimeWarning, match=r"skipping checkpoint .*last.*incomplete"):
            assert cli_main(["train", "--config", str(cfg_path), "--resume", "--data-dir", str(data_dir)]) == 0
    assert records(run) == records(reference)  # epochs 2 and 3 redone: identical floats
    assert not list(run.glob(".last.tmp-*"))  # cleaned by the next save
    assert read_checkpoint_state(run / "last")["epoch"] == 3
    a, b = (torch.load(d / "last" / OPTIMIZER, weights_only=True) for d in (reference, run))
    for k, v in a["optimizer"]["state"].items():
        torch.testing.assert_close(b["optimizer"]["state"][k]["exp_avg"], v["exp_avg"], rtol=0, atol=0)


def test_keeps_last_k_and_skips_a_corrupt_checkpoint(tmp_path):
    run = tmp_path / "run"
    lines: list[str] = []
    train(load_config(write_config(tmp_path, run)), data_dir=tmp_path / "data", log=lines.append)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["epoch-000002", "epoch-000003"]
    assert [line for line in lines if line.startswith("removed")] == [
        "removed checkpoints/epoch-000001 (train.keep_checkpoints=2)"
    ]  # pruning is logged, not silent
    assert find_latest_checkpoint(run) == run / "last"
    # flip one byte of the weights: last/ and its hard-linked snapshot epoch-3 both fail their sha256
    weights = run / "last" / WEIGHTS
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.warns(RuntimeWarning, match="skipping checkpoint") as caught:
        found = find_latest_checkpoint(run)
    assert found == run / "checkpoints" / "epoch-000002"
    assert any("sha256" in str(w.message) for w in caught)
    assert find_latest_checkpoint(tmp_path / "empty") is None


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {EVIL_FILE}",))


EVIL_FILE = Path("/nonexistent")  # set per test


def test_loading_never_executes_pickled_code(tmp_path):
    global EVIL_FILE
    EVIL_FILE = tmp_path / "pwned"
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    path = save_checkpoint(tmp_path / "ck", model, opt, epoch=1, step=1)
    torch.save({"optimizer": _Evil(), "scheduler": None}, path / OPTIMIZER)  # a hostile optimizer.pt ...
    state = json.loads((path / SIDECAR).read_text())
    import hashlib

    state["files"][OPTIMIZER] = hashlib.sha256((path / OPTIMIZER).read_bytes()).hexdigest()  # ... with a valid hash
    (path / SIDECAR).write_text(json.dumps(state))
    with pytest.raises(ValueError, match="cannot read optimizer.pt"):
        load_checkpoint(path, model, opt)
    assert not EVIL_FILE.exists()


def test_checkpoint_of_another_model_is_refused(tmp_path):
    path = save_checkpoint(tmp_path / "ck", torch.nn.Linear(3, 2), epoch=1, step=1)
    with pytest.raises(ValueError, match=r"does not fit this model.*weight"):
        load_checkpoint(path, torch.nn.Linear(4, 2))
    with pytest.raises(ValueError, match=r"does not fit this model: missing"):
        load_checkpoint(path, torch.nn.Sequential(torch.nn.Linear(3, 2)))
