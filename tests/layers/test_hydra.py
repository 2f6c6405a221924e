"""Hydra: matches a loop implementation of the paper's quasiseparable mixer written here, backends
agree (outputs and gradients in float64), non-causal, bad input."""

import pytest
import torch
import torch.nn.functional as F

from torchssm.layers.hydra import Hydra
from torchssm.layers.registry import build_layer
from torchssm.testing import check_layer_contract

F64 = torch.float64


def _layer(**kw):
    torch.manual_seed(0)
    return Hydra(8, d_state=3, headdim=4, ngroups=2, chunk_size=4, **kw).double()


def _loop_reference(m: Hydra, u: torch.Tensor) -> torch.Tensor:
    """Hydra written directly from the definition: y_t = sum_{s<t} M_f[t, s] x_s + sum_{s>t} M_b[t, s] x_s
    + x_t (fc_D(x_t) + D), with the SSD recurrences unrolled in plain loops (scalar decay per head)."""
    b, l, _ = u.shape
    d, G, n, H, P = m.d_inner, m.ngroups, m.d_state, m.nheads, m.headdim
    zxbcdt = u @ m.in_proj.weight.T
    z, xBC, dt = zxbcdt[..., :d], zxbcdt[..., d : 2 * d + 4 * G * n], zxbcdt[..., 2 * d + 4 * G * n :]
    xBC = F.silu(
        F.conv1d(
            xBC.transpose(1, 2), m.conv1d.weight, m.conv1d.bias, padding=m.d_conv // 2, groups=m.conv_dim
        ).transpose(1, 2)
    )
    x = xBC[..., :d].reshape(b, l, H, P)
    Bf, Cf, Bb, Cb = (xBC[..., d + k * G * n : d + (k + 1) * G * n].reshape(b, l, G, n) for k in range(4))
    dtf = F.softplus(dt[..., :H] + m.dt_bias)
    dtb = F.softplus(dt[..., H:] + m.dt_bias)
    A = -torch.exp(m.A_log)
    y = torch.zeros(b, l, H, P, dtype=u.dtype)
    for hd in range(H):
        g = hd // (H // G)
        for t in range(l):
            for s in range(l):
                if s < t:  # forward scan read at t-1 (shift), input s <= t-1
                    decay = torch.exp(A[hd] * dtf[:, s + 1 : t, hd].sum(-1))
                    w = (Cf[:, t - 1, g] * Bf[:, s, g]).sum(-1) * decay * dtf[:, s, hd]
                elif s > t:  # backward scan read at t+1, input s >= t+1
                    decay = torch.exp(A[hd] * dtb[:, t + 1 : s, hd].sum(-1))
                    w = (Cb[:, t + 1, g] * Bb[:, s, g]).sum(-1) * decay * dtb[:, s, hd]
                else:
                    continue
                y[:, t, hd] += w[:, None] * x[:, s, hd]
    xf = x.reshape(b, l, d)
    y = y.reshape(b, l, d) + xf * (xf @ m.fc_D.weight.T + m.D).repeat_interleave(P, -1)
    y = y / y.pow(2).mean(-1, keepdim=True).add(m.norm.eps).sqrt() * m.norm.weight * F.silu(z)
    return y @ m.out_proj.weight.T


def test_matches_loop_reference():
    m = _layer()
    with torch.no_grad():
        m.A_log.uniform_(-1, 1)  # not the init value, so the decays matter
    u = torch.randn(1, 6, 8, dtype=F64)
    with torch.no_grad():
        torch.testing.assert_close(m(u), _loop_reference(m, u))


def test_backends_agree_outputs_and_grads():
    fast, slow = _layer(), _layer(backend="naive")
    slow.load_state_dict(fast.state_dict())
    u = torch.randn(2, 9, 8, dtype=F64, requires_grad=True)
    res = []
    for m in (fast, slow):
        y = m(u)
        res.append((y, torch.autograd.grad((y * y.detach().sin()).sum(), [u] + list(m.parameters()))))
    torch.testing.assert_close(res[0][0], res[1][0])
    for a, b in zip(res[0][1], res[1][1]):
        torch.testing.assert_close(a, b)


def test_non_causal_and_contract():
    m = _layer()
    assert not m.causal
    check_layer_contract(m)  # bad inputs only (no step for a non-causal layer)
    u = torch.randn(1, 6, 8, dtype=F64, requires_grad=True)
    m(u)[0, 0].sum().backward()
    assert u.grad[0, -1].abs().sum() > 0  # the first output sees the last input
    with pytest.raises(ValueError, match="no state"):
        m(u, return_state=True)
    with pytest.raises(NotImplementedError):
        m.step(u[:, 0], m.init_state(1))


def test_init_and_registry():
    m = Hydra(64)
    assert (m.d_state, m.d_conv, m.headdim, m.nheads) == (64, 7, 64, 2)
    torch.testing.assert_close(-torch.exp(m.A_log), -torch.ones(2))
    assert isinstance(build_layer("hydra", 16, headdim=8, d_state=4), Hydra)
    with pytest.raises(ValueError, match="odd"):
        Hydra(16, headdim=8, d_conv=4)


@pytest.mark.parametrize("backend", ["auto", "naive"])
def test_lengths_padding_never_reaches_valid_steps(backend):
    """A right-padded batch with ``lengths``: outputs and input gradients at valid steps equal each sequence's
    own call (the conv window and the backward scan would otherwise read the padding)."""
    m = _layer(backend=backend)
    with torch.no_grad():
        m.A_log.uniform_(-1, 1)
    lengths = torch.tensor([9, 5, 1])
    x = torch.randn(3, 9, 8, dtype=F64, requires_grad=True)
    y = m(x, lengths=lengths)
    weights = torch.randn_like(y) * (torch.arange(9) < lengths[:, None])[..., None]  # valid outputs only
    grad = torch.autograd.grad((y * weights).sum(), x)[0]
    for i, n in enumerate(lengths.tolist()):
        xi = x[i : i + 1, :n].detach().requires_grad_(True)
        yi = m(xi)
        torch.testing.assert_close(y[i : i + 1, :n], yi)
        gi = torch.autograd.grad((yi * weights[i : i + 1, :n]).sum(), xi)[0]
        torch.testing.assert_close(grad[i : i + 1, :n], gi)
        torch.testing.assert_close(grad[i, n:], torch.zeros_like(grad[i, n:]))  # padding reaches nothing
    # without lengths the padding does leak (the assertion above could fail)
    assert not torch.allclose(m(x)[1, :5], y[1, :5])
    with pytest.raises(ValueError, match="lengths must have shape"):
        m(x, lengths=torch.tensor([9, 5]))
    with pytest.raises(TypeError, match="integer"):
        m(x, lengths=torch.tensor([9.0, 5.0, 1.0]))


def test_deep_model_logits_ignore_padding():
    """Through the deep model (which passes ``lengths`` to a layer whose forward accepts it): padded and
    unpadded calls give the same pooled logits."""
    from torchssm.models.backbone import DeepSSM
    from torchssm.models.config import ModelConfig

    torch.manual_seed(0)
    cfg = ModelConfig(
        layer="hydra",
        d_model=8,
        n_layers=2,
        d_input=3,
        d_output=4,
        pooling="mean",
        layer_kwargs={"d_state": 3, "headdim": 4, "chunk_size": 4},
    )
    model = DeepSSM(cfg).double().eval()
    x = torch.randn(2, 7, 3, dtype=F64)
    lengths = torch.tensor([7, 4])
    padded = model(x, lengths)
    torch.testing.assert_close(padded[1], model(x[1:, :4])[0])
    torch.testing.assert_close(padded[0], model(x[:1])[0])
