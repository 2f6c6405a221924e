"""Run directories tried as a new user would: one run per directory unless --resume/--overwrite, a
lock while a run writes (a dead run's lock is taken over), resume into the directory named (a moved
or copied run keeps its history), one-line errors for a full disk, a read-only directory, a missing
CUDA device and --stop-after < 1, no directory left behind by a config error, TensorBoard scalars
equal to metrics.jsonl."""

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from _loop_common import tiny_train

from torchssm.cli import main
from torchssm.runs import LOCK_FILE, read_metrics, run_dir_of
from torchssm.train import epoch as epoch_module
from torchssm.train.checkpoint import read_checkpoint_state
from torchssm.train.config import load_config
from torchssm.train.loop import train
from torchssm.train.metrics_log import MetricsLog
from torchssm.train.run_dir import RunDirBusy, RunDirLock

# adding problem (regression), length 8, 2 steps per epoch, one small LRU block: ~0.1 s per epoch
CONFIG = {
    "task": {"name": "adding", "length": 8, "n_train": 32, "n_val": 8, "n_test": 8},
    "model": {"layer": "lru", "d_model": 8, "n_layers": 1, "norm": "layer", "layer_kwargs": {"d_state": 4}},
    "train": tiny_train(keep_checkpoints=2),
}


def config(out_dir, *overrides):
    return load_config(base={**CONFIG, "train": {**CONFIG["train"], "out_dir": str(out_dir)}}, overrides=overrides)


def write_config(tmp_path: Path, out_dir: Path) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump({**CONFIG, "train": {**CONFIG["train"], "out_dir": str(out_dir)}}))
    return path


def quiet(msg):
    pass


def records(run_dir: Path):
    return [{k: v for k, v in r.items() if k != "time_s"} for r in read_metrics(run_dir)]


def test_a_second_run_is_refused_and_overwrite_replaces_the_first(tmp_path):
    run = tmp_path / "run"
    train(config(run), log=quiet)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["epoch-000002", "epoch-000003"]
    refused = (
        r"run directory .*run is not empty \(config.yaml, metrics.jsonl, result.json, last, \.\.\.\); "
        r"continue that run with --resume, replace it with --overwrite"
    )
    with pytest.raises(ValueError, match=refused):
        train(config(run, "train.epochs=1"), log=quiet)
    assert len(read_metrics(run)) == 3  # untouched
    (run / "notes.txt").write_text("mine")
    train(config(run, "train.epochs=1"), overwrite=True, log=quiet)
    assert [r["epoch"] for r in read_metrics(run)] == [1]
    # the old run's snapshots are gone, so a later --resume cannot pick its epoch 3; other files stay
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["epoch-000001"]
    assert (run / "notes.txt").read_text() == "mine" and not (run / LOCK_FILE).exists()
    with pytest.raises(ValueError, match="would delete the checkpoint being resumed"):
        train(config(run, "train.epochs=1"), resume=run / "last", overwrite=True, log=quiet)


def test_errors_before_the_run_starts_leave_no_directory(tmp_path):
    out = tmp_path / "never"

    def broken_model(cfg):
        raise ValueError("no such layer option")

    with pytest.raises(ValueError, match="no such layer option"):
        train(config(out), model_builder=broken_model, log=quiet)
    with pytest.raises(ValueError, match="cannot resume"):  # a resume whose config differs
        train(config(tmp_path / "a", "train.epochs=1"), log=quiet)
        train(config(out, "train.lr=0.5"), resume=tmp_path / "a" / "last", log=quiet)
    with pytest.raises(ValueError, match=r"stop_after_epochs .* >= 1, got -1"):
        train(config(out), stop_after_epochs=-1, log=quiet)
    assert main(["train", "--config", str(write_config(tmp_path, out)), "--set", "task.name=nope"]) == 2
    assert not out.exists()


def test_lock_is_held_while_writing_refuses_a_second_writer_and_a_dead_ones_is_taken_over(tmp_path):
    run = tmp_path / "run"
    seen = []

    def log(msg):  # called during the run: the lock names this process
        if msg.startswith("epoch"):
            seen.append(json.loads((run / LOCK_FILE).read_text())["pid"])

    train(config(run), stop_after_epochs=1, log=log)
    assert seen == [os.getpid()] and not (run / LOCK_FILE).exists()

    other = RunDirLock(run).acquire()  # another writer (a second open file description: flock conflicts)
    try:
        with pytest.raises(RunDirBusy, match=rf"in use by pid {os.getpid()} on "):
            train(config(run), resume=run / "last", log=quiet)
    finally:
        other.release()

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a pid that no longer runs, as a killed run leaves it
    (run / LOCK_FILE).write_text(json.dumps({"pid": dead.pid, "host": "h", "started": 0}))
    messages = []
    train(config(run), resume=run / "last", stop_after_epochs=1, log=messages.append)
    assert any(f"taking over the lock of a run that is no longer running (pid {dead.pid}" in m for m in messages)
    assert [r["epoch"] for r in read_metrics(run)] == [1, 2] and not (run / LOCK_FILE).exists()


def test_resume_writes_into_the_directory_named(tmp_path):
    """A moved run resumes where it now is, with its history; --out-dir forks it elsewhere."""
    straight = tmp_path / "straight"
    train(config(straight), log=quiet)
    old = tmp_path / "old"
    cfg = write_config(tmp_path, old)
    assert main(["train", "--config", str(cfg), "--stop-after", "1"]) == 0
    moved = tmp_path / "moved"
    shutil.move(old, moved)
    assert run_dir_of(moved / "last") == moved
    assert main(["train", "--resume", str(moved), "--stop-after", "1"]) == 0  # the run directory: its last/
    assert not old.exists()
    assert records(moved) == records(straight)[:2]
    fork = tmp_path / "fork"
    assert main(["train", "--resume", str(moved / "last"), "--out-dir", str(fork)]) == 0
    assert records(fork) == records(straight)  # history carried over, then identical floats
    assert records(moved) == records(straight)[:2]  # the source is left alone
    best = read_checkpoint_state(fork / "best")["epoch"]
    assert best == min(records(straight), key=lambda r: r["val_loss"])["epoch"]
    lone = tmp_path / "lone"
    shutil.copytree(moved / "last", lone)
    assert main(["train", "--resume", str(lone)]) == 2  # not inside a run: where to write is not guessed


@pytest.mark.parametrize("where,err", [("save", errno.ENOSPC), ("metrics", errno.EROFS)])
def test_a_failed_write_is_one_line_and_keeps_the_last_checkpoint(tmp_path, monkeypatch, capsys, where, err):
    run = tmp_path / "run"
    cfg = write_config(tmp_path, run)
    failure = OSError(err, os.strerror(err), str(run / "last"))
    if where == "save":
        real = epoch_module.save_checkpoint

        def save(path, *args, **state):
            if state["epoch"] == 2:
                raise failure
            return real(path, *args, **state)

        monkeypatch.setattr(epoch_module, "save_checkpoint", save)
    else:
        real_append = MetricsLog.append

        def append(self, record):
            if record["epoch"] == 2:
                raise failure
            real_append(self, record)

        monkeypatch.setattr(MetricsLog, "append", append)
    assert main(["train", "--config", str(cfg)]) == 1
    text = capsys.readouterr().err.strip()
    assert "\n" not in text and os.strerror(err) in text and f"run directory {run}" in text, text
    assert read_checkpoint_state(run / "last")["epoch"] == 1 and not (run / LOCK_FILE).exists()
    monkeypatch.undo()
    assert main(["train", "--config", str(cfg), "--resume"]) == 0  # and the run can go on
    assert [r["epoch"] for r in read_metrics(run)] == [1, 2, 3]


def test_cuda_without_cuda_and_bad_stop_after_are_one_line(tmp_path, capsys):
    import torch

    cfg = str(write_config(tmp_path, tmp_path / "run"))
    if not torch.cuda.is_available():
        assert main(["train", "--config", cfg, "--device", "cuda"]) == 2
        text = capsys.readouterr().err.strip()
        assert "\n" not in text and "device 'cuda' asked for, but" in text and "'cpu'" in text
        assert not (tmp_path / "run").exists()
    for bad in ("-1", "0", "x"):
        with pytest.raises(SystemExit):
            main(["train", "--config", cfg, "--stop-after", bad])
        assert "expected an integer >= 1" in capsys.readouterr().err


def test_tensorboard_logs_the_metrics_scalars(tmp_path, monkeypatch):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    train(config(run, "train.tensorboard=true", "train.epochs=2"), log=quiet)
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    metrics = read_metrics(run)
    keys = {k for r in metrics for k in r if k != "epoch"}
    assert set(events.Tags()["scalars"]) == keys
    for key in keys:
        logged = [(e.step, e.value) for e in events.Scalars(key)]
        assert logged == [(r["epoch"], pytest.approx(float(r[key]), rel=1e-6)) for r in metrics]

    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    with pytest.raises(ValueError, match=r"needs the tensorboard package: pip install 'torchssm\[tensorboard\]'"):
        train(config(tmp_path / "x", "train.tensorboard=true"), log=quiet)
    assert not (tmp_path / "x").exists()


def test_metrics_with_a_torn_last_line_are_read(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"epoch": 1, "train_loss": 0.5}\n{"epoch": 2, "train_lo')
    with pytest.warns(RuntimeWarning, match="cut short"):
        assert read_metrics(tmp_path) == [{"epoch": 1, "train_loss": 0.5}]
    path.write_text('{"epoch": 1\n{"epoch": 2}\n')
    with pytest.raises(ValueError, match="line 1 is not a JSON record"):
        read_metrics(path)


def test_lock_without_fcntl_uses_an_exclusive_file_and_the_pid(tmp_path, monkeypatch):
    """The fallback where flock does not exist (Windows): a live holder refuses, a dead one is taken over."""
    from torchssm.train import run_dir

    monkeypatch.setattr(run_dir, "fcntl", None)
    first = RunDirLock(tmp_path).acquire()
    with pytest.raises(RunDirBusy, match=rf"in use by pid {os.getpid()}"):
        RunDirLock(tmp_path).acquire()
    first.release()
    assert not (tmp_path / LOCK_FILE).exists()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    import socket

    (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "started": 0}))
    lock = RunDirLock(tmp_path).acquire()
    assert lock.stale["pid"] == dead.pid and json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
    lock.release()


def test_run_label_names_the_run_for_best_and_last():
    from torchssm.runs import run_label

    assert run_label(Path("runs/s4d/best")) == "s4d"
    assert run_label("runs/s4d/last") == "s4d"
    assert run_label("runs/s4d/checkpoints/epoch-000003") == "epoch-000003"
    assert run_label("exported/lastly") == "lastly"  # only a whole 'best' / 'last' component counts


def test_read_config_and_result_find_the_run_from_any_of_its_checkpoints(tmp_path):
    from torchssm.runs import read_config, read_result

    train(config(tmp_path / "run"), log=quiet)
    run = tmp_path / "run"
    for where in (run, run / "last", run / "best", run / "checkpoints" / "epoch-000003"):
        saved = read_config(where)
        assert saved == yaml.safe_load((run / "config.yaml").read_text())
        assert saved["task"]["n_train"] == 32 and saved["train"]["epochs"] == 3
        result = read_result(where)
        assert result["last"]["epoch"] == 3 and result["last"] == records(run)[-1] | {
            "time_s": result["last"]["time_s"]
        }
        # the host a seeded run's numbers belong to (float kernels differ with the CPU's vector instructions)
        assert result["environment"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
        assert result["environment"]["torch"] == torch.__version__ and result["environment"]["device"] == "cpu"
    with pytest.raises(FileNotFoundError, match=r"no result.json in .*\(expected a torchssm train run\)"):
        read_result(tmp_path)
    (run / "result.json").write_text('{"best": {}}')
    with pytest.raises(ValueError, match="expected a result with a 'last' record"):
        read_result(run)
    (run / "config.yaml").write_text("task: [unclosed")
    with pytest.raises(ValueError, match="config.yaml is not YAML"):
        read_config(run / "last")
