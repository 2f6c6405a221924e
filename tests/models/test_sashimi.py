"""SaShiMi (models/sashimi.py, ``layer: sashimi``): the layer contract (step unrolled == forward, chunked
continuation at every split, including splits inside a pooling group, state not mutated, bad inputs), causality
through the pooling tiers (the up-pooling shift), the pooled tiers carry information (zeroing a down-pool changes
the output), a non-causal variant, the deep model with it, a small task learned, and bad arguments."""

import pytest
import torch

from torchssm.layers import build_layer
from torchssm.models import ModelConfig, build_model
from torchssm.testing import check_chunked_continuation, check_layer_contract, first_token_accuracy

TINY = {"pool": (2, 3), "n_layers": 1, "layer": "s4d", "layer_kwargs": {"d_state": 4}}


def tiny(layer="s4d", **kw):
    torch.manual_seed(0)
    return build_layer("sashimi", 4, **{**TINY, "layer": layer, **kw}).double()


@pytest.mark.parametrize("layer", ["s4d", "lru", "mamba"])
def test_layer_contract(layer):
    kwargs = {"d_state": 4}
    check_layer_contract(tiny(layer, layer_kwargs=kwargs), length=13)  # 13: not a multiple of 2 * 3


def test_chunked_continuation_at_every_split_and_in_three_calls():
    layer = tiny()
    x = torch.randn(2, 23, 4, dtype=torch.float64)
    for split in range(1, 23):
        check_chunked_continuation(layer, x, split=split)
    with torch.no_grad():
        y = layer(x)
        y1, s = layer(x[:, :4], return_state=True)
        y2, s = layer(x[:, 4:5], s, return_state=True)
        y3 = layer(x[:, 5:], s)
    torch.testing.assert_close(torch.cat([y1, y2, y3], 1), y)
    assert s[0].tolist() == [5, 5]  # position: steps seen


def test_causal_through_the_tiers():
    """Output t does not change when inputs after t change; inputs long before t (through the bottom tier,
    6 steps per step) do change it."""
    layer = tiny().eval()
    x = torch.randn(1, 24, 4, dtype=torch.float64)
    with torch.no_grad():
        y = layer(x)
        for t in (0, 5, 6, 11, 17):
            x2 = x.clone()
            x2[:, t + 1 :] += torch.randn_like(x2[:, t + 1 :])
            y2 = layer(x2)
            torch.testing.assert_close(y2[:, : t + 1], y[:, : t + 1], rtol=0, atol=1e-12)  # (FFT round-off only)
            assert (y2[:, t + 1 :] - y[:, t + 1 :]).abs().amax() > 1e-3
    x.requires_grad_(True)
    (layer(x)[0, 23] * torch.randn(4, dtype=torch.float64)).sum().backward()  # (the LayerNorm output sums to 0)
    assert x.grad[0, :24].abs().sum(-1).gt(0).all()  # every earlier step reaches step 23


def test_the_pooled_tiers_are_used():
    layer = tiny().eval()
    x = torch.randn(2, 12, 4, dtype=torch.float64)
    with torch.no_grad():
        y = layer(x)
        layer.up[0].weight.zero_()
        layer.up[0].bias.zero_()
        y_cut = layer(x)
    torch.testing.assert_close(y_cut[:, :2], y[:, :2])  # the first group gets zeros from below anyway
    assert not torch.allclose(y_cut[:, 2:], y[:, 2:])


def test_non_causal_variant_with_bidirectional_layers():
    layer = tiny(layer_kwargs={"d_state": 4, "bidirectional": True})
    assert not layer.causal
    x = torch.randn(2, 12, 4, dtype=torch.float64)
    with torch.no_grad():
        y = layer(x)
        x2 = x.clone()
        x2[:, -1] += 1.0
        assert not torch.allclose(layer(x2)[:, 0], y[:, 0])  # the first output sees the last input
    with pytest.raises(NotImplementedError):
        layer.step(x[:, 0], layer.init_state(2))
    with pytest.raises(ValueError, match="carries no state"):
        layer(x, layer.init_state(2))


def test_deep_model_streams_and_learns_a_recall_task():
    cfg = ModelConfig(
        layer="sashimi", d_model=4, n_layers=1, norm="layer", pooling="none", d_input=3, d_output=2, layer_kwargs=TINY
    )
    model = build_model(cfg).double().eval()
    x = torch.randn(2, 14, 3, dtype=torch.float64)
    with torch.no_grad():
        y = model(x)
        y1, s = model(x[:, :7], state=model.init_state(2, dtype=torch.float64), return_state=True)
        y2, _ = model(x[:, 7:], state=s, return_state=True)
    torch.testing.assert_close(torch.cat([y1, y2], 1), y)
    torch.manual_seed(0)
    layer = build_layer("sashimi", 16, pool=(4, 4), n_layers=1, layer="s4d", layer_kwargs={"d_state": 16})
    assert first_token_accuracy(layer, length=64, steps=30) == 1.0  # ~1 s; the token sits 63 steps back


def test_paper_defaults_and_bad_arguments():
    layer = build_layer("sashimi", 8, n_layers=1, layer="s4d")
    assert layer.pool == (4, 4) and layer.expand == 2 and layer.ff == 2 and layer.widths == [8, 16, 32]
    assert layer.n_layers == 1 and layer.total_pool == 16
    for bad, match in (
        ({"pool": ()}, "pool must be a non-empty list of ints >= 2"),
        ({"pool": (4, 1)}, "pool must be"),
        ({"expand": 0}, "expand must be an int >= 1"),
        ({"n_layers": 0}, "n_layers must be an int >= 1"),
        ({"ff": -1}, "ff must be an int >= 0"),
    ):
        with pytest.raises(ValueError, match=match):
            build_layer("sashimi", 8, **bad)


def test_the_mulaw_preset_builds_at_the_stated_size():
    import dataclasses

    from torchssm.presets import preset_path
    from torchssm.train.config import load_config

    cfg = load_config(preset_path("audio/mulaw_sashimi"))
    model_cfg = dataclasses.replace(cfg.model, d_input=256, d_output=256, input_kind="tokens")  # spoken_mulaw's
    model = build_model(model_cfg)
    assert sum(p.numel() for p in model.parameters()) == 107_328  # the preset's comment
    assert model(torch.randint(0, 256, (1, 37))).shape == (1, 37, 256)
