"""Error analysis of a recogniser: per-item decoding order, error rates by group, the checkpoint report."""

import math

import pytest
import torch

from torchssm.audio import synthetic
from torchssm.audio.asr import ASRConfig, CTCRecognizer
from torchssm.audio.asr_eval import error_rates_by, plot_error_rates_by, transcribe_dataset, word_hits_by_position
from torchssm.audio.asr_train import train_asr
from torchssm.audio.decoding import analyse_recognizer
from torchssm.audio.synthetic import SpeechDataset

TINY = dict(d_model=16, n_layers=1, n_mels=16, layer_kwargs={"d_state": 4, "expand": 2})


def test_error_rates_by_group():
    refs = ["ab", "cd", "ef", "gh"]
    hyps = ["ab", "cx", "", "gh"]
    out = error_rates_by(refs, hyps, ["m", "f", "f", "m"])
    assert out["m"] == {"cer": 0.0, "wer": 0.0, "n": 2}
    assert out["f"]["cer"] == pytest.approx(3 / 4) and out["f"]["wer"] == pytest.approx(1.0) and out["f"]["n"] == 2
    with pytest.raises(ValueError, match="groups"):
        error_rates_by(refs, hyps, ["m"])


def test_plot_error_rates_by(tmp_path):
    refs, hyps, groups = ["ab", "cd", "ef", "gh"], ["ab", "cx", "", "gh"], ["m", "f", "f", "m"]
    settings = {"one": error_rates_by(refs, hyps, groups), "perfect": error_rates_by(refs, refs, groups)}
    out = plot_error_rates_by(tmp_path / "by.png", settings, group_names={"f": "female"})
    assert out["values"] == {"one": {"f": 75.0, "m": 0.0}, "perfect": {"f": 0.0, "m": 0.0}}
    assert (tmp_path / "by.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plot_error_rates_by(tmp_path / "w.svg", settings, metric="wer")["values"]["one"]["f"] == 100.0
    bad = {"one": settings["one"], "other": error_rates_by(refs, hyps, ["x", "f", "f", "x"])}
    for kwargs, match in [
        (dict(settings=bad), r"setting 'other' has groups \['f', 'x'\]; expected the first setting's \['f', 'm'\]"),
        (dict(settings={}), "at least one setting"),
        (dict(settings=settings, metric="ser"), "metric must be 'cer' or 'wer'"),
    ]:
        with pytest.raises(ValueError, match=match):
            plot_error_rates_by(tmp_path / "bad.png", **kwargs)
    assert not (tmp_path / "bad.png").exists()


def test_word_hits_by_position():
    refs = ["a b c d e f", "g h i"]
    hyps = ["a b c x", "g h z"]  # thirds: (a b, g) (c d, h) (e f, i); d -> x, e f deleted, i -> z
    assert word_hits_by_position(refs, hyps, 3) == [1.0, pytest.approx(2 / 3), 0.0]
    assert word_hits_by_position(refs, refs, 2) == [1.0, 1.0]
    with pytest.raises(ValueError, match="bins"):
        word_hits_by_position(refs, hyps, 0)


def test_transcribe_dataset_keeps_dataset_order():
    torch.manual_seed(0)
    model = CTCRecognizer(ASRConfig(**TINY)).eval()
    lengths = [9000, 3000, 6000, 4500, 7000]  # decoded in length order, in batches of 2
    audio = [torch.randn(n).numpy() * 0.1 for n in lengths]
    ds = SpeechDataset(audio, [f"item {c}" for c in "abcde"])
    refs, hyps = transcribe_dataset(model, ds, batch_size=2)
    assert refs == [f"item {c}" for c in "abcde"]
    alone = [model.transcribe(torch.as_tensor(a)[None], torch.tensor([len(a)]))[0] for a in audio]
    assert hyps == alone
    assert transcribe_dataset(model, ds, limit=2)[0] == ["item a", "item b"]


@pytest.mark.slow  # about 8 s: eSpeak NG speaks 12 sentences, the stdlib docstrings are parsed
def test_analyse_recognizer_on_a_tiny_run(tmp_path):
    pytest.importorskip("espeakng_loader")
    task = {"name": "spoken_sentences", "n_train": 4, "n_val": 2, "n_test": 6, "voice_split": "speakers"}
    cfg = {"task": task, "model": {"kind": "ctc", **TINY}, "train": {"epochs": 1, "out_dir": str(tmp_path / "run")}}
    train_asr(cfg, data_dir=tmp_path, log=lambda s: None)
    out = analyse_recognizer(tmp_path / "run", n_train=3, data_dir=tmp_path)
    assert out["train"]["n"] == 3 and out["val"]["n"] == 2 and out["test"]["n"] == 6
    families = [synthetic.voice_family(synthetic.item_voice("test", i, 0, "speakers")) for i in range(6)]
    by_family = out["test_by_family"]
    assert {k: v["n"] for k, v in by_family.items()} == {f: families.count(f) for f in set(families)}
    assert sum(v["n"] for v in out["test_by_variant_heard"].values()) == 6
    assert len(out["test_word_hits_by_third"]) == 3
    assert out["test_by_sentence"]["with a held-out word"]["n"] == 3  # half of n_test (synthetic.py)
    assert out["test_by_sentence"]["seen words only"]["n"] == 3
    accents = {synthetic.item_voice("test", i, 0, "speakers").partition("+")[0] for i in range(6)}
    assert set(out["test_by_accent"]) == accents <= set(synthetic.TEST_ACCENTS)
    assert out["test"]["heldout_words_n"] >= 1 and out["test"]["seen_words_n"] >= 1
    assert 0.0 <= out["test"]["seen_word_cer"] and not math.isnan(out["test"]["heldout_cer"])
