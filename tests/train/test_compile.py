"""Mixed precision and torch.compile: bf16 autocast keeps SSM parameters and states in float32
and stays close to float32; ``torch.compile(model)`` gives the eager outputs and gradients; the
training loop runs with ``train.precision=bf16`` and ``train.compile=true``."""

import pytest
import torch

from torchssm.models import build_model
from torchssm.models.config import ModelConfig
from torchssm.train.config import load_config
from torchssm.train.loop import train

LAYERS = ["lru", "s4d", "s5", "mamba", "mamba2"]


def model(layer, norm="layer"):
    torch.manual_seed(0)
    kwargs = {"mamba2": {"headdim": 4}, "mamba": {}}.get(layer, {"d_state": 4})
    return build_model(
        ModelConfig(
            layer=layer, d_model=8, n_layers=2, d_input=3, d_output=4, norm=norm, pooling="none", layer_kwargs=kwargs
        )
    )


def _leaves(s):
    if isinstance(s, dict):
        return [t for v in s.values() for t in _leaves(v)]
    if isinstance(s, (list, tuple)):
        return [t for v in s for t in _leaves(v)]
    return [s]


@pytest.mark.parametrize("layer", LAYERS)
def test_bf16_autocast_keeps_parameters_and_states_float32(layer):
    m = model(layer)
    x = torch.randn(2, 16, 3)
    ref, ref_state = m(x, return_state=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, state = m(x, return_state=True)
        y.float().square().mean().backward()
    assert all(p.dtype == torch.float32 for p in m.parameters())
    assert all(
        p.grad is None or (p.grad.dtype == torch.float32 and torch.isfinite(p.grad).all()) for p in m.parameters()
    )
    for got, want in zip(_leaves(state), _leaves(ref_state)):
        assert got.dtype == want.dtype  # float32 / complex64, never bf16
        scale = want.abs().max().clamp_min(1e-3)
        assert ((got - want).abs().max() / scale) < 0.1
    assert torch.isfinite(y).all()
    assert ((y.float() - ref).abs().max() / ref.abs().max()) < 0.1  # bf16 activations: ~3 significant digits


@pytest.mark.parametrize("layer", ["lru", pytest.param("mamba", marks=pytest.mark.slow)])
def test_compiled_model_equals_eager(layer):
    torch._dynamo.reset()
    m = model(layer)
    x = torch.randn(2, 12, 3)
    compiled = torch.compile(m, backend="aot_eager", fullgraph=False)  # graph capture + AOT autograd, no C++
    y_eager = m(x)
    g_eager = torch.autograd.grad(y_eager.square().mean(), list(m.parameters()))
    y_comp = compiled(x)
    g_comp = torch.autograd.grad(y_comp.square().mean(), list(m.parameters()))
    torch.testing.assert_close(y_comp, y_eager, rtol=1e-5, atol=1e-6)
    for (name, _), a, b in zip(m.named_parameters(), g_comp, g_eager):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.slow
def test_compiled_with_inductor_equals_eager():
    torch._dynamo.reset()
    m = model("lru")
    x = torch.randn(2, 12, 3)
    compiled = torch.compile(m)  # inductor: generated C++ on CPU
    torch.testing.assert_close(compiled(x), m(x), rtol=1e-5, atol=1e-6)


def test_training_loop_bf16_and_compile(tmp_path, monkeypatch):
    torch._dynamo.reset()
    base = {
        "task": {"name": "adding", "length": 12, "n_train": 32, "n_val": 8, "n_test": 8},
        "model": {"layer": "lru", "d_model": 8, "n_layers": 1, "norm": "layer", "layer_kwargs": {"d_state": 4}},
        "train": {"epochs": 1, "batch_size": 16, "lr": 1e-2, "progress": False, "device": "cpu", "keep_checkpoints": 0},
    }
    original = torch.compile  # the default test needs no C++ toolchain: AOT autograd only
    monkeypatch.setattr(torch, "compile", lambda mod, **kw: original(mod, backend="aot_eager"))
    results = {}
    for name, opts in {"fp32": [], "bf16": ["train.precision=bf16"], "compiled": ["train.compile=true"]}.items():
        cfg = load_config(base=base, overrides=opts + [f"train.out_dir={tmp_path / name}"])
        results[name] = train(cfg, data_dir=tmp_path / "data", log=lambda m: None).last
    assert results["compiled"]["train_loss"] == pytest.approx(results["fp32"]["train_loss"], rel=1e-4)
    assert results["bf16"]["train_loss"] == pytest.approx(results["fp32"]["train_loss"], rel=0.05)
