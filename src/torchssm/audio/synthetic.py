"""Synthetic speech tasks generated offline with eSpeak NG: ``spoken_commands`` and ``spoken_sentences``.

No speech corpus can be downloaded here, so the speech is synthesised (:mod:`torchssm.audio.espeak`)
with a voice, speaking rate, pitch and pitch range drawn per utterance, resampled from 22050 to
16000 Hz, optionally reverberated (:func:`torchssm.audio.dsp.synthetic_rir`), given a random gain
and, when the task is built, mixed with noise at ``snr_db``. Synthetic speech is far more regular
than recorded speech: results on these tasks are not results on real corpora (the readers for those
are in :mod:`torchssm.audio.corpora`).

Voices are split so that no test voice is heard in training (nor used for validation). Two splits
(``voice_split``):

``"families"`` (the default): whole voice families are held out.

    train: accents en-us, en (British), en-gb-x-rp, en-029 (Caribbean)  x  male variants m1..m7
    val:   accent  en-gb-x-gbclan (Lancastrian)                          x  m1..m7, f1..f5
    test:  accents en-gb-scotland, en-us-nyc, en-gb-x-gbcwmd (West Mids) x  f1..f5, whisper, croak

``"speakers"``: held-out speakers, as Speech Commands (Warden 2018: its validation_list.txt /
testing_list.txt keep each speaker's clips in one split) and LibriSpeech (Panayotov et al. 2015: disjoint
speakers per subset) split by speaker rather than by sex. A voice (accent x variant) is a speaker; every
test voice has an accent never heard in training, and two variants are test-only as well.

    train: the four training accents above  x  m1..m6, f1..f4, whisper, croak
    val:   en-gb-x-gbclan                   x  m1..m7, f1..f5, whisper, croak
    test:  the three test accents above     x  m1..m7, f1..f5, whisper, croak (m7 and f5 in no training voice)

Determinism: clip i of split s for seed k is a pure function of (k, s, i) and the options (its
voice, parameters, eSpeak seed, placement and reverberation come from
``numpy.random.default_rng([k, s, i])``; the noise from ``default_rng([k, s, i, 1])``; an ``_unknown_`` clip's word
from ``default_rng([k, s, i, 3])``; a ``_silence_`` clip's noise level from the mean power of its split's clips).
The clean clips are cached as int16 in ``<data_dir>/<task>_<hash>.npz`` (written atomically); the noise is
added at build time, so an SNR sweep reuses one cache.

``spoken_commands`` (Warden 2018, the 10 command words of Speech Commands used by S4's SC10, Gu et
al. 2022, Sec. 5.3): 1-second 16 kHz clips, label = word index; inputs (16000, 1) raw samples, or
``features="logmel"``: (98, n_mels) log-mel frames (:class:`torchssm.audio.features.LogMel`).
``frame=p`` (waveform only; 1, off, by default) gives the raw samples as (16000 / p, p): p consecutive
samples per step, which the model's linear encoder projects to its width, i.e. SaShiMi's down-pooling
(Goel et al. 2022; DownPool in state-spaces' sashimi.py: p steps reshaped into one, a linear projection)
applied once at the input; the model then runs at 16000 / p steps instead of 16000.
``words="12"`` (``"10"`` by default) gives Speech Commands' twelve labels (:data:`COMMAND_CLASSES`; Warden 2018's
evaluation, TensorFlow's speech_commands example): the ten commands, ``"_silence_"`` (no speech: the task's noise
alone, at the level of the split's average word clip; silent with ``snr_db=None``) and ``"_unknown_"`` (one of the
corpus' 25 other words, :data:`OTHER_WORDS`, in the split's voices). Clip i has class i mod 12, so each class is
1/12 of the clips (TensorFlow's example adds silence and unknown at 10% of the command clips each: the same share).
``speed_perturb=(0.9, 1.1)`` (off by default) adds to the training split one copy of every clip per
factor, played that much faster (Ko et al. 2015's 3-fold speed perturbation; pitch and formants move
with the factor), the word re-placed at a random offset in the second and given its own noise.
``extra_train_variants=("klatt", "steph", ...)`` (none by default; ``spoken_sentences`` has it too) adds training
voices: the training accents x these eSpeak NG variants (among ``espeak.OTHER_VARIANTS``: klatt, klatt2, klatt3,
grandpa, grandma, aunty, steph, edward), drawn among the split's own training voices for every training clip (so
every training clip changes); validation and test voices are unchanged and never heard in training.
``extra_train_accents=("de", "nl", ...)`` (none by default; both tasks) adds training voices the same way: these
other languages' eSpeak NG voices (``espeak.OTHER_LANGUAGE_ACCENTS``: af, de, lb, nl) reading the English text, x the
split's training variants (m1..m6, f1..f4, whisper, croak for "speakers"): a crude foreign-accent augmentation.

``spoken_sentences``: sentences of English prose (:mod:`torchssm.audio.prose`, the standard library's
docstrings), transcripts in :class:`torchssm.audio.text.CharVocabulary`'s alphabet. ``n_heldout_words``
words (drawn among those used 2 to 5 times) never occur in a training or validation sentence: every
sentence containing one goes to the test pool, which therefore measures recognition of unseen words.
The test split takes up to half its sentences from that pool; ``n_val_heldout=m`` (0 by default) gives val, after its
``n_val`` ordinary sentences, the next m of the pool (none in test), so that val, like test, holds sentences with
unseen words, and a decoding's choices (language-model weight, beam) are made on sentences like test's; train and
test are unchanged.
``voices_per_sentence=k`` (1 by default) has every training sentence spoken by k different training
voices (copy c > 0 from ``default_rng([seed, 0, i, 3, c])``, its voice drawn among those copies 0..c - 1 did
not use; each copy cached in a file of its own, copy 0 in the file of before); val and test unchanged.
``accent_augment=p`` (0 by default) speaks each training utterance, with probability p (``default_rng([seed, 0, i, 5,
c])``), in a virtual accent: its voice's phonemes rewritten by English accents' lexical-set alternations
(:mod:`torchssm.audio.accents`), the transcript unchanged; the other utterances, val and test are as without it.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from torchssm.audio import dsp
from torchssm.audio.accents import accented_text, sample_accent
from torchssm.audio.espeak import (
    FEMALE_VARIANTS,
    MALE_VARIANTS,
    NATIVE_RATE,
    OTHER_LANGUAGE_ACCENTS,
    OTHER_VARIANTS,
    Utterance,
    default_engine,
    voice_name,
)
from torchssm.audio.progress import progress
from torchssm.audio.text import CharVocabulary
from torchssm.checks import unit_interval
from torchssm.data.loaders import TensorDictDataset, resolve_data_dir, save_npz_atomic
from torchssm.data.registry import TaskData, TaskInfo, register_task

SAMPLE_RATE = 16000
COMMANDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
# The other 25 words of Speech Commands v0.02 (Warden 2018): the digits, core words beside the commands, and the
# auxiliary words; the "_unknown_" class is spoken from them.
OTHER_WORDS = (
    *("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"),
    *("bed", "bird", "cat", "dog", "happy", "house", "marvin", "sheila", "tree", "wow"),
    *("backward", "forward", "follow", "learn", "visual"),
)
SILENCE, UNKNOWN = "_silence_", "_unknown_"
# words -> class names, label i = name i: the ten commands (S4's SC10, Gu et al. 2022), or Speech Commands' twelve
# labels, the commands with "_silence_" (no speech) and "_unknown_" (another word): the standard evaluation of
# Warden 2018 (its Evaluation section) and of TensorFlow's speech_commands example (input_data.py, which puts the two
# first; here they follow the commands, so label i < 10 is the same word either way).
COMMAND_CLASSES = {"10": COMMANDS, "12": (*COMMANDS, SILENCE, UNKNOWN)}
DEFAULT_WORDS = "10"
SPLIT_IDS = {"train": 0, "val": 1, "test": 2}
TRAIN_ACCENTS = ("en-us", "en", "en-gb-x-rp", "en-029")
VAL_ACCENTS = ("en-gb-x-gbclan",)
TEST_ACCENTS = ("en-gb-scotland", "en-us-nyc", "en-gb-x-gbcwmd")
FAMILY_VARIANTS = MALE_VARIANTS + FEMALE_VARIANTS + ("whisper", "croak")
TEST_ONLY_VARIANTS = ("m7", "f5")  # voice_split "speakers": variants of no training voice


def _voices(accents: Sequence[str], variants: Sequence[str]) -> list[str]:
    return [voice_name(a, v) for a in accents for v in variants]


# {voice_split: {split: voices}}; see the module docstring.
VOICE_SPLITS: dict[str, dict[str, list[str]]] = {
    "families": {
        "train": _voices(TRAIN_ACCENTS, MALE_VARIANTS),
        "val": _voices(VAL_ACCENTS, MALE_VARIANTS + FEMALE_VARIANTS),
        "test": _voices(TEST_ACCENTS, FEMALE_VARIANTS + ("whisper", "croak")),
    },
    "speakers": {
        "train": _voices(TRAIN_ACCENTS, [v for v in FAMILY_VARIANTS if v not in TEST_ONLY_VARIANTS]),
        "val": _voices(VAL_ACCENTS, FAMILY_VARIANTS),
        "test": _voices(TEST_ACCENTS, FAMILY_VARIANTS),
    },
}
# Per-utterance parameter ranges (this library's choice: around eSpeak NG's defaults 175 wpm, 50, 50).
RATE_RANGE, PITCH_RANGE, INTONATION_RANGE = (130, 220), (25, 75), (20, 80)
GAIN_DB_RANGE = (-6.0, 0.0)  # peak level relative to -6 dBFS
RT60_RANGE = (0.2, 0.6)  # seconds: small to medium rooms
NOISES = {"white": 0.0, "pink": 1.0, "brown": 2.0}
_CACHE_VERSION = 1


def split_voices(
    voice_split: str, split: str, extra_train_variants: Sequence[str] = (), extra_train_accents: Sequence[str] = ()
) -> list[str]:
    """The voices of ``split`` ("train", "val", "test") under ``voice_split`` ("families" or "speakers"); the
    training voices followed by the training accents x ``extra_train_variants`` (:func:`check_extra_train_variants`),
    then ``extra_train_accents`` x the split's training variants (:func:`check_extra_train_accents`)."""
    if voice_split not in VOICE_SPLITS:
        raise ValueError(f"voice_split must be one of {list(VOICE_SPLITS)}, got {voice_split!r}")
    if split not in SPLIT_IDS:
        raise ValueError(f"split must be one of {list(SPLIT_IDS)}, got {split!r}")
    variants = check_extra_train_variants(extra_train_variants, voice_split)
    accents = check_extra_train_accents(extra_train_accents)
    if split != "train":
        return VOICE_SPLITS[voice_split][split]
    return (
        VOICE_SPLITS[voice_split]["train"]
        + _voices(TRAIN_ACCENTS, variants)
        + _voices(accents, _train_variants(voice_split))
    )


def _train_variants(voice_split: str) -> list[str]:
    """The variants of ``voice_split``'s training voices, in order (m1..m6, f1..f4, whisper, croak for "speakers")."""
    return list(dict.fromkeys(v.partition("+")[2] for v in VOICE_SPLITS[voice_split]["train"]))


def check_extra_train_variants(variants: Sequence[str], voice_split: str = "families") -> tuple[str, ...]:
    """``variants`` as a tuple, checked: eSpeak NG variants of :data:`~torchssm.audio.espeak.OTHER_VARIANTS` (the
    male / female / whisper / croak families are the split's own), each once. They add training voices only, of
    the training accents, so no test or validation voice is ever heard in training."""
    if isinstance(variants, str) or not isinstance(variants, Sequence):
        raise ValueError(f"extra_train_variants must be a list of variant names, got {variants!r}")
    taken = {v.partition("+")[2] for v in VOICE_SPLITS[voice_split]["train"]} | set(FAMILY_VARIANTS)
    for v in variants:
        if v not in OTHER_VARIANTS or v in taken:
            choices = [o for o in OTHER_VARIANTS if o not in taken]
            raise ValueError(f"extra_train_variants: {v!r} is not an extra variant; expected some of {choices}")
    if len(set(variants)) != len(variants):
        raise ValueError(f"extra_train_variants names a variant twice: {list(variants)}")
    return tuple(variants)


def check_extra_train_accents(accents: Sequence[str]) -> tuple[str, ...]:
    """``accents`` as a tuple, checked: voices of :data:`~torchssm.audio.espeak.OTHER_LANGUAGE_ACCENTS` (other
    languages' voices reading the English text), each once. They add training voices only (x the split's training
    variants); no validation or test accent is among them, so no test or validation voice is ever heard in training."""
    if isinstance(accents, str) or not isinstance(accents, Sequence):
        raise ValueError(f"extra_train_accents must be a list of accent names, got {accents!r}")
    for a in accents:
        if a not in OTHER_LANGUAGE_ACCENTS:
            raise ValueError(
                f"extra_train_accents: {a!r} is not an extra accent; expected some of {list(OTHER_LANGUAGE_ACCENTS)}"
            )
    if len(set(accents)) != len(accents):
        raise ValueError(f"extra_train_accents names an accent twice: {list(accents)}")
    return tuple(accents)


def _split_extra_voices(
    split: str, variants: Sequence[str], accents: Sequence[str]
) -> tuple[tuple[str, ...], tuple[str, ...], dict]:
    """(the extra training variants and accents ``split`` is spoken with: ``variants`` and ``accents`` for "train",
    none for val and test; their cache-key entries: none without them, so the caches made before the options stay
    valid)."""
    if split != "train":
        return (), (), {}
    key = {"extra_train_variants": list(variants)} if variants else {}
    return tuple(variants), tuple(accents), {**key, **({"extra_train_accents": list(accents)} if accents else {})}


def item_voice(
    split: str,
    index: int,
    seed: int = 0,
    voice_split: str = "families",
    extra_train_variants: Sequence[str] = (),
    extra_train_accents: Sequence[str] = (),
) -> str:
    """The voice that speaks item ``index`` of ``split`` (the first draw of its generator in :func:`speak`)."""
    voices = split_voices(voice_split, split, extra_train_variants, extra_train_accents)
    return draw_voice(np.random.default_rng([seed, SPLIT_IDS[split], index]), voices)


def draw_voice(rng: np.random.Generator, voices: Sequence[str]) -> str:
    """The voice of an utterance: the first draw of its generator (:func:`speak`, :func:`item_voice`)."""
    return voices[int(rng.integers(len(voices)))]


def voice_family(voice: str) -> str:
    """ "male", "female", "whisper" or "croak" from a voice's variant (``en-us+m3`` -> "male")."""
    variant = voice.partition("+")[2]
    if variant in ("whisper", "croak"):
        return variant
    if variant[:1] in ("m", "f") and variant[1:].isdigit():
        return "male" if variant[0] == "m" else "female"
    raise ValueError(f"voice {voice!r} has no known variant (+m1..+m7, +f1..+f5, +whisper, +croak)")


def is_test_only_voice(voice: str) -> bool:
    """Whether ``voice``'s variant is one of ``TEST_ONLY_VARIANTS`` (of no training voice of the "speakers" split)."""
    return voice.partition("+")[2] in TEST_ONLY_VARIANTS


def _check_split_sizes(**sizes) -> None:
    for name, n in sizes.items():
        if isinstance(n, bool) or not isinstance(n, int) or n < (0 if name.startswith("n_val") else 1):
            raise ValueError(
                f"{name} must be a {'non-negative' if name.startswith('n_val') else 'positive'} int, got {n!r}"
            )


def _trim_silence(x: np.ndarray, threshold_db: float = -40.0) -> np.ndarray:
    """``x`` without leading / trailing samples quieter than ``threshold_db`` below its peak."""
    peak = np.abs(x).max(initial=0.0)
    if peak == 0.0:
        raise ValueError("eSpeak NG returned silence")
    loud = np.nonzero(np.abs(x) >= peak * 10.0 ** (threshold_db / 20.0))[0]
    return x[loud[0] : loud[-1] + 1]


def speak(
    text: str, rng: np.random.Generator, voices: Sequence[str], reverb: float, accent: dict | None = None
) -> np.ndarray:
    """One utterance of ``text`` (float32 at 16 kHz, peak at -6..-12 dBFS) with parameters drawn from ``rng``;
    ``accent`` (:func:`torchssm.audio.accents.sample_accent`): its phonemes rewritten by that virtual accent."""
    voice = draw_voice(rng, voices)
    utterance = Utterance(
        text if accent is None else accented_text(text, voice, accent),
        voice=voice,
        rate=int(rng.integers(RATE_RANGE[0], RATE_RANGE[1] + 1)),
        pitch=int(rng.integers(PITCH_RANGE[0], PITCH_RANGE[1] + 1)),
        pitch_range=int(rng.integers(INTONATION_RANGE[0], INTONATION_RANGE[1] + 1)),
        seed=int(rng.integers(1 << 31)),
        phoneme_input=accent is not None,
    )
    speech = dsp.resample(_trim_silence(default_engine().synthesize(utterance)), NATIVE_RATE, SAMPLE_RATE)
    if rng.random() < reverb:
        rir = dsp.synthetic_rir(SAMPLE_RATE, float(rng.uniform(*RT60_RANGE)), rng)
        speech = dsp.reverberate(np.concatenate([speech, np.zeros(len(rir), np.float32)]), rir)
    peak = 0.5 * 10.0 ** (rng.uniform(*GAIN_DB_RANGE) / 20.0)
    return (speech * (peak / np.abs(speech).max())).astype(np.float32)


def _to_int16(x: np.ndarray) -> np.ndarray:
    return np.round(np.clip(x, -1.0, 1.0) * 32767.0).astype(np.int16)


def _cache_file(data_dir, task: str, key: dict):
    digest = hashlib.sha256(json.dumps({**key, "version": _CACHE_VERSION}, sort_keys=True).encode()).hexdigest()[:16]
    return resolve_data_dir(data_dir) / f"{task}_{digest}.npz"


def _voice_split_key(voice_split: str) -> dict:
    """Cache-key entry of a voice split: none for "families", so the caches made before the option stay valid."""
    if voice_split not in VOICE_SPLITS:
        raise ValueError(f"voice_split must be one of {list(VOICE_SPLITS)}, got {voice_split!r}")
    return {} if voice_split == "families" else {"voice_split": voice_split}


def _load_cache(path, rebuild: bool) -> dict | None:
    if path.exists() and not rebuild:
        try:
            with np.load(path) as data:
                return {k: data[k] for k in data.files}
        except (OSError, ValueError):
            pass  # unreadable cache: rebuilt
    return None


def noisy(
    clip: np.ndarray, snr_db: float | None, noise: str, rng: np.random.Generator, silence_power: float | None = None
) -> np.ndarray:
    """float32 copy of the int16 ``clip`` with noise of colour ``noise`` at ``snr_db`` dB (None: clean). A silent
    clip (all zeros, the "_silence_" class) has no power to set an SNR against: its noise gets the power
    ``silence_power / 10^(snr_db / 10)``, i.e. the noise of a clip of power ``silence_power``."""
    if noise not in NOISES:
        raise ValueError(f"noise must be one of {list(NOISES)}, got {noise!r}")
    out = clip.astype(np.float32) / 32767.0
    if snr_db is None:
        return out
    hiss = dsp.colored_noise(len(out), rng, NOISES[noise])
    if out.any():
        return dsp.mix_at_snr(out, hiss, float(snr_db))
    if silence_power is None or not silence_power > 0.0:
        raise ValueError(f"a silent clip needs silence_power > 0 to set its noise level, got {silence_power!r}")
    gain = math.sqrt(silence_power / (dsp.power(hiss) * 10.0 ** (float(snr_db) / 10.0)))
    return (gain * hiss).astype(np.float32)


def noisy_split(clips: Sequence[np.ndarray], snr_db: float | None, noise: str, seed: int, split: int) -> list:
    """:func:`noisy` on clip i of a split with ``numpy.random.default_rng([seed, split, i, 1])``; the split's silent
    clips (the "_silence_" class) get the noise of a clip of the mean power of its other clips."""
    silence_power = None
    if snr_db is not None and not all(c.any() for c in clips):  # the mean power only where a silent clip needs it
        spoken = [dsp.power(c.astype(np.float32) / 32767.0) for c in clips if c.any()]
        silence_power = float(np.mean(spoken)) if spoken else None
    return [
        noisy(c, snr_db, noise, np.random.default_rng([seed, split, i, 1]), silence_power) for i, c in enumerate(clips)
    ]


# --- spoken_commands ----------------------------------------------------------------------------------
def command_classes(words: str | int = "10") -> tuple[str, ...]:
    """The class names of ``spoken_commands`` (and ``speech_commands``) with ``words`` "10" or "12" (ints too):
    :data:`COMMAND_CLASSES`, label i = name i."""
    key = str(words) if isinstance(words, int) and not isinstance(words, bool) else words
    if key not in COMMAND_CLASSES:
        raise ValueError(f"words must be '10' (the commands) or '12' (with {SILENCE!r} and {UNKNOWN!r}), got {words!r}")
    return COMMAND_CLASSES[key]


def words_option(task_options: Mapping) -> str | int:
    """The ``words`` option of a saved ``spoken_commands`` / ``speech_commands`` task config (:data:`DEFAULT_WORDS`
    where it leaves it out, as every run before the option does)."""
    return task_options.get("words", DEFAULT_WORDS)


def command_class(index: int, words: str | int = "10") -> str:
    """The class of clip ``index`` of a ``spoken_commands`` split: ``classes[index % len(classes)]`` of
    :func:`command_classes` ``(words)``."""
    classes = command_classes(words)
    return classes[index % len(classes)]


def command_clip(
    seed: int,
    split: int,
    index: int,
    reverb: float,
    voice_split: str = "families",
    extra_train_variants: Sequence[str] = (),
    extra_train_accents: Sequence[str] = (),
    words: str | int = "10",
) -> np.ndarray:
    """Clip ``index`` of a split, class ``classes[index % len(classes)]`` of :func:`command_classes` ``(words)``:
    its word placed at a random offset in one second; "_unknown_": one of :data:`OTHER_WORDS` (drawn from
    ``default_rng([seed, split, index, 3])``, so the voice is still the first draw of ``[seed, split, index]``);
    "_silence_": all zeros (the task's noise is added when it is built, :func:`noisy_split`)."""
    label = command_class(index, words)
    if label == SILENCE:
        return np.zeros(SAMPLE_RATE, np.float32)
    if label == UNKNOWN:
        label = OTHER_WORDS[int(np.random.default_rng([seed, split, index, 3]).integers(len(OTHER_WORDS)))]
    rng = np.random.default_rng([seed, split, index])
    name = next(k for k, v in SPLIT_IDS.items() if v == split)
    voices = split_voices(voice_split, name, extra_train_variants, extra_train_accents)
    speech = speak(label, rng, voices, reverb)[:SAMPLE_RATE]
    clip = np.zeros(SAMPLE_RATE, np.float32)
    start = int(rng.integers(SAMPLE_RATE - len(speech) + 1))
    clip[start : start + len(speech)] = speech
    return clip


def generate_commands(
    seed: int,
    split: str,
    n: int,
    reverb: float,
    data_dir=None,
    rebuild_cache: bool = False,
    voice_split: str = "families",
    extra_train_variants: Sequence[str] = (),
    extra_train_accents: Sequence[str] = (),
    words: str | int = "10",
) -> dict:
    """{"clips": (n, 16000) int16, "labels": (n,) int64} of a split, from the cache or generated and cached
    (``extra_train_variants`` / ``extra_train_accents``: of the training split only; the other splits ignore them;
    ``words``: :func:`command_clip`'s, "12" with a cache of its own)."""
    classes = command_classes(words)
    variants, accents, extra_key = _split_extra_voices(split, extra_train_variants, extra_train_accents)
    key = {"seed": seed, "split": split, "n": n, "reverb": reverb, **_voice_split_key(voice_split), **extra_key}
    if classes != COMMANDS:  # the ten-word caches made before the option stay valid
        key["words"] = str(len(classes))
    path = _cache_file(data_dir, "spoken_commands", key)
    cached = _load_cache(path, rebuild_cache)
    if cached is not None:
        return cached
    sid = SPLIT_IDS[split]
    clips = np.stack(
        [
            _to_int16(command_clip(seed, sid, i, reverb, voice_split, variants, accents, words))
            for i in progress(range(n), n, f"spoken_commands {split}", least=50)
        ]
    )
    arrays = {"clips": clips, "labels": np.arange(n, dtype=np.int64) % len(classes)}
    save_npz_atomic(path, **arrays)
    return arrays


def speed_copy(clip: np.ndarray, factor: float, rng: np.random.Generator) -> np.ndarray:
    """int16 1-s ``clip`` played ``factor`` times faster (:func:`dsp.speed_perturb`), the word (its
    non-silent span, cut to 1 s) placed at a random offset in a new 1-s int16 clip."""
    fast = dsp.speed_perturb(clip.astype(np.float32) / 32767.0, factor)
    loud = np.nonzero(np.abs(fast) >= 1.0 / 32767.0)[0]
    word = fast[loud[0] : loud[-1] + 1][:SAMPLE_RATE] if len(loud) else fast[:0]
    out = np.zeros(SAMPLE_RATE, np.float32)
    start = int(rng.integers(SAMPLE_RATE - len(word) + 1))
    out[start : start + len(word)] = word
    return _to_int16(out)


def _with_speed_copies(arrays: dict, factors: tuple, seed: int) -> dict:
    """``arrays`` plus, per factor k, a copy of every clip at that speed (rng ``[seed, 0, i, 2, k]``)."""
    clips, labels = [arrays["clips"]], [arrays["labels"]]
    for k, factor in enumerate(factors):
        clips.append(
            np.stack(
                [
                    speed_copy(c, factor, np.random.default_rng([seed, 0, i, 2, k]))
                    for i, c in enumerate(arrays["clips"])
                ]
            )
        )
        labels.append(arrays["labels"])
    return {"clips": np.concatenate(clips), "labels": np.concatenate(labels)}


def clip_inputs(waves: torch.Tensor, features: str = "waveform", n_mels: int = 40, frame: int = 1) -> torch.Tensor:
    """Model inputs of 1-s 16 kHz clips ``waves`` (n, 16000), as ``spoken_commands`` gives them: (n, 16000 / frame,
    frame) raw samples, or (n, 98, n_mels) log-mel frames for ``features="logmel"``."""
    if features == "logmel":
        from torchssm.audio.features import LogMel

        with torch.no_grad():
            return LogMel(SAMPLE_RATE, n_mels=n_mels)(waves)  # (n, 98, n_mels)
    return waves.reshape(len(waves), SAMPLE_RATE // frame, frame)  # (n, 16000 / frame, frame)


def commands_info(features: str = "waveform", n_mels: int = 40, frame: int = 1, words: str | int = "10") -> TaskInfo:
    """The ``spoken_commands`` task's shapes for these options (what :func:`clip_inputs` gives; 10 or 12 classes)."""
    length, d_input = (98, n_mels) if features == "logmel" else (SAMPLE_RATE // frame, frame)
    return TaskInfo(
        name="spoken_commands",
        d_input=d_input,
        d_output=len(command_classes(words)),
        length=length,
        kind="classification",
        citation="eSpeak NG synthetic speech; words of Warden 2018 (Speech Commands) as in S4's SC10 (Gu et al. 2022)",
    )


def _commands_dataset(
    arrays: dict, snr_db, noise: str, seed: int, split: int, features: str, n_mels: int, frame: int = 1
):
    waves = torch.from_numpy(np.stack(noisy_split(arrays["clips"], snr_db, noise, seed, split)))  # (n, 16000)
    inputs = clip_inputs(waves, features, n_mels, frame)
    return TensorDictDataset(inputs=inputs, targets=torch.from_numpy(arrays["labels"]))


@register_task(
    "spoken_commands",
    "10 spoken command words synthesised by eSpeak NG (words=12: with _silence_ and _unknown_), 1 s at 16 kHz; "
    "test voices unseen in training (needs torchssm[audio])",
)
def build_spoken_commands(
    data_dir=None,
    seed: int = 0,
    n_train: int = 3000,
    n_val: int = 300,
    n_test: int = 1000,
    snr_db: float | None = 10.0,
    noise: str = "white",
    reverb: float = 0.0,
    features: str = "waveform",
    n_mels: int = 40,
    speed_perturb: Sequence[float] = (),
    rebuild_cache: bool = False,
    voice_split: str = "families",
    frame: int = 1,
    extra_train_variants: Sequence[str] = (),
    extra_train_accents: Sequence[str] = (),
    words: str | int = "10",
) -> TaskData:
    """Keyword spotting on synthetic speech (see the module docstring)."""
    classes = command_classes(words)
    _check_split_sizes(n_train=n_train, n_val=n_val, n_test=n_test)
    _voice_split_key(voice_split)
    extra_train_variants = check_extra_train_variants(extra_train_variants, voice_split)
    extra_train_accents = check_extra_train_accents(extra_train_accents)
    speed_perturb = dsp.check_speed_factors(speed_perturb, allow_one=False)
    if features not in ("waveform", "logmel"):
        raise ValueError(f"features must be 'waveform' or 'logmel', got {features!r}")
    if isinstance(frame, bool) or not isinstance(frame, int) or frame < 1 or SAMPLE_RATE % frame:
        raise ValueError(f"frame must be a positive int dividing {SAMPLE_RATE} (samples per step), got {frame!r}")
    if frame != 1 and features != "waveform":
        raise ValueError(f"frame groups raw samples: it needs features='waveform', got features={features!r}")
    unit_interval("reverb", reverb, "the probability of reverberating a clip")
    if noise not in NOISES:
        raise ValueError(f"noise must be one of {list(NOISES)}, got {noise!r}")
    splits = {}
    for split, n in (("train", n_train), ("val", n_val), ("test", n_test)):
        if n:
            arrays = generate_commands(
                seed,
                split,
                n,
                reverb,
                data_dir,
                rebuild_cache,
                voice_split,
                extra_train_variants,
                extra_train_accents,
                words,
            )
            if split == "train" and speed_perturb:
                arrays = _with_speed_copies(arrays, speed_perturb, seed)
            splits[split] = _commands_dataset(arrays, snr_db, noise, seed, SPLIT_IDS[split], features, n_mels, frame)
    return TaskData(
        info=commands_info(features, n_mels, frame, words),
        train=splits["train"],
        val=splits.get("val"),
        test=splits["test"],
        extra={
            "words": classes,
            "voices": {k: split_voices(voice_split, k, extra_train_variants, extra_train_accents) for k in SPLIT_IDS},
        },
    )


# --- spoken_sentences ---------------------------------------------------------------------------------
class SpeechDataset(Dataset):
    """Variable-length utterances: item i = {"audio": (n_i,) float32 16 kHz, "text": str}."""

    def __init__(self, audio: list[np.ndarray], texts: list[str]):
        if len(audio) != len(texts):
            raise ValueError(f"{len(audio)} utterances but {len(texts)} transcripts")
        self.audio, self.texts = audio, texts

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, i: int) -> dict:
        return {"audio": self.audio[i], "text": self.texts[i]}


def split_sentences(sentences: Sequence[str], seed: int, n_heldout_words: int) -> dict:
    """{"heldout": sorted held-out words, "train": [...], "test_pool": [...]} (see the module docstring)."""
    counts = Counter(w for s in sentences for w in s.split())
    candidates = sorted(w for w, c in counts.items() if 2 <= c <= 5 and len(w) >= 4)
    if n_heldout_words > len(candidates):
        raise ValueError(f"n_heldout_words={n_heldout_words} but only {len(candidates)} candidate words")
    rng = np.random.default_rng([seed, 7])
    heldout = sorted(rng.choice(candidates, size=n_heldout_words, replace=False).tolist()) if n_heldout_words else []
    held = set(heldout)
    order = rng.permutation(len(sentences))
    train = [sentences[i] for i in order if not held & set(sentences[i].split())]
    with_heldout = [sentences[i] for i in order if held & set(sentences[i].split())]
    return {"heldout": heldout, "train": train, "test_pool": with_heldout}


def _copy_rng(seed: int, sid: int, index: int, copy: int) -> np.random.Generator:
    """Generator of copy ``copy`` of sentence ``index``: copy 0 is the one of every task built before
    ``voices_per_sentence`` (``[seed, split, i]``); copy c > 0 draws afresh from ``[seed, split, i, 3, c]``."""
    return np.random.default_rng([seed, sid, index] if copy == 0 else [seed, sid, index, 3, copy])


def sentence_voices(
    split: str,
    index: int,
    copies: int,
    seed: int = 0,
    voice_split: str = "families",
    extra_train_variants: Sequence[str] = (),
    extra_train_accents: Sequence[str] = (),
) -> list[tuple[str, list[str]]]:
    """[(voice, voices drawn from)] of copies 0..``copies`` - 1 of sentence ``index`` of ``split``: copy c's voice
    is the first draw of its generator (:func:`_copy_rng`) among the split's voices (:func:`split_voices`) not used
    by copies 0..c - 1, so the copies of a sentence have ``copies`` different voices (copy 0's is
    :func:`item_voice`'s)."""
    voices, sid = split_voices(voice_split, split, extra_train_variants, extra_train_accents), SPLIT_IDS[split]
    out: list[tuple[str, list[str]]] = []
    _check_voices_per_sentence(copies, len(voices))
    for copy in range(copies):
        pool = [v for v in voices if v not in {u for u, _ in out}]
        out.append((draw_voice(_copy_rng(seed, sid, index, copy), pool), pool))
    return out


def utterance_accent(seed: int, sid: int, index: int, copy: int, accent_augment: float) -> dict | None:
    """The virtual accent of copy ``copy`` of training sentence ``index`` (:mod:`torchssm.audio.accents`), or None
    (its voice's own): with probability ``accent_augment``, from a generator of its own (``[seed, split, i, 5, copy]``),
    so the voice, rate and pitch draws, and every utterance without an accent, are the task's without the option."""
    if not accent_augment:
        return None
    rng = np.random.default_rng([seed, sid, index, 5, copy])
    return sample_accent(rng) if rng.random() < accent_augment else None


def _check_voices_per_sentence(k, n_voices: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= n_voices:
        raise ValueError(f"voices_per_sentence must be an int from 1 to {n_voices} (the training voices), got {k!r}")


def generate_sentences(
    seed: int,
    split: str,
    texts: list[str],
    reverb: float,
    data_dir=None,
    rebuild_cache: bool = False,
    voice_split: str = "families",
    copy: int = 0,
    extra_train_variants: Sequence[str] = (),
    extra_train_accents: Sequence[str] = (),
    accent_augment: float = 0.0,
) -> dict:
    """{"audio": concatenated int16, "offsets": (n + 1,) int64} of ``texts`` spoken by the split's voices;
    ``copy`` c > 0: their c-th extra rendering (``voices_per_sentence``; each text by a voice none of
    copies 0..c - 1 used, :func:`sentence_voices`), cached in a file of its own (``extra_train_variants`` /
    ``extra_train_accents`` / ``accent_augment`` (:func:`utterance_accent`): of the training split only; the other
    splits ignore them)."""
    variants, other_accents, extra_key = _split_extra_voices(split, extra_train_variants, extra_train_accents)
    accent_augment = unit_interval("accent_augment", accent_augment, "a probability") if split == "train" else 0.0
    key = {
        "seed": seed,
        "split": split,
        "texts": hashlib.sha256("\n".join(texts).encode()).hexdigest(),
        "reverb": reverb,
        **_voice_split_key(voice_split),
        **({"copy": copy} if copy else {}),  # none for copy 0: the caches made before the option stay valid
        **extra_key,
        **({"accent_augment": accent_augment} if accent_augment else {}),
    }
    path = _cache_file(data_dir, "spoken_sentences", key)
    cached = _load_cache(path, rebuild_cache)
    if cached is not None:
        return cached
    sid = SPLIT_IDS[split]
    desc = f"spoken_sentences {split}" + (f" copy {copy}" if copy else "")
    clips = [
        _to_int16(
            speak(
                t,
                _copy_rng(seed, sid, i, copy),
                sentence_voices(split, i, copy + 1, seed, voice_split, variants, other_accents)[-1][1],
                reverb,
                utterance_accent(seed, sid, i, copy, accent_augment),
            )
        )
        for i, t in progress(enumerate(texts), len(texts), desc, least=50)
    ]
    arrays = {"audio": np.concatenate(clips), "offsets": np.cumsum([0] + [len(c) for c in clips]).astype(np.int64)}
    save_npz_atomic(path, **arrays)
    return arrays


@register_task(
    "spoken_sentences",
    "English prose sentences synthesised by eSpeak NG with transcripts; unseen "
    "voices and held-out words in test (needs torchssm[audio]; train with `torchssm speech train`)",
)
def build_spoken_sentences(
    data_dir=None,
    seed: int = 0,
    n_train: int = 2000,
    n_val: int = 100,
    n_test: int = 200,
    max_words: int = 12,
    n_heldout_words: int = 100,
    snr_db: float | None = None,
    noise: str = "white",
    reverb: float = 0.0,
    rebuild_cache: bool = False,
    voice_split: str = "families",
    voices_per_sentence: int = 1,
    extra_train_variants: Sequence[str] = (),
    extra_train_accents: Sequence[str] = (),
    accent_augment: float = 0.0,
    n_val_heldout: int = 0,
) -> TaskData:
    """Speech recognition on synthetic speech (see the module docstring); items are {"audio", "text"}.

    ``voices_per_sentence`` k: every training sentence spoken by k different training voices (fresh voice,
    rate, pitch and range draws per copy, :func:`sentence_voices`): k * n_train training items, copy c of
    sentence i at index c * n_train + i, the transcripts repeated k times; val and test unchanged. k = 1
    (default) is the task of before, the same audio and cache. ``extra_train_variants``: more training voices,
    as ``spoken_commands``' (:func:`check_extra_train_variants`; every training utterance's voice is then drawn
    among the larger set, so every training utterance changes; val and test unchanged); ``extra_train_accents``
    likewise (other languages' voices reading the English sentences, :func:`check_extra_train_accents`).
    ``accent_augment`` p: each training utterance, with probability p, spoken in a virtual accent of its own
    (:mod:`torchssm.audio.accents`: its voice's phonemes rewritten by English accents' lexical-set alternations;
    the transcript unchanged; :func:`utterance_accent`); 0 (default) is the task without it. ``n_val_heldout`` m:
    val's ``n_val`` sentences followed by m with a held-out word (:func:`sentence_texts`); 0 (default) is the task
    without it."""
    _voice_split_key(voice_split)
    accent_augment = unit_interval("accent_augment", accent_augment, "a probability")
    if accent_augment and extra_train_accents:
        raise ValueError("accent_augment rewrites English phonemes; it cannot be combined with extra_train_accents")
    extra_train_variants = check_extra_train_variants(extra_train_variants, voice_split)
    extra_train_accents = check_extra_train_accents(extra_train_accents)
    n_voices = len(split_voices(voice_split, "train", extra_train_variants, extra_train_accents))
    _check_voices_per_sentence(voices_per_sentence, n_voices)
    texts = sentence_texts(data_dir, seed, n_train, n_val, n_test, max_words, n_heldout_words, n_val_heldout)
    splits = {}
    for split in SPLIT_IDS:
        items = texts[split]
        if not items:
            continue
        clips = []
        for copy in range(voices_per_sentence if split == "train" else 1):
            arrays = generate_sentences(
                seed,
                split,
                items,
                reverb,
                data_dir,
                rebuild_cache,
                voice_split,
                copy,
                extra_train_variants,
                extra_train_accents,
                accent_augment,
            )
            offsets = arrays["offsets"]
            clips += [arrays["audio"][offsets[i] : offsets[i + 1]] for i in range(len(items))]
        spoken = items * (len(clips) // len(items))
        splits[split] = SpeechDataset(noisy_split(clips, snr_db, noise, seed, SPLIT_IDS[split]), spoken)
    vocab = sorted({w for s in texts["train"] for w in s.split()})
    info = TaskInfo(
        name="spoken_sentences",
        d_input=1,
        d_output=len(CharVocabulary()),
        length=0,
        kind="transcription",
        citation="eSpeak NG synthetic speech of Python standard library docstrings",
    )
    return TaskData(
        info=info,
        train=splits["train"],
        val=splits.get("val"),
        test=splits["test"],
        extra={"heldout_words": texts["heldout"], "train_vocabulary": vocab},
    )


def sentence_texts(
    data_dir=None,
    seed: int = 0,
    n_train: int = 2000,
    n_val: int = 100,
    n_test: int = 200,
    max_words: int = 12,
    n_heldout_words: int = 100,
    n_val_heldout: int = 0,
) -> dict:
    """The transcripts of ``spoken_sentences`` without its audio: {"train", "val", "test": [sentences],
    "heldout": [words]} (the arguments as the task's; the test split: every sentence with a held-out word, up to
    half of ``n_test``, then unseen ordinary sentences; val: ``n_val`` ordinary sentences, then the
    ``n_val_heldout`` sentences with a held-out word that follow the test's in the pool).
    ``audio.lm.lm_from_checkpoint`` builds a run's language model from them without synthesising a clip."""
    from torchssm.audio import prose

    _check_split_sizes(n_train=n_train, n_val=n_val, n_test=n_test, n_val_heldout=n_val_heldout)
    sentences = prose.cached_stdlib_sentences(max_words, data_dir)
    parts = split_sentences(sentences, seed, n_heldout_words)
    if n_train + n_val + max(0, n_test - len(parts["test_pool"])) > len(parts["train"]):
        raise ValueError(f"asked for {n_train} + {n_val} + {n_test} sentences; only {len(sentences)} are available")
    n_heldout_test = min(len(parts["test_pool"]), n_test // 2)
    pool_left = parts["test_pool"][n_heldout_test:]
    if n_val_heldout > len(pool_left):
        raise ValueError(
            f"n_val_heldout={n_val_heldout} but only {len(pool_left)} sentences with a held-out word are left "
            f"after the test's {n_heldout_test}"
        )
    return {
        "train": parts["train"][:n_train],
        "val": parts["train"][n_train : n_train + n_val] + pool_left[:n_val_heldout],
        "test": parts["test_pool"][:n_heldout_test]
        + parts["train"][n_train + n_val : n_train + n_val + n_test - n_heldout_test],
        "heldout": parts["heldout"],
    }
