"""Hybrid layers (Jamba block, SeqBoat): step == forward, chunked continuation, resets, MoE routing,
activation rate, and both used inside the LM and the deep model."""

import json

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


# --- the MoE load-balancing loss (Switch Transformers eq. 4-6, top-K counting) ------------------------------
def test_load_balancing_loss_hand_example():
    from torchssm.models.hybrid import expert_load, load_balancing_loss

    probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3]], dtype=torch.float64)  # 2 tokens, N = 3
    # top-1: expert 0, expert 1 -> f = (1/2, 1/2, 0); P = (0.4, 0.4, 0.2); 3 * (0.2 + 0.2 + 0) = 1.2
    top1 = torch.tensor([[0], [1]])
    torch.testing.assert_close(expert_load(top1, 3), torch.tensor([0.5, 0.5, 0.0]))
    torch.testing.assert_close(load_balancing_loss(probs, expert_load(top1, 3)), torch.tensor(1.2, dtype=torch.float64))
    # top-2: {0, 1}, {1, 2} -> f = (1/2, 1, 1/2) (sums to K = 2); 3 * (0.2 + 0.4 + 0.1) = 2.1
    top2 = torch.tensor([[0, 1], [1, 2]])
    torch.testing.assert_close(load_balancing_loss(probs, expert_load(top2, 3)), torch.tensor(2.1, dtype=torch.float64))
    # uniform probabilities: K whatever the (balanced or not) choice
    uniform = torch.full((2, 3), 1 / 3, dtype=torch.float64)
    torch.testing.assert_close(
        load_balancing_loss(uniform, expert_load(top2, 3)), torch.tensor(2.0, dtype=torch.float64)
    )


def test_moe_sets_the_scaled_aux_loss_in_training_only():
    from torchssm.models.hybrid import expert_load, load_balancing_loss

    torch.manual_seed(0)
    moe = MixtureOfExperts(H, 8, n_experts=4, top_k=2, aux_coef=0.05).double()
    x = torch.randn(3, 5, H, dtype=torch.float64)
    moe(x)
    probs = torch.softmax(moe.router(x.reshape(-1, H)), -1)
    expected = 0.05 * load_balancing_loss(probs, expert_load(torch.topk(probs, 2, -1).indices, 4))
    torch.testing.assert_close(moe.aux_loss.double(), expected, rtol=1e-6, atol=1e-7)  # router softmax in float32
    assert float(moe.load.sum()) == pytest.approx(2.0)
    moe.eval()
    moe(x)
    assert moe.aux_loss is None
    no_aux = MixtureOfExperts(H, 8, n_experts=4, top_k=2, aux_coef=0.0)
    no_aux(x.float())  # alpha 0: no loss, the load is still recorded
    assert no_aux.aux_loss is None and float(no_aux.load.sum()) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="aux_coef"):
        MixtureOfExperts(H, 8, n_experts=4, top_k=2, aux_coef=-1.0)


def test_aux_loss_pushes_routing_toward_balance():
    torch.manual_seed(0)
    moe = MixtureOfExperts(H, 4, n_experts=4, top_k=2, aux_coef=1.0)
    with torch.no_grad():  # a collapsed router: experts 0 and 1 get (almost) every token
        moe.router.weight.zero_()
        moe.router.weight[:2] = 0.5
        moe.router.weight[:, :2] += torch.randn(4, 2)  # token-dependent logits
    x = torch.randn(256, H).abs()
    moe(x)
    load0, aux0 = moe.load.clone(), float(moe.aux_loss.detach())
    opt = torch.optim.SGD(moe.router.parameters(), lr=1.0)
    for _ in range(100):  # the aux loss alone
        moe(x)
        opt.zero_grad()
        moe.aux_loss.backward()
        opt.step()
    moe(x)
    assert float(load0.max()) > 0.9 and float(moe.load.max()) < 0.75  # balanced top-2 load is 0.5 per expert
    assert float(moe.aux_loss.detach()) < min(aux0, 2.1)  # -> K = 2 at balance


def test_aux_loss_reaches_the_router_through_the_lm_and_torchssm_train(tmp_path):
    from torchssm.models.auxiliary import pop_auxiliary_loss
    from torchssm.models.lm import CausalLM, LMConfig
    from torchssm.train import load_config, train

    kwargs = {
        "n_layers": 2,
        "attn_every": 2,
        "attn_offset": 1,
        "ssm": "lru",
        "ssm_kwargs": {"d_state": 4},
        "attn_kwargs": {"n_heads": 2, "max_len": 32},
        "mlp_expand": 1.0,
        "n_experts": 3,
        "top_k": 2,
        "moe_every": 1,
        "moe_offset": 0,
    }
    torch.manual_seed(0)
    lm = CausalLM(LMConfig(layer="jamba", d_model=H, n_layer=2, vocab_size=32, layer_kwargs=kwargs))
    lm(torch.randint(0, 32, (2, 12)))
    aux = pop_auxiliary_loss(lm)  # 2 blocks x 2 MoE layers, alpha = 1e-2 each, ~ alpha K each at init
    assert aux is not None and float(aux) == pytest.approx(4 * 1e-2 * 2, rel=0.2)
    assert pop_auxiliary_loss(lm) is None  # popped
    aux.backward()  # the aux loss alone
    routers = [m.router.weight.grad for m in lm.modules() if isinstance(m, MixtureOfExperts)]
    assert len(routers) == 4 and all(g is not None and g.abs().sum() > 0 for g in routers)

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(6):
        (corpus / f"d{i}.py").write_text(f"def f{i}(x):\n    return x * {i}\n" * 8)

    cfg = load_config(
        base={
            "task": {
                "name": "lm_text",
                "files": str(corpus),
                "context": 16,
                "val_fraction": 0.2,
                "test_fraction": 0.2,
                "train_rows": 8,
                "eval_rows": 4,
            },
            "model": {
                "layer": "jamba",
                "d_model": H,
                "n_layers": 1,
                "pooling": "none",
                "layer_kwargs": {**kwargs, "moe_aux_coef": 0.5},
            },
            "train": {
                "epochs": 1,
                "batch_size": 4,
                "out_dir": str(tmp_path / "run"),
                "progress": False,
                "device": "cpu",
                "seed": 0,
            },
        }
    )
    last = train(cfg, data_dir=tmp_path / "data", log=lambda s: None).last
    assert last["train_aux_loss"] == pytest.approx(2 * 0.5 * 2, rel=0.2)  # two MoE layers, each ~ alpha K
    assert "val_aux_loss" not in last and last["val_bpb"] > 0  # evaluation stays the task loss
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert logged[-1]["train_aux_loss"] == last["train_aux_loss"]
