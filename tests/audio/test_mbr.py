"""Minimum Bayes risk choice from n-best lists: audio.mbr, tuned_decoding(mbr_scales=), speech decode --mbr-scales."""

import numpy as np
import pytest
from _speech_common import saved_toy_runs

from torchssm.audio import decoding
from torchssm.audio.mbr import (
    edit_distances,
    edit_distances_reference,
    list_distances,
    mbr_index,
    mbr_transcripts,
)
from torchssm.audio.text import CharVocabulary
from torchssm.cli import main


def test_edit_distances_equal_the_plain_reference():
    rng = np.random.default_rng(0)
    labellings = [list(rng.integers(1, 4, rng.integers(0, 9))) for _ in range(25)] + [[]]
    fast, plain = edit_distances(labellings), edit_distances_reference(labellings)
    np.testing.assert_array_equal(fast, plain)
    assert (np.diag(fast) == 0).all() and (fast == fast.T).all()
    vocab = CharVocabulary()
    kitten, sitting = vocab.encode("kitten"), vocab.encode("sitting")
    assert edit_distances([kitten, sitting, []])[0].tolist() == [0, 3, 6]  # two substitutions and an insertion


def test_mbr_chooses_the_least_expected_edits():
    vocab = CharVocabulary()
    entries = [(vocab.encode(t), s) for t, s in (("cat", 0.0), ("bat", -0.2), ("bad", -0.3))]  # best first
    d = edit_distances([y for y, _ in entries])  # cat-bat 1, cat-bad 2, bat-bad 1
    scores = [s for _, s in entries]
    p = np.exp(scores) / np.exp(scores).sum()
    risks = d @ p
    assert mbr_index(scores, d, 1.0) == int(np.argmin(risks)) == 1  # bat: nearer to the others than cat
    assert mbr_index(scores, d, 100.0) == 0  # a sharp posterior: the search's best
    assert mbr_index(scores, d, 0.0) == 1  # uniform: the medoid
    assert mbr_transcripts([entries], vocab, 1.0) == ["bat"] and mbr_transcripts([entries], vocab, 100.0) == ["cat"]
    tie = [(vocab.encode("ab"), 0.0), (vocab.encode("ba"), 0.0)]
    assert mbr_transcripts([tie], vocab, 1.0) == ["ab"]  # ties: the better ranked
    for bad in (-1.0, float("nan"), True, "1"):
        with pytest.raises(ValueError, match="an MBR scale must be a finite number >= 0"):
            mbr_index(scores, d, bad)
    with pytest.raises(ValueError, match=r"distances must be \(3, 3\)"):
        mbr_index(scores, d[:2, :2], 1.0)
    with pytest.raises(ValueError, match="at least one hypothesis"):
        mbr_index([], np.zeros((0, 0)), 1.0)
    with pytest.raises(ValueError, match="1 n-best lists but 2 distance matrices"):
        mbr_transcripts([entries], vocab, 1.0, list_distances([entries, entries]))


GRID = {"orders": (2,), "alphas": (0.0, 0.5), "betas": (1.0,), "beam": 4}


def test_tuned_decoding_chooses_mbr_or_the_search_on_val(tmp_path, monkeypatch, capsys):
    import json

    runs = saved_toy_runs(tmp_path, monkeypatch)
    out = decoding.tuned_decoding(runs, log=str, mbr_scales=(0.0, 1.0), **GRID)
    rows, rule, setting = out["mbr"]["rows"], out["chosen_rule"], out["setting"]
    assert [r["scale"] for r in rows] == [None, 0.0, 1.0]
    loaded = decoding.LoadedRuns(runs)
    val, test = (loaded.scored_nbest(split, rule, setting) for split in ("val", "test"))
    refs = loaded.references("val")
    assert rows[0]["cer"] == decoding.char_error_rate(refs, [loaded.vocab.decode(items[0][0]) for items in val])
    assert rows[2]["cer"] == decoding.char_error_rate(refs, mbr_transcripts(val, loaded.vocab, 1.0))
    best = min(range(3), key=lambda i: (rows[i]["cer"], rows[i]["wer"], i))
    assert out["mbr"]["scale"] == rows[best]["scale"]
    search = [loaded.vocab.decode(items[0][0]) for items in test]
    expected = search if rows[best]["scale"] is None else mbr_transcripts(test, loaded.vocab, rows[best]["scale"])
    assert [t["hyp"] for t in out["test_transcripts"]] == expected
    assert [t["search"] for t in out["test_transcripts"]] == search
    assert out["test_search"]["cer"] == decoding.char_error_rate(loaded.references("test"), search)
    grid = ["--orders", "2", "--alphas", "0", "0.5", "--betas", "1", "--beam", "4"]
    path = tmp_path / "d.json"
    assert main(["speech", "decode", *map(str, runs), *grid, "--mbr-scales", "0", "1", "--out", str(path)]) == 0
    printed = capsys.readouterr().out
    assert json.loads(path.read_text())["mbr"]["rows"] == json.loads(json.dumps(rows))
    assert "val, MBR scale off (the search's own): CER" in printed and "val, MBR scale 1.0: CER" in printed
    assert main(["speech", "decode", *map(str, runs), *grid, "--mbr-scales", "-1"]) == 2
    assert "an MBR scale must be a finite number >= 0" in capsys.readouterr().err
    with pytest.raises(ValueError, match="MBR chooses from a CTC search's n-best lists: not with"):
        decoding.tuned_decoding(runs, log=str, mbr_scales=(1.0,), rescore_lm=object(), **GRID)
