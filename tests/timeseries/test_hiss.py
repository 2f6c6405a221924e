"""HiSS (Bhirangi et al. 2024): the chunked model equals a loop over chunks; the causal layer keeps the
layer contract; lengths that the chunk size does not divide are an error unless a padding rule is given."""

import pytest
import torch

from torchssm.layers import build_layer
from torchssm.testing import check_layer_contract
from torchssm.timeseries.hiss import HiSS, HiSSConfig, HiSSLayer, chunk_count, to_chunks


def _model(**kw):
    torch.manual_seed(0)
    cfg = HiSSConfig(d_input=3, d_output=2, chunk=4, d_low=8, d_high=8, n_low=1, n_high=1, **kw)
    return HiSS(cfg).double().eval()


@pytest.mark.parametrize("low,high,pool", [("lru", "lru", "last"), ("s5", "mamba", "mean"), ("mamba", "s4d", "last")])
def test_hiss_equals_loop_over_chunks(low, high, pool):
    model = _model(low_layer=low, high_layer=high, pool=pool)
    x = torch.randn(2, 20, 3, dtype=torch.float64)
    with torch.no_grad():
        y = model(x)  # (2, 5, 2)
        feats = torch.stack([model.low(x[:, c * 4 : (c + 1) * 4]) for c in range(5)], dim=1)  # each chunk alone
        want = model.high(feats)
    assert y.shape == (2, 5, 2)
    torch.testing.assert_close(y, want)


def test_hiss_gradients_match_loop():
    model = _model()
    x = torch.randn(2, 12, 3, dtype=torch.float64, requires_grad=True)
    g1 = torch.autograd.grad(model(x).square().sum(), [x, *model.parameters()])
    feats = torch.stack([model.low(x[:, c * 4 : (c + 1) * 4]) for c in range(3)], dim=1)
    g2 = torch.autograd.grad(model.high(feats).square().sum(), [x, *model.parameters()])
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b)


def test_chunk_size_not_dividing_length_is_an_error():
    model = _model()
    with pytest.raises(ValueError, match="does not divide the length L=10"):
        model(torch.randn(1, 10, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="unknown pad rule"):
        chunk_count(10, 4, "wrap")
    with pytest.raises(ValueError, match="positive int"):
        chunk_count(10, 0)


def test_padding_rules():
    x = torch.randn(1, 10, 3)
    assert to_chunks(x, 4, "zeros").shape == (1, 3, 4, 3)
    assert to_chunks(x, 4, "drop").shape == (1, 2, 4, 3)
    torch.testing.assert_close(to_chunks(x, 4, "zeros")[0, 2, :2], x[0, 8:])
    assert float(to_chunks(x, 4, "zeros")[0, 2, 2:].abs().sum()) == 0.0
    step = _model(pad="zeros", output="step")
    assert step(torch.randn(2, 10, 3, dtype=torch.float64)).shape == (2, 10, 2)


def test_step_output_repeats_chunk_predictions():
    chunked, step = _model(), _model(output="step")
    x = torch.randn(1, 8, 3, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(step(x), chunked(x).repeat_interleave(4, dim=1))


def test_bad_config_and_inputs():
    with pytest.raises(ValueError, match="unknown pool"):
        _model(pool="max")
    with pytest.raises(TypeError, match="HiSSConfig"):
        HiSS({"chunk": 4})
    with pytest.raises(ValueError, match="d_input=3"):
        _model()(torch.randn(1, 8, 5, dtype=torch.float64))


@pytest.mark.parametrize("low,high", [("lru", "lru"), ("s5", "mamba"), ("mamba", "s4d")])
def test_hiss_layer_contract(low, high):
    torch.manual_seed(0)
    layer = HiSSLayer(8, 4, low=low, high=high, tail="stream").double()
    check_layer_contract(layer, length=13)


def test_hiss_layer_is_causal_and_built_by_name():
    torch.manual_seed(0)
    layer = build_layer("hiss", 8, chunk=4).double().eval()
    x = torch.randn(1, 12, 8, dtype=torch.float64)
    x2 = x.clone()
    x2[:, 7:] += 1.0  # change the future from step 7 on
    with torch.no_grad():
        torch.testing.assert_close(layer(x)[:, :7], layer(x2)[:, :7])
        assert not torch.allclose(layer(x)[:, 7:], layer(x2)[:, 7:])
    # the high level reaches later chunks: output in chunk 2 depends on an input in chunk 0
    x3 = x.clone()
    x3[:, 1] += 1.0
    with torch.no_grad():
        assert not torch.allclose(layer(x)[:, 8:], layer(x3)[:, 8:])
    with pytest.raises(ValueError, match="does not divide"):
        layer(torch.randn(1, 10, 8, dtype=torch.float64))
    with pytest.raises(ValueError, match="causal"):
        HiSSLayer(8, 4, low="lru", low_kwargs={"bidirectional": True})
