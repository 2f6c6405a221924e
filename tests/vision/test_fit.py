"""vision/fit.py: the shared optimisation loop fits a least-squares problem, calls after_step once per
step, is reproducible from its seed, and rejects a non-positive step count."""

import pytest
import torch

from torchssm.vision.fit import fit


def run(seed: int):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    x, w = torch.randn(64, 3), torch.tensor([[1.0, -2.0, 0.5]])
    calls = []

    def batch_loss(gen):
        idx = torch.randint(64, (16,), generator=gen)
        return ((model(x[idx]) - x[idx] @ w.T) ** 2).mean()

    out = fit(
        model,
        batch_loss,
        steps=200,
        lr=0.05,
        weight_decay=0.0,
        seed=seed,
        progress=False,
        after_step=lambda: calls.append(1),
    )
    return model, out, len(calls)


def test_fit_converges_calls_after_step_and_is_seeded():
    model, out, calls = run(0)
    assert calls == 200 and out["final_loss"] < 1e-3 and out["cpu_s"] >= 0
    torch.testing.assert_close(model.weight, run(0)[0].weight)  # same seed, same batches
    with pytest.raises(ValueError, match="steps"):
        fit(model, lambda gen: model.weight.sum(), steps=0, lr=0.1, weight_decay=0.0)
