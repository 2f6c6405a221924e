"""torchssm -> Hugging Face export (transformers loads it with the same logits), and the converter on the
config.json encodings of transformers 4.39, 4.44 and 5.x (fixtures/hf_configs)."""

import json
import shutil
from pathlib import Path

import pytest
import torch

import torchssm
from torchssm.models.convert import lm_config_from
from torchssm.models.hf_export import hf_config, save_hf
from torchssm.models.lm import CausalLM, LMConfig

transformers = pytest.importorskip("transformers")  # in the dev / interop extras
FIXTURES = Path(__file__).parent / "fixtures" / "hf_configs"


def _tiny_lm(layer: str, **kw) -> CausalLM:
    torch.manual_seed(0)
    layer_kwargs = {"d_state": 4} if layer == "mamba" else {"d_state": 8, "headdim": 8, "chunk_size": 8}
    layer_kwargs.update(kw)
    model = CausalLM(LMConfig(layer=layer, d_model=16, n_layer=2, vocab_size=50, layer_kwargs=layer_kwargs))
    with torch.no_grad():  # move every parameter off its init, so a mis-mapped one shows in the logits
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


@pytest.mark.parametrize("layer,cls", [("mamba", "MambaForCausalLM"), ("mamba2", "Mamba2ForCausalLM")])
def test_export_loads_in_transformers_with_the_same_logits(tmp_path, layer, cls):
    model = _tiny_lm(layer)
    save_hf(model, tmp_path / "hf")
    hf = getattr(transformers, cls).from_pretrained(tmp_path / "hf", dtype=torch.float32).eval()
    ids = torch.randint(0, 50, (2, 21), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = model(ids)  # (2, 21, 50)
        theirs = hf(ids).logits[..., :50]
    assert (ours - theirs).abs().max() <= 1e-4
    back = torchssm.from_pretrained(tmp_path / "hf")  # and our converter reads it back
    torch.testing.assert_close(back(ids)[..., :50], ours, rtol=0, atol=1e-5)  # exported vocab: the padded 56


def test_export_refuses_what_transformers_cannot_express(tmp_path):
    lru = CausalLM(LMConfig(layer="lru", d_model=16, n_layer=1, vocab_size=50))
    with pytest.raises(ValueError, match="Mamba and Mamba-2 language models only"):
        save_hf(lru, tmp_path / "x")
    whole = _tiny_lm("mamba2", ngroups=2, norm_group_size=32)
    with pytest.raises(ValueError, match="whole-width gated norm with ngroups=2"):
        hf_config(whole)
    with pytest.raises(TypeError, match="CausalLM"):
        save_hf(torch.nn.Linear(2, 2), tmp_path / "y")
    assert not (tmp_path / "x").exists() or not any((tmp_path / "x").iterdir())


def _fixture_dir(tmp_path, name):
    d = tmp_path / name
    d.mkdir()
    shutil.copy(FIXTURES / name, d / "config.json")
    return d


def test_config_encodings_of_transformers_releases(tmp_path):
    m1 = lm_config_from(_fixture_dir(tmp_path, "mamba_transformers_4.39.json"))  # state-spaces/mamba-130m-hf
    assert (m1.layer, m1.d_model, m1.n_layer, m1.vocab_size) == ("mamba", 768, 24, 50280)
    assert m1.layer_kwargs == {"d_state": 16, "d_conv": 4, "expand": 2, "dt_rank": 48, "conv_bias": True, "bias": False}
    m2 = lm_config_from(_fixture_dir(tmp_path, "mamba2_transformers_4.44.json"))  # time_step_limit [0, Infinity]
    assert (m2.layer, m2.d_model, m2.n_layer) == ("mamba2", 4096, 64)
    assert m2.layer_kwargs["ngroups"] == 8 and m2.layer_kwargs["norm_group_size"] == 8192  # before #40861
    m5 = lm_config_from(_fixture_dir(tmp_path, "mamba2_transformers_5.25.json"))  # {"__float__": "Infinity"}
    assert m5.layer == "mamba2" and "norm_group_size" not in m5.layer_kwargs
    assert json.loads((FIXTURES / "mamba2_transformers_5.25.json").read_text())["time_step_limit"][1] == {
        "__float__": "Infinity"
    }
    v5 = lm_config_from(_fixture_dir(tmp_path, "mamba_transformers_5.25.json"))  # Mamba (v1) by today's release
    assert (v5.layer, v5.d_model, v5.n_layer, v5.vocab_size, v5.tie_embeddings) == ("mamba", 32, 2, 64, True)
    assert v5.layer_kwargs == {"d_state": 8, "d_conv": 4, "expand": 2, "dt_rank": 2, "conv_bias": True, "bias": False}


def test_a_mamba2_saved_by_todays_transformers_converts_with_the_same_logits(tmp_path):
    torch.manual_seed(0)
    cfg = transformers.Mamba2Config(
        vocab_size=48,
        hidden_size=16,
        num_hidden_layers=2,
        num_heads=4,
        head_dim=8,
        state_size=8,
        n_groups=2,
        chunk_size=8,
        expand=2,
    )
    hf = transformers.Mamba2ForCausalLM(cfg).eval()
    hf.save_pretrained(tmp_path / "m2")
    ours = torchssm.from_pretrained(tmp_path / "m2")
    ids = torch.randint(0, 48, (2, 19), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert (ours(ids) - hf(ids).logits).abs().max() <= 1e-4


def test_clamped_time_steps_are_still_refused(tmp_path):
    d = _fixture_dir(tmp_path, "mamba2_transformers_5.25.json")
    cfg = json.loads((d / "config.json").read_text())
    cfg["time_step_limit"] = [0.0, 0.1]
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="time_step_limit"):
        lm_config_from(d)
    cfg["time_step_limit"] = [0.0, {"__float__": "bogus"}]
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="expected a number"):
        lm_config_from(d)


def test_from_pretrained_names_the_accepted_layouts(tmp_path):
    with pytest.raises(FileNotFoundError, match="torchssm directory.*Hugging Face.*mamba_ssm"):
        torchssm.from_pretrained(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="hub id"):
        torchssm.from_pretrained("state-spaces/mamba-130m-hf")
