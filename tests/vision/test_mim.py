"""MambaMIM: S6T token interpolation against a loop written from the authors' construction (per gap:
linear interpolation between the anchors, A^(n-1-j) powers, running sum; last cell A f), the masking,
the reconstruction loss on masked cells only, gradients, bad input, and the pretrain -> fine-tune runner."""

import pytest
import torch

from torchssm.vision.classify import build_classifier
from torchssm.vision.mim import MaskedImageModel, random_visible, s6t_fill

F64 = torch.float64


def s6t_loop(f, visible, A):
    b, length, h = f.shape
    out = torch.zeros_like(f)
    for r in range(b):
        anchor = visible[r].clone()
        anchor[0] = anchor[-1] = True
        ind = torch.nonzero(anchor)[:, 0].tolist()
        for a, nxt in zip(ind[:-1], ind[1:]):
            n = nxt - a
            alpha = torch.linspace(0, 1, n, dtype=f.dtype)
            acc = torch.zeros(h, dtype=f.dtype)
            for j in range(n):
                acc = acc + torch.linalg.matrix_power(A, n - 1 - j) @ ((1 - alpha[j]) * f[r, a] + alpha[j] * f[r, nxt])
                out[r, a + j] = acc
        out[r, length - 1] = A @ f[r, length - 1]
    return out


def test_s6t_equals_the_gapwise_construction_values_and_grads():
    torch.manual_seed(0)
    f = torch.randn(3, 17, 5, dtype=F64, requires_grad=True)
    A = (0.3 * torch.randn(5, 5, dtype=F64)).requires_grad_()
    visible = random_visible(3, 17, 0.6, torch.Generator().manual_seed(0))
    got, want = s6t_fill(f, visible, A), s6t_loop(f, visible, A)
    torch.testing.assert_close(got, want)
    g = torch.randn_like(got)
    # A's gradient sums terms up to A^15: matrix_power and the repeated products round differently
    grads, grads_loop = torch.autograd.grad((got * g).sum(), [f, A]), torch.autograd.grad((want * g).sum(), [f, A])
    torch.testing.assert_close(grads, grads_loop, rtol=1e-6, atol=1e-6)


def test_s6t_at_zero_transition_copies_the_next_anchor_into_the_cell_before_it():
    f = torch.arange(1.0, 7.0, dtype=F64).reshape(1, 6, 1)  # features 1..6
    visible = torch.tensor([[True, False, False, True, False, False]])
    out = s6t_fill(f, visible, torch.zeros(1, 1, dtype=F64))[0, :, 0]
    # anchors 0, 3, 5 (last forced); A = 0 keeps only the A^0 term at the end of each gap
    torch.testing.assert_close(out, torch.tensor([0, 0, 4.0, 0, 6.0, 0], dtype=F64))


def test_masking_keeps_the_ratio_and_loss_counts_masked_cells_only():
    vis = random_visible(4, 20, 0.6, torch.Generator().manual_seed(1))
    assert vis.sum(1).tolist() == [8, 8, 8, 8]
    torch.manual_seed(0)
    clf = build_classifier({"layer": "lru", "d_model": 8, "n_layers": 1, "layer_kwargs": {"d_state": 4}}, 4, 10, (4, 5))
    mim = MaskedImageModel(clf.double(), fill="s6t").double()
    tokens = torch.randn(4, 20, 4, dtype=F64)
    loss, rec, visible = mim(tokens, vis)
    manual = ((rec - tokens) ** 2).mean(-1)[~vis].mean()
    torch.testing.assert_close(loss, manual)
    tokens2 = tokens.clone()
    tokens2[~vis] += 5.0  # masked pixels reach the loss only as targets: the reconstruction is unchanged
    torch.testing.assert_close(mim(tokens2, vis)[1], rec)
    loss.backward()
    assert mim.A.grad is not None and all(p.grad is not None for p in clf.blocks.parameters())


@pytest.mark.parametrize("fill", ["s6t", "mask_token"])
def test_pretraining_lowers_the_reconstruction_loss(fill):
    from torchssm.vision.pretrain import pretrain, reconstruction_loss

    torch.manual_seed(0)
    clf = build_classifier(
        {"layer": "lru", "d_model": 16, "n_layers": 1, "layer_kwargs": {"d_state": 8}}, 4, 10, (4, 4)
    )
    mim = MaskedImageModel(clf, fill=fill)
    x = torch.rand(1, 16, 4).repeat(64, 1, 1)  # one image: its masked patches are learnable
    before = reconstruction_loss(mim, x)
    pretrain(mim, x, steps=60, batch=16, lr=1e-2, progress=False)
    assert reconstruction_loss(mim, x) < 0.5 * before


def test_bad_input():
    clf = build_classifier({"layer": "lru", "d_model": 8, "n_layers": 1}, 4, 10, (2, 2))
    with pytest.raises(ValueError, match="fill"):
        MaskedImageModel(clf, fill="zeros")
    with pytest.raises(ValueError, match="ratio"):
        MaskedImageModel(clf, ratio=1.0)
    with pytest.raises(ValueError, match=r"\(batch, cells, 4\)"):
        MaskedImageModel(clf)(torch.randn(2, 4, 3))
    with pytest.raises(ValueError, match="visible"):
        s6t_fill(torch.randn(1, 4, 2), torch.ones(1, 3, dtype=torch.bool), torch.zeros(2, 2))


def test_runner_writes_results(tmp_path):
    from torchssm.vision.pretrain import run_mim_experiment

    spec = {"layer": "lru", "d_model": 8, "n_layers": 1, "layer_kwargs": {"d_state": 4}}
    res = run_mim_experiment(tmp_path, spec, pretrain_steps=3, finetune_steps=3, batch=8, progress=False)
    assert set(res["arms"]) == {"scratch", "s6t", "mask_token"} and res["n_labelled"] == 144
    assert (tmp_path / "results.json").exists() and "pretrain" in res["arms"]["s6t"]
    with pytest.raises(ValueError, match="arms"):
        run_mim_experiment(tmp_path, spec, arms=("dino",))
