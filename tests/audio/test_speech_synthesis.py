"""spoken_commands / spoken_sentences: voice split, determinism, caching, held-out words."""

import numpy as np
import pytest
import torch
from _speech_common import tiny_sentences

pytest.importorskip("espeakng_loader")

from torchssm.audio import synthetic  # noqa: E402
from torchssm.audio.espeak import ACCENTS  # noqa: E402
from torchssm.data.registry import build_task  # noqa: E402


@pytest.mark.parametrize("voice_split", ["families", "speakers"])
def test_no_test_voice_is_heard_in_training(voice_split):
    split = {name: set(voices) for name, voices in synthetic.VOICE_SPLITS[voice_split].items()}
    assert not split["train"] & split["test"] and not split["val"] & split["test"] and not split["train"] & split["val"]
    accent = lambda v: v.split("+")[0]  # noqa: E731
    variant = lambda v: v.split("+")[1]  # noqa: E731
    assert not {accent(v) for v in split["train"]} & {accent(v) for v in split["test"]}
    assert not {accent(v) for v in split["val"]} & {accent(v) for v in split["train"] | split["test"]}
    assert {accent(v) for s in split.values() for v in s} <= set(ACCENTS)
    families = {name: {synthetic.voice_family(v) for v in voices} for name, voices in split.items()}
    if voice_split == "families":  # whole families held out: no test variant is a training variant
        assert not {variant(v) for v in split["train"]} & {variant(v) for v in split["test"]}
        assert families["train"] == {"male"} and families["test"] == {"female", "whisper", "croak"}
    else:  # held-out speakers: every family in training and test, two variants in test only
        assert families["train"] == families["test"] == {"male", "female", "whisper", "croak"}
        test_only = {variant(v) for v in split["test"]} - {variant(v) for v in split["train"]}
        assert test_only == set(synthetic.TEST_ONLY_VARIANTS) == {"m7", "f5"}
    with pytest.raises(ValueError, match="voice_split must be one of"):
        synthetic.split_voices("genders", "train")


def test_voice_split_changes_the_voices_and_the_cache(tmp_path, heard_voices):
    heard = heard_voices
    kw = dict(n_train=40, n_val=0, n_test=2, snr_db=None, features="logmel", n_mels=8)
    build_task("spoken_commands", data_dir=tmp_path, **kw)
    build_task("spoken_commands", data_dir=tmp_path, voice_split="speakers", **kw)
    assert len(list(tmp_path.glob("spoken_commands_*.npz"))) == 4  # train + test per split: separate caches
    train_voices = {"families": set(heard[:40]), "speakers": set(heard[42:82])}
    assert train_voices["families"] <= set(synthetic.VOICE_SPLITS["families"]["train"])
    assert train_voices["speakers"] <= set(synthetic.VOICE_SPLITS["speakers"]["train"])
    assert {synthetic.voice_family(v) for v in train_voices["speakers"]} - {"male"}  # not only male voices
    with pytest.raises(ValueError, match="voice_split must be one of"):
        build_task("spoken_commands", data_dir=tmp_path, voice_split="genders", **kw)
    with pytest.raises(ValueError, match="voice_split must be one of"):
        build_task("spoken_sentences", data_dir=tmp_path, voice_split="genders")


def test_spoken_commands_deterministic_and_cached(tmp_path):
    kw = dict(n_train=10, n_val=0, n_test=10, snr_db=10.0)
    a = build_task("spoken_commands", data_dir=tmp_path, **kw)
    assert a.info.length == 16000 and a.info.d_output == 10 and a.val is None
    x = a.train.tensors["inputs"]
    assert x.shape == (10, 16000, 1) and a.train.tensors["targets"].tolist() == list(range(10))
    cache = sorted(tmp_path.glob("spoken_commands_*.npz"))
    assert len(cache) == 2
    b = build_task("spoken_commands", data_dir=tmp_path / "other", **kw)  # regenerated from scratch
    torch.testing.assert_close(b.train.tensors["inputs"], x, rtol=0, atol=0)
    c = build_task("spoken_commands", data_dir=tmp_path, seed=1, **kw)
    assert not torch.equal(c.train.tensors["inputs"], x)
    clean = build_task("spoken_commands", data_dir=tmp_path, n_train=10, n_val=0, n_test=10, snr_db=None)
    noise = x[..., 0] - clean.train.tensors["inputs"][..., 0]
    snr = 10 * torch.log10(clean.train.tensors["inputs"][..., 0].pow(2).mean(1) / noise.pow(2).mean(1))
    torch.testing.assert_close(snr, torch.full((10,), 10.0), atol=1e-3, rtol=0)
    mel = build_task("spoken_commands", data_dir=tmp_path, features="logmel", n_mels=16, **kw)
    assert mel.train.tensors["inputs"].shape == (10, 98, 16)


def test_spoken_commands_bad_options(tmp_path):
    with pytest.raises(ValueError, match="features"):
        synthetic.build_spoken_commands(tmp_path, features="mfcc")
    with pytest.raises(ValueError, match="noise"):
        synthetic.build_spoken_commands(tmp_path, noise="purple")
    with pytest.raises(ValueError, match="n_train"):
        synthetic.build_spoken_commands(tmp_path, n_train=0)


def test_heldout_words_never_in_training():
    sentences = [
        "the cat sat down",
        "a dog ran away fast",
        "the quick brown fox jumped",
        "the dog sat",
        "brown cows eat grass",
        "quick brown dogs run",
        "cows sat",
        "a cat ran quick",
    ]
    parts = synthetic.split_sentences(sentences, seed=0, n_heldout_words=1)
    held = set(parts["heldout"])
    assert len(held) == 1 and all(not held & set(s.split()) for s in parts["train"])
    assert parts["test_pool"] and all(held & set(s.split()) for s in parts["test_pool"])
    assert sorted(parts["train"] + parts["test_pool"]) == sorted(sentences)


def test_spoken_sentences_tiny(tmp_path, monkeypatch):
    from torchssm.audio import prose

    words = "alpha beta gamma delta epsilon zeta theta kappa lambda sigma omega".split()
    rng = np.random.default_rng(0)
    sentences = {" ".join(rng.choice(words, 4)) for _ in range(400)}
    sentences = sorted(sentences | {"alpha rarely beta", "rarely gamma delta"})  # "rarely": the one candidate
    monkeypatch.setattr(prose, "cached_stdlib_sentences", lambda max_words, data_dir: sentences)
    task = build_task("spoken_sentences", data_dir=tmp_path, n_train=3, n_val=0, n_test=2, n_heldout_words=1)
    assert len(task.train) == 3 and len(task.test) == 2
    item = task.test[0]
    assert item["audio"].dtype == np.float32 and len(item["audio"]) > 8000 and item["text"]
    held = set(task.extra["heldout_words"])
    assert len(held) == 1 and not any(held & set(task.train[i]["text"].split()) for i in range(3))
    assert held & set(task.test[0]["text"].split())  # the first test sentences carry held-out words


@pytest.mark.slow  # parses every module of the standard library (~5 s unloaded)
def test_stdlib_prose_vocabulary(tmp_path):
    from torchssm.audio.prose import cached_stdlib_sentences, clean_sentence

    sentences = cached_stdlib_sentences(12, tmp_path)
    vocabulary = {w for s in sentences for w in s.split()}
    assert len(sentences) > 2000 and len(vocabulary) >= 2000
    assert cached_stdlib_sentences(12, tmp_path) == sentences  # read back from the cache
    assert clean_sentence("Return the value, or None.") == "return the value or none"
    assert clean_sentence("Call f(x) twice.") is None and clean_sentence("lower case start.") is None


def test_language_model_text_leaves_out_what_is_evaluated(monkeypatch):
    """Docstrings holding a val / test sentence are dropped whole, sentences with a held-out word one by one, and
    the training transcripts (the model has them already)."""
    from torchssm.audio import prose

    docs = [
        "Open the file. Read the val sentence here.",  # holds a val sentence: none of it
        "Close the door. Write it. Speak secretword now.",  # "secretword" is held out
        "Train this sentence. New text for the model. Call f(x) twice.",  # a training transcript; code
    ]
    texts = {
        "train": ["train this sentence"],
        "val": ["read the val sentence here"],
        "test": [],
        "heldout": ["secretword"],
    }
    monkeypatch.setattr(prose, "stdlib_docstrings", lambda: iter(docs))
    assert prose.language_model_text(texts) == ["close the door", "new text for the model", "write it"]
    assert prose.language_model_text(texts, max_words=3) == ["close the door", "write it"]  # val docstring still out
    with pytest.raises(ValueError, match=r"missing \['heldout', 'test'\]"):
        prose.language_model_text({"train": [], "val": []})
    with pytest.raises(ValueError, match="max_words must be an int >= 1, got 0"):
        prose.language_model_text(texts, max_words=0)


def _write_package(root, name: str) -> None:
    """A tiny installed-looking package: a module and a subpackage with docstrings, and a tests folder."""
    (root / name / "sub").mkdir(parents=True)
    (root / name / "tests").mkdir()
    (root / name / "__init__.py").write_text('"""Package text here. Read the val sentence here."""\n')
    (root / name / "sub" / "__init__.py").write_text("")
    (root / name / "sub" / "core.py").write_text(
        'class Thing:\n    """Make a thing. It holds secretword too."""\n\n    def go(self):\n        """Go now."""\n'
    )
    (root / name / "tests" / "test_core.py").write_text('"""Never this text."""\n')


def test_package_docstrings_add_installed_packages_text(tmp_path, monkeypatch):
    """``packages`` reads an installed package's docstrings (not its tests) under the same rules as the standard
    library's; a package that is not installed, or a bare string, is a one-line error."""
    from torchssm.audio import prose

    _write_package(tmp_path, "tsm_fake_pkg")
    monkeypatch.syspath_prepend(str(tmp_path))
    docs = list(prose.package_docstrings(["tsm_fake_pkg"]))
    expected_docs = ["Package text here. Read the val sentence here.", "Make a thing. It holds secretword too."]
    assert docs == [*expected_docs, "Go now."]  # the tests folder is left out
    texts = {"train": ["go now"], "val": ["read the val sentence here"], "test": [], "heldout": ["secretword"]}
    monkeypatch.setattr(prose, "stdlib_docstrings", lambda: iter(["Close the door."]))
    assert prose.language_model_text(texts) == ["close the door"]
    assert prose.language_model_text(texts, packages=["tsm_fake_pkg"]) == ["close the door", "make a thing"]
    assert prose.language_model_text(texts, packages=["tsm_fake_pkg"], stdlib=False) == ["make a thing"]
    with pytest.raises(ValueError, match="stdlib=False leaves no text: name packages too"):
        prose.language_model_text(texts, stdlib=False)
    with pytest.raises(ValueError, match="package 'tsm_not_installed' is not installed"):
        prose.language_model_text(texts, packages=["tsm_not_installed"])
    with pytest.raises(ValueError, match="a list of import names, got the string 'tsm_fake_pkg'"):
        prose.language_model_text(texts, packages="tsm_fake_pkg")
    with pytest.raises(ValueError, match="a top-level import name such as 'numpy', got 'a.b'"):
        list(prose.package_docstrings(["a.b"]))


def test_spoken_mulaw_windows():
    from torchssm.audio.dsp import mu_law_decode
    from torchssm.audio.waveform import mulaw_windows

    rng = np.random.default_rng(0)
    utterances = [np.sin(np.arange(n) / 7.0).astype(np.float32) * 0.5 for n in (50, 300, 400)]
    ds = mulaw_windows(utterances, 64, 5, rng)
    x, y = ds.tensors["inputs"], ds.tensors["targets"]
    assert x.shape == y.shape == (5, 64) and x.dtype == torch.long and 0 <= int(x.min()) and int(x.max()) < 256
    torch.testing.assert_close(x[:, 1:], y[:, :-1])  # targets are the inputs shifted by one sample
    decoded = mu_law_decode(x[0].numpy())
    assert np.abs(np.diff(decoded)).max() < 0.2  # a smooth sine, not noise
    with pytest.raises(ValueError, match="longer than length"):
        mulaw_windows(utterances, 1000, 1, rng)


def test_frame_groups_raw_samples(tmp_path, monkeypatch):
    class Engine:
        def synthesize(self, utterance):
            return np.sin(np.arange(4000 + 100 * len(utterance.text), dtype=np.float32) / 5.0)

    monkeypatch.setattr(synthetic, "default_engine", lambda: Engine())
    kw = dict(n_train=4, n_val=0, n_test=2, snr_db=10.0)
    raw = build_task("spoken_commands", data_dir=tmp_path, **kw)
    framed = build_task("spoken_commands", data_dir=tmp_path, frame=16, **kw)
    assert (raw.info.length, raw.info.d_input) == (16000, 1)
    assert (framed.info.length, framed.info.d_input) == (1000, 16)
    x, y = raw.train.tensors["inputs"], framed.train.tensors["inputs"]
    assert y.shape == (4, 1000, 16)
    torch.testing.assert_close(y[:, 3, 5], x[:, 3 * 16 + 5, 0], rtol=0, atol=0)  # step t holds samples 16t..16t+15
    torch.testing.assert_close(y.reshape(4, 16000), x[..., 0], rtol=0, atol=0)
    import yaml

    from torchssm.models import build_model
    from torchssm.presets import preset_path
    from torchssm.train.config import ExperimentConfig, model_config_for_task

    for name, bidirectional in (("s4d_frame16", False), ("s4d_bidir", True)):
        text = preset_path(f"audio/spoken_commands_{name}").read_text()
        cfg = ExperimentConfig.from_dict(yaml.safe_load(text))
        assert cfg.task_options["frame"] == 16 and cfg.task_options["voice_split"] == "speakers"
        model = build_model(model_config_for_task(cfg.model, framed.info))  # encoder Linear(16, H)
        assert [block.ssm.bidirectional for block in model.blocks] == [bidirectional] * 4
        assert model(y).shape == (4, 10)
    for bad in (0, 7, 1.5, True):
        with pytest.raises(ValueError, match="frame must be a positive int dividing 16000"):
            build_task("spoken_commands", data_dir=tmp_path, frame=bad, **kw)
    with pytest.raises(ValueError, match="frame groups raw samples"):
        build_task("spoken_commands", data_dir=tmp_path, frame=16, features="logmel", **kw)


def test_voices_per_sentence_one_is_the_task_of_before(tmp_path, monkeypatch):
    tiny_sentences(monkeypatch)
    kw = dict(n_train=3, n_val=1, n_test=1, n_heldout_words=0, snr_db=None)
    one = build_task("spoken_sentences", data_dir=tmp_path, **kw)
    files = sorted(tmp_path.glob("spoken_sentences_*.npz"))
    voices = synthetic.split_voices("families", "train")
    for i in range(3):  # the formula of every task built before the option: rng [seed, split, i], all voices
        before = synthetic._to_int16(
            synthetic.speak(one.train[i]["text"], np.random.default_rng([0, 0, i]), voices, 0.0)
        )
        np.testing.assert_array_equal(np.round(one.train[i]["audio"] * 32767.0).astype(np.int16), before)
    two = build_task("spoken_sentences", data_dir=tmp_path, voices_per_sentence=2, **kw)
    assert (
        len(two.train) == 6 and [two.train[i]["text"] for i in range(6)] == [one.train[i]["text"] for i in range(3)] * 2
    )
    for i in range(3):  # copy 0 is the k = 1 audio, from the same cache; copy 1 is another rendering
        np.testing.assert_array_equal(two.train[i]["audio"], one.train[i]["audio"])
        assert not np.array_equal(two.train[3 + i]["audio"][:1000], one.train[i]["audio"][:1000])
    for split in ("val", "test"):
        np.testing.assert_array_equal(getattr(two, split)[0]["audio"], getattr(one, split)[0]["audio"])
    new = sorted(set(tmp_path.glob("spoken_sentences_*.npz")) - set(files))
    assert len(new) == 1  # only the training split's second copy was synthesised
    again = build_task("spoken_sentences", data_dir=tmp_path, voices_per_sentence=2, **kw)
    np.testing.assert_array_equal(again.train[4]["audio"], two.train[4]["audio"])  # deterministic, cached


def test_lm_from_checkpoint_reads_the_texts_without_synthesis(tmp_path, monkeypatch, heard_voices):
    """A spoken_sentences run's language model comes from its transcripts alone (no clip synthesised) and equals
    the model of the built task's training split."""
    from torchssm.audio import asr_runs
    from torchssm.audio.lm import lm_from_checkpoint, lm_from_task

    tiny_sentences(monkeypatch)
    cfg = dict(n_train=20, n_val=2, n_test=3, n_heldout_words=0, snr_db=None, voices_per_sentence=2, seed=3)
    monkeypatch.setattr(
        asr_runs, "saved_task_config", lambda path, val_heldout=None: (tmp_path, {"name": "spoken_sentences", **cfg})
    )
    lm = lm_from_checkpoint(tmp_path, order=3, data_dir=tmp_path)
    assert heard_voices == []
    task = build_task("spoken_sentences", data_dir=tmp_path, **cfg)
    reference = lm_from_task(task, 3)
    assert (lm.n_sentences, lm.n_chars) == (reference.n_sentences, reference.n_chars) == (20, lm.n_chars)
    for item in [task.val[0], task.test[0], task.train[0]]:
        assert lm.log_prob(item["text"]) == pytest.approx(reference.log_prob(item["text"]), rel=1e-12)
    extra = ["alpha omega", task.train[0]["text"]]  # a new sentence and one of the transcripts (counted once)
    with_extra = lm_from_checkpoint(tmp_path, order=3, data_dir=tmp_path, extra_texts=extra)
    assert (with_extra.n_sentences, with_extra.n_chars) == (21, lm.n_chars + len("alpha omega"))
    assert with_extra.log_prob("alpha omega") > lm.log_prob("alpha omega")
    texts = synthetic.sentence_texts(tmp_path, 3, 20, 2, 3, n_heldout_words=0)
    assert [task.test[i]["text"] for i in range(3)] == texts["test"] and texts["train"][0] == task.train[0]["text"]


def test_voices_per_sentence_voices_differ(tmp_path, monkeypatch, heard_voices):
    tiny_sentences(monkeypatch)
    n, k = 12, 3
    build_task(
        "spoken_sentences", data_dir=tmp_path, n_train=n, n_val=0, n_test=1, n_heldout_words=0, voices_per_sentence=k
    )
    train = synthetic.split_voices("families", "train")
    by_copy = [heard_voices[c * n : (c + 1) * n] for c in range(k)]  # train copy 0, 1, 2 (then test)
    assert by_copy[0] == [synthetic.item_voice("train", i) for i in range(n)]
    for i in range(n):
        spoken = [by_copy[c][i] for c in range(k)]
        assert len(set(spoken)) == k and set(spoken) <= set(train)  # k different training voices
        assert spoken == [v for v, _ in synthetic.sentence_voices("train", i, k)]
    for bad in (0, 2.0, True, len(train) + 1):
        with pytest.raises(ValueError, match="voices_per_sentence must be an int from 1 to 28"):
            build_task("spoken_sentences", data_dir=tmp_path, n_train=n, n_test=1, voices_per_sentence=bad)


def test_sentences_extra_train_variants_add_training_voices_only(tmp_path, monkeypatch, heard_voices):
    """spoken_sentences' extra_train_variants: every copy's voice drawn among the larger training set, the copies of
    a sentence still different voices; val and test unchanged, read from their caches."""
    tiny_sentences(monkeypatch)
    extra, n = ("klatt", "grandma"), 12
    kw = dict(n_train=n, n_val=1, n_test=1, n_heldout_words=0, snr_db=None, voice_split="speakers")
    plain = build_task("spoken_sentences", data_dir=tmp_path, **kw)
    n_plain = len(heard_voices)
    more = build_task("spoken_sentences", data_dir=tmp_path, voices_per_sentence=2, extra_train_variants=extra, **kw)
    train = synthetic.split_voices("speakers", "train", extra)
    by_copy = [heard_voices[n_plain + c * n : n_plain + (c + 1) * n] for c in range(2)]
    assert len(heard_voices) == n_plain + 2 * n  # only the two training copies were synthesised
    assert by_copy[0] == [synthetic.item_voice("train", i, 0, "speakers", extra) for i in range(n)]
    for i in range(n):
        spoken = [by_copy[c][i] for c in range(2)]
        assert spoken == [v for v, _ in synthetic.sentence_voices("train", i, 2, 0, "speakers", extra)]
        assert len(set(spoken)) == 2 and set(spoken) <= set(train)
    assert {v.partition("+")[2] for c in by_copy for v in c} & set(extra)  # the new voices speak some utterances
    for split in ("val", "test"):
        np.testing.assert_array_equal(getattr(more, split)[0]["audio"], getattr(plain, split)[0]["audio"])
    with pytest.raises(ValueError, match="'m7' is not an extra variant"):
        build_task("spoken_sentences", data_dir=tmp_path, extra_train_variants=["m7"], **kw)


def test_extra_train_variants_add_training_voices_only(tmp_path, heard_voices):
    """extra_train_variants: more training voices (training accents x those variants), val and test unchanged."""
    heard = heard_voices
    kw = dict(n_train=60, n_val=5, n_test=5, snr_db=None, features="logmel", n_mels=8, voice_split="speakers")
    plain = build_task("spoken_commands", data_dir=tmp_path, **kw)
    n_plain = len(heard)
    more = build_task("spoken_commands", data_dir=tmp_path, extra_train_variants=["klatt", "steph"], **kw)
    train = synthetic.split_voices("speakers", "train", ("klatt", "steph"))
    added = set(train) - set(synthetic.VOICE_SPLITS["speakers"]["train"])
    assert added == {f"{a}+{v}" for a in synthetic.TRAIN_ACCENTS for v in ("klatt", "steph")}
    assert more.extra["voices"]["train"] == train and more.extra["voices"]["test"] == plain.extra["voices"]["test"]
    assert heard[n_plain:] == [synthetic.item_voice("train", i, 0, "speakers", ("klatt", "steph")) for i in range(60)]
    assert set(heard[n_plain:]) & added  # the new voices speak some of the 60 clips
    assert len(heard) == n_plain + 60  # only the training clips were made again: val and test read their caches
    for split in ("val", "test"):
        torch.testing.assert_close(getattr(more, split).tensors["inputs"], getattr(plain, split).tensors["inputs"])
    assert len(list(tmp_path.glob("spoken_commands_*.npz"))) == 4  # a training cache of its own beside the three
    for bad, match in [
        (["m7"], "'m7' is not an extra variant"),
        (["whisper"], "'whisper' is not an extra variant"),
        (["robot"], "'robot' is not an extra variant"),
        (["klatt", "klatt"], "names a variant twice"),
        ("klatt", "must be a list of variant names"),
    ]:
        with pytest.raises(ValueError, match=match):
            build_task("spoken_commands", data_dir=tmp_path, extra_train_variants=bad, **kw)


def test_extra_train_accents_add_training_voices_only(tmp_path, monkeypatch, heard_voices):
    """extra_train_accents: other languages' voices x the split's training variants, after the extra variants;
    training split only (val and test read their caches), a cache of its own; both tasks; one-line errors."""
    variants, accents = ("klatt",), ("de", "nl")
    train = synthetic.split_voices("speakers", "train", variants, accents)
    base = synthetic.VOICE_SPLITS["speakers"]["train"]
    own_variants = list(dict.fromkeys(v.partition("+")[2] for v in base))  # m1..m6, f1..f4, whisper, croak
    assert train == base + [f"{a}+klatt" for a in synthetic.TRAIN_ACCENTS] + [
        f"{a}+{v}" for a in accents for v in own_variants
    ]
    assert len(train) == 48 + 4 + 24
    for split in ("val", "test"):
        assert synthetic.split_voices("speakers", split, variants, accents) == synthetic.VOICE_SPLITS["speakers"][split]
        assert not {v.partition("+")[0] for v in synthetic.split_voices("speakers", split)} & set(accents)
    kw = dict(n_train=60, n_val=5, n_test=5, snr_db=None, features="logmel", n_mels=8, voice_split="speakers")
    plain = build_task("spoken_commands", data_dir=tmp_path, **kw)
    n_plain = len(heard_voices)
    more = build_task("spoken_commands", data_dir=tmp_path, extra_train_accents=accents, **kw)
    assert heard_voices[n_plain:] == [synthetic.item_voice("train", i, 0, "speakers", (), accents) for i in range(60)]
    assert {v.partition("+")[0] for v in heard_voices[n_plain:]} & set(accents)  # the new voices speak some clips
    assert more.extra["voices"]["train"] == synthetic.split_voices("speakers", "train", (), accents)
    for split in ("val", "test"):
        torch.testing.assert_close(getattr(more, split).tensors["inputs"], getattr(plain, split).tensors["inputs"])
    assert len(list(tmp_path.glob("spoken_commands_*.npz"))) == 4  # a training cache of its own beside the three
    tiny_sentences(monkeypatch)
    skw = dict(n_train=12, n_val=1, n_test=1, n_heldout_words=0, snr_db=None, voice_split="speakers")
    n_before = len(heard_voices)
    build_task("spoken_sentences", data_dir=tmp_path, voices_per_sentence=2, extra_train_accents=accents, **skw)
    spoken = heard_voices[n_before : n_before + 24]
    assert spoken == [
        v
        for c in range(2)
        for i in range(12)
        for v in [synthetic.sentence_voices("train", i, 2, 0, "speakers", (), accents)[c][0]]
    ]
    assert {v.partition("+")[0] for v in spoken} & set(accents)
    for bad, match in [
        (["en-us"], "'en-us' is not an extra accent; expected some of \\['af', 'de', 'lb', 'nl'\\]"),
        (["en-us-nyc"], "'en-us-nyc' is not an extra accent"),
        (["de", "de"], "names an accent twice"),
        ("de", "must be a list of accent names"),
    ]:
        with pytest.raises(ValueError, match=match):
            build_task("spoken_sentences", data_dir=tmp_path, extra_train_accents=bad, **skw)


def test_other_language_voices_read_english():
    """Each extra accent is a voice the wheel's eSpeak NG has, speaking English text with the training variants,
    and not the English voice's samples."""
    from torchssm.audio.espeak import OTHER_LANGUAGE_ACCENTS, synthesize, voice_name

    english = synthesize("return the high median of data", voice="en-us+m1")
    for accent in OTHER_LANGUAGE_ACCENTS:
        speech = synthesize("return the high median of data", voice=voice_name(accent, "m1"))
        assert len(speech) > 0.5 * 22050 and np.abs(speech).max() > 0.05
        assert len(speech) != len(english) or not np.array_equal(speech, english)
    with pytest.raises(ValueError, match="unknown accent 'xx'"):
        voice_name("xx", "m1")
