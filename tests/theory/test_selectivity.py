"""Huang et al. 2025's three claims as constructions on the library's real S6 / Mamba / Mamba-2 code."""

import pytest
import torch

from torchssm.theory.selectivity import (
    haar_functions,
    haar_vs_s4d,
    lti_recall_error,
    mqar_accuracy,
    piecewise_constant,
    projection_error,
    s4d_state_basis,
    s6_haar_coefficients,
    s6_keep_first_mse,
    s6_keep_marked,
)


def test_haar_functions_are_orthonormal():
    psi = haar_functions(32, 32)
    torch.testing.assert_close(psi @ psi.T, torch.eye(32, dtype=torch.float64))


def test_s6_state_is_the_haar_projection():
    u = torch.randn(4, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for count in (1, 8, 64):
        psi = haar_functions(64, count)
        torch.testing.assert_close(s6_haar_coefficients(u, count), u @ psi.T, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(s6_haar_coefficients(u, 64) @ haar_functions(64, 64), u)  # full basis: exact
    torch.testing.assert_close(s6_haar_coefficients(u, 8, backend="chunked"), u @ haar_functions(64, 8).T)


def test_dyadic_steps_are_exact_for_s6_but_not_for_s4d():
    u = piecewise_constant(8, 256, 5, dyadic_level=3, seed=1)
    rec = s6_haar_coefficients(u, 8) @ haar_functions(256, 8)
    assert (rec - u).abs().max() < 1e-10  # 8 Haar functions span the level-3 step functions
    for init in ("lin", "inv"):
        assert projection_error(u, s4d_state_basis(256, 8, init)).mean() > 0.2  # same state, smooth basis
        assert projection_error(u, s4d_state_basis(256, 64, init)).mean() > 0.05


def test_haar_vs_s4d_table_shapes_and_orders():
    rows = haar_vs_s4d(length=128, sizes=(4, 16), batch=4)
    assert [r["state"] for r in rows] == [4, 16]
    assert rows[1]["s6_haar_dyadic"] < 1e-10 < rows[1]["s4d_lin_dyadic"]
    assert rows[1]["s4d_lin_smooth"] < rows[1]["s6_haar_smooth"]  # smooth targets favour S4D-Lin


def test_s6_marker_keeps_the_marked_token_at_any_length():
    g = torch.Generator().manual_seed(0)
    u = torch.randn(3, 40, generator=g, dtype=torch.float64)
    marker = torch.zeros(3, 40)
    marker[0, 5], marker[1, 0], marker[2, 30] = 1, 1, 1
    y = s6_keep_marked(u, marker)
    torch.testing.assert_close(y[:, -1], u[[0, 1, 2], [5, 0, 30]], rtol=1e-9, atol=1e-9)
    assert y[0, :5].abs().max() == 0  # nothing written before the marker
    assert s6_keep_first_mse(2048) < 1e-18


def test_lti_state_forgets_once_the_sequence_outgrows_it():
    err = lti_recall_error(8, (4, 64, 512))
    assert err[0] < 1e-6 and err[1] > 0.3 and err[2] > 0.8, err
    assert lti_recall_error(64, (512,))[0] < lti_recall_error(8, (512,))[0]


@pytest.mark.parametrize("kind", ["mamba", "mamba2", "s4d"])
def test_mqar_constructions_answer_every_query(kind):
    r = mqar_accuracy(kind, vocab_size=64, length=64, num_kv_pairs=16, examples=16)
    assert r["queries"] == 16 * 16 and r["accuracy"] == 1.0, r


def test_mqar_construction_is_not_vacuous():
    """Perturb the construction (keys read from the current token instead of the previous): it fails."""
    from torchssm.theory import selectivity

    layer = selectivity.mqar_mamba(64)
    with torch.no_grad():
        layer.conv1d.weight[1:32, 0] = layer.conv1d.weight[1:32, 0].flip(-1)
    from torchssm.data.synthetic.recall import mqar_example

    ex = mqar_example(
        torch.Generator().manual_seed(0), length=64, vocab_size=64, num_kv_pairs=16, random_non_queries=False
    )
    logits = layer(selectivity.embed_tokens(ex["inputs"][None], 64))[0, :, :64]
    q = ex["targets"] >= 0
    assert (logits.argmax(-1)[q] == ex["targets"][q]).float().mean() < 0.5


def test_mqar_bad_input():
    with pytest.raises(ValueError, match="kind"):
        mqar_accuracy("lstm", vocab_size=64, length=64, num_kv_pairs=4)
    with pytest.raises(ValueError, match="multiple of 8"):
        mqar_accuracy("mamba", vocab_size=60, length=64, num_kv_pairs=4)


def test_compressed_key_codes_degrade_gracefully():
    full = mqar_accuracy("mamba", vocab_size=64, length=64, num_kv_pairs=16, examples=8, key_dim=None)
    one = mqar_accuracy("mamba", vocab_size=64, length=64, num_kv_pairs=16, examples=8, key_dim=1)
    assert full["accuracy"] == 1.0 and one["accuracy"] < 0.8  # one scalar per key cannot tell 16 keys apart
    assert one["state"] < full["state"]
