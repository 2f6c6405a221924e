"""A test-like val for spoken_sentences: task.n_val_heldout (sentences of held-out words in val, train and test
unchanged) and the decoding-time override (``val_heldout`` of saved_task_config / tuned_decoding, ``speech decode
--val-heldout``, ``speech lm-text --val-heldout``)."""

import json

import pytest
from _speech_common import saved_toy_runs, toy_asr_task

from torchssm.audio import asr_runs, decoding, prose, synthetic
from torchssm.cli import main
from torchssm.data.registry import TaskData, build_task
from torchssm.train.checkpoint import save_checkpoint

RARE = "quartz violet ember cobalt saffron indigo marble walnut".split()


@pytest.fixture
def rare_word_prose(monkeypatch):
    """Sentences of four common words, plus three with each rare word (held-out candidates: used 2-5 times)."""
    common = "alpha beta gamma delta".split()
    sentences = [f"{a} {b} {c}" for a in common for b in common for c in common]  # 64 ordinary sentences
    sentences += [f"{common[k]} {word} {common[(k + 1) % 4]}" for word in RARE for k in range(3)]  # 24 with one
    monkeypatch.setattr(prose, "cached_stdlib_sentences", lambda max_words, data_dir: sentences)


SIZES = dict(seed=0, n_train=30, n_val=5, n_test=10, n_heldout_words=4)


def test_val_heldout_adds_unseen_word_sentences_to_val_alone(tmp_path, rare_word_prose):
    before = synthetic.sentence_texts(tmp_path, **SIZES)
    after = synthetic.sentence_texts(tmp_path, **SIZES, n_val_heldout=3)
    for key in ("train", "test", "heldout"):
        assert after[key] == before[key]
    held = set(before["heldout"])
    assert after["val"][:5] == before["val"] and not any(held & set(s.split()) for s in before["val"])
    added = after["val"][5:]
    assert len(added) == 3 and all(held & set(s.split()) for s in added)  # each has a held-out word
    assert not set(added) & set(before["test"]) and not set(added) & set(before["train"])
    pool = synthetic.split_sentences(prose.cached_stdlib_sentences(12, None), 0, 4)["test_pool"]
    n_test_heldout = sum(bool(held & set(s.split())) for s in before["test"])
    assert n_test_heldout == 5 and added == pool[5:8]  # the pool's next sentences after the test's
    left = len(pool) - n_test_heldout
    assert len(synthetic.sentence_texts(tmp_path, **SIZES, n_val_heldout=left)["val"]) == 5 + left
    with pytest.raises(ValueError, match=f"n_val_heldout={left + 1} but only {left} sentences with a held-out word"):
        synthetic.sentence_texts(tmp_path, **SIZES, n_val_heldout=left + 1)
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="n_val_heldout must be a non-negative int"):
            synthetic.sentence_texts(tmp_path, **SIZES, n_val_heldout=bad)


def test_the_task_with_val_heldout_keeps_the_first_val_clips(tmp_path, rare_word_prose):
    kw = dict(SIZES, n_train=3, n_val=1, n_test=2, snr_db=None)
    before = build_task("spoken_sentences", data_dir=tmp_path, **kw)
    after = build_task("spoken_sentences", data_dir=tmp_path, **kw, n_val_heldout=2)
    texts = synthetic.sentence_texts(tmp_path, **{k: kw[k] for k in SIZES}, n_val_heldout=2)
    assert [after.val[i]["text"] for i in range(3)] == texts["val"] and len(after.test) == len(before.test)
    assert (after.val[0]["audio"] == before.val[0]["audio"]).all()  # clip i is drawn from [seed, val, i] as before
    for split in ("train", "test"):
        assert all((getattr(after, split)[i]["audio"] == getattr(before, split)[i]["audio"]).all() for i in range(2))


def _saved_run(path, task: dict) -> str:
    from _speech_common import tiny_ctc_recognizers

    (model,) = tiny_ctc_recognizers(1)
    save_checkpoint(path / "last", model, config={"model": model.cfg.to_dict(), "task": task})
    return str(path)


def test_saved_task_config_redraws_val_of_spoken_sentences_only(tmp_path):
    run = _saved_run(tmp_path / "run", {"name": "spoken_sentences", "n_val": 7})
    assert asr_runs.saved_task_config(run)[1] == {"name": "spoken_sentences", "n_val": 7}
    assert asr_runs.saved_task_config(run, 40)[1] == {"name": "spoken_sentences", "n_val": 7, "n_val_heldout": 40}
    assert asr_runs.saved_task_config(run, 0)[1]["n_val_heldout"] == 0  # 0: a run trained with some, decoded without
    other = _saved_run(tmp_path / "other", {"name": "toy"})
    with pytest.raises(ValueError, match="val_heldout re-draws the val split of spoken_sentences; .* trained on toy"):
        asr_runs.saved_task_config(other, 10)


def test_speech_decode_chooses_on_the_redrawn_val(tmp_path, monkeypatch, capsys):
    runs = saved_toy_runs(tmp_path, monkeypatch)
    toy = toy_asr_task()
    asked = []

    def task_with_val(path, data_dir=None, val_heldout=None):  # val: the first 2 + val_heldout items of the tones
        asked.append(val_heldout)
        items = [toy.test[i] for i in range(2 + (val_heldout or 0))]
        val = synthetic.SpeechDataset([x["audio"] for x in items], [x["text"] for x in items])
        return path, TaskData(info=toy.info, train=toy.train, val=val, test=toy.test, extra=toy.extra)

    monkeypatch.setattr(asr_runs, "checkpoint_task", task_with_val)
    grid = ["--orders", "2", "--alphas", "0", "0.5", "--betas", "1", "--beam", "2"]
    out = tmp_path / "decode.json"
    assert main(["speech", "decode", *map(str, runs), *grid, "--val-heldout", "3", "--out", str(out)]) == 0
    saved = json.loads(out.read_text())
    assert asked == [3] and (saved["val_heldout"], saved["val_size"]) == (3, 5)  # chosen on the 5 items of val
    assert len(saved["test_transcripts"]) == len(toy.test)
    assert "val: 5 sentences, 3 of them with held-out words (--val-heldout)" in capsys.readouterr().out


def test_speech_lm_text_leaves_out_the_redrawn_vals_docstrings(tmp_path, capsys, monkeypatch, rare_word_prose):
    run = _saved_run(tmp_path / "run", {"name": "spoken_sentences", **SIZES})
    texts = synthetic.sentence_texts(tmp_path, **SIZES, n_val_heldout=3)
    other_test = [s for s in texts["test"] if s not in texts["val"]][0]
    docs = [
        f"{texts['val'][-1].capitalize()}. Kappa lambda.",
        "Sigma omega tau.",
        f"{other_test.capitalize()}. Zeta eta.",
    ]
    monkeypatch.setattr(prose, "stdlib_docstrings", lambda: iter(docs))
    out = [tmp_path / "lm.txt", tmp_path / "lm_vh.txt"]
    cmd = ["speech", "lm-text", "--checkpoint", run, "--data-dir", str(tmp_path)]
    assert main([*cmd, "--out", str(out[0])]) == 0 and main([*cmd, "--out", str(out[1]), "--val-heldout", "3"]) == 0
    assert out[0].read_text() == "kappa lambda\nsigma omega tau\n"  # the test sentence's docstring left out
    assert out[1].read_text() == "sigma omega tau\n"  # and the new val sentence's
    assert main([*cmd, "--out", str(tmp_path / "x.txt"), "--val-heldout", "99"]) == 2
    assert "n_val_heldout=99 but only" in capsys.readouterr().err and not (tmp_path / "x.txt").exists()


def test_the_standalone_readings_take_val_heldout_too(tmp_path, monkeypatch):
    """lm_grid and evaluate_checkpoint read the re-drawn val; analyse_recognizer re-draws it through the run's saved
    task, so a run of another task is refused as the decoding of record refuses it."""
    runs = saved_toy_runs(tmp_path, monkeypatch)
    toy = toy_asr_task()
    asked = []

    def task_with_val(path, data_dir=None, val_heldout=None):
        asked.append(val_heldout)
        items = [toy.test[i] for i in range(2 + (val_heldout or 0))]
        val = synthetic.SpeechDataset([x["audio"] for x in items], [x["text"] for x in items])
        return path, TaskData(info=toy.info, train=toy.train, val=val, test=toy.test, extra=toy.extra)

    monkeypatch.setattr(asr_runs, "checkpoint_task", task_with_val)
    grid = decoding.lm_grid(runs[0], orders=(2,), alphas=(0.5,), betas=(1.0,), beam=2, log=str, val_heldout=3)
    direct = decoding.evaluate_checkpoint(runs[0], "val", beam=2, lm_order=2, alpha=0.5, beta=1.0, val_heldout=3)
    assert asked == [3, 3] and grid["rows"][0]["cer"] == direct["cer"]
    assert decoding.evaluate_checkpoint(runs[0], "val", val_heldout=1)["n"] == 3  # 2 + 1 items
    with pytest.raises(ValueError, match="val_heldout re-draws the val split of spoken_sentences"):
        decoding.analyse_recognizer(runs[0], val_heldout=3)
