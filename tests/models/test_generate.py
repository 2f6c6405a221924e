"""Generation semantics: eos / pad from the checkpoint config or tokenizer, per-row stopping, greedy by
default, batched prompts of different lengths (== each row alone), ``torchssm generate`` with the
checkpoint's tokenizer and its refusal of byte encoding for a non-byte vocabulary."""

import argparse
import io
import json

import pytest
import torch

import torchssm
from torchssm.models.cli import run_generate
from torchssm.models.lm import CausalLM, LMConfig
from torchssm.models.pretrained import load_generation_config

KW = {
    "mamba": dict(d_state=4, chunk_size=3),
    "mamba2": dict(d_state=4, headdim=8, ngroups=2, chunk_size=3),
    "lru": dict(d_state=8),
    "transformer": dict(n_heads=2, max_len=32),
}


def _lm(layer="mamba", vocab=37):
    torch.manual_seed(0)
    cfg = LMConfig(layer=layer, d_model=16, n_layer=2, vocab_size=vocab, layer_kwargs=KW[layer])
    return CausalLM(cfg).double().eval()


def test_default_decoding_is_greedy():
    m = _lm()
    prompt = torch.tensor([[3, 1, 4]])
    torch.testing.assert_close(m.generate(prompt, 5), m.generate(prompt, 5, temperature=0))


def test_per_row_stopping_pads_finished_rows():
    m = _lm()
    prompt = torch.tensor([[3, 1, 4], [2, 7, 1]])
    free = m.generate(prompt, 8, ignore_eos=True)[:, 3:]  # (2, 8) greedy continuations
    eos = int(free[0, 0])  # row 0 stops at once; row 1 later or never
    assert eos not in free[1, :1].tolist()
    out = m.generate(prompt, 8, eos_token_id=eos, pad_token_id=0)[:, 3:]
    hit = [next((i for i, t in enumerate(r) if t == eos), None) for r in free.tolist()]
    want_len = 8 if None in hit else max(hit) + 1  # the loop ends when every row is done
    assert out.shape == (2, want_len)
    for r in range(2):
        stop = hit[r] if hit[r] is not None else want_len
        assert out[r, : stop + 1].tolist() == free[r, : min(stop + 1, want_len)].tolist()
        assert (out[r, stop + 1 :] == 0).all()  # finished rows padded
    m.eos_token_id = eos  # the model's default (from a checkpoint's config), pad falls back to eos
    default = m.generate(prompt, 8)[:, 3:]
    assert default.shape == out.shape and (default[0, hit[0] + 1 :] == eos).all()


def test_stops_when_every_row_is_done():
    m = _lm()
    prompt = torch.tensor([[5, 6]])
    first = int(m.generate(prompt, 1)[0, -1])
    assert m.generate(prompt, 10, eos_token_id=[first, 36]).shape == (1, 3)
    assert m.generate(prompt, 10, eos_token_id=first, ignore_eos=True).shape == (1, 12)


@pytest.mark.parametrize("layer", ["mamba", "mamba2", "lru", "transformer"])
def test_prompts_of_different_lengths_equal_each_row_alone(layer):
    m = _lm(layer)
    rows = [[3, 1, 4, 1, 5, 9], [2, 7], [8, 8, 8, 1]]
    out = m.generate(rows, 5, pad_token_id=0)
    assert out.shape == (3, 6 + 5)
    for r, row in enumerate(rows):
        alone = m.generate([row], 5)[0]
        assert out[r, 6 - len(row) :].tolist() == alone.tolist()
        assert (out[r, : 6 - len(row)] == 0).all()


def test_attention_mask_left_padding_and_bad_masks():
    m = _lm()
    ids = torch.tensor([[0, 0, 3, 1], [5, 6, 7, 8]])
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    out = m.generate(ids, 4, attention_mask=mask)
    assert out[0, 2:].tolist() == m.generate([[3, 1]], 4)[0].tolist()
    with pytest.raises(ValueError, match="left padding"):
        m.generate(ids, 4, attention_mask=torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]]))
    with pytest.raises(ValueError, match="empty row"):
        m.generate([[1, 2], []], 4)
    with pytest.raises(ValueError, match=r"eos_token_id must be a token id in \[0, 37\)"):
        m.generate([[1, 2]], 4, eos_token_id=99)
    s5 = CausalLM(LMConfig(layer="s5", d_model=8, n_layer=1, vocab_size=11, layer_kwargs={"d_state": 4})).eval()
    with pytest.raises(ValueError, match="resettable state"):
        next(s5.generate_stream([[1, 2], [3]], 2))


def test_load_generation_config(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"eos_token_id": 0, "pad_token_id": None}))
    assert load_generation_config(tmp_path) == {"eos_token_id": 0}
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": [2, 3], "pad_token_id": 1}))
    assert load_generation_config(tmp_path) == {"eos_token_id": [2, 3], "pad_token_id": 1}


def test_from_pretrained_reads_eos_and_pad_from_the_directory(tmp_path):
    import torchssm

    _lm().save_pretrained(tmp_path / "lm")
    plain = torchssm.from_pretrained(tmp_path / "lm")
    assert (plain.eos_token_id, plain.pad_token_id) == (None, None)
    (tmp_path / "lm" / "generation_config.json").write_text(json.dumps({"eos_token_id": 5, "pad_token_id": 6}))
    m = torchssm.from_pretrained(tmp_path / "lm")
    assert (m.eos_token_id, m.pad_token_id) == (5, 6)
    assert m.special_tokens() == ([5], 6)


def _bpe_checkpoint(tmp_path, vocab=300):
    from torchssm.models.tokenizer import load_tokenizer, train_bpe

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("def add(a, b):\n    return a + b\n" * 50 + "<|endoftext|>\n", encoding="utf-8")
    tok_dir = tmp_path / "tok"
    train_bpe([corpus], vocab_size=vocab, min_frequency=1).save(tok_dir)
    tok = load_tokenizer(tok_dir)
    torch.manual_seed(0)
    m = CausalLM(LMConfig(layer="mamba", d_model=16, n_layer=1, vocab_size=tok.vocab_size, layer_kwargs={"d_state": 4}))
    m.tokenizer = tok
    m.save_pretrained(tmp_path / "lm")
    return m.eval(), tok


def _args(path, prompt, n=6):
    return argparse.Namespace(
        checkpoint=str(path),
        prompt=prompt,
        max_new_tokens=n,
        temperature=0.0,
        top_k=None,
        top_p=None,
        seed=0,
        device="cpu",
        ignore_eos=True,
    )


def test_cli_uses_the_checkpoint_tokenizer(tmp_path):
    m, tok = _bpe_checkpoint(tmp_path)
    out = io.StringIO()
    assert run_generate(_args(tmp_path / "lm", "def add"), out) == 0
    ids = m.generate(torch.tensor([tok.encode("def add")]), 6, ignore_eos=True)[0, len(tok.encode("def add")) :]
    assert out.getvalue() == "def add" + tok.decode(ids.tolist()) + "\n"


def test_cli_refuses_bytes_for_a_non_byte_vocabulary(tmp_path):
    torch.manual_seed(0)
    CausalLM(
        LMConfig(layer="mamba", d_model=16, n_layer=1, vocab_size=300, layer_kwargs={"d_state": 4})
    ).save_pretrained(tmp_path / "lm")
    assert torchssm.from_pretrained(tmp_path / "lm").tokenizer is None
    with pytest.raises(ValueError, match="not bytes"):
        run_generate(_args(tmp_path / "lm", "hi"), io.StringIO())


@pytest.mark.parametrize("layer", ["mamba", "mamba2", "lru", "transformer"])
def test_fast_step_equals_checked_step(layer):
    """The generation loop's step (checked once, fused layer steps) == CausalLM.step, float64, 5 tokens."""
    m = _lm(layer)
    ids = torch.randint(0, 37, (3, 8), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        _, state = m(ids[:, :3], return_state=True)
        fast = m._step_function(3, state)
        slow_state = state
        for t in range(3, 8):
            want, slow_state = m.step(ids[:, t], slow_state)
            got, state = fast(ids[:, t], state)
            torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="per-layer states"):
        m._step_function(3, state[:1])


def test_fused_step_under_bf16_autocast_keeps_state_dtypes():
    m = _lm().float()
    state = m.init_state(2)
    step = m._step_function(2, state)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        for _ in range(3):
            logits, state = step(torch.tensor([1, 2]), state)
    assert torch.isfinite(logits).all()
    m._check_state(state, 2)  # conv buffers in the parameter dtype, SSM states float32


def test_bench_generate_vs_mambapy_and_contexts(tmp_path):
    """The bench's mambapy twin has the same logits (checked inside), and the context sweep reports rows."""
    pytest.importorskip("mambapy")
    from torchssm.cli import main

    out = tmp_path / "gen.json"
    assert (
        main(
            [
                "bench",
                "generate",
                "--lengths",
                "0",
                "--vs-mambapy",
                "--steps",
                "2",
                "--repeats",
                "1",
                "--d-model",
                "16",
                "--n-layer",
                "1",
                "--contexts",
                "4,12",
                "--layers",
                "mamba",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    data = json.loads(out.read_text())
    assert [r["threads"] for r in data["vs_mambapy"]] == [1, 2]
    assert all(r["torchssm_ms_per_step"] > 0 and r["mambapy_ms_per_step"] > 0 for r in data["vs_mambapy"])
    assert [r["context"] for r in data["vs_context"]] == [4, 12]


def test_pickling_leaves_out_the_compiled_step_cache():
    """torch.save(model) / deepcopy after generate(compile=True): the cached compiled step (a local function)
    is not pickled, the copy has no cache and generates the same tokens."""
    import copy
    import io

    m = _lm().float()
    m._step_function(1, m.init_state(1), compile=True)  # torch.compile is lazy: caches without compiling
    assert hasattr(m, "_compiled_step")
    buf = io.BytesIO()
    torch.save(m, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)
    prompt = torch.tensor([[3, 1, 4, 1, 5]])
    for other in (loaded, copy.deepcopy(m)):
        assert not hasattr(other, "_compiled_step")
        assert torch.equal(other.generate(prompt, 4, ignore_eos=True), m.generate(prompt, 4, ignore_eos=True))


@pytest.mark.slow
def test_compiled_step_generates_the_same_tokens():
    """generate(compile=True) (torch.compile of the step) == eager, and the compiled step is reused."""
    m = _lm().float()
    prompt = torch.tensor([[3, 1, 4, 1, 5]])
    eager = m.generate(prompt, 6, ignore_eos=True)
    assert torch.equal(m.generate(prompt, 6, ignore_eos=True, compile=True), eager)
    first = m._compiled_step
    assert torch.equal(m.generate(prompt, 6, ignore_eos=True, compile=True), eager)
    assert m._compiled_step is first
