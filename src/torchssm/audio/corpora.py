"""Readers for real speech corpora in their official on-disk layouts (read with ``soundfile``).

Speech Commands v0.02 (Warden 2018, arXiv:1804.03209, Sec. 6): ``<root>/<word>/<speaker>_nohash_<n>.wav``
(16 kHz mono, at most 1 s), ``validation_list.txt`` and ``testing_list.txt`` listing the validation and
test files as ``<word>/<file>.wav`` (every other file is training), and ``_background_noise_/*.wav``.
The task ``speech_commands`` keeps the 10 command words (S4's SC10, Gu et al. 2022, Sec. 5.3), all 35
(``words="all"``) or the twelve labels of the corpus' standard evaluation (``words="12"``: the commands,
``_silence_`` and ``_unknown_``, built as TensorFlow's speech_commands example builds them, :func:`twelve_class_items`),
and zero-pads each clip to 16000 samples. The corpus' separate test archive (``speech_commands_test_set_v0.02``:
one folder per twelve-label class, ``_silence_`` and ``_unknown_`` included, no lists) replaces the listed test split
with ``test_root=`` (:func:`speech_commands_test_set_files`).

LibriSpeech (Panayotov et al. 2015): ``<root>/<subset>/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac``
with one ``<speaker>-<chapter>.trans.txt`` per chapter, lines ``<utterance id> <TRANSCRIPT>`` in upper
case. The task ``librispeech`` returns {"audio", "text"} items (text lower-cased).

The data directory holds the corpora as their archives unpack: ``<data_dir>/speech_commands_v0.02/``
and ``<data_dir>/LibriSpeech/`` (or pass ``root=``). Nothing is downloaded.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from torchssm.audio.synthetic import (
    COMMAND_CLASSES,
    COMMANDS,
    SAMPLE_RATE,
    SILENCE,
    SPLIT_IDS,
    UNKNOWN,
    SpeechDataset,
    command_classes,
)
from torchssm.audio.text import CharVocabulary, normalize_transcript
from torchssm.data.loaders import TensorDictDataset, resolve_data_dir
from torchssm.data.registry import TaskData, TaskInfo, register_task

BACKGROUND = "_background_noise_"
# words="12" (TensorFlow's speech_commands example, input_data.py and train.py defaults): per split, "_unknown_" and
# "_silence_" clips each ceil(10%) of the split's command clips; the example's silence is zeros, with background noise
# at a volume up to 0.1 mixed in during training only; here every split's silence is a background cut at such a
# volume, so val and test silence is not all zeros.
EXTRA_CLASS_PERCENT = 10.0
BACKGROUND_VOLUME = 0.1
SPEECH_COMMANDS_DIR = "speech_commands_v0.02"
SPEECH_COMMANDS_TEST_DIR = "speech_commands_test_set_v0.02"  # the separate test archive, unpacked
LIBRISPEECH_DIR = "LibriSpeech"


def read_audio(path, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """(n,) float32 samples of a mono audio file; ValueError for unreadable, multi-channel or wrong-rate audio."""
    import soundfile

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no audio file {path}")
    try:
        data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, soundfile.LibsndfileError) as err:  # LibsndfileError subclasses RuntimeError in new versions
        raise ValueError(f"{path}: unreadable audio ({err})") from None
    if rate != sample_rate:
        raise ValueError(f"{path}: sample rate {rate} Hz, expected {sample_rate} Hz (resample it first)")
    if data.shape[1] != 1:
        raise ValueError(f"{path}: {data.shape[1]} channels, expected mono")
    return data[:, 0]


# --- Speech Commands ------------------------------------------------------------------------------
def _read_list(path: Path) -> set:
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: expected the official Speech Commands v0.02 layout")
    return {line.strip() for line in path.read_text().splitlines() if line.strip()}


def speech_commands_files(root) -> dict[str, list[tuple[str, str]]]:
    """{"train"|"val"|"test": [(relative path "word/file.wav", word)]} from the official lists."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"no Speech Commands directory {root}")
    val, test = _read_list(root / "validation_list.txt"), _read_list(root / "testing_list.txt")
    splits: dict[str, list[tuple[str, str]]] = {"train": [], "val": [], "test": []}
    words = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name != BACKGROUND and not p.name.startswith("."))
    if not words:
        raise FileNotFoundError(f"{root} has no word folders")
    for word in words:
        for wav in sorted((root / word).glob("*.wav")):
            rel = f"{word}/{wav.name}"
            splits["test" if rel in test else "val" if rel in val else "train"].append((rel, word))
    return splits


def speech_commands_test_set_files(root) -> list[tuple[str, str]]:
    """[(relative path "label/file.wav", label)] of the separate test archive ``speech_commands_test_set_v0.02``:
    one folder per class of the twelve-label evaluation (the ten commands, ``_silence_``, ``_unknown_``; Warden
    2018, TensorFlow's speech_commands example), its silence clips recorded noise rather than cut at load time."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"no Speech Commands test set directory {root}")
    folders = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    expected = command_classes("12")
    strange = [f for f in folders if f not in expected]
    if strange:
        raise ValueError(f"{root}: folders {strange} are not test set classes; expected some of {list(expected)}")
    files = [(f"{label}/{wav.name}", label) for label in folders for wav in sorted((root / label).glob("*.wav"))]
    if not files:
        raise FileNotFoundError(f"{root} has no <label>/*.wav files")
    return files


def background_noise(root) -> dict[str, np.ndarray]:
    """{file stem: samples} of ``_background_noise_/*.wav`` (empty when the folder is absent)."""
    folder = Path(root) / BACKGROUND
    return {p.stem: read_audio(p) for p in sorted(folder.glob("*.wav"))} if folder.is_dir() else {}


def speech_commands_root(data_dir=None, root: str | None = None) -> Path:
    """The corpus folder: ``root``, else ``<data_dir>/speech_commands_v0.02``."""
    return Path(root) if root else resolve_data_dir(data_dir) / SPEECH_COMMANDS_DIR


def speech_commands_words(files: dict[str, list[tuple[str, str]]], words: str | int = "10") -> list[str]:
    """The class names, label i = name i: the 10 command words (``words="10"``), with ``_silence_`` and
    ``_unknown_`` (``"12"``), or every word of the corpus' files (``"all"``), sorted."""
    if words == "all":
        return sorted({w for items in files.values() for _, w in items})
    if isinstance(words, bool) or str(words) not in COMMAND_CLASSES:
        raise ValueError(f"words must be '10', '12' or 'all', got {words!r}")
    return list(COMMAND_CLASSES[str(words)])


def twelve_class_items(items: list[tuple[str, str]], split: str, seed: int = 0) -> list[tuple[str | None, str]]:
    """A split's (relative path, word) items as the twelve-label task's (path, label): the command clips, then
    ceil(10%) of their count of ``_unknown_`` clips drawn without replacement from the other words' clips
    (``default_rng([seed, split id])``), then as many ``_silence_`` items (path None: :func:`silence_clip`)."""
    commands = [(rel, w) for rel, w in items if w in COMMANDS]
    others = [rel for rel, w in items if w not in COMMANDS]
    n_extra = math.ceil(len(commands) * EXTRA_CLASS_PERCENT / 100)
    rng = np.random.default_rng([seed, SPLIT_IDS[split]])
    unknown = [others[int(k)] for k in sorted(rng.choice(len(others), min(n_extra, len(others)), replace=False))]
    return [*commands, *((rel, UNKNOWN) for rel in unknown), *((None, SILENCE) for _ in range(n_extra))]


def silence_clip(background: dict[str, np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """A 1-s ``_silence_`` clip: a random 1-s cut of a random background recording (zero-padded when shorter)
    times a volume drawn uniformly in [0, ``BACKGROUND_VOLUME``]."""
    noise = background[sorted(background)[int(rng.integers(len(background)))]]
    start = int(rng.integers(max(1, len(noise) - SAMPLE_RATE + 1)))
    cut = noise[start : start + SAMPLE_RATE]
    clip = np.zeros(SAMPLE_RATE, np.float32)
    clip[: len(cut)] = cut * rng.uniform(0.0, BACKGROUND_VOLUME)
    return clip


def speech_commands_info(n_words: int) -> TaskInfo:
    """The ``speech_commands`` task's shapes: raw 16 kHz samples (16000, 1), ``n_words`` classes."""
    return TaskInfo(
        name="speech_commands",
        d_input=1,
        d_output=n_words,
        length=SAMPLE_RATE,
        citation="Warden 2018, Speech Commands v0.02",
    )


@register_task(
    "speech_commands",
    "Speech Commands v0.02 read from disk (official layout and splits); 10 words (SC10), 12 labels or all 35",
)
def build_speech_commands(
    data_dir=None, seed: int = 0, root: str | None = None, words: str | int = "10", test_root: str | None = None
) -> TaskData:
    """Real Speech Commands clips, zero-padded to 1 s: inputs (16000, 1), targets word index (``words="12"``: the
    ``_unknown_`` and ``_silence_`` clips of :func:`twelve_class_items`, silence cut by ``default_rng([seed, split id,
    i, 1])`` for item i). ``test_root``: the unpacked separate test archive (or "default":
    ``<data_dir>/speech_commands_test_set_v0.02``) is the test split instead of ``testing_list.txt``'s clips (which
    stay out of training): its clips of the twelve labels for ``words="12"``, of the ten commands for "10"."""
    folder = speech_commands_root(data_dir, root)
    files = speech_commands_files(folder)
    vocabulary = speech_commands_words(files, words)
    label = {w: i for i, w in enumerate(vocabulary)}
    twelve = SILENCE in label
    test_folder: Path | None = None
    if test_root is not None:
        if words == "all":
            raise ValueError("test_root (the twelve-label test archive) needs words='10' or '12', not 'all'")
        if test_root == "default":
            test_folder = resolve_data_dir(data_dir) / SPEECH_COMMANDS_TEST_DIR
        else:
            test_folder = Path(test_root).expanduser()
        files["test"] = speech_commands_test_set_files(test_folder)
    background = background_noise(folder) if twelve else {}
    if twelve and not background:
        raise FileNotFoundError(
            f"{folder / BACKGROUND} has no .wav files: words='12' cuts its {SILENCE} clips from them"
        )
    splits = {}
    for split, split_items in files.items():
        split_folder = test_folder if split == "test" and test_folder is not None else folder
        from_archive = split_folder is not folder
        items: list[tuple[str | None, str]] = [(rel, w) for rel, w in split_items if w in label]
        if not items and split != "val":
            raise FileNotFoundError(f"{split_folder}: no {split} clips of the words {vocabulary}")
        if twelve and not from_archive:
            items = twelve_class_items(split_items, split, seed)
        clips = np.zeros((len(items), SAMPLE_RATE), np.float32)
        for i, (rel, _) in enumerate(items):
            if rel is None:
                clips[i] = silence_clip(background, np.random.default_rng([seed, SPLIT_IDS[split], i, 1]))
                continue
            audio = read_audio(split_folder / rel)[:SAMPLE_RATE]
            clips[i, : len(audio)] = audio
        splits[split] = TensorDictDataset(
            inputs=torch.from_numpy(clips).unsqueeze(-1),
            targets=torch.tensor([label[w] for _, w in items], dtype=torch.long),
        )
    return TaskData(
        info=speech_commands_info(len(vocabulary)),
        train=splits["train"],
        val=splits["val"] if len(splits["val"]) else None,
        test=splits["test"],
        extra={"words": vocabulary},
    )


# --- LibriSpeech ------------------------------------------------------------------------------------
def librispeech_utterances(subset_dir) -> Iterator[tuple[Path, str]]:
    """(flac path, lower-cased transcript) of every utterance under ``<root>/<subset>``, in sorted order."""
    subset_dir = Path(subset_dir)
    if not subset_dir.is_dir():
        raise FileNotFoundError(f"no LibriSpeech subset directory {subset_dir}")
    vocab = CharVocabulary()
    transcripts = sorted(subset_dir.glob("*/*/*.trans.txt"))
    if not transcripts:
        raise FileNotFoundError(f"{subset_dir} has no <speaker>/<chapter>/*.trans.txt files")
    for trans in transcripts:
        for n, line in enumerate(trans.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            utt_id, _, text = line.strip().partition(" ")
            text = normalize_transcript(text)
            try:
                vocab.encode(text)
            except ValueError as err:
                raise ValueError(f"{trans}:{n}: {err}") from None
            yield trans.parent / f"{utt_id}.flac", text


@register_task("librispeech", "LibriSpeech read from disk (flac + .trans.txt); items {audio, text}")
def build_librispeech(
    data_dir=None,
    seed: int = 0,
    root: str | None = None,
    train: str = "train-clean-100",
    val: str | None = "dev-clean",
    test: str = "test-clean",
    limit: int | None = None,
) -> TaskData:
    """Utterances of the named subsets (``limit``: at most that many per subset, in sorted order)."""
    folder = Path(root) if root else resolve_data_dir(data_dir) / LIBRISPEECH_DIR
    splits = {}
    for split, subset in (("train", train), ("val", val), ("test", test)):
        if subset is None:
            continue
        items = list(librispeech_utterances(folder / subset))[:limit]
        splits[split] = SpeechDataset([read_audio(p) for p, _ in items], [t for _, t in items])
    info = TaskInfo(
        name="librispeech",
        d_input=1,
        d_output=len(CharVocabulary()),
        length=0,
        kind="transcription",
        citation="Panayotov et al. 2015, LibriSpeech",
    )
    return TaskData(info=info, train=splits["train"], val=splits.get("val"), test=splits["test"])
