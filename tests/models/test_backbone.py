"""DeepSSM: shapes for every input kind / pooling / norm, padding invariance, masked BatchNorm,
paired (two-tower) head, gradients, bad input, and that it learns a toy task."""

import dataclasses

import pytest
import torch

from torchssm.layers.tags import parameter_tags
from torchssm.models import DeepSSM, MaskedBatchNorm, ModelConfig, build_model


def cfg(**kw):
    base = dict(d_model=8, n_layers=2, layer_kwargs={"d_state": 6, "r_min": 0.5, "r_max": 0.99}, d_input=3, d_output=5)
    base.update(kw)
    return ModelConfig(**base)


def model(seed=0, **kw):
    torch.manual_seed(seed)
    return build_model(cfg(**kw)).double()


def padded_batch(lengths, d_input=3, length=10, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(len(lengths), length, d_input, generator=gen, dtype=torch.float64)
    return x, torch.tensor(lengths)


@pytest.mark.parametrize("pooling,shape", [("mean", (4, 5)), ("last", (4, 5)), ("none", (4, 10, 5))])
@pytest.mark.parametrize("norm", ["batch", "layer", "none"])
def test_output_shapes(pooling, shape, norm):
    m = model(pooling=pooling, norm=norm)
    x, lengths = padded_batch([10, 7, 3, 1])
    assert m(x).shape == shape
    assert m(x, lengths).shape == shape


def test_default_config_builds_the_article_model():
    m = build_model(ModelConfig())  # LRU, H = 64, 2 pre-norm BatchNorm blocks with GLU, mean pooling
    assert m.blocks[0].ssm.d_state == 64 and isinstance(m.blocks[0].norm, MaskedBatchNorm)
    assert m(torch.randn(2, 40, 1)).shape == (2, 10)


def test_token_inputs_and_postnorm_and_plain_projection():
    m = model(input_kind="tokens", d_input=11, prenorm=False, glu=False, dropout=0.1)
    tokens = torch.randint(0, 11, (3, 7))
    assert isinstance(m.encoder, torch.nn.Embedding)
    assert m(tokens).shape == (3, 5)
    assert m.blocks[0].out.out_features == 8  # no GLU: Linear h -> h


def test_real_inputs_of_rank_two_when_d_input_is_one():
    m = model(d_input=1)
    x = torch.randn(2, 9, dtype=torch.float64)
    torch.testing.assert_close(m(x), m(x[..., None]))


@pytest.mark.parametrize("pooling", ["mean", "last", "none"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_padding_invariance_eval(pooling, bidirectional):
    """In eval mode, logits of a padded batch equal those of each sequence alone."""
    kw = {"d_state": 6, "r_min": 0.5, "r_max": 0.99, "bidirectional": bidirectional}
    m = model(pooling=pooling, layer_kwargs=kw).eval()
    x, lengths = padded_batch([10, 6, 2])
    x[1, 6:] = 1e3  # garbage in the padding
    x[2, 2:] = -1e3
    out = m(x, lengths)
    for i, n in enumerate(lengths.tolist()):
        alone = m(x[i : i + 1, :n])[0]
        got = out[i, :n] if pooling == "none" else out[i]
        torch.testing.assert_close(got, alone, rtol=1e-10, atol=1e-10)


def test_padding_invariance_train_mode_with_batchnorm():
    """Training mode (batch statistics): padding content changes neither logits nor running stats."""
    x, lengths = padded_batch([10, 4, 7])
    outs, stats = [], []
    for fill in (0.0, 1e3):
        m = model(layer_kwargs={"d_state": 6, "r_min": 0.5, "r_max": 0.99, "bidirectional": True}).train()
        xf = x.clone()
        for i, n in enumerate(lengths.tolist()):
            xf[i, n:] = fill
        outs.append(m(xf, lengths))
        stats.append(torch.cat([m.blocks[0].norm.running_mean, m.blocks[0].norm.running_var]))
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(stats[0], stats[1], rtol=1e-10, atol=1e-10)


def test_masked_batchnorm_equals_batchnorm_on_valid_tokens():
    torch.manual_seed(0)
    x = torch.randn(3, 6, 4, dtype=torch.float64)
    lengths = torch.tensor([6, 2, 4])
    mask = torch.arange(6)[None] < lengths[:, None]
    masked, plain = MaskedBatchNorm(4).double(), torch.nn.BatchNorm1d(4).double()
    with torch.no_grad():
        masked.weight.uniform_(0.5, 2.0)
        masked.bias.normal_()
    plain.load_state_dict(masked.state_dict())
    for _ in range(2):  # two updates of the running statistics
        y = masked(x, mask)
        y_ref = plain(x[mask])  # (valid tokens, h)
        torch.testing.assert_close(y[mask], y_ref)
    torch.testing.assert_close(masked.state_dict(), plain.state_dict())
    masked.eval(), plain.eval()
    torch.testing.assert_close(masked(x, mask), plain(x.reshape(-1, 4)).reshape(x.shape))
    # without a mask it is BatchNorm1d over all b*l tokens
    masked.train(), plain.train()
    torch.testing.assert_close(masked(x), plain(x.reshape(-1, 4)).reshape(x.shape))


def test_last_pooling_reads_last_valid_step():
    m = model(pooling="last").eval()
    x, lengths = padded_batch([10, 3])
    feats = m.features(x, lengths)
    full = m.features(x[1:, :3])
    torch.testing.assert_close(feats[1], full[0])


def test_paired_two_tower():
    m = model(paired=True, pooling="mean")
    x1, l1 = padded_batch([10, 5], seed=1)
    x2, l2 = padded_batch([8, 10], seed=2)
    logits = m(x1, l1, inputs2=x2, lengths2=l2)
    assert logits.shape == (2, 5) and m.head[0].in_features == 4 * 8
    # the towers share weights: swapping the two inputs swaps u and v
    m.eval()
    u, v = m.features(x1, l1), m.features(x2, l2)
    torch.testing.assert_close(m(x1, l1, x2, l2), m.head(torch.cat([u, v, u * v, u - v], -1)))
    with pytest.raises(ValueError, match="inputs2"):
        m(x1, l1)
    with pytest.raises(ValueError, match="inputs2 must have shape"):
        m(x1, l1, x2[..., :2], l2)
    with pytest.raises(ValueError, match="paired"):
        model()(x1, inputs2=x2)


def test_gradients_reach_every_parameter_and_layer_tags_are_visible():
    m = model(paired=True)
    x, lengths = padded_batch([10, 5])
    m(x, lengths, x.flip(1), lengths).sum().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    tagged = {name for name, _ in parameter_tags(m).values()}
    assert "blocks.0.ssm.nu_log" in tagged and "blocks.1.ssm.B_im" in tagged


def test_learns_a_toy_task():
    """Classify the sign of the first step's first feature, read at the end (needs memory)."""
    torch.manual_seed(0)
    m = build_model(
        cfg(d_output=2, pooling="last", d_model=16, layer_kwargs={"d_state": 16, "r_min": 0.9, "r_max": 0.999})
    )
    opt = torch.optim.AdamW(m.parameters(), lr=1e-2)
    x = torch.randn(64, 10, 3)
    y = (x[:, 0, 0] > 0).long()
    for _ in range(15):
        loss = torch.nn.functional.cross_entropy(m(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    m.eval()
    assert (m(x).argmax(-1) == y).float().mean() > 0.9


def test_bad_config_and_inputs():
    for bad in (
        dict(pooling="max"),
        dict(norm="group"),
        dict(input_kind="image"),
        dict(d_model=0),
        dict(paired=True, pooling="none"),
        dict(layer="nope"),
        dict(dropout=1.5),
    ):
        with pytest.raises(ValueError):
            build_model(cfg(**bad))
    with pytest.raises(TypeError, match="bogus"):
        build_model(cfg(layer_kwargs={"d_state": 4, "bogus": 1}))
    with pytest.raises(TypeError):
        DeepSSM(dataclasses.asdict(cfg()))
    m = model()
    with pytest.raises(ValueError, match="d_input=3"):
        m(torch.randn(2, 5, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="empty"):
        m(torch.randn(2, 0, 3, dtype=torch.float64))
    with pytest.raises(TypeError, match="floating"):
        m(torch.ones(2, 5, 3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\(batch,\)"):
        m(torch.randn(2, 5, 3, dtype=torch.float64), torch.tensor([5, 5, 5]))
    with pytest.raises(TypeError, match="integer"):
        m(torch.randn(2, 5, 3, dtype=torch.float64), torch.tensor([5.0, 4.0]))
    tok = model(input_kind="tokens", d_input=7)
    with pytest.raises(ValueError, match="token ids"):
        tok(torch.randn(2, 5, dtype=torch.float64))


def test_masked_batchnorm_bf16_activations_use_float32_statistics():
    torch.manual_seed(0)
    x = torch.randn(4, 16, 8) * 3 + 100  # large mean: bf16 sums would lose the variance
    mask = torch.ones(4, 16, dtype=torch.bool)
    mask[1, 10:] = False
    bn = MaskedBatchNorm(8)
    y = bn(x.bfloat16(), mask)
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), MaskedBatchNorm(8)(x.bfloat16().float(), mask), rtol=0.01, atol=0.02)


@pytest.mark.parametrize("final_norm", ["layer", "batch"])
def test_final_norm_in_every_path(final_norm):
    """``final_norm`` normalises the residual stream after the last block, in forward, in chunked
    streaming and in ``step`` alike; padding still does not reach the logits; "none" adds no parameters."""
    m = model(final_norm=final_norm, pooling="none").eval()
    assert type(m.final_norm).__name__ != "_NoNorm"
    x, lengths = padded_batch([10, 6])
    feats = m.features(x)  # (b, l, h): the head's input
    if final_norm == "layer":  # LayerNorm at init: zero mean, unit variance per step
        torch.testing.assert_close(feats.mean(-1), torch.zeros(2, 10, dtype=torch.float64), atol=1e-9, rtol=0)
        torch.testing.assert_close(
            feats.var(-1, unbiased=False), torch.ones(2, 10, dtype=torch.float64), atol=1e-4, rtol=0
        )
    full = m(x)
    first, state = m(x[:, :4], return_state=True)
    rest, state = m(x[:, 4:], state=state, return_state=True)
    torch.testing.assert_close(torch.cat([first, rest], 1), full)
    state = m.init_state(2, dtype=torch.float64)
    for t in range(10):
        logits, state = m.step(x[:, t], state)
        torch.testing.assert_close(logits, full[:, t])
    out = m(x, lengths)
    torch.testing.assert_close(out[1, :6], m(x[1:, :6])[0])
    plain = model(pooling="none")
    assert set(plain.state_dict()) < set(m.state_dict())  # "none" (the default): old checkpoints still load
    assert not any(k.startswith("final_norm") for k in plain.state_dict())
    with pytest.raises(ValueError, match="final_norm"):
        build_model(cfg(final_norm="group"))
