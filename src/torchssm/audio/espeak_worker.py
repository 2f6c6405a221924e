"""The eSpeak NG synthesis server: a small process that owns libespeak-ng and forks once per utterance.

Run as a script (``python espeak_worker.py``) by :class:`torchssm.audio.espeak.ESpeak`; it imports
only the standard library and ``espeakng_loader`` (no torch, no torchssm), so it starts in a blink.

Why a separate process that forks per utterance:

* libespeak-ng keeps synthesis state in static variables that survive from one utterance to the
  next and even across ``espeak_Terminate`` / ``espeak_Initialize`` (measured with the wheel's
  eSpeak NG 1.52: the same text, voice and parameters gave 8576, 8573, 8580, 8578 samples on four
  calls in a row; only the first call of a fresh process is reproducible). This server initialises
  the library once and never synthesises itself; each request runs in a ``fork`` of that pristine
  state, so an utterance is a pure function of (text, voice, rate, pitch, range, seed), whatever
  was synthesised before and in whatever order.
* libespeak-ng is not thread-safe; one server answers one request at a time (the client holds a lock).
* The random parts of the synthesis (breath / whisper noise) come from eSpeak NG's own generator
  (``espeak_ng_SetRandSeed``) and from the C library's ``rand`` (``srand``); the child seeds both.

Protocol over stdin / stdout, every message prefixed by its byte length (``>I``):
request: UTF-8 JSON ``{"text", "voice", "rate", "pitch", "range", "seed"}`` (optionally ``"phoneme_input": true``:
``[[...]]`` in the text are eSpeak NG phoneme mnemonics, the espeakPHONEMES flag), or ``{"op": "phonemes", "text",
"voice"}`` (``"ipa": true``: IPA instead of eSpeak's ascii names); reply: ``>i`` status (0 ok, 1 error), then
the payload: little-endian int16 samples at the native rate (reported once, at start-up, as the first reply), for
"phonemes" UTF-8 JSON ``[[clause text, phonemes], ...]`` (the voice's phonemes of each clause, one ``|`` between
phonemes, one space between words), or a UTF-8 error message.

The C API used (``speak_lib.h`` / ``espeak_ng.h`` of eSpeak NG): ``espeak_Initialize`` in
AUDIO_OUTPUT_SYNCHRONOUS mode with a synth callback that collects the samples,
``espeak_SetVoiceByName`` (``"en-us+m3"``: language voice + variant), ``espeak_SetParameter``
(espeakRATE words per minute, espeakPITCH 0-100, espeakRANGE 0-100), ``espeak_Synth``,
``espeak_Synchronize``; ``espeak_TextToPhonemes`` (phonememode: bits 8-23 the separator between phonemes).
"""

from __future__ import annotations

import ctypes
import json
import os
import struct
import sys

AUDIO_OUTPUT_SYNCHRONOUS = 2
ESPEAK_INITIALIZE_DONT_EXIT = 0x8000
POS_CHARACTER = 1
ESPEAK_CHARS_UTF8 = 1
ESPEAK_PHONEMES = 0x100  # speak_lib.h espeakPHONEMES: [[...]] in the text are phoneme mnemonics
PHONEME_SEPARATOR = "|"
PHONEMES_IPA = 0x02  # espeak_TextToPhonemes phonememode: IPA (UTF-8) instead of eSpeak's ascii phoneme names
PARAMETERS = {"rate": 1, "pitch": 3, "range": 4}  # espeak_PARAMETER: espeakRATE, espeakPITCH, espeakRANGE
ERRORS = {-1: "EE_INTERNAL_ERROR", 1: "EE_BUFFER_FULL", 2: "EE_NOT_FOUND"}

_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


def load_library():
    """(libespeak-ng handle, native sample rate) with the wheel's voice data, initialised."""
    import espeakng_loader

    lib = ctypes.CDLL(espeakng_loader.get_library_path())
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_Synth.argtypes = [
        ctypes.c_char_p,
        ctypes.c_size_t,
        ctypes.c_uint,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.c_uint,
        ctypes.c_void_p,
        ctypes.c_void_p,
    ]
    lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
    lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
    lib.espeak_TextToPhonemes.argtypes = [ctypes.POINTER(ctypes.c_char_p), ctypes.c_int, ctypes.c_int]
    rate = lib.espeak_Initialize(
        AUDIO_OUTPUT_SYNCHRONOUS, 0, espeakng_loader.get_data_path().encode(), ESPEAK_INITIALIZE_DONT_EXIT
    )
    if rate <= 0:
        raise RuntimeError(f"espeak_Initialize failed (returned {rate})")
    return lib, rate


def synthesize(lib, request: dict) -> bytes:
    """int16 samples (bytes) of one request; raises ValueError on a rejected voice or parameter."""
    chunks = []

    @_CALLBACK
    def collect(wav, n, events):  # called by espeak_Synth with each block of samples
        if wav and n > 0:
            chunks.append(ctypes.string_at(wav, 2 * n))
        return 0  # 0: continue synthesis

    seed = int(request["seed"]) & 0x7FFFFFFF
    ctypes.CDLL(None).srand(ctypes.c_uint(seed))
    lib.espeak_ng_SetRandSeed(seed)
    lib.espeak_SetSynthCallback(collect)
    _set_voice(lib, request["voice"])
    for name, code in PARAMETERS.items():
        if lib.espeak_SetParameter(code, int(request[name]), 0) != 0:
            raise ValueError(f"eSpeak NG rejected {name}={request[name]!r}")
    text = str(request["text"]).encode("utf-8")
    flags = ESPEAK_CHARS_UTF8 | (ESPEAK_PHONEMES if request.get("phoneme_input") else 0)
    status = lib.espeak_Synth(text, len(text) + 1, 0, POS_CHARACTER, 0, flags, None, None)
    if status != 0:
        raise RuntimeError(f"espeak_Synth failed ({ERRORS.get(status, status)})")
    lib.espeak_Synchronize()
    return b"".join(chunks)


def _set_voice(lib, voice) -> None:
    status = lib.espeak_SetVoiceByName(str(voice).encode())
    if status != 0:
        raise ValueError(f"eSpeak NG has no voice {voice!r} ({ERRORS.get(status, status)})")


def phonemes(lib, request: dict) -> bytes:
    """UTF-8 JSON [[clause text, phoneme mnemonics], ...] of ``request["text"]`` in ``request["voice"]`` (the clause
    text as eSpeak NG read it: its end pointer runs a few characters past the clause's punctuation, into the next)."""
    _set_voice(lib, request["voice"])
    raw = str(request["text"]).encode("utf-8")
    text = ctypes.c_char_p(raw)
    start = base = ctypes.cast(text, ctypes.c_void_p).value or 0
    mode = ord(PHONEME_SEPARATOR) << 8 | (PHONEMES_IPA if request.get("ipa") else 0)  # separator between phonemes
    clauses = []
    while text.value:
        result = lib.espeak_TextToPhonemes(ctypes.byref(text), ESPEAK_CHARS_UTF8, mode)
        end = ctypes.cast(text, ctypes.c_void_p).value  # None once the whole text is read
        stop = len(raw) if end is None else end - base
        clauses.append([raw[start - base : stop].decode("utf-8", errors="replace"), (result or b"").decode()])
        start = base + stop
    return json.dumps(clauses).encode("utf-8")


def handle(lib, request: dict) -> bytes:
    """The reply payload of one request (synthesis, or ``"op": "phonemes"``)."""
    return phonemes(lib, request) if request.get("op") == "phonemes" else synthesize(lib, request)


def _read_exact(stream, n: int) -> bytes:
    data = stream.read(n)
    if len(data) != n:
        raise EOFError
    return data


def _reply(out, status: int, payload: bytes) -> None:
    out.write(struct.pack(">Ii", len(payload), status) + payload)
    out.flush()


def _forked_reply(lib, request: dict):
    """(status, payload) of ``request`` answered in a child forked from the pristine state."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: answer, send the result, exit without running any Python clean-up
        os.close(read_fd)
        try:
            status, payload = 0, handle(lib, request)
        except Exception as err:  # reported to the parent, which raises it in the client
            status, payload = 1, str(err).encode()
        with os.fdopen(write_fd, "wb") as pipe:
            pipe.write(struct.pack(">i", status) + payload)
        os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        data = pipe.read()
    _, exit_status = os.waitpid(pid, 0)
    if len(data) < 4:
        return 1, f"eSpeak NG synthesis process died (wait status {exit_status})".encode()
    return struct.unpack(">i", data[:4])[0], data[4:]


def main() -> None:
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    lib, rate = load_library()
    _reply(stdout, 0, struct.pack(">i", rate))
    while True:
        try:
            (size,) = struct.unpack(">I", _read_exact(stdin, 4))
            request = json.loads(_read_exact(stdin, size).decode("utf-8"))
        except EOFError:
            return  # the client closed the pipe
        _reply(stdout, *_forked_reply(lib, request))


if __name__ == "__main__":
    main()
