"""Causal LM: step-by-step logits == parallel logits for every causal layer, prompt-then-step ==
full forward, generate's sampling options, save/load, CLI streaming, bad input."""

import argparse
import io

import pytest
import torch

import torchssm
from torchssm.models.cli import run_generate
from torchssm.models.lm import CausalLM, LMConfig
from torchssm.models.tokenizer import ByteTokenizer

LAYERS = {
    "mamba": dict(d_state=4, chunk_size=3),
    "mamba2": dict(d_state=4, headdim=8, ngroups=2, chunk_size=3),
    "lru": dict(d_state=8),
    "transformer": dict(n_heads=2, max_len=32),
    "s4": dict(d_state=4),
    "s4d": dict(d_state=4),
    "dss": dict(d_state=4),
    "s5": dict(d_state=4),
}


def _lm(layer, **kw):
    torch.manual_seed(0)
    cfg = LMConfig(layer=layer, d_model=16, n_layer=2, vocab_size=37, layer_kwargs=LAYERS[layer], **kw)
    return CausalLM(cfg).double().eval()


@pytest.mark.parametrize("layer", sorted(LAYERS))
def test_prompt_then_step_equals_parallel(layer):
    m = _lm(layer)
    ids = torch.randint(0, 37, (2, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = m(ids)
        assert full.shape == (2, 9, 37)
        logits, state = m(ids[:, :4], return_state=True)  # prompt in parallel mode
        outs = [logits]
        for t in range(4, 9):
            lt, state = m.step(ids[:, t], state)
            outs.append(lt[:, None])
        torch.testing.assert_close(torch.cat(outs, 1), full)
        state = m.init_state(2, dtype=torch.float64)  # pure step from the empty state
        steps = []
        for t in range(9):
            lt, state = m.step(ids[:, t], state)
            steps.append(lt)
        torch.testing.assert_close(torch.stack(steps, 1), full)


@pytest.mark.parametrize("layer", ["mamba", "mamba2"])
def test_greedy_generation_matches_argmax_of_full_forward(layer):
    m = _lm(layer)
    prompt = torch.tensor([[3, 1, 4, 1, 5]])
    out = m.generate(prompt, 6, temperature=0)
    assert out.shape == (1, 11) and torch.equal(out[:, :5], prompt)
    with torch.no_grad():
        logits = m(out[:, :-1])
    torch.testing.assert_close(out[0, 5:], logits[0, 4:].argmax(-1))


def test_reset_packs_documents():
    m = _lm("mamba")
    a, b = torch.randint(0, 37, (1, 5)), torch.randint(0, 37, (1, 4))
    reset = torch.zeros(1, 9, dtype=torch.bool)
    reset[0, 5] = True
    with torch.no_grad():
        packed = m(torch.cat([a, b], 1), reset=reset)
        torch.testing.assert_close(packed[:, 5:], m(b))


def test_sampling_top_k_top_p():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    g = torch.Generator().manual_seed(0)
    draws = torch.stack([CausalLM.sample(logits, 1.0, top_k=2, generator=g) for _ in range(200)])
    assert set(draws.flatten().tolist()) <= {0, 1}
    draws = torch.stack([CausalLM.sample(logits, 1.0, top_p=0.7, generator=g) for _ in range(200)])
    assert set(draws.flatten().tolist()) == {0, 1}  # 0.5 < 0.7 needs the second token, not the third
    assert CausalLM.sample(logits, 0.0).item() == 0


def test_init_and_weight_tying():
    m = CausalLM(LMConfig(layer="mamba", d_model=32, n_layer=4, vocab_size=50, layer_kwargs={"d_state": 4}))
    assert m.backbone.embedding.weight.shape == (56, 32)  # 50 padded to a multiple of 8
    assert m.lm_head.weight is m.backbone.embedding.weight
    bound = 1 / (2 * 64**0.5)  # kaiming_uniform(a=sqrt(5)) bound 1/sqrt(fan_in), / sqrt(n_layer)
    assert m.backbone.layers[0].mixer.out_proj.weight.abs().max() <= bound + 1e-6


@pytest.mark.parametrize("layer", ["transformer", "mamba"])
def test_gated_mlp_blocks_in_every_path(layer, tmp_path):
    """d_intermediate > 0: each block adds x + fc2(y * silu(g)), [y, g] = fc1(norm2(x)), after its mixer, in
    forward, step and the fused generation step alike; fc2 is scaled as a second residual branch; it
    saves and loads; Hugging Face export refuses it (their Mamba models have no MLP)."""
    m = _lm(layer, d_intermediate=24)
    blk = m.backbone.layers[0]
    assert blk.mlp.fc1.weight.shape == (48, 16) and blk.mlp.fc2.weight.shape == (16, 24)
    assert blk.mlp.fc2.weight.abs().max() <= 1 / (24**0.5 * (2 * 2) ** 0.5) + 1e-9  # 1/sqrt(fan_in)/sqrt(2 n_layer)
    x = torch.randn(2, 16, dtype=torch.float64)
    expected = x + blk.mlp.fc2(
        torch.nn.functional.silu(blk.mlp.fc1(blk.norm2(x))[:, 24:]) * blk.mlp.fc1(blk.norm2(x))[:, :24]
    )
    torch.testing.assert_close(blk.add_mlp(x, torch.float64), expected)
    ids = torch.randint(0, 37, (2, 7), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        full = m(ids)
        assert not torch.allclose(full, _lm(layer)(ids))  # the MLP changes the logits
        state = m.init_state(2, dtype=torch.float64)
        fused = m._step_function(2, state)
        state2 = m.init_state(2, dtype=torch.float64)
        for t in range(7):
            lt, state = m.step(ids[:, t], state)
            torch.testing.assert_close(lt, full[:, t])
            lf, state2 = fused(ids[:, t], state2)
            torch.testing.assert_close(lf, full[:, t])
    m.save_pretrained(tmp_path / "mlp")
    again = torchssm.from_pretrained(tmp_path / "mlp").double().eval()
    with torch.no_grad():
        torch.testing.assert_close(again(ids), full)
    if layer == "mamba":
        from torchssm.models.hf_export import hf_config

        with pytest.raises(ValueError, match="no MLP"):
            hf_config(m)
    with pytest.raises(ValueError, match="d_intermediate"):
        _lm(layer, d_intermediate=-1)


def test_d_intermediate_reaches_the_lm_from_a_model_config_and_the_deep_model_refuses_it():
    """``torchssm train`` on an lm task: model.d_intermediate becomes the CausalLM's MLP width."""
    from torchssm.lm.build import lm_config_from_model_config
    from torchssm.models import ModelConfig, build_model

    cfg = ModelConfig(layer="mamba", d_model=16, input_kind="tokens", d_input=37, d_output=37, d_intermediate=8)
    assert lm_config_from_model_config(cfg).d_intermediate == 8
    with pytest.raises(ValueError, match="d_intermediate=8 is for language models"):
        build_model(cfg)


def test_save_load_and_cli_stream(tmp_path):
    tok = ByteTokenizer()
    torch.manual_seed(0)
    m = CausalLM(LMConfig(layer="mamba", d_model=16, n_layer=1, vocab_size=256, layer_kwargs={"d_state": 4}))
    m.save_pretrained(tmp_path / "lm")
    loaded = torchssm.from_pretrained(tmp_path / "lm")
    ids = torch.tensor([tok.encode("hello")])
    torch.testing.assert_close(loaded(ids), m.eval()(ids))
    out = io.StringIO()
    args = argparse.Namespace(
        checkpoint=str(tmp_path / "lm"),
        prompt="hé",
        max_new_tokens=8,
        temperature=0.0,
        top_k=None,
        top_p=None,
        seed=0,
        device="cpu",
    )
    assert run_generate(args, out) == 0
    want = tok.decode(m.generate(torch.tensor(tok.encode("hé")), 8, temperature=0)[0].tolist())
    assert out.getvalue() == want + "\n"


def test_bad_input():
    m = _lm("mamba", max_length=12)
    with pytest.raises(ValueError, match="empty"):
        m.generate(torch.zeros(1, 0, dtype=torch.long), 3)
    with pytest.raises(ValueError, match="max_length=12"):
        m.generate(torch.zeros(1, 10, dtype=torch.long), 3)
    with pytest.raises(ValueError, match=r"\[0, 37\)"):
        m.generate(torch.tensor([[1, 40]]), 3)
    with pytest.raises(TypeError, match="integer"):
        m(torch.zeros(1, 3))
    other = _lm("mamba2")
    with pytest.raises(ValueError, match="shape"):
        m.step(torch.zeros(2, dtype=torch.long), other.init_state(2, dtype=torch.float64))
    with pytest.raises(ValueError, match="2 per-layer states"):
        m.step(torch.zeros(2, dtype=torch.long), [])
    with pytest.raises(ValueError, match="not causal"):
        CausalLM(LMConfig(layer="lru", d_model=8, n_layer=1, layer_kwargs={"d_state": 4, "bidirectional": True}))


def test_bench_generate_runs(tmp_path, capsys):
    from torchssm.cli import main

    out = tmp_path / "gen.json"
    assert (
        main(
            [
                "bench",
                "generate",
                "--layers",
                "mamba,transformer",
                "--lengths",
                "12",
                "--d-model",
                "16",
                "--n-layer",
                "1",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    import json

    rows = json.loads(out.read_text())["results"]
    assert [r["layer"] for r in rows] == ["mamba", "transformer"]
    assert all(r["tokens_per_s"] > 0 and r["state_MB"] > 0 for r in rows)


@pytest.mark.parametrize("layer", ["mamba", "mamba2"])
def test_right_padded_batch_of_different_lengths(layer):
    """Causal: the valid positions of a right-padded row equal the row run alone at its true length."""
    m = _lm(layer)
    g = torch.Generator().manual_seed(5)
    long, short = torch.randint(0, 37, (9,), generator=g), torch.randint(0, 37, (5,), generator=g)
    batch = torch.stack([long, torch.cat([short, torch.zeros(4, dtype=torch.long)])])
    with torch.no_grad():
        logits = m(batch)
        torch.testing.assert_close(logits[1, :5], m(short[None])[0])
        torch.testing.assert_close(logits[0], m(long[None])[0])
