"""Every policy memory: step-by-step rollout outputs equal the parallel forward with resets over the same
trajectory (from a carried, non-zero initial state), in float64; the packed fallback equals a native
in-scan reset; non-causal layers are refused."""

import pytest
import torch

from torchssm.rl.envs import ActionSpec
from torchssm.rl.memory import LayerMemory, build_memory, packed_forward
from torchssm.rl.policy import RecurrentActorCritic

MEMORIES = [
    ("lru", {"d_state": 8}),
    ("s5", {"d_state": 8}),
    ("s4d", {"d_state": 8}),
    ("mamba", {"d_state": 4}),
    ("mamba2", {"d_state": 8, "headdim": 4}),
    ("gru", {}),
    ("lstm", {}),
    ("window_transformer", {"n_heads": 2, "window": 5}),
]


def _build(name, kwargs, d=8, n_layers=2):
    try:
        return build_memory(name, d, n_layers, **kwargs).double()
    except ImportError as err:  # a layer whose module does not import on this install
        pytest.skip(f"{name} unavailable: {err}")


def _rollout(memory, x, reset, state):
    ys = []
    for t in range(x.shape[1]):
        y, state = memory.step(x[:, t], state, reset[:, t])
        ys.append(y)
    return torch.stack(ys, 1), state


@pytest.mark.parametrize("name,kwargs", MEMORIES, ids=[m[0] for m in MEMORIES])
def test_step_equals_forward_with_resets(name, kwargs):
    torch.manual_seed(0)
    memory = _build(name, kwargs)
    b, l, d = 3, 19, 8
    state = memory.initial_state(b)
    for _ in range(6):  # a carried, non-zero state, as at the start of a PPO rollout
        _, state = memory.step(torch.randn(b, d, dtype=torch.float64), state)
    x = torch.randn(b, l, d, dtype=torch.float64)
    reset = torch.zeros(b, l, dtype=torch.bool)
    reset[0, [4, 5, 13]] = True  # two resets in a row: a one-step episode
    reset[1, 0] = True  # the row starts a new episode: the carried state is dropped
    y_step, _ = _rollout(memory, x, reset, state)
    y_par = memory(x, state, reset)
    torch.testing.assert_close(y_par, y_step, rtol=1e-10, atol=1e-10)
    # row 2 never resets: same as a plain forward from its state
    torch.testing.assert_close(y_par[2:], memory(x[2:], _rows(state, 2)), rtol=1e-10, atol=1e-10)


def _rows(state, start):
    from torchssm.rl.memory import map_state

    return map_state(lambda s: s[start:], state)


def test_packed_fallback_equals_native_reset():
    torch.manual_seed(1)
    memory = LayerMemory("lru", 6, n_layers=2, d_state=4).double()
    assert memory.native_reset
    x = torch.randn(2, 15, 6, dtype=torch.float64)
    reset = torch.rand(2, 15) < 0.3
    state = [torch.randn_like(s) for s in memory.initial_state(2)]
    x.requires_grad_(True)
    native = memory(x, state, reset)
    packed = packed_forward(
        lambda xp, sp: memory._forward(xp, sp, None), lambda n: memory.initial_state(n), x, state, reset
    )
    torch.testing.assert_close(packed, native, rtol=1e-10, atol=1e-10)
    g = torch.randn_like(native)
    for param in [x] + list(memory.parameters())[:3]:
        torch.testing.assert_close(
            torch.autograd.grad(packed, param, g, retain_graph=True)[0],
            torch.autograd.grad(native, param, g, retain_graph=True)[0],
            rtol=1e-9,
            atol=1e-10,
        )


@pytest.mark.parametrize("kind", ["discrete", "continuous"])
def test_policy_step_equals_forward(kind):
    torch.manual_seed(2)
    if kind == "discrete":
        spec = ActionSpec("discrete", n=5)
    else:
        spec = ActionSpec("continuous", dim=2, low=(-1, -1), high=(1, 1))
    policy = RecurrentActorCritic(7, spec, "s5", d_model=8, hidden=16, memory_kwargs={"d_state": 4}).double()
    obs = torch.randn(2, 11, 7, dtype=torch.float64)
    reset = torch.zeros(2, 11, dtype=torch.bool)
    reset[:, 0] = True
    reset[1, 6] = True
    state = policy.initial_state(2)
    heads, values = [], []
    for t in range(11):
        h, v, state = policy.step(obs[:, t], state, reset[:, t])
        heads.append(h)
        values.append(v)
    head, value = policy(obs, policy.initial_state(2), reset)
    torch.testing.assert_close(head, torch.stack(heads, 1))
    torch.testing.assert_close(value, torch.stack(values, 1))
    action = policy.distribution(head).sample()
    assert action.shape == ((2, 11) if kind == "discrete" else (2, 11, 2))


def test_non_causal_layer_is_refused():
    with pytest.raises(ValueError, match="not causal"):
        build_memory("lru", 8, bidirectional=True)
    with pytest.raises(ValueError, match="not causal"):
        build_memory("hydra", 8, headdim=4)
    with pytest.raises(ValueError, match="unknown memory 'gruu'"):
        build_memory("gruu", 8)
    with pytest.raises(TypeError, match="takes no extra arguments"):
        build_memory("gru", 8, d_state=4)


def test_bad_reset_shape():
    memory = build_memory("gru", 4)
    with pytest.raises(ValueError, match="reset must have shape"):
        memory(torch.zeros(2, 5, 4), None, torch.zeros(2, 4, dtype=torch.bool))
