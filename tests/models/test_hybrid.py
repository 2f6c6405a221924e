"""Hybrid layers (Jamba block, SeqBoat): step == forward, chunked continuation, resets, MoE routing,
activation rate, and both used inside the LM and the deep model."""

import pytest
import torch

from torchssm.layers import build_layer
from torchssm.models.hybrid import JambaBlock, MixtureOfExperts, SeqBoat, activation_rates

H = 16


def _jamba(**kw):
    base = dict(
        n_layers=2,
        attn_every=2,
        attn_offset=1,
        ssm="lru",
        ssm_kwargs={"d_state": 4},  # lru: fast steps
        attn_kwargs={"n_heads": 2, "max_len": 64},
        mlp_expand=1.0,
        n_experts=3,
        top_k=2,
    )
    base.update(kw)
    return JambaBlock(H, **base).double()


def _seqboat(**kw):
    base = dict(ssm="lru", ssm_kwargs={"d_state": 8}, d_qk=8, window=5)
    base.update(kw)
    layer = SeqBoat(H, **base).double()
    with torch.no_grad():  # a router that activates about half of the steps (the init activates ~none or ~all)
        layer.x_proj.weight[:2].normal_(0, 1.0)
        layer.gamma.normal_(0, 1.0)
    return layer


LAYERS = {"jamba": _jamba, "seqboat": _seqboat}


def _unroll(layer, x, state):
    ys = []
    for t in range(x.shape[1]):
        y, state = layer.step(x[:, t], state)
        ys.append(y)
    return torch.stack(ys, 1), state


@pytest.mark.parametrize("name", LAYERS)
def test_step_equals_forward_and_chunks_continue(name):
    torch.manual_seed(0)
    layer = LAYERS[name]()
    x = torch.randn(2, 9, H, dtype=torch.float64)
    y, final = layer(x, return_state=True)
    y_steps, final_steps = _unroll(layer, x, layer.init_state(2, dtype=torch.float64))
    torch.testing.assert_close(y_steps, y)
    y1, s1 = layer(x[:, :4], return_state=True)
    y2, s2 = layer(x[:, 4:], s1, return_state=True)
    torch.testing.assert_close(torch.cat([y1, y2], 1), y)
    for a, b in zip(torch.utils._pytree.tree_leaves(s2), torch.utils._pytree.tree_leaves(final)):
        torch.testing.assert_close(a, b)
    assert y.shape == x.shape


def test_seqboat_activates_some_steps_and_reports_the_rate():
    torch.manual_seed(1)
    layer = _seqboat()
    x = torch.randn(3, 40, H, dtype=torch.float64)
    layer(x)
    assert 0.05 < layer.activation_rate < 0.95
    # the attention output reaches only activated steps: with the attention unit cut, inactive steps are unchanged
    full = layer(x)
    with torch.no_grad():
        layer.out_proj.weight.zero_()
        layer.out_proj.bias.zero_()
    cut = layer(x)
    changed = (full - cut).abs().amax(-1) > 0  # (b, l)
    assert changed.any() and not changed.all()
    model = torch.nn.Sequential(layer)
    assert activation_rates(model) == {"0": layer.activation_rate}


def test_seqboat_window_limits_the_working_memory():
    """An activated step attends to at most `window` activated steps: a key older than that has no effect."""
    torch.manual_seed(2)
    layer = _seqboat(window=2)
    x = torch.randn(1, 30, H, dtype=torch.float64)
    y_full = layer(x)
    assert layer.activation_rate > 0
    y_long = _seqboat(window=64)
    y_long.load_state_dict(layer.state_dict())
    assert not torch.allclose(y_long(x), y_full)  # a larger memory changes the outputs


def test_seqboat_reset_equals_separate_documents():
    torch.manual_seed(3)
    layer = _seqboat()
    a, b = torch.randn(1, 9, H, dtype=torch.float64), torch.randn(1, 7, H, dtype=torch.float64)
    reset = torch.zeros(1, 16, dtype=torch.bool)
    reset[0, 9] = True
    y = layer(torch.cat([a, b], 1), reset=reset)
    torch.testing.assert_close(y[:, :9], layer(a))
    torch.testing.assert_close(y[:, 9:], layer(b))
    with pytest.raises(ValueError, match="takes no reset"):
        SeqBoat(H, ssm="s5", d_qk=8)(torch.randn(1, 4, H), reset=torch.zeros(1, 4, dtype=torch.bool))


def test_jamba_layout_and_moe_routing():
    block = _jamba(n_layers=8, attn_every=8, attn_offset=4, ssm="mamba", n_experts=4, moe_every=2, moe_offset=1)
    assert block.kinds == ["mamba"] * 4 + ["attention"] + ["mamba"] * 3  # Jamba's 1:7 block
    assert [type(m).__name__ for m in block.mlps] == ["SwiGLU", "MixtureOfExperts"] * 4
    torch.manual_seed(0)
    moe = MixtureOfExperts(H, 8, n_experts=4, top_k=2).double()
    x = torch.randn(5, H, dtype=torch.float64)
    probs = torch.softmax(moe.router(x), -1)
    expected = torch.zeros_like(x)
    for t in range(5):  # the definition, token by token
        w, idx = torch.topk(probs[t], 2)
        for wi, e in zip(w, idx):
            expected[t] += wi * moe.experts[int(e)](x[t])
    torch.testing.assert_close(moe(x), expected)
    with pytest.raises(ValueError, match="top_k"):
        MixtureOfExperts(H, 8, n_experts=2, top_k=3)


@pytest.mark.parametrize(
    "name,kwargs",
    [
        (
            "jamba",
            {
                "n_layers": 2,
                "attn_every": 2,
                "attn_offset": 1,
                "ssm_kwargs": {"d_state": 4},
                "attn_kwargs": {"n_heads": 2, "max_len": 32},
                "n_experts": 2,
                "top_k": 1,
            },
        ),
        ("seqboat", {"ssm_kwargs": {"d_state": 4}, "d_qk": 8, "window": 4}),
    ],
)
def test_hybrids_in_the_lm_and_the_deep_model(name, kwargs):
    from torchssm.models import ModelConfig, build_model
    from torchssm.models.lm import CausalLM, LMConfig

    torch.manual_seed(0)
    lm = CausalLM(LMConfig(layer=name, d_model=H, n_layer=2, vocab_size=32, layer_kwargs=kwargs)).double()
    ids = torch.randint(0, 32, (2, 10))
    logits, state = lm(ids, return_state=True)
    steps = []
    s = lm.init_state(2, dtype=torch.float64)
    for t in range(10):
        out, s = lm.step(ids[:, t], s)
        steps.append(out)
    torch.testing.assert_close(torch.stack(steps, 1), logits)
    deep = build_model(ModelConfig(layer=name, d_model=H, n_layers=1, layer_kwargs=kwargs, d_input=3, d_output=4))
    assert deep(torch.randn(2, 7, 3)).shape == (2, 4)
    assert isinstance(build_layer(name, H, **kwargs), (JambaBlock, SeqBoat))
