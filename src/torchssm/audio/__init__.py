"""Speech: offline synthetic speech (eSpeak NG), readers for Speech Commands and LibriSpeech, log-mel
features, keyword spotting, CTC and Samba-ASR-style recognition, streaming transcription.

Submodules are imported on use (``torchssm.audio.espeak``, ``.dsp``, ``.features``, ``.synthetic``,
``.corpora``, ``.text``, ``.ctc``, ``.asr``, ``.streaming``); see docs/speech.md.
"""
