"""save_pretrained / from_pretrained: round trip, atomic files, clear errors, other model types."""

import json
from dataclasses import asdict, dataclass

import pytest
import torch
from torch import nn

import torchssm
from torchssm.models import ModelConfig, PretrainedMixin, build_model, from_pretrained, register_model_type

CFG = ModelConfig(
    d_model=8, n_layers=2, layer_kwargs={"d_state": 4, "r_min": 0.5, "r_max": 0.99}, d_input=2, d_output=3
)


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    m = build_model(CFG)
    m(torch.randn(4, 6, 2))  # update BatchNorm running statistics (buffers are saved too)
    m.eval()
    m.save_pretrained(tmp_path / "run")
    return m, tmp_path / "run"


def test_round_trip(saved):
    m, path = saved
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "model.safetensors"]  # no temp files
    config = json.loads((path / "config.json").read_text())
    assert config["model_type"] == "deep_ssm" and config["layer_kwargs"] == CFG.layer_kwargs
    m2 = torchssm.from_pretrained(path)
    assert m2.config == CFG and not m2.training
    torch.testing.assert_close(m2.state_dict(), m.state_dict(), rtol=0, atol=0)
    x = torch.randn(2, 7, 2)
    torch.testing.assert_close(m2(x), m(x), rtol=0, atol=0)
    assert from_pretrained(path, device="cpu").head.weight.device.type == "cpu"


def test_overwrite_keeps_directory_clean(saved):
    m, path = saved
    m.save_pretrained(path)
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "model.safetensors"]


def test_missing_files(tmp_path, saved):
    _, path = saved
    with pytest.raises(FileNotFoundError, match="config.json"):
        from_pretrained(tmp_path / "nowhere")
    (path / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        from_pretrained(path)


def test_corrupt_files(saved):
    _, path = saved
    weights = (path / "model.safetensors").read_bytes()
    (path / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    with pytest.raises(ValueError, match="safetensors"):
        from_pretrained(path)
    (path / "model.safetensors").write_bytes(b"not a safetensors file at all")
    with pytest.raises(ValueError, match="safetensors"):
        from_pretrained(path)
    (path / "config.json").write_text("{ not json")
    with pytest.raises(ValueError, match="JSON"):
        from_pretrained(path)


@pytest.mark.parametrize(
    "change,match",
    [
        ({"d_model": 16}, "does not match"),  # shapes differ
        ({"n_layers": 3}, "does not match"),  # missing tensors
        ({"n_layers": 1}, "does not match"),  # unexpected tensors
        ({"model_type": "no_such_model"}, "unknown model_type"),
        ({"not_a_key": 1}, "unknown model config key"),
    ],
)
def test_config_that_does_not_match(saved, change, match):
    _, path = saved
    config = json.loads((path / "config.json").read_text())
    config.update(change)
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=match):
        from_pretrained(path)


@dataclass
class TiedConfig:
    vocab: int = 5
    width: int = 3

    def to_dict(self):
        return asdict(self)


class TiedModel(PretrainedMixin, nn.Module):
    """A tiny model with tied input/output weights (like an LM), registered as another model type."""

    model_type = "test_tied"

    def __init__(self, config: TiedConfig):
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab, config.width)
        self.head = nn.Linear(config.width, config.vocab, bias=False)
        self.head.weight = self.embed.weight


def build_tied(data: dict) -> TiedModel:
    return TiedModel(TiedConfig(**data))


def test_other_model_types_register_and_tied_weights_survive(tmp_path):
    register_model_type("test_tied", __name__, "build_tied")
    torch.manual_seed(0)
    m = TiedModel(TiedConfig())
    m.save_pretrained(tmp_path)
    m2 = from_pretrained(tmp_path)
    assert isinstance(m2, TiedModel) and m2.head.weight is m2.embed.weight
    torch.testing.assert_close(m2.embed.weight, m.embed.weight, rtol=0, atol=0)


def test_unsaveable_model_raises(tmp_path):
    with pytest.raises(TypeError, match="model_type"):
        torchssm.models.save_pretrained(nn.Linear(2, 2), tmp_path)
