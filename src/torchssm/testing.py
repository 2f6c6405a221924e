"""Checks of the layer contract (docs/index.md, "The layer contract"), usable on any layer, including your own.

    from torchssm.testing import check_layer_contract
    check_layer_contract(MyLayer(16).double(), length=12)

Each function raises AssertionError (via torch.testing.assert_close) with the mismatch.
"""

from __future__ import annotations

import contextlib
import re

import torch

from torchssm.layers.base import State, _flatten


@contextlib.contextmanager
def _raises(match: str = "."):
    """Like pytest.raises((ValueError, TypeError), match=...) without depending on pytest."""
    try:
        yield
    except (ValueError, TypeError) as err:
        if not re.search(match, str(err)):
            raise AssertionError(f"error message {str(err)!r} does not mention {match!r}") from err
    else:
        raise AssertionError("expected a ValueError or TypeError, nothing was raised")


def _sequence(layer, batch: int, length: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    p = next(layer.parameters())
    return torch.randn(batch, length, layer.d_model, generator=gen, dtype=p.real.dtype).to(p.device)


def assert_states_close(got, want, **tol) -> None:
    for g, w in zip(_flatten(got), _flatten(want), strict=True):
        torch.testing.assert_close(g, w, **tol)


def check_step_matches_forward(layer, x: torch.Tensor | None = None, *, length: int = 12, **tol) -> None:
    """Causal layers: unrolling ``step`` over the sequence equals ``forward`` (outputs and final state)."""
    layer.eval()
    x = _sequence(layer, 2, length) if x is None else x
    with torch.no_grad():
        y, final = layer(x, return_state=True)
        state = layer.init_state(x.shape[0], device=x.device)
        outs = []
        for t in range(x.shape[1]):
            y_t, state = layer.step(x[:, t], state)
            outs.append(y_t)
    torch.testing.assert_close(torch.stack(outs, dim=1), y, **tol)
    assert_states_close(state, final, **tol)


def check_chunked_continuation(
    layer, x: torch.Tensor | None = None, *, length: int = 12, split: int = 5, **tol
) -> None:
    """forward(x[:, :k]) then forward(x[:, k:], state) equals forward(x), outputs and final state."""
    layer.eval()
    x = _sequence(layer, 2, length, seed=1) if x is None else x
    with torch.no_grad():
        y, final = layer(x, return_state=True)
        y1, s1 = layer(x[:, :split], return_state=True)
        y2, s2 = layer(x[:, split:], s1, return_state=True)
    torch.testing.assert_close(torch.cat([y1, y2], dim=1), y, **tol)
    assert_states_close(s2, final, **tol)


def check_one_token_chunks(layer, x: torch.Tensor | None = None, *, length: int = 7, **tol) -> None:
    """Streaming: ``forward`` on one-token chunks with the carried state equals one call (outputs and final
    state), without gradients (where a layer may take its kept one-token step, SSMLayer._derived_once) and with
    them; after an in-place change to every parameter the no-gradient path follows the new weights."""
    layer.eval()
    x = _sequence(layer, 2, length, seed=3) if x is None else x

    def chunks() -> tuple[torch.Tensor, State]:
        state, outs = layer.init_state(x.shape[0], device=x.device), []
        for t in range(x.shape[1]):
            y_t, state = layer(x[:, t : t + 1], state, return_state=True)
            outs.append(y_t)
        return torch.cat(outs, dim=1), state

    with torch.no_grad():
        y, final = layer(x, return_state=True)
        y_fast, s_fast = chunks()
    torch.testing.assert_close(y_fast, y, **tol)
    assert_states_close(s_fast, final, **tol)
    y_grad, s_grad = chunks()  # gradients on: the chunked forward itself
    torch.testing.assert_close(y_grad.detach(), y, **tol)
    assert_states_close(tuple(s.detach() for s in _flatten(s_grad)), tuple(_flatten(final)), **tol)
    saved = [p.detach().clone() for p in layer.parameters()]
    with torch.no_grad():
        for p in layer.parameters():
            p.mul_(1.25)  # in place: the parameters' version counters move
        try:
            y, final = layer(x, return_state=True)
            y_fast, s_fast = chunks()
        finally:
            for p, old in zip(layer.parameters(), saved):
                p.copy_(old)  # the layer is left exactly as it was given
    torch.testing.assert_close(y_fast, y, **tol)
    assert_states_close(s_fast, final, **tol)


def _perturb(state: State) -> State:
    """A non-zero state of the same structure and dtypes: +0.1 for float/complex tensors, +1 for integer ones
    (e.g. a KV-cache position); tuples and lists (nested states of composite layers) are perturbed leaf by leaf."""
    if isinstance(state, (tuple, list)):
        perturbed = [_perturb(s) for s in state]
        return perturbed if isinstance(state, list) else tuple(perturbed)
    return state + 0.1 if (state.is_floating_point() or state.is_complex()) else state + 1


def check_state_is_not_mutated(layer, *, batch: int = 2) -> None:
    """``step`` is pure: it returns a new state and leaves the one passed in unchanged."""
    x_t = _sequence(layer, batch, 1, seed=2)[:, 0]
    state = layer.init_state(batch, device=x_t.device)
    state = _perturb(state)
    before = [s.clone() for s in _flatten(state)]
    with torch.no_grad():
        layer.step(x_t, state)
    for b, s in zip(before, _flatten(state)):
        torch.testing.assert_close(s, b, rtol=0, atol=0)


def check_bad_inputs_raise(layer) -> None:
    """Wrong rank, wrong d_model, empty sequence, wrong state shape/dtype raise ValueError/TypeError."""
    d = layer.d_model
    p = next(layer.parameters())
    dtype = p.real.dtype
    bad_inputs = [
        torch.randn(3, d, dtype=dtype),  # rank 2
        torch.randn(2, 4, d + 1, dtype=dtype),  # wrong d_model
        torch.randn(2, 0, d, dtype=dtype),  # empty sequence
    ]
    for x in bad_inputs:
        with _raises(str(d) if x.shape[-1] != d else "."):
            layer(x)
    good = torch.randn(2, 4, d, dtype=dtype)
    state = layer.init_state(3)  # batch 3 for an input of batch 2
    with _raises("shape"):
        layer(good, state)
    if layer.causal:
        with _raises():
            layer.step(torch.randn(2, d + 1, dtype=dtype), layer.init_state(2))
        with _raises("shape"):
            layer.step(good[:, 0], state)


def check_layer_contract(layer, *, length: int = 12, **tol) -> None:
    """All contract checks that apply to ``layer`` (use float64 layers for tight tolerances)."""
    check_bad_inputs_raise(layer)
    if layer.causal:
        check_step_matches_forward(layer, length=length, **tol)
        check_chunked_continuation(layer, length=length, **tol)
        check_one_token_chunks(layer, length=min(length, 7), **tol)
        check_state_is_not_mutated(layer)


def first_token_accuracy(
    layer, *, length: int = 256, steps: int = 150, lr: float = 1e-2, classes: int = 4, batch: int = 32, seed: int = 0
) -> float:
    """Train ``layer`` (embedding -> layer -> LayerNorm of the last output -> linear head) to recall
    the first token of a sequence of ``length`` tokens (the rest a blank token that embeds to zero),
    then return the accuracy on 256 fresh sequences. One S4/S4D/DSS/S5 layer (H = N = 16) reaches
    100% at L = 64 in 30 Adam steps for every seed we tried (the "learns a small task" check of the S4
    family issue; seed the layer's construction for a deterministic test)."""
    from torch import nn

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    # the blank token embeds to zero (padding_idx), so the last output is the recalled signal alone
    emb = nn.Embedding(classes + 1, layer.d_model, padding_idx=classes)
    head = nn.Linear(layer.d_model, classes)
    norm = nn.LayerNorm(layer.d_model)  # the recalled K_l * e(first) may be small: normalise it
    params = [*layer.parameters(), *emb.parameters(), *norm.parameters(), *head.parameters()]
    opt = torch.optim.Adam(params, lr=lr)

    def batch_of(n):
        first = torch.randint(0, classes, (n,), generator=gen)
        x = torch.full((n, length), classes)
        x[:, 0] = first
        return x, first

    def logits(x):
        return head(norm(layer(emb(x))[:, -1]))  # (b, classes)

    layer.train()
    for _ in range(steps):
        x, first = batch_of(batch)
        loss = torch.nn.functional.cross_entropy(logits(x), first)
        opt.zero_grad()
        loss.backward()
        opt.step()
    layer.eval()
    x, first = batch_of(256)
    with torch.no_grad():
        return (logits(x).argmax(-1) == first).float().mean().item()


def assert_values_and_grads_close(outputs, references, inputs, *, seed: int = 0, **tol) -> None:
    """``outputs`` and ``references`` (sequences of real or complex tensors, both computed from
    ``inputs``) are close, and so are the gradients, with respect to every tensor in ``inputs``, of one
    fixed random projection of them (the cotangent is the same for both, so this checks every vector-
    Jacobian product direction the projection sees, including the initial state's)."""
    gen = torch.Generator().manual_seed(seed)
    inputs = list(inputs)

    def as_real(t):
        return torch.stack([t.real, t.imag], -1) if t.is_complex() else t

    loss_out, loss_ref = 0.0, 0.0
    for out, ref in zip(outputs, references, strict=True):
        torch.testing.assert_close(out, ref, **tol)
        g = torch.randn(as_real(out).shape, generator=gen, dtype=out.real.dtype).to(out.device)
        loss_out = loss_out + (as_real(out) * g).sum()
        loss_ref = loss_ref + (as_real(ref) * g).sum()
    grads = torch.autograd.grad(loss_out, inputs, allow_unused=True)
    grads_ref = torch.autograd.grad(loss_ref, inputs, allow_unused=True)
    for i, (a, b) in enumerate(zip(grads, grads_ref, strict=True)):
        if a is None or b is None:
            raise AssertionError(
                f"input {i}: gradient is None on one side only"
                if (a is None) != (b is None)
                else f"input {i} does not influence the outputs"
            )
        torch.testing.assert_close(a, b, **tol)
