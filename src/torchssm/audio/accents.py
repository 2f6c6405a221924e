"""Virtual accents: English accent alternations applied to eSpeak NG's phoneme mnemonics.

eSpeak NG's English accents share one pronouncing dictionary: a text has (nearly) the same phoneme mnemonics in all
eight (``espeak.text_to_phonemes``), and each accent's phoneme table realises them differently (en-us-nyc says the
``aa`` of "bath" as [ɛə], en-gb-scotland the ``oU`` of "go" as [oː]). A virtual accent changes the mnemonics
instead: it rewrites whole lexical sets, the way accents of English differ (Wells 1982, *Accents of English*,
Cambridge University Press; the standard lexical sets KIT, DRESS, TRAP, ... are his, vol. 1 section 2.2), and the
training voice then speaks the rewritten phonemes with its own table. One accent is drawn per utterance and applied
to all of it, so a set moves consistently (every TRAP vowel raised, not one).

Each :data:`ALTERNATIONS` entry is one lexical set or consonant process, its eSpeak NG mnemonics and the variants
other accents have; the examples are well-known instances (Wells 1982 vol. 2-3; the section numbers are
UNVERIFIED). The catalogue is general English accent variation, written down once before any run with it and not
tuned to this project's test accents (some of which show some of these features; none of their audio is used)::

    accent = sample_accent(np.random.default_rng(0))  # {"DRESS": ("e",), "TRAP": ("E",), ..., "TH": ("t", "d"), ...}
    text = accented_text("The car park is far.", "en-us", accent)  # "[[d@2 k'A@r p'A@rk Iz f'A@r]]."
    Utterance(text, "en-us+m3", phoneme_input=True)

The transcript stays the original text: the model learns to hear the words through the accent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from torchssm.audio.espeak import ACCENTS, text_to_phonemes
from torchssm.checks import unit_interval


@dataclass(frozen=True)
class Alternation:
    """A lexical set (or consonant process) whose phonemes ``phonemes`` become ``variants[k]`` in other accents."""

    name: str
    phonemes: tuple[str, ...]  # eSpeak NG en mnemonics it rewrites
    variants: tuple[tuple[str, ...], ...]  # per variant, the replacement of each of ``phonemes`` ("" deletes it)
    example: str  # accents that have the variants (Wells 1982; section numbers UNVERIFIED)


ALTERNATIONS = (
    Alternation("KIT", ("I",), (("i",), ("@",)), "tense KIT (US South); centralised KIT (New Zealand)"),
    Alternation("DRESS", ("E",), (("e",), ("a",)), "raised DRESS (South Africa, NZ); lowered DRESS (Canada)"),
    Alternation("TRAP", ("a",), (("E",), ("e@",), ("aa",)), "raised TRAP (NZ); short-a tensing (US North)"),
    Alternation("BATH", ("aa",), (("a",), ("A:",)), "short BATH (North of England, US); long back BATH (RP)"),
    Alternation("LOT", ("0",), (("A:",), ("O:",)), "unrounded LOT (General American); rounded (Scotland)"),
    Alternation("STRUT", ("V",), (("U",), ("@",)), "no FOOT-STRUT split (North and Midlands of England)"),
    Alternation("FOOT-GOOSE", ("U", "u:"), (("u:", "u:"), ("U", "U")), "FOOT and GOOSE merged (Scotland)"),
    Alternation("FACE", ("eI",), (("e:",), ("aI",)), "monophthongal FACE (Scotland, North); wide FACE (London)"),
    Alternation("GOAT", ("oU", "@U"), (("o:", "o:"), ("aU", "aU")), "monophthongal GOAT (Scotland); wide (London)"),
    Alternation("PRICE", ("aI",), (("OI",), ("A:",)), "backed PRICE (London, Australia); monophthong (US South)"),
    Alternation("MOUTH", ("aU",), (("aa",),), "monophthongal MOUTH (Pittsburgh, London)"),
    Alternation("THOUGHT", ("O:",), (("A:",), ("o@",)), "cot-caught merger (US West, Canada); raised (New York)"),
    Alternation(
        "rhoticity",
        ("A@", "O@", "o@", "e@", "i@", "U@", "3:"),
        (("A@r", "O@r", "o@r", "e@r", "i@r", "U@r", "3:r"),),
        "post-vocalic /r/ pronounced (Scotland, Ireland, West Country)",
    ),
    Alternation("TH", ("T", "D"), (("t[", "d["), ("t", "d"), ("f", "v")), "TH-stopping (Ireland); fronting (London)"),
    Alternation("H-dropping", ("h",), (("",),), "H-dropping (most of England's urban accents)"),
    Alternation("-ing", ("N",), (("n",),), "velar nasal as [n] ('g-dropping', widespread informal)"),
)
STRESS_MARKS = "',%="  # eSpeak NG mnemonics: primary, secondary, unstressed, ... lead the phoneme they mark
CLAUSE_PUNCTUATION = ".,?!;:"


def sample_accent(rng: np.random.Generator, p_change: float = 0.5) -> dict[str, tuple[str, ...]]:
    """A virtual accent: {alternation name: its replacement phonemes} for each of :data:`ALTERNATIONS` that changes
    (each independently with probability ``p_change``, then one of its variants uniformly); {} is the voice's own."""
    unit_interval("p_change", p_change, "a probability")
    accent = {}
    for alternation in ALTERNATIONS:
        change = rng.random() < p_change
        k = int(rng.integers(len(alternation.variants)))  # drawn either way: one accent's draws don't shift the next
        if change:
            accent[alternation.name] = alternation.variants[k]
    return accent


def parse_accent(specs: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """A virtual accent from ``NAME=PHONEMES`` strings (``TRAP=E``, ``GOAT=o:,o:``, ``H-dropping=``), the phonemes
    those of one of the alternation's variants, comma-separated; checked by :func:`phoneme_map`."""
    accent = {}
    for spec in specs:
        name, eq, phonemes = spec.partition("=")
        if not eq:
            raise ValueError(f"an accent alternation is NAME=PHONEMES (e.g. TRAP=E, GOAT=o:,o:), got {spec!r}")
        accent[name] = tuple(phonemes.split(","))
    phoneme_map(accent)
    return accent


def phoneme_map(accent: Mapping[str, tuple[str, ...]]) -> dict[str, str]:
    """{mnemonic: replacement} of ``accent`` (:func:`sample_accent`); unknown names are an error."""
    by_name = {a.name: a for a in ALTERNATIONS}
    mapping: dict[str, str] = {}
    for name, replacement in accent.items():
        if name not in by_name:
            raise ValueError(f"unknown accent alternation {name!r}; expected some of {list(by_name)}")
        alternation = by_name[name]
        if tuple(replacement) not in alternation.variants:
            raise ValueError(f"{name}: {replacement!r} is not one of its variants {list(alternation.variants)}")
        mapping.update(zip(alternation.phonemes, replacement))
    return mapping


def rewrite(phonemes: str, mapping: Mapping[str, str]) -> str:
    """``phonemes`` (one clause of :func:`~torchssm.audio.espeak.text_to_phonemes`: ``|`` between phonemes, spaces
    between words) with each phoneme in ``mapping`` replaced (its stress mark kept), the separators removed: eSpeak
    NG phoneme input. A piece eSpeak left unseparated (a clause's last pair, sometimes) is kept as it is."""
    words = []
    for word in phonemes.split():
        pieces = word.split("|")
        out = []
        for i, piece in enumerate(pieces):
            name = piece.lstrip(STRESS_MARKS)
            stress = piece[: len(piece) - len(name)]
            replacement = mapping.get(name, name)
            if replacement.endswith("r") and replacement != name and pieces[i + 1 : i + 2] and pieces[i + 1][:1] == "r":
                replacement = replacement[:-1]  # a rhotic vowel before an /r/ already there ("during"): one r
            out.append(stress + replacement if replacement else "")
        words.append("".join(out))
    return " ".join(w for w in words if w)


def accented_text(text: str, voice: str, accent: Mapping[str, tuple[str, ...]]) -> str:
    """``text`` as ``voice``'s phonemes rewritten by ``accent``, clause by clause, each clause's punctuation kept after
    it (for its intonation): ``"[[...]], [[...]]. "``, to be spoken with ``Utterance(..., phoneme_input=True)``."""
    mapping = phoneme_map(accent)
    voice_accent = voice.partition("+")[0]
    if voice_accent not in ACCENTS:
        raise ValueError(f"virtual accents rewrite English phonemes; voice {voice!r} is not one of {sorted(ACCENTS)}")
    parts = []
    for clause, phonemes in text_to_phonemes(text, voice_accent):
        spoken = rewrite(phonemes, mapping)
        if not spoken:
            continue
        marks = [c for c in clause if c in CLAUSE_PUNCTUATION]
        parts.append(f"[[{spoken}]]{marks[-1] if marks else ''}")
    if not parts:
        raise ValueError(f"eSpeak NG gave no phonemes for {text!r}")
    return " ".join(parts)
