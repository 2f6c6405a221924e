"""The training loop: resume is bit-for-bit, metrics/checkpoints are written, a NaN loss stops
training without writing a checkpoint for it."""

import json

import pytest
import torch
from _loop_common import Exploding, config, quiet, toy_task
from safetensors.torch import load_file

from torchssm.train.checkpoint import SIDECAR, WEIGHTS, read_checkpoint_state
from torchssm.train.loop import TrainingDiverged, train


def test_resume_is_bit_for_bit(tmp_path):
    task = toy_task()
    straight = train(config(tmp_path / "a"), task=task, log=quiet)
    first = train(config(tmp_path / "b"), task=task, stop_after_epochs=1, log=quiet)
    assert first.epochs_done == 1 and read_checkpoint_state(tmp_path / "b" / "last")["epoch"] == 1
    resumed = train(config(tmp_path / "b"), task=task, resume=tmp_path / "b" / "last", log=quiet)
    assert resumed.epochs_done == 2

    def losses(run_dir):
        return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]

    a, b = losses(tmp_path / "a"), losses(tmp_path / "b")
    assert len(a) == len(b) == 2
    for ra, rb in zip(a, b):
        ra.pop("time_s"), rb.pop("time_s")
        assert ra == rb  # identical floats, not just close
    wa, wb = load_file(tmp_path / "a" / "last" / WEIGHTS), load_file(tmp_path / "b" / "last" / WEIGHTS)
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=0, msg=k)
    assert straight.last["train_loss"] < a[0]["train_loss"] * 1.5  # sanity: it trained


def test_cpu_cap_stops_mid_epoch_evaluated_and_resume_is_bit_for_bit(tmp_path):
    """train.max_cpu_minutes: past the cap the run stops at the next batch boundary, even inside an epoch,
    evaluates (even off the eval_every grid) and saves; resuming with no cap continues with the next batch of
    the same order and ends with a straight run's weights, bit for bit (dropout's RNG included)."""
    task = toy_task()
    lines = []
    capped = train(
        config(tmp_path / "b", "train.max_cpu_minutes=1e-9", "train.eval_every=2"), task=task, log=lines.append
    )
    assert capped.epochs_done == 0 and capped.last["epoch_batches"] == 1  # 6 batches per epoch; stopped after 1
    assert "val_acc" in capped.last and "test_acc" in capped.last
    assert any("stopped in epoch 1/2 after 1/6 batches" in line for line in lines)
    state = read_checkpoint_state(tmp_path / "b" / "last")
    assert (state["epoch"], state["epoch_batches"], state["step"]) == (0, 1, 1)
    assert not (tmp_path / "b" / "checkpoints").exists()  # no whole-epoch snapshot of a part-epoch
    lines.clear()
    resumed = train(
        config(tmp_path / "b", "train.eval_every=2"), task=task, resume=tmp_path / "b" / "last", log=lines.append
    )
    assert any("at epoch 0 + 1 batches (step 1)" in line for line in lines)
    straight = train(config(tmp_path / "a", "train.eval_every=2"), task=task, log=quiet)
    assert resumed.epochs_done == 2 and resumed.last["train_loss"] == straight.last["train_loss"]
    wa, wb = load_file(tmp_path / "a" / "last" / WEIGHTS), load_file(tmp_path / "b" / "last" / WEIGHTS)
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], rtol=0, atol=0, msg=k)
    history = [json.loads(line) for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in history] == [1, 2] and "epoch_batches" not in history[0]  # the part-record replaced
    with pytest.raises(ValueError, match="max_cpu_minutes must be >= 0"):
        config(tmp_path / "c", "train.max_cpu_minutes=-1")


def test_resume_rejects_a_different_config(tmp_path):
    task = toy_task()
    train(config(tmp_path), task=task, stop_after_epochs=1, log=quiet)
    with pytest.raises(ValueError, match=r"cannot resume.*train\.lr"):
        train(config(tmp_path, "train.lr=0.5"), task=task, resume=tmp_path / "last", log=quiet)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        train(config(tmp_path), task=task, resume=tmp_path / "missing", log=quiet)


def test_resume_of_a_run_saved_before_a_new_config_key(tmp_path):
    """A checkpoint whose config lacks keys added later (model.tie_embeddings, train.min_lr_ratio) resumes
    under a config that has them at their defaults; at another value the difference is named."""
    task = toy_task()
    train(config(tmp_path), task=task, stop_after_epochs=1, log=quiet)
    sidecar = tmp_path / "last" / SIDECAR
    state = json.loads(sidecar.read_text())
    del state["config"]["model"]["tie_embeddings"], state["config"]["train"]["min_lr_ratio"]
    sidecar.write_text(json.dumps(state))
    with pytest.raises(ValueError, match=r"cannot resume.*train\.min_lr_ratio"):
        train(config(tmp_path, "train.min_lr_ratio=0.5"), task=task, resume=tmp_path / "last", log=quiet)
    result = train(config(tmp_path), task=task, resume=tmp_path / "last", log=quiet)
    assert result.epochs_done > 1


def test_nan_loss_stops_without_checkpoint(tmp_path):
    task = toy_task()
    cfg = config(tmp_path, "train.epochs=3")
    # epoch 1 (6 steps + val + test = 8 calls) is fine and checkpointed; the 9th call (step 7) is NaN
    with pytest.raises(TrainingDiverged, match=r"loss is nan at epoch 2, step 7"):
        train(cfg, task=task, model_builder=Exploding, log=quiet)
    state = read_checkpoint_state(tmp_path / "last")
    assert state["epoch"] == 1  # the last checkpoint is the healthy one
    weights = load_file(tmp_path / "last" / WEIGHTS)
    assert all(torch.isfinite(w).all() for w in weights.values())
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 1


def test_threads_hold_during_the_run_and_are_restored(tmp_path):
    """train.threads sets torch's (and numba's) threads for the whole run, even after the first
    compiled scan launches numba's OpenMP layer (which resets the shared OpenMP thread count)."""
    from torchssm.models import build_model

    seen = []

    def builder(cfg):
        model = build_model(cfg)
        model.register_forward_hook(lambda *args: seen.append(torch.get_num_threads()))
        return model

    before = torch.get_num_threads()
    train(
        config(tmp_path, "train.epochs=1", f"train.threads={before + 1}"),
        task=toy_task(),
        model_builder=builder,
        log=quiet,
    )
    assert seen and set(seen) == {before + 1}
    assert torch.get_num_threads() == before


def test_paired_batches_pass_lengths2_to_the_model():
    """LRA Retrieval: the second document's padding must be masked, so lengths2 reaches the model."""
    from torchssm.train.loop import _forward

    seen = {}

    class Recorder(torch.nn.Module):
        def forward(self, inputs, lengths=None, inputs2=None, **kwargs):
            seen.update(kwargs, lengths=lengths, inputs2=inputs2)
            return inputs.sum(1)

    x = torch.zeros(2, 5, 1)
    _forward(Recorder(), {"inputs": x, "targets": torch.zeros(2)})
    assert "lengths2" not in seen  # unpaired batches: the plain (inputs, lengths, inputs2) interface
    lengths2 = torch.tensor([3, 5])
    _forward(Recorder(), {"inputs": x, "inputs2": x, "lengths": torch.tensor([5, 4]), "lengths2": lengths2})
    assert seen["lengths2"] is lengths2 and seen["inputs2"] is x
