"""Offline speech synthesis with eSpeak NG (Dunn, Duddington et al., github.com/espeak-ng/espeak-ng).

The library and its voice data come from the ``espeakng-loader`` wheel (``pip install
"torchssm[audio]"``; no system package); it is driven through ctypes by a small server process
(:mod:`torchssm.audio.espeak_worker`, which explains why it forks once per utterance). This module
is the client::

    speech = synthesize("stop", voice="en-us+m3", rate=160, pitch=45, pitch_range=60, seed=0)
    # (n,) float32 in [-1, 1] at eSpeak's native 22050 Hz; resample with torchssm.audio.dsp.resample

An utterance is a pure function of its arguments (text, voice, rate, pitch, range, seed): the same
call always returns the same samples, whatever was synthesised before.

``text_to_phonemes(text, voice)`` gives a voice's phoneme mnemonics of a text, clause by clause (eSpeak NG's ascii
names, e.g. ``"D|@ k|'A@ p|'A@|k"`` for "the car park" in en); an :class:`Utterance` with ``phoneme_input=True``
speaks ``[[...]]`` in its text as such mnemonics (``torchssm.audio.accents`` rewrites them).

Voices are ``<accent>+<variant>``: the English accents eSpeak NG ships (``ACCENTS``) or the voices of the other
West Germanic languages (``OTHER_LANGUAGE_ACCENTS``, reading English text), and its voice variants
(``VARIANTS``: m1..m7 male, f1..f5 female, and character voices such as whisper, croak).
"""

from __future__ import annotations

import atexit
import json
import os
import struct
import subprocess
import sys
import threading
from dataclasses import dataclass
from typing import IO

import numpy as np

# The English voices of eSpeak NG 1.52 (espeak-ng-data/lang/gmw/en*; name -> accent).
ACCENTS = {
    "en-us": "American",
    "en": "British (southern)",
    "en-gb-x-rp": "British Received Pronunciation",
    "en-gb-scotland": "Scottish",
    "en-gb-x-gbclan": "Lancastrian",
    "en-gb-x-gbcwmd": "West Midlands",
    "en-us-nyc": "New York City",
    "en-029": "Caribbean",
}
# The voices of the other West Germanic languages of eSpeak NG 1.52 (espeak-ng-data/lang/gmw: af, de, lb, nl). Given
# English text they read it by their own letter-to-sound rules, switching to English pronunciation for the words
# their dictionaries list as English (espeak_TextToPhonemes of a 12-word docstring sentence: de read 6 of its words
# in English, af 4, nl and lb none; "high" is hˈaɪ in de, hˈɪx in nl, hˈigh in lb); a crude foreign accent, for
# training-voice augmentation (audio.synthetic's extra_train_accents).
OTHER_LANGUAGE_ACCENTS = {"af": "Afrikaans", "de": "German", "lb": "Luxembourgish", "nl": "Dutch"}
MALE_VARIANTS = tuple(f"m{i}" for i in range(1, 8))
FEMALE_VARIANTS = tuple(f"f{i}" for i in range(1, 6))
OTHER_VARIANTS = ("whisper", "croak", "klatt", "klatt2", "klatt3", "grandpa", "grandma", "aunty", "steph", "edward")
VARIANTS = MALE_VARIANTS + FEMALE_VARIANTS + OTHER_VARIANTS

# eSpeak NG parameter ranges (speak_lib.h: espeakRATE 80-450 words/min, espeakPITCH and espeakRANGE 0-100).
RATE_LIMITS = (80, 450)
PERCENT_LIMITS = (0, 100)

_WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "espeak_worker.py")


def voice_name(accent: str, variant: str | None = None) -> str:
    """``"en-us+m3"`` from ``("en-us", "m3")``; ``variant`` None or "" is the accent's default voice."""
    if accent not in ACCENTS and accent not in OTHER_LANGUAGE_ACCENTS:
        raise ValueError(
            f"unknown accent {accent!r}; expected one of {sorted(ACCENTS) + sorted(OTHER_LANGUAGE_ACCENTS)}"
        )
    if variant and variant not in VARIANTS:
        raise ValueError(f"unknown voice variant {variant!r}; expected one of {list(VARIANTS)}")
    return f"{accent}+{variant}" if variant else accent


@dataclass(frozen=True)
class Utterance:
    """Everything that determines one synthesised utterance."""

    text: str
    voice: str = "en-us"
    rate: int = 175  # words per minute (eSpeak NG default 175)
    pitch: int = 50  # 0-100 (default 50)
    pitch_range: int = 50  # 0-100, intonation range (default 50; 0 is monotone)
    seed: int = 0
    phoneme_input: bool = False  # [[...]] in the text are phoneme mnemonics (eSpeak NG's espeakPHONEMES flag)

    def __post_init__(self):
        if not isinstance(self.text, str) or not self.text.strip():
            raise ValueError(f"text to synthesise must be a non-empty string, got {self.text!r}")
        for name, (lo, hi) in (("rate", RATE_LIMITS), ("pitch", PERCENT_LIMITS), ("pitch_range", PERCENT_LIMITS)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not lo <= value <= hi:
                raise ValueError(f"{name} must be an int in [{lo}, {hi}], got {value!r}")

    def request(self) -> dict:
        return {
            "text": self.text,
            "voice": self.voice,
            "rate": int(self.rate),
            "pitch": int(self.pitch),
            "range": int(self.pitch_range),
            "seed": int(self.seed),
            **({"phoneme_input": True} if self.phoneme_input else {}),
        }


class ESpeak:
    """A connection to one synthesis server (started lazily; calls are serialised by a lock)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self.sample_rate: int | None = None

    def _start(self) -> None:
        if not hasattr(os, "fork"):
            raise RuntimeError("the eSpeak NG server needs os.fork (Linux, macOS); not available on this platform")
        try:
            import espeakng_loader  # noqa: F401  (a clear error here rather than in the server)
        except ImportError as err:
            raise ImportError('speech synthesis needs espeakng-loader: pip install "torchssm[audio]"') from err
        self._proc = subprocess.Popen([sys.executable, _WORKER], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        status, payload = self._read_reply()
        if status != 0:
            raise RuntimeError(f"eSpeak NG server failed to start: {payload.decode(errors='replace')}")
        self.sample_rate = struct.unpack(">i", payload)[0]

    def _pipes(self) -> tuple[subprocess.Popen, IO[bytes], IO[bytes]]:
        """The running server and its stdin / stdout (started with both piped)."""
        proc = self._proc
        assert proc is not None and proc.stdin is not None and proc.stdout is not None
        return proc, proc.stdin, proc.stdout

    def _read_reply(self):
        proc, _, stdout = self._pipes()
        header = stdout.read(8)
        if len(header) != 8:
            code = proc.poll()
            self._proc = None
            raise RuntimeError(f"eSpeak NG server exited unexpectedly (exit code {code})")
        size, status = struct.unpack(">Ii", header)
        return status, stdout.read(size)

    def synthesize(self, utterance: Utterance) -> np.ndarray:
        """(n,) float32 samples in [-1, 1] at :attr:`sample_rate` (22050 Hz for eSpeak NG)."""
        if not isinstance(utterance, Utterance):
            raise TypeError(f"expected an Utterance, got {type(utterance).__name__}")
        payload = self._ask(utterance.request())
        return np.frombuffer(payload, dtype="<i2").astype(np.float32) / 32768.0

    def text_to_phonemes(self, text: str, voice: str = "en-us", ipa: bool = False) -> list[tuple[str, str]]:
        """[(clause text, phonemes)]: ``voice``'s phoneme mnemonics of each clause of ``text``, one ``|`` between
        phonemes and one space between words (``espeak_TextToPhonemes``; stress marks ``'`` / ``,`` lead a
        stressed vowel's phoneme). The clause texts are the pieces of ``text`` eSpeak NG read for each clause; they
        run a few characters past the clause's punctuation, into the next clause, and together make ``text``.
        ``ipa``: the phonemes in the International Phonetic Alphabet (how the voice realises them) instead."""
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"text to transcribe into phonemes must be a non-empty string, got {text!r}")
        request = {"op": "phonemes", "text": text, "voice": voice, **({"ipa": True} if ipa else {})}
        clauses = json.loads(self._ask(request).decode("utf-8"))
        return [(str(clause), str(phonemes)) for clause, phonemes in clauses]

    def _ask(self, request: dict) -> bytes:
        """The server's payload for ``request``; a ValueError with its message if it refused."""
        data = json.dumps(request).encode("utf-8")
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                self._start()
            _, stdin, _ = self._pipes()
            stdin.write(struct.pack(">I", len(data)) + data)
            stdin.flush()
            status, payload = self._read_reply()
        if status != 0:
            raise ValueError(payload.decode("utf-8", errors="replace"))
        return payload

    def close(self) -> None:
        with self._lock:
            if self._proc is not None:
                proc, stdin, stdout = self._pipes()
                stdin.close()
                proc.wait(timeout=10)
                stdout.close()
                self._proc = None


_DEFAULT: ESpeak | None = None
_DEFAULT_LOCK = threading.Lock()


def default_engine() -> ESpeak:
    """The process-wide :class:`ESpeak` (closed at exit)."""
    global _DEFAULT
    with _DEFAULT_LOCK:
        if _DEFAULT is None:
            _DEFAULT = ESpeak()
            atexit.register(_DEFAULT.close)
        return _DEFAULT


def synthesize(
    text: str,
    voice: str = "en-us",
    rate: int = 175,
    pitch: int = 50,
    pitch_range: int = 50,
    seed: int = 0,
    phoneme_input: bool = False,
) -> np.ndarray:
    """(n,) float32 speech of ``text`` at :data:`NATIVE_RATE` Hz (see :class:`Utterance` for the arguments)."""
    return default_engine().synthesize(Utterance(text, voice, rate, pitch, pitch_range, seed, phoneme_input))


def text_to_phonemes(text: str, voice: str = "en-us", ipa: bool = False) -> list[tuple[str, str]]:
    """[(clause text, phonemes)] of ``text`` in ``voice`` (:meth:`ESpeak.text_to_phonemes`)."""
    return default_engine().text_to_phonemes(text, voice, ipa)


NATIVE_RATE = 22050  # eSpeak NG's output rate (espeak_Initialize's return value; checked by the tests)
