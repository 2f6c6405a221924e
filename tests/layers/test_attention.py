"""SelfAttention (the Transformer baseline): layer contract, KV cache, RoPE, errors."""

import pytest
import torch

from torchssm.layers.attention import SelfAttention, rope_rotate
from torchssm.layers.registry import build_layer
from torchssm.testing import check_bad_inputs_raise, check_layer_contract


def _layer(**kw):
    torch.manual_seed(0)
    return SelfAttention(8, n_heads=2, max_len=32, **kw).double()


def test_contract_float64():
    check_layer_contract(_layer(), length=12, rtol=1e-10, atol=1e-10)


def test_contract_float32():
    torch.manual_seed(0)
    check_layer_contract(SelfAttention(8, n_heads=2, max_len=32), length=12, rtol=1e-4, atol=1e-5)


def test_registered_as_transformer():
    layer = build_layer("transformer", 8, n_heads=2)
    assert isinstance(layer, SelfAttention) and layer.causal


def test_matches_explicit_softmax_attention():
    """forward == softmax(q k^T / sqrt(d) + causal mask) v with the same projections (float64)."""
    layer = _layer()
    x = torch.randn(2, 7, 8, dtype=torch.float64)
    pos = torch.arange(7).expand(2, -1)
    q, k, v = layer._project(x, pos)  # (b, heads, l, d_head)
    scores = q @ k.transpose(-1, -2) / layer.d_head**0.5
    scores = scores.masked_fill(torch.ones(7, 7, dtype=torch.bool).triu(1), float("-inf"))
    want = layer._merge(scores.softmax(-1) @ v)
    torch.testing.assert_close(layer(x), want)


def _input_and_parameter_grads(layer, x, g, run):
    """Gradients of sum(run() * g) w.r.t. x and every parameter of layer (fresh: earlier grads cleared)."""
    layer.zero_grad()
    x.grad = None
    (run() * g).sum().backward()
    return [x.grad.clone()] + [p.grad.clone() for p in layer.parameters()]


def test_cached_path_gradients_match_fused_path():
    """The cached path (used by step / stateful forward) and SDPA's causal path: every gradient."""
    layer = _layer()
    x = torch.randn(2, 6, 8, dtype=torch.float64, requires_grad=True)
    g = torch.randn(2, 6, 8, dtype=torch.float64)
    cached = _input_and_parameter_grads(layer, x, g, lambda: layer(x, return_state=True)[0])
    for a, b in zip(cached, _input_and_parameter_grads(layer, x, g, lambda: layer(x))):
        torch.testing.assert_close(a, b)


def test_rope_is_relative():
    """<RoPE(q, m), RoPE(k, n)> depends only on m - n (RoFormer, Sec. 3.4.2)."""
    q = torch.randn(1, 1, 1, 8, dtype=torch.float64)
    k = torch.randn(1, 1, 1, 8, dtype=torch.float64)

    def dot(m, n):
        return (rope_rotate(q, torch.tensor([[m]])) * rope_rotate(k, torch.tensor([[n]]))).sum()

    torch.testing.assert_close(dot(5, 2), dot(13, 10))
    torch.testing.assert_close(dot(0, 0), (q * k).sum())


def test_per_sequence_positions_in_batch():
    """Sequences at different cache positions in one batch each continue their own history."""
    layer = _layer()
    x = torch.randn(2, 9, 8, dtype=torch.float64)
    full = layer(x)
    state = layer.init_state(2)
    _, s_a = layer(x[:1, :4], return_state=True)
    _, s_b = layer(x[1:, :6], return_state=True)
    state = tuple(torch.cat([a, b]) for a, b in zip(s_a, s_b))
    assert state[2].tolist() == [4, 6]
    y0, _ = layer.step(torch.stack([x[0, 4], x[1, 6]]), state)
    torch.testing.assert_close(y0, torch.stack([full[0, 4], full[1, 6]]))


def test_cache_overflow_raises():
    layer = _layer()
    with pytest.raises(ValueError, match="max_len"):
        layer(torch.randn(1, 33, 8, dtype=torch.float64), return_state=True)
    layer(torch.randn(1, 40, 8, dtype=torch.float64))  # plain forward: any length


def test_bidirectional():
    layer = _layer(causal=False)
    check_bad_inputs_raise(layer)
    x = torch.randn(2, 5, 8, dtype=torch.float64)
    y = layer(x)
    x2 = x.clone()
    x2[:, -1] += 1.0
    assert not torch.allclose(layer(x2)[:, 0], y[:, 0])  # sees the future
    with pytest.raises(NotImplementedError):
        layer.step(x[:, 0], layer.init_state(2))
    with pytest.raises(ValueError, match="no state"):
        layer(x, return_state=True)


def test_bidirectional_padding_is_masked_by_lengths():
    layer = _layer(causal=False)
    x = torch.randn(2, 6, 8, dtype=torch.float64)
    lengths = torch.tensor([4, 6])
    y = layer(x, lengths=lengths)
    x2 = x.clone()
    x2[0, 4:] = 100.0  # change the padding of sequence 0
    y2 = layer(x2, lengths=lengths)
    torch.testing.assert_close(y2[0, :4], y[0, :4])
    torch.testing.assert_close(y[0, :4], layer(x[:1, :4])[0])
    torch.testing.assert_close(y2[1], y[1])
    with pytest.raises(ValueError, match="lengths"):
        layer(x, lengths=torch.tensor([4]))


@pytest.mark.parametrize("kw", [dict(n_heads=3), dict(n_heads=8), dict(max_len=0)])
def test_bad_constructor_args(kw):
    with pytest.raises(ValueError):
        SelfAttention(8, **kw)


def test_state_on_meta_device():
    k, v, pos = SelfAttention(8, n_heads=2, max_len=16).init_state(3, device="meta")
    assert k.shape == v.shape == (3, 2, 16, 4) and pos.shape == (3,) and pos.dtype == torch.long


def _reference(layer, x, k_cache, v_cache, p):
    """Plain softmax attention of x (b, l, h) after p cached (rotated) keys/values; explicit math, float64."""
    b, l, _ = x.shape
    q, k, v = layer._project(x, p + torch.arange(l).expand(b, -1))  # (b, heads, l, d_head)
    keys = torch.cat([k_cache[:, :, :p], k], dim=2)  # (b, heads, p + l, d_head)
    values = torch.cat([v_cache[:, :, :p], v], dim=2)
    scores = q @ keys.transpose(-1, -2) / layer.d_head**0.5  # (b, heads, l, p + l)
    future = torch.arange(p + l)[None, :] > (p + torch.arange(l))[:, None]  # (l, p + l)
    return layer._merge(scores.masked_fill(future, float("-inf")).softmax(-1) @ values)


def test_stateful_forward_matches_reference_with_all_gradients():
    """Outputs and every gradient (x, parameters, initial k_cache / v_cache) vs the explicit reference."""
    layer = _layer()
    p = 5
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 4, 8, dtype=torch.float64, generator=gen)
    k0, v0, _ = layer.init_state(2)
    k0 = torch.randn(k0.shape, dtype=torch.float64, generator=gen)
    v0 = torch.randn(v0.shape, dtype=torch.float64, generator=gen)
    g = torch.randn(2, 4, 8, dtype=torch.float64, generator=gen)
    results = []
    for use_layer in (True, False):
        xs, ks, vs = (t.clone().requires_grad_(True) for t in (x, k0, v0))
        layer.zero_grad()
        if use_layer:
            y, (k1, v1, pos) = layer(xs, (ks, vs, torch.full((2,), p)), return_state=True)
            assert pos.tolist() == [p + 4] * 2
        else:
            y = _reference(layer, xs, ks, vs, p)
        (y * g).sum().backward()
        results.append([y.detach(), xs.grad, ks.grad, vs.grad] + [q.grad.clone() for q in layer.parameters()])
    for got, want in zip(*results):
        torch.testing.assert_close(got, want)
    assert results[0][2][:, :, p:].abs().max() == 0  # cache slots at and after p are overwritten: no gradient


def _steps(layer, x, state):
    """Unroll ``step`` over x (b, l, h) from ``state``: (outputs (b, l, h), every state along the way)."""
    outs, states = [], [state]
    for t in range(x.shape[1]):
        y, state = layer.step(x[:, t], state)
        outs.append(y)
        states.append(state)
    return torch.stack(outs, dim=1), states


def test_step_writes_cache_in_place_after_the_first_copy():
    """From a state this layer wrote, ``step`` reuses the cache (no per-token copy): same storage, equal outputs."""
    layer = _layer()
    x = torch.randn(2, 10, 8, dtype=torch.float64)
    with torch.no_grad():
        y_full = layer(x)
        y0, s = layer(x[:, :3], return_state=True)  # forward copies init_state's zeros once
        ptrs = (s[0].data_ptr(), s[1].data_ptr())
        y1, states = _steps(layer, x[:, 3:], s)
    assert all((st[0].data_ptr(), st[1].data_ptr()) == ptrs for st in states)
    torch.testing.assert_close(torch.cat([y0, y1], dim=1), y_full, rtol=1e-12, atol=1e-12)


def test_older_states_keep_their_meaning_after_in_place_steps():
    """Branching: continuing an older state (whose cache a later step filled in place) equals continuing a
    fresh copy of it, and does not disturb the newer branch; both equal plain forward on their sequences."""
    layer = _layer()
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(2, 9, 8, dtype=torch.float64, generator=gen)
    alt = torch.randn(2, 4, 8, dtype=torch.float64, generator=gen)
    with torch.no_grad():
        _, s = layer(x[:, :5], return_state=True)
        y_main, states = _steps(layer, x[:, 5:], s)  # fills slots 5..8 of s's cache in place
        y_alt, alt_states = _steps(layer, alt, states[1])  # branch at position 6: must not write in place
        y_again, _ = _steps(layer, x[:, 6:], states[1])  # the first branch again from the same state
        y_tail, _ = _steps(layer, alt[:, :1], states[-1])  # the newest state still continues in place
        want_main = layer(x)
        want_alt = layer(torch.cat([x[:, :6], alt], dim=1))
        want_tail = layer(torch.cat([x, alt[:, :1]], dim=1))
    assert alt_states[-1][0].data_ptr() != states[1][0].data_ptr()
    assert states[-1][0].data_ptr() == s[0].data_ptr()
    tol = dict(rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(y_main, want_main[:, 5:], **tol)
    torch.testing.assert_close(y_alt, want_alt[:, 6:], **tol)
    torch.testing.assert_close(y_again, want_main[:, 6:], **tol)
    torch.testing.assert_close(y_tail[:, 0], want_tail[:, -1], **tol)


def test_in_place_cache_is_bit_identical_to_copying_cache():
    """The in-place path gives exactly (bit for bit) the outputs and visible cache of the copying path (float32)."""
    torch.manual_seed(0)
    layer = SelfAttention(16, n_heads=4, max_len=40)
    x = torch.randn(3, 30, 16)
    with torch.no_grad():
        _, s = layer(x[:, :7], return_state=True)
        y_fast, fast = _steps(layer, x[:, 7:], s)
        outs, slow = [], s
        for t in range(7, 30):  # a fresh tuple of fresh tensors each step: never owned, always copied
            y, slow = layer.step(x[:, t], tuple(c.clone() for c in slow))
            outs.append(y)
    torch.testing.assert_close(y_fast, torch.stack(outs, dim=1), rtol=0, atol=0)
    for a, b in zip(fast[-1][:2], slow[:2]):  # the filled slots of k_cache, v_cache
        torch.testing.assert_close(a[:, :, :30], b[:, :, :30], rtol=0, atol=0)
    torch.testing.assert_close(fast[-1][2], slow[2], rtol=0, atol=0)


def test_rows_at_other_positions_are_copied_not_overwritten():
    """A state whose per-row positions differ from the cache's fill (one row reset) is written into a copy."""
    layer = _layer()
    x = torch.randn(2, 6, 8, dtype=torch.float64)
    with torch.no_grad():
        _, s = layer(x[:, :4], return_state=True)
        k, v, pos = s
        y, s2 = layer.step(x[:, 4], (k, v, torch.tensor([4, 0])))  # row 1 restarts at position 0
        y_keep, _ = layer.step(x[:, 4], s)  # the original state is intact
    assert s2[0].data_ptr() != k.data_ptr()
    torch.testing.assert_close(y[1], layer(x[1:, 4:5])[0, 0])
    torch.testing.assert_close(y_keep, layer(x[:, :5])[:, 4])


def test_steps_with_gradients_do_not_write_in_place():
    """Unrolled steps under autograd (backprop through the cache) match forward's gradients."""
    layer = _layer()
    x = torch.randn(2, 5, 8, dtype=torch.float64, requires_grad=True)
    g = torch.randn(2, 5, 8, dtype=torch.float64)

    def unrolled():
        y1 = layer.step(x[:, 0], layer.init_state(2))[0][:, None]
        y_rest, _ = _steps(layer, x[:, 1:], layer(x[:, :1], return_state=True)[1])
        return torch.cat([y1, y_rest], dim=1)

    stepped = _input_and_parameter_grads(layer, x, g, unrolled)
    for a, b in zip(stepped, _input_and_parameter_grads(layer, x, g, lambda: layer(x))):
        torch.testing.assert_close(a, b)
    with torch.inference_mode():
        _, s_inf = layer(x[:, :2].detach(), return_state=True)
    with torch.no_grad():  # an inference-mode cache outside inference mode cannot be written in place: copied
        y_inf, _ = layer.step(x[:, 2].detach(), s_inf)
    torch.testing.assert_close(y_inf, layer(x[:, :3]).detach()[:, 2])
