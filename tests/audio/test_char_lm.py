"""The character n-gram language model (interpolated Kneser-Ney) and its shallow fusion with CTC."""

import math

import numpy as np
import pytest
import torch

from torchssm.audio.ctc import prefix_beam_search
from torchssm.audio.lm import CharNGramLM
from torchssm.audio.text import ALPHABET, CharVocabulary

TEXTS = ["the cat sat on the mat", "a cat", "return the value of the cat", "set the mat", "quiz"]


@pytest.mark.parametrize("order", [1, 2, 3, 5, 8])
def test_next_character_distribution_sums_to_one(order):
    lm = CharNGramLM(TEXTS, order)
    for context in ["", "t", "the ca", "xyzzy", "zz", "the mat ", "'"]:  # seen, unseen, never-seen letters
        dist = lm.distribution(context)
        assert list(dist) == list(ALPHABET) + ["</s>"]
        probs = torch.tensor(list(dist.values()), dtype=torch.float64)
        torch.testing.assert_close(probs.sum(), torch.tensor(1.0, dtype=torch.float64), rtol=0, atol=1e-12)
        assert bool((probs > 0).all())  # Kneser-Ney ends in the uniform distribution: nothing has p = 0
        ids = lm.encode(context)
        torch.testing.assert_close(torch.from_numpy(lm.next_log_probs(ids)), probs.log(), rtol=0, atol=1e-12)


def test_kneser_ney_by_hand():
    """Alphabet 'ab', bigrams of 'ab' and 'aa' (counts worked out in the comments)."""
    lm = CharNGramLM(["ab", "aa"], order=2, alphabet="ab")
    # order 1, continuation counts: a 2 (after <s>, a), b 1, </s> 2; D1 = n1 / (n1 + 2 n2) = 1 / 5;
    # p1(w) = (c - 1/5 + 1/5 * 3 * 1/3) / 5 = c / 5
    # order 2 after 'a': a 1, b 1, </s> 1; raw counts 2, 1, 1, 1, 1 give D2 = 4 / 6;
    # p2(w | a) = (1 - 2/3 + 2/3 * 3 * p1(w)) / 3
    assert lm.discounts[1:] == pytest.approx([1 / 5, 2 / 3], abs=1e-15)
    dist = lm.distribution("a")
    assert dist == pytest.approx({"a": 17 / 45, "b": 11 / 45, "</s>": 17 / 45}, abs=1e-15)
    # a context seen only after <s>: 'b' never starts a bigram except before </s>
    assert lm.distribution("b") == pytest.approx(
        {"a": (2 / 3 * 1 * 0.4), "b": (2 / 3 * 0.2), "</s>": (1 - 2 / 3 + 2 / 3 * 0.4)}, abs=1e-15
    )
    # the sentence probability is the product of the next-symbol probabilities, </s> included
    start = lm.distribution("")
    assert lm.log_prob("ab") == pytest.approx(math.log(start["a"] * dist["b"] * lm.distribution("ab")["</s>"]))


def test_bad_input_one_line_errors():
    with pytest.raises(ValueError, match="order must be an int >= 1"):
        CharNGramLM(TEXTS, 0)
    with pytest.raises(ValueError, match="order must be an int >= 1"):
        CharNGramLM(TEXTS, 2.5)
    with pytest.raises(ValueError, match=r"outside the alphabet .*\['!', 'T'\]"):
        CharNGramLM(["The cat!"], 3)
    lm = CharNGramLM(TEXTS, 3)
    with pytest.raises(ValueError, match="outside the alphabet"):
        lm.distribution("caf\u00e9")
    with pytest.raises(ValueError, match="at least one"):
        CharNGramLM([], 3)
    emissions = torch.log_softmax(torch.randn(5, 12), -1)  # not the LM's 28 characters + blank
    with pytest.raises(ValueError, match="29 outputs"):
        prefix_beam_search(emissions, 4, lm=lm, alpha=0.5)
    with pytest.raises(ValueError, match="pass lm="):
        prefix_beam_search(torch.log_softmax(torch.randn(5, 29), -1), 4, alpha=0.5)


@pytest.mark.parametrize("beam", [1, 4, 8])
def test_zero_weights_give_the_plain_prefix_beam_search(beam):
    torch.manual_seed(0)
    lm = CharNGramLM(TEXTS, 4)
    for _ in range(5):
        emissions = torch.log_softmax(3.0 * torch.randn(25, 29, dtype=torch.float64), -1)
        plain = prefix_beam_search(emissions, beam)
        assert prefix_beam_search(emissions, beam, lm=lm, alpha=0.0, beta=0.0) == plain  # labellings and scores
        fused = prefix_beam_search(emissions, beam, lm=lm, alpha=0.7, beta=0.0)
        assert fused != plain  # the model does change the scores


def _emission(frames: list[dict[str, float]]) -> torch.Tensor:
    """Log-probabilities (t, 29) of frames given as {character or '-' (blank): probability}; the rest of
    each frame's mass is spread evenly."""
    vocab = CharVocabulary()
    out = torch.zeros(len(frames), vocab.n_ctc, dtype=torch.float64)
    for t, frame in enumerate(frames):
        rest = (1.0 - sum(frame.values())) / (vocab.n_ctc - len(frame))
        out[t] = rest
        for c, p in frame.items():
            out[t, 0 if c == "-" else vocab.index[c]] = p
    return out.log()


def test_the_language_model_flips_a_close_acoustic_decision():
    vocab = CharVocabulary()
    # 'c', then 'o' slightly more likely than 'a', then 't': acoustically "cot"
    emissions = _emission([{"c": 0.9}, {"-": 0.9}, {"o": 0.5, "a": 0.4}, {"t": 0.9}, {"-": 0.9}])
    plain = vocab.decode(prefix_beam_search(emissions, 8)[0][0])
    assert plain == "cot"
    lm = CharNGramLM(["the cat", "a cat sat", "cat"], 3)
    fused = vocab.decode(prefix_beam_search(emissions, 8, lm=lm, alpha=1.0)[0][0])
    assert fused == "cat"
    # a small weight leaves the acoustic decision
    assert vocab.decode(prefix_beam_search(emissions, 8, lm=lm, alpha=0.01)[0][0]) == "cot"


def test_word_bonus_counts_words():
    """beta rewards each word: between "ab" and "a b" (acoustically equal), a positive beta picks two words
    and a negative one a single word, with no language-model weight."""
    vocab = CharVocabulary()
    emissions = _emission([{"a": 0.9}, {" ": 0.45, "-": 0.45}, {"b": 0.9}])
    lm = CharNGramLM(["a b", "ab"], 2)
    pick = lambda beta: vocab.decode(prefix_beam_search(emissions, 8, lm=lm, beta=beta)[0][0])  # noqa: E731
    assert pick(1.0) == "a b"
    assert pick(-1.0) == "ab"


def test_transcribe_with_a_language_model():
    from torchssm.audio.asr import ASRConfig, CTCRecognizer

    torch.manual_seed(0)
    model = CTCRecognizer(ASRConfig(d_model=16, n_layers=1, n_mels=16, layer_kwargs={"d_state": 4})).eval()
    audio = 0.1 * torch.randn(2, 8000)
    lengths = torch.tensor([8000, 6000])
    lm = CharNGramLM(TEXTS, 3)
    assert model.transcribe(audio, lengths, beam=4, lm=lm) == model.transcribe(audio, lengths, beam=4)
    fused = model.transcribe(audio, lengths, beam=4, lm=lm, alpha=2.0, beta=0.5)
    with torch.no_grad():
        log_probs = model(audio, lengths)
    frames = model.encoder.frame_lengths(lengths).tolist()
    expected = [
        model.vocab.decode(prefix_beam_search(lp[:n], 4, lm=lm, alpha=2.0, beta=0.5)[0][0])
        for lp, n in zip(log_probs, frames)
    ]
    assert fused == expected


@pytest.mark.parametrize("beam", [1, 3])
def test_samba_shallow_fusion(beam):
    """Samba-ASR's decoder: zero weights change nothing; a huge weight makes the language model spell."""
    from torchssm.audio.asr import ASRConfig, SambaASR

    torch.manual_seed(0)
    cfg = ASRConfig(kind="samba", d_model=16, n_layers=1, n_decoder_layers=1, n_mels=16, layer_kwargs={"d_state": 4})
    model = SambaASR(cfg).eval()
    audio, lengths = 0.1 * torch.randn(2, 6000), torch.tensor([6000, 4000])
    lm = CharNGramLM(["go on", "go on"], 6)
    plain = model.transcribe(audio, lengths, beam=beam, max_tokens=12)
    assert model.transcribe(audio, lengths, beam=beam, max_tokens=12, lm=lm) == plain
    assert model.transcribe(audio, lengths, beam=beam, max_tokens=12, lm=lm, alpha=100.0) == ["go on", "go on"]
    with pytest.raises(ValueError, match="pass lm="):
        model.transcribe(audio, lengths, alpha=1.0)


@pytest.mark.parametrize("order", [1, 3])
def test_log_probs_after_recogniser_labels(order):
    """Recogniser label ids (blank 0, character i at id i + 1) read as the model's context: the last order - 1."""
    lm = CharNGramLM(["the cat sat", "a cat ran"], order=order)
    vocab = CharVocabulary()
    for text in ("", "c", "the ca"):
        labels = vocab.encode(text) if text else []
        assert all(lab == ALPHABET.index(ch) + 1 for lab, ch in zip(labels, text))
        torch.testing.assert_close(
            torch.from_numpy(lm.next_log_probs_after_labels(labels)),
            torch.from_numpy(lm.next_log_probs(lm.encode(text))),
        )


def test_lm_from_task_counts_each_distinct_transcript_once():
    from types import SimpleNamespace

    from torchssm.audio.lm import lm_from_task

    texts = ["the cat sat", "a cat ran", "the dog sat on the mat", "a dog ran"]
    once = SimpleNamespace(train=[{"text": t} for t in texts])
    twice = SimpleNamespace(train=[{"text": t} for t in texts * 2])  # voices_per_sentence=2's training split
    doubled = CharNGramLM(texts * 2, 3)
    for prefix in ("", "the c", "a d", "xq"):
        ids = lm_from_task(once, 3).encode(prefix)
        torch.testing.assert_close(
            torch.from_numpy(lm_from_task(twice, 3).next_log_probs(ids)),
            torch.from_numpy(lm_from_task(once, 3).next_log_probs(ids)),
            rtol=0,
            atol=0,
        )
    assert doubled.discounts != lm_from_task(twice, 3).discounts  # what counting the repeats would change


@pytest.mark.parametrize("order", [1, 3, 6])
def test_prefix_beam_search_equals_its_plain_reference(order):
    """The trie search and the tuple-keyed reference: the same labellings and scores, to the bit, on flat and peaky
    emissions with repeats, with and without the language model, at several beams and prunings."""
    from torchssm.audio.ctc import prefix_beam_search_reference

    g = torch.Generator().manual_seed(order)
    lm = CharNGramLM(TEXTS, order)
    for trial in range(12):
        t = int(torch.randint(1, 40, (1,), generator=g))
        sharp = 1.0 + 6.0 * (trial % 3)  # flat ... peaky: few characters above the pruning
        emissions = torch.log_softmax(sharp * torch.randn(t, 29, generator=g, dtype=torch.float64), -1)
        emissions[t // 2 :, 5] += 3.0  # a character held over frames: repeats and merges
        emissions = torch.log_softmax(emissions, -1)
        for beam, prune in ((1, -12.0), (4, -12.0), (16, -8.0), (8, -math.inf)):
            for fusion in ({}, {"lm": lm, "alpha": 0.7, "beta": 1.5}, {"lm": lm, "alpha": 0.0, "beta": 0.0}):
                got = prefix_beam_search(emissions, beam, prune=prune, **fusion)
                assert got == prefix_beam_search_reference(emissions, beam, prune=prune, **fusion)
    with pytest.raises(ValueError, match="beam must be a positive int"):
        prefix_beam_search_reference(emissions, 0)


def _reference_counts(sentences, order, bos, eos):
    """The counts of interpolated Kneser-Ney written plainly with dicts: {k: {context: {symbol: count}}}, raw counts
    at k = order, continuation counts (distinct predecessors) below."""
    raw = {}
    for s in sentences:
        seq = [bos] * (order - 1) + s + [eos]
        for i in range(order - 1, len(seq)):
            gram = tuple(seq[i - order + 1 : i + 1])
            raw[gram] = raw.get(gram, 0) + 1
    counts, grams = {order: raw}, set(raw)
    for k in range(order - 1, 0, -1):
        cont = {}
        for gram in grams:
            cont[gram[1:]] = cont.get(gram[1:], 0) + 1
        counts[k], grams = cont, set(cont)
    return {k: _by_context(c) for k, c in counts.items()}


def _by_context(grams):
    rows = {}
    for gram, c in grams.items():
        rows.setdefault(gram[:-1], {})[gram[-1]] = c
    return rows


@pytest.mark.parametrize("order", [1, 2, 4, 7, 16])
def test_compressed_counts_equal_the_plain_dict_counts(order):
    """The model's byte-string rows hold exactly the plain counts, so its discounts and every distribution follow."""
    import random

    rng = random.Random(order)
    texts = TEXTS + ["".join(rng.choice("ab c'") for _ in range(rng.randrange(0, 30))) for _ in range(40)]
    lm = CharNGramLM(texts, order)
    plain = _reference_counts([lm.encode(t) for t in texts], order, lm.bos, lm.eos)
    for k in range(1, order + 1):
        for context, row in plain[k].items():
            counts, total, types = lm._table(k, context)
            expected = np.zeros(lm.n_symbols)
            expected[list(row)] = list(row.values())
            assert np.array_equal(counts, expected) and total == sum(row.values()) and types == len(row)
        n1 = sum(c == 1 for row in plain[k].values() for c in row.values())
        n2 = sum(c == 2 for row in plain[k].values() for c in row.values())
        d = n1 / (n1 + 2 * n2) if n1 + 2 * n2 else 0.0
        assert lm.discounts[k] == (d if 0.0 < d <= 1.0 else 0.5)
        assert sum(len(row) for row in plain[k].values()) == len(lm._symbols[k])  # no other row
    unseen = (lm.eos,) * (order - 1)  # </s> never precedes anything: no order >= 2 holds this context
    assert order == 1 or all(lm._table(k, unseen[len(unseen) - (k - 1) :]) is None for k in range(2, order + 1))


def test_an_alphabet_too_large_for_bytes_is_refused():
    with pytest.raises(ValueError, match="alphabet must be 1-254 characters without repeats"):
        CharNGramLM(["a"], 2, alphabet="".join(map(chr, range(300, 600))))
