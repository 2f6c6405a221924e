"""HiPPO matrices, their NPLR/DPLR forms, diagonal inits, dt init and S5 block init (PTD: test_ptd.py): each
checked against a property stated in its paper."""

import math

import pytest
import torch

from torchssm.layers.init import (
    block_hippo_n_init,
    diagonal_init,
    hippo,
    hippo_dplr,
    hippo_low_rank,
    log_uniform_dt,
    normal_eig,
)

F64 = dict(rtol=1e-10, atol=1e-10)


def test_legs_entries_match_the_paper_formula():
    A, B = hippo("legs", 4)
    for n in range(4):
        for k in range(4):
            want = -math.sqrt(2 * n + 1) * math.sqrt(2 * k + 1) if n > k else (-(n + 1) if n == k else 0.0)
            assert A[n, k].item() == pytest.approx(want)
        assert B[n].item() == pytest.approx(math.sqrt(2 * n + 1))


@pytest.mark.parametrize("measure", ["legs", "legt", "fout"])
def test_low_rank_correction_makes_the_matrix_normal(measure):
    A, _ = hippo(measure, 16)
    P = hippo_low_rank(measure, 16)
    S = A + P.T @ P
    torch.testing.assert_close(S @ S.T, S.T @ S, rtol=1e-10, atol=1e-9)
    # normal part = c I + skew ([S4] Thm. 1): LegS has c = -1/2
    torch.testing.assert_close(S + S.T, 2 * torch.diagonal(S).mean() * torch.eye(16, dtype=torch.float64), **F64)
    if measure == "legs":
        assert torch.diagonal(S).mean().item() == pytest.approx(-0.5)


@pytest.mark.parametrize("measure", ["legs", "legt", "fout"])
def test_dplr_form_reconstructs_the_hippo_matrix_at_n64(measure):
    n = 64
    A, B = hippo(measure, n)
    W, Pt, Bt, V = hippo_dplr(measure, n)
    Vf = torch.cat([V, V.conj()], 1)  # (n, n) unitary
    Pf = torch.cat([Pt, Pt.conj()], 1)  # (r, n)
    Af = Vf @ (torch.diag(torch.cat([W, W.conj()])) - Pf.T @ Pf.conj()) @ Vf.conj().T
    torch.testing.assert_close(Vf.conj().T @ Vf, torch.eye(n, dtype=Vf.dtype), rtol=0, atol=1e-12)
    torch.testing.assert_close(Af.real, A, rtol=1e-12, atol=1e-10 * A.abs().max().item())
    torch.testing.assert_close(Vf @ torch.cat([Bt, Bt.conj()]), B.to(Vf.dtype), rtol=1e-12, atol=1e-10)


def test_plain_legs_eigendecomposition_is_ill_posed_beyond_n30():
    """[S4] Lemma 3.2: the eigenvectors of LegS grow like 2^(4n/3); the normal part's do not."""
    n = 64
    A, _ = hippo("legs", n)
    lam, V = torch.linalg.eig(A)
    assert torch.linalg.cond(V).item() > 1e12
    W, Vn = normal_eig(A + hippo_low_rank("legs", n).T @ hippo_low_rank("legs", n), conj_sym=False)
    assert torch.linalg.cond(Vn).item() < 1 + 1e-9


def test_diagonal_inits_follow_their_formulas():
    n = 16
    k = torch.arange(8, dtype=torch.float64)
    torch.testing.assert_close(
        diagonal_init("lin", n), torch.complex(-0.5 * torch.ones(8, dtype=torch.float64), math.pi * k)
    )
    torch.testing.assert_close(diagonal_init("inv", n).imag, n / math.pi * (n / (2 * k + 1) - 1))
    torch.testing.assert_close(diagonal_init("real", n).real, -(k + 1))
    legs = diagonal_init("legs", n)
    torch.testing.assert_close(legs.real, -0.5 * torch.ones(8, dtype=torch.float64))
    assert bool((legs.imag > 0).all())
    rnd = diagonal_init("random", n, generator=torch.Generator().manual_seed(0))
    assert rnd.shape == (8,) and bool((rnd.imag > 0).all())


def test_s4d_inv_approximates_s4d_legs():
    """[S4D] Sec. 4: S4D-Inv is a closed-form approximation of the S4D-LegS imaginary parts."""
    legs, inv = diagonal_init("legs", 64).imag, diagonal_init("inv", 64).imag.sort().values
    ratio = inv / legs  # within 25% for every mode (measured 0.78..1.23 at n = 64)
    assert 0.7 < ratio.min().item() and ratio.max().item() < 1.3


def test_bad_init_arguments_raise():
    with pytest.raises(ValueError, match="unknown diagonal init 'foo'"):
        diagonal_init("foo", 8)
    with pytest.raises(ValueError, match="even"):
        diagonal_init("lin", 7)
    with pytest.raises(ValueError, match="unknown HiPPO measure"):
        hippo("legx", 8)
    with pytest.raises(ValueError, match="dt_min"):
        log_uniform_dt(4, dt_min=0.1, dt_max=0.01)
    with pytest.raises(ValueError, match="divisible"):
        block_hippo_n_init(10, blocks=3)
    with pytest.raises(ValueError, match="even block size"):
        block_hippo_n_init(6, blocks=2)


def test_log_uniform_dt_range():
    log_dt = log_uniform_dt(1000, 1e-3, 1e-1, generator=torch.Generator().manual_seed(0))
    assert math.log(1e-3) <= log_dt.min().item() and log_dt.max().item() <= math.log(1e-1)
    assert abs(log_dt.mean().item() - 0.5 * (math.log(1e-3) + math.log(1e-1))) < 0.2


def test_block_hippo_n_init_is_block_diagonal_and_unitary():
    lam, V = block_hippo_n_init(16, blocks=2)
    assert lam.shape == (8,) and V.shape == (16, 8)
    assert V[:8, 4:].abs().max().item() == 0 and V[8:, :4].abs().max().item() == 0
    Vf = torch.cat([V, V.conj()], 1)
    torch.testing.assert_close(Vf.conj().T @ Vf, torch.eye(16, dtype=Vf.dtype), rtol=0, atol=1e-12)
    torch.testing.assert_close(lam[:4], lam[4:])
