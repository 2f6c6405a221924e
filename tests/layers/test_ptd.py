"""Perturb-then-diagonalize (PTD) init ([PTD] Yu et al. 2024, Sec. 4): properties from the paper that
could fail: the eigendecomposition of A + E is exact and well conditioned (Sec. 4.2, Eq. (4)), the
optimisation beats its random start, the PTD transfer function stays close to HiPPO's on the imaginary
axis and its error shrinks with ||E|| (Thm. 3) while S4D-LegS's does not (Thm. 2), and the
conjugate-halved form (S5's conj_sym) is the same system."""

import pytest
import torch

from torchssm.layers.init import PTD_GAMMA, hippo, hippo_dplr, ptd_init, ptd_objective, ptd_perturbation
from torchssm.layers.s5 import S5
from torchssm.testing import check_layer_contract

N = 32
S = 1j * torch.logspace(-2, 3, 300, dtype=torch.float64)  # (k,) points on the imaginary axis


def _norm2(M):
    return torch.linalg.matrix_norm(M, ord=2).item()


def _transfer(lam, b, c, s=S, conj=False):
    """sum_j c_j b_j / (s - lam_j) (+ the conjugate modes): (k,) for lam, b, c (m,)."""
    g = ((c * b)[None, :] / (s[:, None] - lam[None, :])).sum(-1)
    if conj:
        g = g + ((c * b).conj()[None, :] / (s[:, None] - lam.conj()[None, :])).sum(-1)
    return g


def _hippo_transfer(A, B, C):
    """C (sI - A)^-1 B by dense solves: (r, k) for C (r, n)."""
    eye = torch.eye(A.shape[0], dtype=torch.complex128)
    R = torch.stack([torch.linalg.solve(si * eye - A.to(torch.complex128), B.to(torch.complex128)) for si in S])
    return C.to(torch.complex128) @ R.T


def _rel_err(G, C, lam, V, V_inv, B, conj=False):
    """max over s of |G_diag - G| / max |G|, worst over the rows of C."""
    errs = [
        (_transfer(lam, V_inv @ B.to(V.dtype), c.to(V.dtype) @ V, conj=conj) - g).abs().max() / g.abs().max()
        for c, g in zip(C, G)
    ]
    return max(e.item() for e in errs)


def test_decomposition_is_exact_real_stable_and_well_conditioned():
    A, _ = hippo("legs", N)
    lam, V, V_inv, E = ptd_init("legs", N)
    assert lam.shape == (N,) and V.shape == V_inv.shape == E.shape == (N, N) and not E.is_complex()
    torch.testing.assert_close((V * lam) @ V_inv, (A + E).to(V.dtype), rtol=0, atol=1e-10 * _norm2(A))
    assert lam.real.max().item() < 0  # stable
    assert bool((lam.imag[1:] >= lam.imag[:-1]).all())  # sorted by Im
    # real E: conjugate-symmetric spectrum
    torch.testing.assert_close(torch.sort(lam.imag).values, torch.sort(-lam.imag).values, rtol=0, atol=1e-8)
    # the point of PTD: kappa(V~) small although kappa(V_A) ~ 2^(4n/3) ([S4] Lemma 3.2)
    assert torch.linalg.cond(torch.linalg.eig(A)[1]).item() > 1e12
    assert torch.linalg.cond(V).item() < 1e4
    assert _norm2(E) < 1e-3 * _norm2(A)


def test_gradient_descent_lowers_phi_and_beats_a_random_perturbation_of_the_same_size():
    """Eq. (4) is what the solver decreases; at equal ||E||, the optimised E gives a far smaller
    kappa than a random one (a random E of size eps gives kappa ~ 1/eps, [PTD] Sec. 5.3)."""
    A, _ = hippo("legs", N)
    gen = torch.Generator().manual_seed(0)
    E0 = ptd_perturbation(A, steps=0, generator=gen)  # the random start
    E = ptd_init("legs", N)[3]  # generator=None: the same seed, 60 steps
    phi0, _, _ = ptd_objective(A, E0, PTD_GAMMA)
    phi, _, V = ptd_objective(A, E, PTD_GAMMA)
    assert phi.item() < 0.5 * phi0.item()
    G = torch.randn(N, N, generator=gen, dtype=torch.float64)
    E_rand = _norm2(E) * G / _norm2(G)
    assert torch.linalg.cond(V).item() < 0.2 * torch.linalg.cond(torch.linalg.eig(A + E_rand)[1]).item()


def test_transfer_function_close_to_hippo_and_shrinks_with_E_where_s4d_legs_is_not():
    """[PTD] Thm. 3: |G_PTD - G_HiPPO| = O(log(n) ||E||) uniformly on the imaginary axis; Thm. 2: the
    S4D-LegS system (normal part only) keeps O(1) spikes."""
    A, B = hippo("legs", N)
    C = torch.randn(4, N, generator=torch.Generator().manual_seed(1), dtype=torch.float64)  # (4, n)
    G = _hippo_transfer(A, B, C)  # (4, k)
    lam, V, V_inv, E = ptd_init("legs", N)
    err = _rel_err(G, C, lam, V, V_inv, B)
    W, _, _, Vn = hippo_dplr("legs", N)
    Vf = torch.cat([Vn, Vn.conj()], 1)  # unitary
    err_s4d = _rel_err(G, C, torch.cat([W, W.conj()]), Vf, Vf.conj().T, B)
    assert err < 0.1 and err_s4d > 1.0
    lam2, V2, V_inv2, E2 = ptd_init("legs", N, gamma=10 * PTD_GAMMA, eps0=1e-4)  # a ~5x smaller E
    ratio = _norm2(E) / _norm2(E2)
    assert ratio > 3
    assert _rel_err(G, C, lam2, V2, V_inv2, B) < 2.0 * err / ratio  # error ~ linear in ||E||


def test_conj_sym_half_system_is_the_same_system():
    """S5 stores one state per conjugate pair: the Im > 0 eigenvalues and the real ones at half weight."""
    A, B = hippo("legs", N)
    lam, V, V_inv, E = ptd_init("legs", N)
    lam_h, V_h, V_inv_h, E_h = ptd_init("legs", N, conj_sym=True)
    torch.testing.assert_close(E_h, E)
    k = int((lam_h.imag == 0).sum())
    assert lam_h.shape == ((N + k) // 2,) and k % 2 == 0 and (lam_h.imag >= 0).all()
    full = 2 * ((V_h * lam_h) @ V_inv_h).real
    torch.testing.assert_close(full, A + E, rtol=0, atol=1e-10 * _norm2(A))
    C = torch.randn(N, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    g_full = _transfer(lam, V_inv @ B.to(V.dtype), C.to(V.dtype) @ V)
    g_half = _transfer(lam_h, V_inv_h @ B.to(V.dtype), C.to(V.dtype) @ V_h, conj=True)
    torch.testing.assert_close(g_half, g_full, rtol=1e-8, atol=1e-8 * g_full.abs().max().item())


def test_s5_ptd_with_conjugate_symmetry_keeps_the_layer_contract():
    torch.manual_seed(0)
    layer = S5(4, 8, init="ptd").double()
    assert layer.conj_sym and layer.n_complex < 8
    check_layer_contract(layer, length=13, rtol=1e-10, atol=1e-10)


def test_cached_default_is_deterministic_and_returns_copies():
    a = ptd_init("legs", 8)
    a[0].zero_()
    b, c = ptd_init("legs", 8), ptd_init("legs", 8)
    assert b[0].abs().min().item() > 0
    for x, y in zip(b, c):
        assert torch.equal(x, y)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="measure"):
        ptd_init("legx", 8)
    with pytest.raises(ValueError, match="n >= 2"):
        ptd_init("legs", 1)
    with pytest.raises(ValueError, match="gamma > 0"):
        ptd_init("legs", 8, gamma=0.0)
    with pytest.raises(ValueError, match="eps0 > 0"):
        ptd_init("legs", 8, eps0=-1.0)
    with pytest.raises(ValueError, match="square"):
        ptd_perturbation(torch.zeros(3, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="unstable"):
        ptd_init("legs", 8, eps0=10.0)  # ||E|| = 10 ||A||: A + E is not stable
