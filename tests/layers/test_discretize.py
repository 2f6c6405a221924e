"""ZOH and bilinear discretisation: diagonal == dense on diagonal matrices, closed forms, bad input;
the dt range whose memory lengths 1/dt reach the sequence length."""

import pytest
import torch

from torchssm.layers.discretize import discretize_dense, discretize_diag, dt_range_for_length
from torchssm.layers.init import log_uniform_dt

F64 = dict(rtol=1e-10, atol=1e-10)


def _diag_problem(seed=0, n=5):
    gen = torch.Generator().manual_seed(seed)
    A = torch.complex(
        -torch.rand(n, generator=gen, dtype=torch.float64) - 0.1, torch.randn(n, generator=gen, dtype=torch.float64)
    )
    B = torch.complex(
        torch.randn(n, generator=gen, dtype=torch.float64), torch.randn(n, generator=gen, dtype=torch.float64)
    )
    return A, B


@pytest.mark.parametrize("method", ["zoh", "bilinear"])
def test_diagonal_equals_dense_on_a_diagonal_matrix(method):
    A, B = _diag_problem()
    dt = torch.tensor(0.3, dtype=torch.float64)
    Ab, Bb = discretize_diag(dt, A, B, method)
    Ad, Bd = discretize_dense(dt, torch.diag(A), B[:, None], method)
    torch.testing.assert_close(Ad, torch.diag(Ab), **F64)
    torch.testing.assert_close(Bd[:, 0], Bb, **F64)


def test_zoh_dense_matches_closed_form_for_invertible_A():
    gen = torch.Generator().manual_seed(1)
    A = torch.randn(2, 4, 4, generator=gen, dtype=torch.float64) - 3 * torch.eye(4, dtype=torch.float64)
    B = torch.randn(2, 4, 2, generator=gen, dtype=torch.float64)
    dt = torch.tensor([0.1, 0.5], dtype=torch.float64)
    Ab, Bb = discretize_dense(dt, A, B, "zoh")
    eA = torch.linalg.matrix_exp(dt[:, None, None] * A)
    torch.testing.assert_close(Ab, eA, **F64)
    torch.testing.assert_close(Bb, torch.linalg.solve(A, (eA - torch.eye(4, dtype=torch.float64)) @ B), **F64)


def test_zoh_dense_handles_singular_A():
    A = torch.zeros(3, 3, dtype=torch.float64)  # x' = u: B_bar = dt B
    B = torch.ones(3, 1, dtype=torch.float64)
    Ab, Bb = discretize_dense(torch.tensor(0.25, dtype=torch.float64), A, B, "zoh")
    torch.testing.assert_close(Ab, torch.eye(3, dtype=torch.float64), **F64)
    torch.testing.assert_close(Bb, 0.25 * B, **F64)


def test_bilinear_and_zoh_agree_to_second_order():
    A, B = _diag_problem(2)
    errs = []
    for dt in (1e-2, 1e-3):
        dt = torch.tensor(dt, dtype=torch.float64)
        za, _ = discretize_diag(dt, A, B, "zoh")
        ba, _ = discretize_diag(dt, A, B, "bilinear")
        errs.append((za - ba).abs().max().item())
    assert errs[1] < errs[0] / 500  # local error O(dt^3)


def test_unknown_method_and_bad_shapes_raise():
    A, B = _diag_problem()
    with pytest.raises(ValueError, match="zoh"):
        discretize_diag(torch.tensor(0.1), A, B, "euler")
    with pytest.raises(ValueError, match=r"\(\.\.\., n, n\)"):
        discretize_dense(torch.tensor(0.1), torch.zeros(3, 4), torch.zeros(3, 1))


@pytest.mark.parametrize("length", [10, 1024, 16384])
def test_dt_range_for_length_memory_lengths_span_10_to_L(length):
    """1/dt of the range's ends are 1/dt_max = 10 and L steps; log-uniform samples cover [10, L]."""
    dt_min, dt_max = dt_range_for_length(length)
    assert (1 / dt_max, 1 / dt_min) == pytest.approx((10, length))
    torch.manual_seed(0)
    memory = 1 / torch.exp(log_uniform_dt(4096, dt_min, dt_max))  # (4096,) steps
    assert memory.min() >= 10 * (1 - 1e-9) and memory.max() <= length * (1 + 1e-9)
    assert memory.max() / memory.min() > 0.9 * length / 10


def test_dt_range_for_length_short_sequences_and_bad_input():
    assert dt_range_for_length(4) == (0.1, 0.1)  # shorter than 1/dt_max: the range collapses to dt_max
    assert dt_range_for_length(100, dt_max=0.5) == (0.01, 0.5)
    for bad in (0, -3, 2.5, True, None):
        with pytest.raises(ValueError, match="length"):
            dt_range_for_length(bad)
    with pytest.raises(ValueError, match="dt_max"):
        dt_range_for_length(100, dt_max=0.0)
