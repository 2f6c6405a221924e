"""ONNX export of the recurrent step: onnxruntime matches PyTorch over 300 steps, complex states
travel as real/imag planes, ``torchssm export`` works on a training run, bad models are refused."""

import json

import pytest
import torch

pytest.importorskip("onnx")
pytest.importorskip("onnxscript")
ort = pytest.importorskip("onnxruntime")

from torchssm.cli import main as cli_main  # noqa: E402
from torchssm.models import build_model  # noqa: E402
from torchssm.models.config import ModelConfig  # noqa: E402
from torchssm.models.export import (  # noqa: E402
    StepGraph,
    compare_with_onnxruntime,
    export_step,  # noqa: E402
    flatten_state,
)
from torchssm.train.config import load_config  # noqa: E402
from torchssm.train.loop import train  # noqa: E402

STEPS = 300  # tokens compared between onnxruntime and PyTorch
TOL = 1e-5  # max |diff| / max |y|, float32


def model(layer, **kw):
    torch.manual_seed(0)
    layer_kwargs = {"mamba2": {"headdim": 4}, "mamba": {}}.get(layer, {"d_state": 4}) | kw.pop("layer_kwargs", {})
    cfg = ModelConfig(layer=layer, d_model=8, n_layers=2, d_input=3, d_output=5, layer_kwargs=layer_kwargs, **kw)
    return build_model(cfg).eval()


def test_flatten_state_round_trips_nested_structures():
    state = {
        "blocks": [torch.zeros(1, 2, dtype=torch.complex64), (torch.ones(1, 3), torch.ones(1, 4))],
        "count": torch.zeros(1, 1),
    }
    leaves, rebuild = flatten_state(state)
    assert [t.shape for t in leaves] == [(1, 2), (1, 3), (1, 4), (1, 1)]
    again = rebuild(leaves)
    assert isinstance(again["blocks"][1], tuple) and again["blocks"][0] is leaves[0]
    with pytest.raises(TypeError, match="dicts/lists/tuples"):
        flatten_state({"x": 3})


def test_cli_exports_a_trained_run_and_onnxruntime_matches(tmp_path):
    run = tmp_path / "run"
    cfg = {
        "task": {"name": "adding", "length": 12, "n_train": 32, "n_val": 8, "n_test": 8},
        "model": {"layer": "lru", "d_model": 8, "n_layers": 2, "layer_kwargs": {"d_state": 4}},  # BatchNorm
        "train": {"epochs": 1, "batch_size": 16, "lr": 1e-2, "progress": False, "device": "cpu", "out_dir": str(run)},
    }
    train(load_config(base=cfg), data_dir=tmp_path / "data", log=lambda m: None)
    out = tmp_path / "lru_step.onnx"
    assert cli_main(["export", "--checkpoint", str(run), "--onnx", str(out), "--verify-steps", "20"]) == 0
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    shapes = {i.name: i.shape for i in session.get_inputs()}
    # x_t (1, d_input=2); per block the LRU state (1, n=4) complex as (1, 4, 2) planes; pooled sum and count
    assert shapes == {"x_t": [1, 2], "state_0": [1, 4, 2], "state_1": [1, 4, 2], "state_2": [1, 8], "state_3": [1, 1]}
    from torchssm.models.pretrained import from_pretrained

    trained = from_pretrained(run / "best")
    assert compare_with_onnxruntime(trained, out, STEPS) < TOL
    # the streamed logits after the whole sequence are the model's logits for it
    x = torch.randn(1, 12, 2)
    state = trained.init_state(1)
    for t in range(12):
        y, state = trained.step(x[:, t], state)
    torch.testing.assert_close(y, trained(x), rtol=1e-5, atol=1e-5)
    assert json.loads((run / "best" / "config.json").read_text())["layer"] == "lru"


@pytest.mark.slow
@pytest.mark.parametrize("layer", ["s4", "s4d", "dss", "s5", "mamba", "mamba2"])
def test_layers_export_and_match_onnxruntime(tmp_path, layer):
    m = model(layer, pooling="none", norm="layer")
    path = export_step(m, tmp_path / f"{layer}.onnx", batch=2)
    assert compare_with_onnxruntime(m, path, STEPS, batch=2) < TOL


def test_s4_exports_at_its_loaded_kernel_length(tmp_path):
    """S4's dense step uses C = C~ (I - A_bar^L)^-1 at the current kernel length L: a model whose L doubled
    (8 -> 32) in training, reloaded into a fresh L = 8 model, exports the step of the trained one."""
    trained = model("s4", pooling="none", norm="layer", layer_kwargs={"l_max": 8})
    with torch.no_grad():
        trained(torch.randn(1, 20, 3))  # (b, l, d_input): doubles L 8 -> 16 -> 32 in both blocks
    fresh = model("s4", pooling="none", norm="layer", layer_kwargs={"l_max": 8})
    fresh.load_state_dict(trained.state_dict())
    path = export_step(fresh, tmp_path / "s4.onnx", batch=2)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    shapes = {i.name: i.shape for i in session.get_inputs()}
    # per block the S4 state (b=2, H=8, m=N/2=2) complex as (2, 8, 2, 2) planes
    assert shapes["x_t"] == [2, 3] and shapes["state_0"] == shapes["state_1"] == [2, 8, 2, 2]
    assert compare_with_onnxruntime(trained, path, STEPS, batch=2) < TOL


@pytest.mark.slow
def test_language_model_step_exports(tmp_path):
    from torchssm.models.lm import CausalLM, LMConfig

    torch.manual_seed(0)
    lm = CausalLM(LMConfig(layer="lru", d_model=8, n_layer=2, vocab_size=16, layer_kwargs={"d_state": 4})).eval()
    path = export_step(lm, tmp_path / "lm.onnx")
    assert compare_with_onnxruntime(lm, path, STEPS) < TOL


def test_non_causal_and_stateless_models_are_refused(tmp_path):
    with pytest.raises(ValueError, match="streaming needs causal layers"):
        StepGraph(
            build_model(
                ModelConfig(layer="lru", d_model=8, n_layers=1, layer_kwargs={"d_state": 4, "bidirectional": True})
            )
        )
    with pytest.raises(TypeError, match="no step"):
        StepGraph(torch.nn.Linear(2, 2))
