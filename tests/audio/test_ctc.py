"""CTC greedy and prefix beam search on hand-made emissions; error rates."""

import itertools
import math

import pytest
import torch

from torchssm.audio.ctc import (
    char_error_rate,
    collapse,
    greedy_decode,
    heldout_word_cer,
    labelling_log_prob,
    prefix_beam_search,
    word_error_rate,
)


def brute_force(emissions):
    """{labelling: log p} summing every frame path (V^T of them)."""
    probs = {}
    t, v = emissions.shape
    for path in itertools.product(range(v), repeat=t):
        p = math.exp(sum(float(emissions[i, c]) for i, c in enumerate(path)))
        key = tuple(collapse(path))
        probs[key] = probs.get(key, 0.0) + p
    return {k: math.log(p) for k, p in probs.items()}


def test_collapse_and_greedy():
    assert collapse([0, 1, 1, 0, 1, 2, 2, 0]) == [1, 1, 2]
    em = torch.log(torch.tensor([[0.1, 0.8, 0.1], [0.1, 0.8, 0.1], [0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8]]))
    assert greedy_decode(em) == [1, 1, 2]


def test_beam_beats_greedy_where_the_best_path_is_not_the_best_labelling():
    # per frame: blank 0.6, "a" 0.4. Best path = blank blank (p .36) -> ""; but "a" has
    # p(a blank) + p(blank a) + p(a a) = .24 + .24 + .16 = .64
    em = torch.log(torch.tensor([[0.6, 0.4], [0.6, 0.4]], dtype=torch.float64))
    assert greedy_decode(em) == []
    beams = prefix_beam_search(em, beam=4)
    assert [b[0] for b in beams] == [(1,), ()]
    assert math.isclose(beams[0][1], math.log(0.64), rel_tol=1e-12)
    assert math.isclose(beams[1][1], math.log(0.36), rel_tol=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_wide_beam_is_exact(seed):
    g = torch.Generator().manual_seed(seed)
    em = torch.log_softmax(torch.randn(5, 3, generator=g, dtype=torch.float64) * 2, -1)
    exact = brute_force(em)
    beams = prefix_beam_search(em, beam=len(exact), prune=-math.inf)
    assert dict(beams).keys() == exact.keys()
    for labelling, logp in beams:
        assert math.isclose(logp, exact[labelling], rel_tol=1e-9)
        assert math.isclose(labelling_log_prob(em, labelling), exact[labelling], rel_tol=1e-9) or not labelling
    assert beams[0][0] == max(exact, key=exact.get)


def test_error_rates_and_heldout_words():
    refs, hyps = ["the cat sat", "a dog"], ["the bat sat", "a"]
    assert math.isclose(word_error_rate(refs, hyps), 2 / 5)
    assert math.isclose(char_error_rate(refs, hyps), (1 + 4) / (11 + 5))  # "cat"->"bat", " dog" deleted
    cer, n = heldout_word_cer(refs, hyps, ["cat", "dog"])
    assert n == 2 and math.isclose(cer, (1 + 3) / 6)  # cat vs bat: 1; dog deleted: 3
    assert math.isnan(heldout_word_cer(refs, hyps, ["zebra"])[0])
    with pytest.raises(ValueError, match="references"):
        word_error_rate(["a"], ["a", "b"])
    with pytest.raises(ValueError, match="non-empty"):
        char_error_rate([""], ["a"])
    with pytest.raises(ValueError, match="beam"):
        prefix_beam_search(torch.zeros(2, 3), beam=0)
    with pytest.raises(ValueError, match="2-D"):
        greedy_decode(torch.zeros(2, 3, 4))


def test_unalignable_matches_infinite_ctc_loss():
    """asr.ctc_unalignable marks exactly the utterances where F.ctc_loss is infinite (fewer frames than
    labels plus repeated neighbours), which zero_infinity would drop silently."""
    from torchssm.audio.asr import ctc_unalignable

    torch.manual_seed(0)
    b, t_max, u_max = 64, 9, 7
    targets = torch.randint(1, 4, (b, u_max))  # 3 characters: many repeated neighbours
    target_lengths = torch.randint(1, u_max + 1, (b,))
    frames = torch.randint(1, t_max + 1, (b,))
    log_probs = torch.log_softmax(torch.randn(t_max, b, 5, dtype=torch.float64), -1)
    loss = torch.nn.functional.ctc_loss(
        log_probs, targets, frames, target_lengths, blank=0, reduction="none", zero_infinity=False
    )
    mask = ctc_unalignable(frames, targets, target_lengths)
    assert 0 < int(mask.sum()) < b
    assert torch.equal(mask, torch.isinf(loss))
