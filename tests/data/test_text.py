"""lm_text: UTF-8 errors, split by file, cached memory-mapped tokens, packed rows with resets, BPE round trip,
training end to end with the tokenizer saved beside the checkpoint."""

import json
import random

import numpy as np
import pytest
import torch

from torchssm.data import text as T
from torchssm.models.tokenizer import BPETokenizer, ByteTokenizer, load_tokenizer, train_bpe

DOCS = [
    'def add(a, b):\n    """Return a + b."""\n    return a + b\n' * 3,
    "naïve café — ünïcödé ✓ 数学\nsecond line\n" * 4,
    "class Point:\n    def __init__(self, x, y):\n        self.x, self.y = x, y\n" * 3,
    "import os\nprint(os.getcwd())\n" * 5,
    "# a comment\nx = [i * i for i in range(10)]\n" * 4,
    "while True:\n    break\n" * 6,
]


@pytest.fixture()
def corpus(tmp_path):
    root = tmp_path / "corpus"
    (root / "sub").mkdir(parents=True)
    for i, doc in enumerate(DOCS):
        (root / ("sub" if i % 2 else "") / f"doc{i}.txt").write_text(doc, encoding="utf-8")
    (root / ".hidden.txt").write_text("never read")
    return root


def test_bad_utf8_names_file_line_and_bytes(tmp_path):
    f = tmp_path / "bad.txt"
    f.write_bytes(b"line one\nline two\nok \xff\xfe here\n")
    with pytest.raises(ValueError, match=r"bad.txt: line 3, column 4: invalid UTF-8 byte sequence b'\\xff'"):
        T.read_text(f)


def test_find_files_folder_glob_and_errors(corpus):
    files, root = T.find_files(corpus)
    assert [f.name for f in files] == sorted(f.name for f in files) or len(files) == len(DOCS)
    assert len(files) == len(DOCS) and all(not f.name.startswith(".") for f in files)
    assert root == corpus
    globbed, _ = T.find_files(str(corpus / "**" / "doc[13].txt"))
    assert [f.name for f in globbed] == ["doc1.txt", "doc3.txt"]
    with pytest.raises(FileNotFoundError, match="matches no file"):
        T.find_files(str(corpus / "*.nothing"))
    with pytest.raises(FileNotFoundError, match="not a file, a folder or a glob"):
        T.find_files(corpus / "missing")


def test_default_corpus_is_stdlib_without_tests():
    files = T.default_corpus_files()
    root = T.stdlib_root()
    assert len(files) > 100 and all(f.suffix == ".py" for f in files)
    for f in files:
        assert not set(f.relative_to(root).parts[:-1]) & set(T.EXCLUDED_DIRS), f
    record = T.corpus_record(files, root, default=True)
    assert record["file_count"] == len(files) and len(record["files_sha256"]) == 64
    assert record["python_version"].count(".") == 2


def test_split_is_deterministic_by_file(corpus):
    files, root = T.find_files(corpus)
    a = T.split_files(files, root, 0.2, 0.2, seed=0)
    shuffled = list(files)
    random.Random(1).shuffle(shuffled)
    assert T.split_files(shuffled, root, 0.2, 0.2, seed=0) == a  # independent of the listing order
    assert sorted(sum(a.values(), [])) == sorted(files)  # a partition
    assert all(len(a[s]) >= 1 for s in T.SPLITS)
    seeds = {tuple(T.split_files(files, root, 0.2, 0.2, seed=s)["test"]) for s in range(8)}
    assert len(seeds) > 1  # the seed moves files between splits
    with pytest.raises(ValueError, match="at least one file"):
        T.split_files(files[:2], root, 0.4, 0.4)


def test_packed_rows_shift_targets_and_reset_at_document_starts():
    tokens = np.arange(23, dtype=np.uint16)
    starts = np.array([0, 5, 12, 13])
    ds = T.PackedTokens(tokens, starts, context=5)
    assert len(ds) == 4  # (23 - 1) // 5
    stream = torch.cat([ds[i]["inputs"] for i in range(len(ds))])
    torch.testing.assert_close(stream, torch.arange(20))
    for i in range(len(ds)):
        item = ds[i]
        torch.testing.assert_close(item["targets"], item["inputs"] + 1)
        expected = torch.tensor([(5 * i + t) in set(starts.tolist()) for t in range(5)])
        assert torch.equal(item["reset"], expected)
    assert set(T.PackedTokens(tokens, starts, context=5, resets=False)[1]) == {"inputs", "targets"}


def test_task_cache_is_memory_mapped_and_rebuilt_when_incomplete(corpus, tmp_path):
    data = tmp_path / "data"
    task = T.build(data_dir=data, files=str(corpus), context=16, val_fraction=0.2, test_fraction=0.2)
    assert task.info.kind == "lm" and task.info.d_input == 256
    assert isinstance(task.train.tokens, np.memmap)
    manifests = list((data / "lm_text").glob("*/manifest.json"))
    assert len(manifests) == 1
    again = T.build(data_dir=data, files=str(corpus), context=16, val_fraction=0.2, test_fraction=0.2)
    np.testing.assert_array_equal(np.asarray(again.train.tokens), np.asarray(task.train.tokens))
    manifests[0].unlink()  # a build killed before its manifest: the cache is rebuilt, never half-read
    rebuilt = T.build(data_dir=data, files=str(corpus), context=16, val_fraction=0.2, test_fraction=0.2)
    np.testing.assert_array_equal(np.asarray(rebuilt.train.tokens), np.asarray(task.train.tokens))
    # byte-level: the tokens are the files' bytes, documents end to end in sorted order
    train_files = T.split_files(*T.find_files(corpus), 0.2, 0.2)["train"]
    expected = b"".join(f.read_bytes() for f in train_files)
    assert bytes(np.asarray(task.train.tokens, dtype=np.uint8)) == expected
    record = task.extra["record"]
    assert record["file_count"] == len(DOCS) and record["split_files"]["train"] == len(train_files)
    sub = T.build(data_dir=data, files=str(corpus), context=16, val_fraction=0.2, test_fraction=0.2, train_rows=3)
    assert len(sub.train) == 3 and set(sub.train.rows.tolist()) <= set(task.train.rows.tolist())


def test_bpe_round_trip_save_load_and_stream(corpus, tmp_path):
    files, _ = T.find_files(corpus)
    tok = train_bpe(files, vocab_size=300, min_frequency=1)
    assert isinstance(tok, BPETokenizer) and 257 < tok.vocab_size <= 300
    for text in DOCS + ["unseen: ß∂ƒ©˙∆˚ 🙂\ttab", ""]:
        ids = tok.encode(text)
        assert tok.decode(ids) == text
        decode = tok.stream_decoder()
        assert "".join(decode(i) for i in ids) == text
    assert len(tok.encode(DOCS[0])) < len(DOCS[0].encode())  # merges compress
    tok.save(tmp_path / "tok")
    back = load_tokenizer(tmp_path / "tok")
    assert back.encode(DOCS[1]) == tok.encode(DOCS[1]) and back.eos_token_id == tok.eos_token_id is not None
    assert isinstance(load_tokenizer(tmp_path, vocab_size=256), ByteTokenizer)
    assert load_tokenizer(tmp_path, vocab_size=1000) is None
    with pytest.raises(ValueError, match="vocab_size must be an int >= 258"):
        train_bpe(files, vocab_size=100)


def test_bpe_task_counts_bytes_per_token(corpus, tmp_path):
    tok = train_bpe(T.find_files(corpus)[0], vocab_size=300, min_frequency=1)
    tok.save(tmp_path / "tok")
    task = T.build(
        data_dir=tmp_path / "data",
        files=str(corpus),
        tokenizer="bpe",
        tokenizer_path=str(tmp_path / "tok"),
        context=8,
        val_fraction=0.2,
        test_fraction=0.2,
    )
    assert task.info.d_input == tok.vocab_size
    assert task.train.bytes_per_token > 1.0
    assert task.train.tokens.dtype == np.uint16
    with pytest.raises(FileNotFoundError, match="torchssm tokenizer train"):
        T.build(data_dir=tmp_path / "data", files=str(corpus), tokenizer="bpe", tokenizer_path=str(tmp_path / "none"))
    with pytest.raises(ValueError, match="shorter than one row"):
        T.build(data_dir=tmp_path / "data", files=str(corpus), context=100_000, val_fraction=0.2, test_fraction=0.2)


def test_train_lm_end_to_end_saves_tokenizer_and_corpus_record(corpus, tmp_path):
    import torchssm
    from torchssm.train import load_config, train

    tok = train_bpe(T.find_files(corpus)[0], vocab_size=300, min_frequency=1)
    tok.save(tmp_path / "tok")
    cfg = load_config(
        base={
            "task": {
                "name": "lm_text",
                "files": str(corpus),
                "tokenizer": "bpe",
                "tokenizer_path": str(tmp_path / "tok"),
                "context": 16,
                "val_fraction": 0.2,
                "test_fraction": 0.2,
            },
            "model": {
                "layer": "mamba",
                "d_model": 16,
                "n_layers": 1,
                "pooling": "none",
                "layer_kwargs": {"d_state": 4},
            },
            "train": {
                "epochs": 1,
                "batch_size": 4,
                "out_dir": str(tmp_path / "run"),
                "progress": False,
                "device": "cpu",
            },
        }
    )
    result = train(cfg, data_dir=tmp_path / "data", log=lambda s: None)
    assert result.last["val_bpb"] > 0 and result.last["val_ppl"] > 1
    assert (tmp_path / "run" / "best" / "tokenizer.json").is_file()
    model = torchssm.from_pretrained(tmp_path / "run" / "best", dtype=torch.float64)
    assert type(model).__name__ == "CausalLM" and model.lm_head.weight.dtype == torch.float64
    assert model.tokenizer.encode(DOCS[2]) == tok.encode(DOCS[2])
    summary = json.loads((tmp_path / "run" / "result.json").read_text())
    assert summary["data"]["file_count"] == len(DOCS) and summary["data"]["tokenizer"] == "bpe"

    from torchssm.cli import main  # the CLI: lm eval at 2x the training context, tokenizer train

    assert (
        main(
            [
                "lm",
                "eval",
                str(tmp_path / "run" / "best"),
                "--rows",
                "2",
                "--context-factor",
                "2",
                "--data-dir",
                str(tmp_path / "data"),
            ]
        )
        == 0
    )
    report = json.loads((tmp_path / "run" / "best" / "lm_eval.json").read_text())
    assert report["eval_context"] == 32 and [b["from"] for b in report["by_position"]] == [0, 16]
    assert len(report["loss_by_position"]) == 32  # the curve `lm plot` draws
    first = sum(report["loss_by_position"][:16]) / 16
    assert abs(first - report["loss"]) < 1e-4  # the same numbers as the summary
    fig = tmp_path / "ppl.png"
    evals = [str(tmp_path / "run" / "best" / "lm_eval.json")] * 2
    assert main(["lm", "plot", *evals, "--out", str(fig), "--labels", "a", "b", "--bucket", "8"]) == 0
    assert fig.stat().st_size > 0
    assert main(["lm", "plot", str(tmp_path / "missing.json"), "--out", str(fig)]) == 2  # a one-line error
    assert (
        main(
            [
                "tokenizer",
                "train",
                "--files",
                str(corpus),
                "--vocab-size",
                "300",
                "--min-frequency",
                "1",
                "--out",
                str(tmp_path / "tok2"),
            ]
        )
        == 0
    )
    assert load_tokenizer(tmp_path / "tok2").encode(DOCS[0]) == tok.encode(DOCS[0])
