"""Diagonal SSD: attention == chunked == recurrence; the rank condition on both sides; softmax's rank growth."""

import pytest
import torch

from torchssm.theory.duality import (
    diagonal_ssm_attention,
    diagonal_ssm_chunked,
    diagonal_ssm_matrix,
    diagonal_ssm_recurrent,
    equals_one_ss_attention,
    lti_hankel_rank,
    semiseparable_rank,
    softmax_rank_growth,
)

F64 = torch.float64


def _diag_inputs(b=2, l=13, p=3, n=4, seed=0, shared_decay=False):
    gen = torch.Generator().manual_seed(seed)
    log_a = -torch.rand(b, l, 1 if shared_decay else n, generator=gen, dtype=F64).expand(b, l, n).contiguous()
    x, B, C = (torch.randn(b, l, k, generator=gen, dtype=F64) for k in (p, n, n))
    h0 = torch.randn(b, p, n, generator=gen, dtype=F64)
    return [t.requires_grad_(True) for t in (x, log_a, B, C, h0)]


@pytest.mark.parametrize("chunk_size", [1, 4, 5, 13, 64])
def test_diagonal_chunked_equals_recurrence_outputs_and_grads(chunk_size):
    x, log_a, B, C, h0 = _diag_inputs()
    y0, s0 = diagonal_ssm_recurrent(x, log_a, B, C, h0)
    y1, s1 = diagonal_ssm_chunked(x, log_a, B, C, h0, chunk_size=chunk_size)
    torch.testing.assert_close(y1, y0)
    torch.testing.assert_close(s1, s0)
    gen = torch.Generator().manual_seed(3)
    wy, ws = torch.randn(y0.shape, generator=gen, dtype=F64), torch.randn(s0.shape, generator=gen, dtype=F64)
    g0 = torch.autograd.grad((y0 * wy).sum() + (s0 * ws).sum(), (x, log_a, B, C, h0))
    g1 = torch.autograd.grad((y1 * wy).sum() + (s1 * ws).sum(), (x, log_a, B, C, h0))
    for name, a, b in zip(("x", "log_a", "B", "C", "h0"), g1, g0):
        torch.testing.assert_close(a, b, msg=lambda m, k=name: f"grad {k}: {m}")


def test_diagonal_attention_form_equals_recurrence():
    x, log_a, B, C, _ = _diag_inputs()
    torch.testing.assert_close(diagonal_ssm_attention(x, log_a, B, C), diagonal_ssm_recurrent(x, log_a, B, C)[0])


def test_diagonal_matrix_is_n_semiseparable_and_one_ss_only_with_a_shared_decay():
    _, log_a, B, C, _ = [t.detach() for t in _diag_inputs(l=16, n=3)]
    assert semiseparable_rank(diagonal_ssm_matrix(log_a, B, C)[0]) == 3
    ones = torch.ones_like(B)
    assert semiseparable_rank(diagonal_ssm_matrix(log_a, ones, ones)[0]) == 3  # 3 distinct decays
    _, log_a, _, _, _ = [t.detach() for t in _diag_inputs(l=16, n=3, shared_decay=True)]
    assert semiseparable_rank(diagonal_ssm_matrix(log_a, ones, ones)[0]) == 1  # one shared decay: 1-SS


def _lti(A, B, C, l=12):
    """M[t, s] = C A^{t-s} B (s <= t)."""
    powers = [torch.eye(A.shape[0], dtype=F64)]
    for _ in range(l - 1):
        powers.append(A @ powers[-1])
    h = torch.stack([C @ P @ B for P in powers])
    idx = torch.arange(l)
    diff = idx[:, None] - idx[None, :]
    return torch.where(diff >= 0, h[diff.clamp(min=0)], torch.zeros((), dtype=F64))


def test_rank_condition_both_sides():
    gen = torch.Generator().manual_seed(0)
    B, C = torch.randn(2, 4, generator=gen, dtype=F64)
    cases = {  # name: (A, B, C, is 1-SS attention)
        "scalar_identity": (0.8 * torch.eye(4, dtype=F64), B, C, True),
        "diagonal_distinct": (torch.diag(torch.tensor([0.9, 0.7, 0.5, 0.3], dtype=F64)), B, C, False),
        "diagonal_two_decays": (torch.diag(torch.tensor([0.9, 0.9, 0.5, 0.5], dtype=F64)), B, C, False),
        "distinct_but_one_mode_observed": (
            torch.diag(torch.tensor([0.9, 0.7, 0.5, 0.3], dtype=F64)),
            B,
            C * torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=F64),
            True,
        ),
        "repeated_decay_all_observed": (torch.diag(torch.tensor([0.6, 0.6, 0.6, 0.6], dtype=F64)), B, C, True),
        "jordan_block": (torch.tensor([[0.8, 1.0], [0.0, 0.8]], dtype=F64), B[:2], C[:2], False),
    }
    for name, (A, b, c, expected) in cases.items():
        assert equals_one_ss_attention(A, b, c) is expected, name
        assert (semiseparable_rank(_lti(A, b, c)) <= 1) is expected, name  # the matrix agrees
        assert semiseparable_rank(_lti(A, b, c)) == lti_hankel_rank(A, b, c, 12), name


def test_softmax_rank_grows_with_length_linear_attention_does_not():
    rows = softmax_rank_growth((8, 16, 32), d=4)
    assert [r["softmax"] for r in rows] == [4, 8, 16]  # ceil(l/2): the largest possible
    assert all(r["linear"] == 4 for r in rows)


def test_bad_shapes_raise():
    x, log_a, B, C, _ = [t.detach() for t in _diag_inputs()]
    with pytest.raises(ValueError, match="log_a"):
        diagonal_ssm_chunked(x, log_a[:, :-1], B, C)
    with pytest.raises(ValueError, match="square"):
        semiseparable_rank(torch.zeros(3, 4))


def test_ssd_forms_benchmark_runs():
    from torchssm.theory.bench import ssd_forms_cpu_time

    rows = ssd_forms_cpu_time(lengths=(16,), heads=1, headdim=2, d_state=2, chunk_size=4, repeats=1)
    assert set(rows[0]) == {"length", "recurrent_s", "chunked_s", "attention_s", "diagonal_chunked_s"}
    assert all(v >= 0 for v in rows[0].values())


def test_theory_cli_softmax_rank(capsys):
    import json

    from torchssm.cli import main

    assert main(["theory", "softmax-rank", "--lengths", "8", "16"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["softmax"] for r in rows] == [4, 8]
