"""NaN/Inf guard: a non-finite loss or gradient skips the step (weights, optimizer and schedule
untouched); more than ``train.max_nonfinite_steps`` in a row stop training with a message."""

import json

import pytest
import torch
from _loop_common import Exploding, config, quiet, toy_task

from torchssm.train.guard import NonFiniteGuard, TrainingDiverged
from torchssm.train.loop import train


def test_guard_counts_streaks_and_raises_past_the_limit():
    g = NonFiniteGuard(2)
    nan, one = torch.tensor(float("nan")), torch.tensor(1.0)
    assert g.check("loss", one, "a")
    assert not g.check("loss", nan, "step 1") and not g.check("gradient norm", torch.tensor(float("inf")), "step 2")
    g.ok()  # a healthy step ends the streak
    assert not g.check("loss", nan, "step 4") and not g.check("loss", nan, "step 5")
    with pytest.raises(
        TrainingDiverged,
        match=r"loss is nan at step 4 and non-finite for the 2 step\(s\) after it "
        r"\(limit train.max_nonfinite_steps=2\)",
    ):
        g.check("loss", nan, "step 6")
    assert g.skipped == 5
    with pytest.raises(ValueError, match="max_consecutive"):
        NonFiniteGuard(-1)


class Flaky(Exploding):
    """Stand-in model whose loss is NaN on some training calls, or whose gradient is NaN with a finite loss."""

    bad_calls = {3, 4}
    mode = "loss"

    def forward(self, inputs, lengths=None, inputs2=None):
        out = self.lin(inputs.mean(1))  # (b, d_output)
        if not self.training:
            return out
        self.calls += 1
        if self.calls in self.bad_calls:
            if self.mode == "loss":
                return out * float("nan")
            zero = (out - out.detach()).sum()  # 0 with gradient 1 ...
            return out + torch.sqrt(zero.abs()) * 0  # ... d sqrt(|0|) = inf, times 0 = nan
        return out


@pytest.mark.parametrize("mode", ["loss", "grad"])
def test_loop_skips_nonfinite_steps_and_keeps_training(tmp_path, mode, monkeypatch):
    monkeypatch.setattr(Flaky, "mode", mode)
    task = toy_task()
    result = train(config(tmp_path), task=task, model_builder=Flaky, log=quiet)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["skipped_steps"] == 2
    assert records[-1]["step"] == 2 * 6 - 2  # 6 batches per epoch; two updates skipped
    assert all(
        torch.isfinite(p).all()
        for p in torch.load(tmp_path / "last" / "optimizer.pt", weights_only=True)["optimizer"]["state"][0].values()
        if isinstance(p, torch.Tensor)
    )
    assert result.epochs_done == 2


def test_loop_stops_after_too_many_in_a_row(tmp_path, monkeypatch):
    monkeypatch.setattr(Flaky, "bad_calls", set(range(3, 100)))
    with pytest.raises(TrainingDiverged, match=r"loss is nan at epoch 1, step 3 and non-finite for the 1 step"):
        train(config(tmp_path, "train.max_nonfinite_steps=1"), task=toy_task(), model_builder=Flaky, log=quiet)
    assert not (tmp_path / "last").exists()
