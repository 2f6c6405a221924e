"""The recognisers: shapes, padding independence, step == teacher forcing, streaming == offline, a tiny fit."""

import pytest
import torch
from _speech_common import toy_asr_task

from torchssm.audio.asr import (
    ASRConfig,
    CausalConv1d,
    CTCRecognizer,
    SambaASR,
    build_recognizer,
    sinusoidal_positions,
)
from torchssm.audio.asr_eval import evaluate_asr
from torchssm.audio.asr_runs import load_recognizer
from torchssm.audio.asr_train import train_asr
from torchssm.audio.batches import collate
from torchssm.audio.streaming import StreamingRecognizer, stream_audio
from torchssm.audio.text import CharVocabulary

TINY = dict(d_model=16, n_layers=2, n_mels=16, n_decoder_layers=1, layer_kwargs={"d_state": 4, "expand": 2})


def test_causal_conv_stream_equals_offline():
    torch.manual_seed(0)
    conv = CausalConv1d(3, 5).double()
    x = torch.randn(2, 11, 3, dtype=torch.float64)
    outs, buffer = [], None
    for start in (0, 1, 4, 5, 9):
        stop = {0: 1, 1: 4, 4: 5, 5: 9, 9: 11}[start]
        out, buffer = conv.stream(x[:, start:stop], buffer)
        outs.append(out)
    torch.testing.assert_close(torch.cat(outs, 1), conv(x))
    assert conv(x).shape[1] == 6


def test_vocabulary():
    vocab = CharVocabulary()
    assert vocab.decode(vocab.encode("it's a test")) == "it's a test"
    assert len(vocab) == 31 and vocab.n_ctc == 29
    with pytest.raises(ValueError, match="outside the alphabet"):
        vocab.encode("caf\u00e9")
    with pytest.raises(ValueError, match="empty"):
        vocab.encode(" ")


@pytest.mark.parametrize(
    "cross_order, cross_connection", [("forward", "mamba"), ("reversed", "mamba"), ("forward", "attention")]
)
def test_samba_padding_and_step(cross_order, cross_connection):
    torch.manual_seed(0)
    cfg = ASRConfig(kind="samba", cross_order=cross_order, cross_connection=cross_connection, **TINY)
    model = SambaASR(cfg).double().eval()
    audio = torch.randn(2, 6000, dtype=torch.float64)
    lengths = torch.tensor([6000, 3500])
    tokens = torch.tensor([[29, 3, 4], [29, 6, 7]])
    batched = model.logits(audio, lengths, tokens)
    alone = model.logits(audio[1:, :3500], lengths[1:], tokens[1:])
    torch.testing.assert_close(batched[1], alone[0])  # padding does not leak into the cross-connection
    states = model._start(audio[1:, :3500], lengths[1:])
    for u in range(3):  # decoding step by step == teacher forcing
        logp, states = model._next_logprobs(tokens[1:, u], states)
        torch.testing.assert_close(logp[0], torch.log_softmax(alone[0, u], -1))
    assert len(model.transcribe(audio, lengths, beam=2, max_tokens=5)) == 2


def test_both_kinds_of_recogniser_take_transcribe_arguments_in_one_order():
    """audio, lengths, beam, lm, alpha, beta positionally for CTC and Samba-ASR alike; Samba's max_tokens by name."""
    import inspect

    from torchssm.audio.asr import CTCTranscription

    ctc = list(inspect.signature(CTCTranscription.transcribe).parameters.values())
    samba = list(inspect.signature(SambaASR.transcribe).parameters.values())
    assert [(p.name, p.default) for p in samba[: len(ctc)]] == [(p.name, p.default) for p in ctc]
    assert [(p.name, p.kind) for p in samba[len(ctc) :]] == [("max_tokens", inspect.Parameter.KEYWORD_ONLY)]


def test_samba_reversed_memory_is_each_utterance_backwards():
    torch.manual_seed(0)
    forward = SambaASR(ASRConfig(kind="samba", **TINY)).double().eval()
    backward = SambaASR(ASRConfig(kind="samba", cross_order="reversed", **TINY)).double().eval()
    backward.load_state_dict(forward.state_dict())
    audio = torch.randn(2, 6000, dtype=torch.float64)
    lengths = torch.tensor([6000, 3500])
    m_fwd, r_fwd = forward.memory(audio, lengths)
    m_bwd, r_bwd = backward.memory(audio, lengths)
    torch.testing.assert_close(r_bwd, r_fwd)  # same padding in front, same reset position
    frames = backward.encoder.frame_lengths(lengths).tolist()
    t = m_fwd.shape[1]
    assert frames[1] < frames[0] == t
    for i, n in enumerate(frames):
        torch.testing.assert_close(m_bwd[i, t - n :], m_fwd[i, t - n :].flip(0))
        assert torch.count_nonzero(m_bwd[i, : t - n]) == 0
        assert not torch.allclose(m_bwd[i, t - n :], m_fwd[i, t - n :])  # the order did change
    tokens = torch.tensor([[29, 3, 4], [29, 6, 7]])
    assert not torch.allclose(forward.logits(audio, lengths, tokens), backward.logits(audio, lengths, tokens))


def test_cross_attention_reads_single_frames():
    """cross_connection "attention": each decoder position sees every frame; the memory is the encoded frames plus
    Vaswani et al.'s sinusoidal positions, and a change to one frame reaches the very first text position."""
    pe = sinusoidal_positions(50, 6, dtype=torch.float64)
    torch.testing.assert_close(pe[0], torch.tensor([0.0, 1.0, 0.0, 1.0, 0.0, 1.0], dtype=torch.float64))
    p, i = 37, 1  # PE(p, 2i) = sin(p / 10000^(2i/d)), PE(p, 2i+1) = cos(p / 10000^(2i/d))
    angle = torch.tensor(p / 10000 ** (2 * i / 6), dtype=torch.float64)
    torch.testing.assert_close(pe[p, 2 * i : 2 * i + 2], torch.stack([angle.sin(), angle.cos()]))
    assert sinusoidal_positions(4, 5).shape == (4, 5)
    torch.manual_seed(0)
    model = SambaASR(ASRConfig(kind="samba", cross_connection="attention", **TINY)).double().eval()
    audio, lengths = torch.randn(1, 6000, dtype=torch.float64), torch.tensor([6000])
    encoded = model.encoder(audio, lengths)
    memory, padding = model._memory_of(encoded, lengths)
    torch.testing.assert_close(memory, encoded + sinusoidal_positions(encoded.shape[1], 16, dtype=torch.float64))
    assert not padding.any()
    tokens = torch.tensor([[model.vocab.bos]])
    first = model._decode((memory, padding), tokens)
    moved = memory.clone()
    moved[0, -1] += 1.0  # the last frame only
    assert not torch.allclose(model._decode((moved, padding), tokens), first)
    padding[0, -1] = True  # ... unless it is masked out as padding
    torch.testing.assert_close(model._decode((moved, padding), tokens), model._decode((memory, padding), tokens))


def test_ctc_streaming_equals_offline():
    torch.manual_seed(0)
    model = CTCRecognizer(ASRConfig(**TINY)).double().eval()
    audio = torch.randn(7000, dtype=torch.float64)
    offline = model(audio[None])[0]
    for chunk_ms in (10.0, 20.0, 13.7):
        emissions, timing = stream_audio(model, audio, chunk_ms)
        torch.testing.assert_close(emissions, offline, rtol=1e-10, atol=1e-10)
        assert timing["rtf"] > 0 and timing["chunks"] == -(-7000 // round(chunk_ms * 16))
    stream = StreamingRecognizer(model)
    stream.feed(audio[None, :4000])
    stream.feed(audio[None, 4000:])
    assert stream.transcript() == model.transcribe(audio[None], torch.tensor([7000]))[0]
    with pytest.raises(TypeError, match="CTCRecognizer"):
        StreamingRecognizer(SambaASR(ASRConfig(kind="samba", **TINY)))


def test_bad_config():
    with pytest.raises(ValueError, match="kind"):
        ASRConfig(kind="rnnt")
    with pytest.raises(ValueError, match="cross_order must be 'forward' or 'reversed'"):
        ASRConfig(kind="samba", cross_order="backward")
    with pytest.raises(ValueError, match="cross_connection must be 'mamba' or 'attention', got 'lstm'"):
        ASRConfig(kind="samba", cross_connection="lstm")
    with pytest.raises(ValueError, match="leave cross_order 'forward' with cross_connection 'attention'"):
        ASRConfig(kind="samba", cross_connection="attention", cross_order="reversed")
    with pytest.raises(ValueError, match="kind must be 'samba', got 'ctc'"):
        ASRConfig(kind="ctc", cross_connection="attention")
    with pytest.raises(ValueError, match="cross_heads must be a positive divisor of d_model=16, got 3"):
        ASRConfig(kind="samba", cross_connection="attention", cross_heads=3, d_model=16)
    ASRConfig(d_model=30), ASRConfig(kind="samba", d_model=30)  # cross_heads only matters to cross-attention
    with pytest.raises(ValueError, match="causal"):
        build_recognizer(
            ASRConfig(layer="lru", layer_kwargs={"bidirectional": True}, d_model=16, n_layers=1, n_mels=16)
        )


@pytest.mark.parametrize("kind", ["ctc", pytest.param("samba", marks=pytest.mark.slow)])
def test_tiny_model_fits_a_few_clips(tmp_path, kind):
    task = toy_asr_task()
    cfg = {
        "model": {"kind": kind, **TINY},
        "train": {"epochs": 40, "batch_size": 8, "lr": 1e-2, "warmup_steps": 0, "out_dir": str(tmp_path)},
    }
    result = train_asr(cfg, task=task, log=lambda s: None)
    assert result["test_greedy"]["cer"] == 0.0 and result["test_greedy"]["heldout_cer"] == 0.0
    model = load_recognizer(tmp_path)
    batch = collate([task.test[i] for i in range(2)], model.vocab)
    assert model.transcribe(batch["audio"], batch["audio_lengths"]) == ["a", "b"]
    assert evaluate_asr(model, task.test)["cer"] == 0.0


class _Clocks:
    """Stand-in for asr_train's ``time`` module: CPU and wall clocks that advance by set amounts per reading."""

    def __init__(self, cpu_per_read: float, wall_per_read: float):
        self.cpu = self.wall = 0.0
        self.cpu_per_read, self.wall_per_read = cpu_per_read, wall_per_read

    def process_time(self) -> float:
        self.cpu += self.cpu_per_read
        return self.cpu

    def perf_counter(self) -> float:
        self.wall += self.wall_per_read
        return self.wall


@pytest.mark.parametrize("cpu_per_read, wall_per_read, stops", [(20.0, 0.0, True), (1e-3, 3600.0, False)])
def test_max_cpu_minutes_caps_cpu_time_not_wall_time(tmp_path, monkeypatch, cpu_per_read, wall_per_read, stops):
    """train.max_cpu_minutes stops on the process's CPU time; hours of wall time (a loaded machine) do not."""
    from torchssm.audio import asr_train

    monkeypatch.setattr(asr_train, "time", _Clocks(cpu_per_read, wall_per_read))
    cfg = {
        "model": {"kind": "ctc", **TINY},
        "train": {"epochs": 3, "batch_size": 4, "warmup_steps": 0, "out_dir": str(tmp_path), "max_cpu_minutes": 1.0},
    }
    cfg["train"].update(test_beam=1, test_limit=1)
    logs = []
    result = train_asr(cfg, task=toy_asr_task(), log=logs.append)
    assert result["stopped_early"] is stops
    # 2 steps per epoch; the CPU clock is read at the start, after each step and for each epoch's record:
    # at 20 s a read, 60 s have passed after the first step of epoch 2
    assert len(result["history"]) == (2 if stops else 3)
    assert any("CPU minutes" in line for line in logs) is stops
    assert logs[-1].startswith("(decoded without a language model")  # the end test is not the numbers of record


def test_max_minutes_is_refused_with_its_replacement():
    with pytest.raises(ValueError, match="max_cpu_minutes"):
        train_asr({"train": {"max_minutes": 5}}, task=toy_asr_task(), log=lambda s: None)


def test_ctc_training_counts_the_utterances_it_cannot_align(tmp_path):
    """One toy utterance gets a transcript longer than its encoder frames: each epoch's record says 1."""
    from torchssm.audio.asr import encoder_frames

    task = toy_asr_task()
    frames = int(encoder_frames(torch.tensor([4000]))[0])
    task.train.texts[0] = "ab" * (frames // 2 + 1)  # frames + 1 or + 2 labels, no repeats
    cfg = {
        "model": {"kind": "ctc", **TINY},
        "train": {"epochs": 2, "batch_size": 4, "warmup_steps": 0, "out_dir": str(tmp_path), "test_beam": 1},
    }
    result = train_asr(cfg, task=task, log=lambda s: None)
    assert [r["ctc_dropped"] for r in result["history"]] == [1, 1]


def test_resume_after_a_mid_epoch_cpu_stop_ends_where_a_straight_run_ends(tmp_path, monkeypatch):
    """train.max_cpu_minutes stops inside epoch 2 and saves there; resume=True (no cap) replays the epoch's
    order and speed draws and continues with its next batch: the weights equal a straight run's, bit for bit."""
    from safetensors.torch import load_file

    from torchssm.audio import asr_train
    from torchssm.train.checkpoint import WEIGHTS, read_checkpoint_state

    def config(out, cap=0.0):
        train = {"epochs": 3, "batch_size": 4, "warmup_steps": 0, "out_dir": str(out), "max_cpu_minutes": cap}
        train.update(test_beam=1, test_limit=1, speed_perturb=[0.9, 1.0, 1.1])
        return {"model": {"kind": "ctc", **TINY}, "train": train}

    straight = train_asr(config(tmp_path / "a"), task=toy_asr_task(), log=lambda s: None)
    with monkeypatch.context() as m:
        m.setattr(asr_train, "time", _Clocks(20.0, 0.0))  # past 60 s after the first step of epoch 2
        first = train_asr(config(tmp_path / "b", cap=1.0), task=toy_asr_task(), log=lambda s: None)
    assert first["stopped_early"] and first["history"][-1]["epoch_batches"] == 1  # 2 batches per epoch
    state = read_checkpoint_state(tmp_path / "b" / "last")
    assert (state["epoch"], state["epoch_batches"]) == (1, 1)
    assert state["environment"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability()  # the host
    logs = []
    resumed = train_asr(config(tmp_path / "b"), task=toy_asr_task(), log=logs.append, resume=True)
    assert "resumed from" in logs[0] and "at epoch 1 + 1 batches" in logs[0]
    assert [r["epoch"] for r in resumed["history"]] == [1, 2, 3] and not resumed["stopped_early"]
    wa, wb = load_file(tmp_path / "a" / "last" / WEIGHTS), load_file(tmp_path / "b" / "last" / WEIGHTS)
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], rtol=0, atol=0, msg=k)
    assert resumed["history"][-1]["train_loss"] == straight["history"][-1]["train_loss"]
    with pytest.raises(ValueError, match=r"config differs from the run's \(train.lr: checkpoint 0.002 != now 0.5\)"):
        train_asr(
            {**config(tmp_path / "b"), "train": {**config(tmp_path / "b")["train"], "lr": 0.5}},
            task=toy_asr_task(),
            log=lambda s: None,
            resume=True,
        )
    with pytest.raises(FileNotFoundError, match="no checkpoint to resume"):
        train_asr(config(tmp_path / "c"), task=toy_asr_task(), log=lambda s: None, resume=True)


def test_max_cpu_minutes_is_a_budget_of_one_call(tmp_path, monkeypatch):
    """docs/speech.md: a resumed call gets train.max_cpu_minutes afresh, and its history's cpu_s count from its
    own start (one clock running through both calls, as in one process: a cumulative count would stop at once)."""
    from torchssm.audio import asr_train

    train = {"epochs": 3, "batch_size": 4, "warmup_steps": 0, "out_dir": str(tmp_path), "max_cpu_minutes": 1.0}
    cfg = {"model": {"kind": "ctc", **TINY}, "train": {**train, "test_beam": 1, "test_limit": 1}}
    clock = _Clocks(20.0, 0.0)
    monkeypatch.setattr(asr_train, "time", clock)
    first = train_asr(cfg, task=toy_asr_task(), log=lambda s: None)
    assert first["stopped_early"] and first["history"][-1]["epoch_batches"] == 1  # stopped inside epoch 2
    cpu_of_first_call = clock.cpu
    resumed = train_asr(cfg, task=toy_asr_task(), log=lambda s: None, resume=True)
    assert [r["epoch"] for r in resumed["history"]] == [1, 2, 3]  # the part-done epoch 2's record replaced
    new = resumed["history"][1:]  # the records of the resumed call
    assert [r["epoch"] for r in new] == [2, 3] and all("epoch_batches" not in r for r in new)
    assert all(0 < r["cpu_s"] < cpu_of_first_call for r in new)
    assert clock.cpu - cpu_of_first_call > 60.0  # it used more than the cap's 60 s on top of the first call's
