"""HiPPO impulse responses == closed-form bases; S4D-LegS's kernel error shrinks with N."""

import torch

from torchssm.layers.init import hippo, hippo_low_rank
from torchssm.theory.hippo import (
    fout_basis,
    impulse_response,
    legs_basis,
    s4d_legs_basis,
    s4d_legs_kernel_error,
    s4d_legs_output_error,
)


def test_legs_impulse_response_is_the_warped_legendre_basis():
    A, B = hippo("legs", 12)
    t, K = impulse_response(A, B, t_max=6.0, steps=120)
    torch.testing.assert_close(K, legs_basis(12, t), rtol=1e-9, atol=1e-9)
    assert (K[:, 1] + legs_basis(12, t)[:, 1]).abs().max() > 1.0  # the sign convention matters


def test_fout_impulse_response_converges_to_the_truncated_fourier_basis():
    errors = []
    for n in (16, 64, 256):
        A, B = hippo("fout", n)
        t, K = impulse_response(A, B, t_max=2.0, steps=200)
        inside = (t > 0.2) & (t < 1.8)
        errors.append(float((K[inside, :6] - fout_basis(6, t)[inside]).abs().max()))
    assert errors[0] > errors[1] > errors[2] and errors[2] < 0.01, errors


def test_s4d_legs_is_the_diagonalised_normal_part_with_half_b():
    A, B = hippo("legs", 16)
    P = hippo_low_rank("legs", 16)
    t, K = impulse_response(A + P.T @ P, 0.5 * B, t_max=4.0, steps=40)
    torch.testing.assert_close(s4d_legs_basis(16, t), K, rtol=1e-9, atol=1e-9)


def test_s4d_legs_outputs_converge_with_n_impulse_responses_do_not():
    errors = [s4d_legs_output_error(n) for n in (16, 64, 256)]  # measured 0.120, 0.030, 0.0056
    assert errors[0] > 2 * errors[1] > 4 * errors[2] and errors[2] < 0.01, errors
    assert min(s4d_legs_kernel_error(n) for n in (64, 128)) > 0.3  # [PTD] Sec. 3.3: no system-wise convergence


def test_plot_s4d_legs_error_writes_a_figure(tmp_path):
    from torchssm.theory.hippo import plot_s4d_legs_error

    out = plot_s4d_legs_error(str(tmp_path / "e.png"), sizes=(8, 16))
    assert (tmp_path / "e.png").stat().st_size > 0 and [r["n"] for r in out["rows"]] == [8, 16]
