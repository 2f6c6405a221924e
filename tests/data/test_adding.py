"""The adding problem through the regression training path (issue 7): the trivial baseline 1/6,
the MSE loss on exactly the right tensor (no (b,) vs (b, 1) broadcast, no silent re-layout), the
evaluated metric, and a tiny 2-layer LRU that must fit 64 adding examples."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from torchssm.data.loaders import TensorDictDataset
from torchssm.data.registry import TaskInfo, build_task
from torchssm.models import build_model
from torchssm.models.config import ModelConfig
from torchssm.train.config import model_config_for_task
from torchssm.train.loop import evaluate, loss_and_correct
from torchssm.train.optim import build_optimizer


def _info(d_output: int = 1) -> TaskInfo:
    return TaskInfo(name="reg", d_input=2, d_output=d_output, length=5, kind="regression")


def test_trivial_baseline_is_one_sixth():
    """Target = sum of two U[0, 1) values: mean 1, variance 2/12, so predicting 1 scores MSE 1/6."""
    td = build_task("adding", length=20, n_train=2000, n_val=0, n_test=1)
    y = td.train[0:2000]["targets"]  # (n, 1)
    assert y.shape == (2000, 1)
    loss, _, n = loss_and_correct(torch.ones_like(y), y, td.info)
    assert n == 2000 and abs(float(loss) - 1 / 6) < 0.015


@pytest.mark.parametrize("target_shape", [(6,), (6, 1)])
def test_regression_loss_is_elementwise_mse(target_shape):
    out = torch.randn(6, 1, dtype=torch.float64)  # (b, 1) model output
    y = torch.randn(6, dtype=torch.float64)  # (b,)
    loss, correct, n = loss_and_correct(out, y.reshape(target_shape), _info())
    torch.testing.assert_close(loss, ((out[:, 0] - y) ** 2).mean())
    assert n == 6 and int(correct) == 0
    # the bug this guards against: broadcasting (b, 1) against (b,) averages all b*b pairs
    assert not torch.allclose(F.mse_loss(out, y[None].expand(6, 6)), loss)


@pytest.mark.parametrize("target_shape", [(2, 6), (6, 1), (12,), (6, 2, 1)])
def test_regression_targets_of_another_layout_raise(target_shape):
    """(b, 2) output: a (2, b) target has the same size, and a reshape would pair the wrong values."""
    out = torch.randn(6, 2)  # (b, d_output)
    with pytest.raises(ValueError, match=r"regression targets must have the model output's shape \(6, 2\)"):
        loss_and_correct(out, torch.randn(target_shape), _info(2))


class _LastValueTimesTwo(nn.Module):
    """Stand-in model: 2 * inputs[:, -1, :1], (b, 1)."""

    def forward(self, inputs, lengths=None, inputs2=None):
        return 2 * inputs[:, -1, :1]


def test_evaluate_regression_reports_dataset_mse():
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(10, 5, 2, generator=g), torch.rand(10, 1, generator=g)  # (n, l, 2), (n, 1)
    out = evaluate(_LastValueTimesTwo(), TensorDictDataset(inputs=x, targets=y), _info(), batch_size=4)
    assert set(out) == {"loss", "n"} and out["n"] == 10  # no accuracy for a regression
    assert out["loss"] == pytest.approx(float(((2 * x[:, -1, :1] - y) ** 2).mean()), rel=1e-6)


def test_tiny_two_layer_lru_fits_64_adding_examples():
    """Full-batch AdamW on 64 examples of length 16: far below the 1/6 baseline in 100 steps."""
    torch.manual_seed(0)
    td = build_task("adding", length=16, n_train=64, n_val=0, n_test=1)
    batch = td.train[0:64]  # inputs (64, 16, 2), targets (64, 1)
    cfg = ModelConfig(
        layer="lru", d_model=16, n_layers=2, norm="layer", layer_kwargs={"d_state": 16, "r_min": 0.5, "r_max": 0.99}
    )
    model = build_model(model_config_for_task(cfg, td.info))
    opt = build_optimizer(model, lr=1e-2)
    for _ in range(100):
        opt.zero_grad(set_to_none=True)
        loss, _, _ = loss_and_correct(model(batch["inputs"]), batch["targets"], td.info)
        loss.backward()
        opt.step()
    assert evaluate(model, td.train, td.info, batch_size=24)["loss"] < 0.02
