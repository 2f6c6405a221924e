"""Virtual accents (audio.accents): eSpeak NG phonemes, their rewriting, phoneme input, spoken_sentences' option."""

import numpy as np
import pytest
from _speech_common import tiny_sentences

pytest.importorskip("espeakng_loader")

from torchssm.audio import accents, synthetic  # noqa: E402
from torchssm.audio.espeak import Utterance, default_engine, text_to_phonemes  # noqa: E402
from torchssm.data.registry import build_task  # noqa: E402

RHOTIC = next(a for a in accents.ALTERNATIONS if a.name == "rhoticity").variants[0]
TEXT = "The car park is far from the bath, but the dog thought it could go there."


def test_text_to_phonemes_gives_each_clause_in_the_voices_mnemonics():
    clauses = text_to_phonemes(TEXT, "en")
    assert len(clauses) == 2 and "".join(c for c, _ in clauses) == TEXT  # the clause texts make the text
    assert clauses[0][1] == "D|@ k|'A@ p|'A@|k I|z f|'A@ f|r|V|m|D|@ b|'aa|T"
    assert text_to_phonemes(TEXT, "en-gb-scotland")[0][1].startswith("D|@ k|'A@|r")  # its dictionary's own r
    with pytest.raises(ValueError, match="non-empty string"):
        text_to_phonemes("  ", "en")
    with pytest.raises(ValueError, match="no voice 'xx-yy'"):
        text_to_phonemes("go", "xx-yy")


def test_rewrite_replaces_whole_phonemes_and_keeps_stress():
    clause = "D|@ k|'A@ p|'A@|k d|j|'U@|r|I|N h|,a|t"
    assert accents.rewrite(clause, {}) == "D@ k'A@ p'A@k dj'U@rIN h,at"
    mapping = accents.phoneme_map({"rhoticity": RHOTIC, "H-dropping": ("",)})
    assert accents.rewrite(clause, mapping) == "D@ k'A@r p'A@rk dj'U@rIN ,at"  # "during": one r, not two
    mapping = accents.phoneme_map({"TH": ("f", "v"), "TRAP": ("E",), "-ing": ("n",)})
    assert accents.rewrite(clause, mapping) == "v@ k'A@ p'A@k dj'U@rIn h,Et"
    assert accents.rewrite("f|'aI3", {"aI": "OI"}) == "f'aI3"  # an unseparated pair is kept as it is
    with pytest.raises(ValueError, match="unknown accent alternation 'NYC'"):
        accents.phoneme_map({"NYC": ("E",)})
    with pytest.raises(ValueError, match="TRAP: \\('x',\\) is not one of its variants"):
        accents.phoneme_map({"TRAP": ("x",)})


def test_sample_accent_is_seeded_and_obeys_its_probability():
    first = accents.sample_accent(np.random.default_rng(3))
    assert first == accents.sample_accent(np.random.default_rng(3))
    assert accents.sample_accent(np.random.default_rng(3), p_change=0.0) == {}
    every = accents.sample_accent(np.random.default_rng(3), p_change=1.0)
    assert set(every) == {a.name for a in accents.ALTERNATIONS}
    accents.phoneme_map(every)  # every drawn variant is one of its alternation's
    sizes = [len(accents.sample_accent(np.random.default_rng(s))) for s in range(200)]
    assert 0.4 < np.mean(sizes) / len(accents.ALTERNATIONS) < 0.6
    with pytest.raises(ValueError, match="p_change must be a probability"):
        accents.sample_accent(np.random.default_rng(0), p_change=1.5)


def test_phoneme_input_speaks_the_text_and_an_accent_changes_it():
    """The voice's own phonemes spoken as phoneme input give the text's speech to within 1% of its length; an
    accent gives other samples; the clause punctuation is kept; other languages' voices are refused."""
    engine = default_engine()
    own = accents.accented_text(TEXT, "en-us+m3", {})
    assert own.startswith("[[D@2 k'A@ p'A@k") and own.count("[[") == 2 and "]], [[" in own and own.endswith("]].")
    text = engine.synthesize(Utterance(TEXT, "en-us+m3"))
    phonemes = engine.synthesize(Utterance(own, "en-us+m3", phoneme_input=True))
    assert abs(len(phonemes) / len(text) - 1.0) < 0.01
    accent = {"TRAP": ("e@",), "LOT": ("O:",), "rhoticity": RHOTIC}
    spoken = engine.synthesize(
        Utterance(accents.accented_text(TEXT, "en-us+m3", accent), "en-us+m3", phoneme_input=True)
    )
    assert len(spoken) != len(phonemes) or not np.array_equal(spoken, phonemes)
    assert Utterance("go", phoneme_input=True).request()["phoneme_input"] is True
    assert "phoneme_input" not in Utterance("go").request()  # the request of every utterance before the option
    with pytest.raises(ValueError, match="virtual accents rewrite English phonemes"):
        accents.accented_text(TEXT, "de+m1", {})


def test_accent_augment_rewrites_some_training_utterances_only(tmp_path, monkeypatch):
    """accent_augment p: about p of the training utterances get an accent (the others keep their samples); val, test and
    the transcripts are unchanged; a training cache of its own; one-line errors."""
    tiny_sentences(monkeypatch)
    kw = dict(n_train=16, n_val=2, n_test=2, n_heldout_words=0, snr_db=None, voice_split="speakers")
    plain = build_task("spoken_sentences", data_dir=tmp_path, **kw)
    shifted = build_task("spoken_sentences", data_dir=tmp_path, accent_augment=0.5, **kw)
    assert len(list(tmp_path.glob("spoken_sentences_*.npz"))) == 4  # a training cache of its own beside the three
    sid = synthetic.SPLIT_IDS["train"]
    with_accent = [synthetic.utterance_accent(0, sid, i, 0, 0.5) is not None for i in range(16)]
    assert 0 < sum(with_accent) < 16
    same = [np.array_equal(plain.train[i]["audio"], shifted.train[i]["audio"]) for i in range(16)]
    assert all(s for s, a in zip(same, with_accent) if not a)  # no accent: the utterance of the task without it
    assert not all(s for s, a in zip(same, with_accent) if a)  # (an accent may leave a short sentence's phonemes be)
    assert [x["text"] for x in plain.train] == [x["text"] for x in shifted.train]
    for split in ("val", "test"):
        for i in range(2):
            np.testing.assert_array_equal(getattr(plain, split)[i]["audio"], getattr(shifted, split)[i]["audio"])
    assert all(synthetic.utterance_accent(0, sid, i, 0, 1.0) is not None for i in range(16))
    assert synthetic.utterance_accent(0, sid, 0, 0, 0.0) is None
    for bad in (1.5, -0.1, "half", True):
        with pytest.raises(ValueError, match="accent_augment must be a probability in \\[0, 1\\]"):
            build_task("spoken_sentences", data_dir=tmp_path, accent_augment=bad, **kw)
    with pytest.raises(ValueError, match="cannot be combined with extra_train_accents"):
        build_task("spoken_sentences", data_dir=tmp_path, accent_augment=0.5, extra_train_accents=["de"], **kw)


def test_say_speaks_a_virtual_accent(tmp_path, capsys):
    """speech say --accent-seed / --accent: prints the accent and the phonemes spoken, writes the WAV; one-line
    errors for a malformed or unknown alternation and a non-English voice."""
    soundfile = pytest.importorskip("soundfile")
    from torchssm.cli import main

    wav = tmp_path / "hot.wav"
    args = ["speech", "say", "the bath is hot", "--voice", "en-us+m3", "--out", str(wav)]
    assert main([*args, "--accent-seed", "4", "--accent", "LOT=O:"]) == 0
    out = capsys.readouterr().out
    assert "BATH=A:" in out and "LOT=O:" in out and "phonemes: [[D@2 b'A:T Iz h'O:t]]" in out
    accented, rate = soundfile.read(wav)
    assert main(args) == 0 and "phonemes" not in capsys.readouterr().out
    plain, _ = soundfile.read(wav)
    assert rate == 16000 and len(accented) != len(plain)
    for bad, message in [
        (["--accent", "TRAP"], "an accent alternation is NAME=PHONEMES"),
        (["--accent", "TRAP=Q"], "TRAP: ('Q',) is not one of its variants"),
        (["--accent", "NYC=E"], "unknown accent alternation 'NYC'"),
        (["--accent", "TRAP=E", "--voice", "de+m1"], "virtual accents rewrite English phonemes"),
    ]:
        assert main([*args, *bad]) == 2
        assert message in capsys.readouterr().err


def test_phonemes_command_shows_voices_side_by_side(capsys):
    """speech phonemes: one line per voice, eSpeak's mnemonics (shared by the accents) or, with --ipa, each voice's
    realisation (New York's "bath" is not American's); an unknown voice is a one-line error."""
    from torchssm.cli import main

    assert main(["speech", "phonemes", "bath", "--voice", "en-us", "en-us-nyc"]) == 0
    assert capsys.readouterr().out.splitlines() == ["en-us      b'aaT", "en-us-nyc  b'aaT"]
    assert main(["speech", "phonemes", "bath", "--voice", "en-us", "en-us-nyc", "--ipa"]) == 0
    assert capsys.readouterr().out.splitlines() == ["en-us      bˈæθ", "en-us-nyc  bˈɛəθ"]
    assert text_to_phonemes("go far", "en-gb-scotland", ipa=True) == [("go far", "ɡ|ˌoː f|ˈaː|r")]
    assert main(["speech", "phonemes", "bath", "--voice", "xx"]) == 2
    assert "no voice 'xx'" in capsys.readouterr().err
