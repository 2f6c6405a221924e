"""Command line: `torchssm train` (tiny end-to-end run that must learn), `eval`, `--resume`,
`tasks`, and one-line errors for bad input."""

import json
import re
import subprocess
import sys

import pytest

from torchssm.cli import main
from torchssm.presets import preset_path

TINY = [
    "task.limit=600",
    "model.d_model=16",
    "model.layer_kwargs.d_state=16",
    "train.epochs=5",
    "train.lr=1e-2",
    "train.batch_size=32",
    "train.threads=1",
    "train.progress=false",
]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, data_dir):
    """`torchssm train` on 600 MNIST-1D examples (5 epochs, width 16; ~45% test accuracy): shared by several tests."""
    out = tmp_path_factory.mktemp("run")
    config = preset_path("mnist1d_lru")
    argv = ["train", "--config", str(config), "--set", *TINY, "--out-dir", str(out), "--data-dir", str(data_dir)]
    return config, out, argv


def test_train_learns_and_prints_accuracy_and_time(tiny_run, capsys):
    config, out, argv = tiny_run
    assert main(argv) == 0
    text = capsys.readouterr().out
    acc = float(re.search(r"test accuracy: ([\d.]+)%", text).group(1))
    assert acc > 30.0, text  # chance is 10%
    assert re.search(r"time: [\d.]+ s training", text)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3, 4, 5]
    assert records[-1]["test_acc"] == pytest.approx(acc / 100, abs=5e-5)
    assert records[-1]["train_loss"] < records[0]["train_loss"]
    assert (out / "last" / "model.safetensors").is_file() and (out / "best" / "trainer_state.json").is_file()


def test_eval_reports_the_checkpoint_accuracy(tiny_run, data_dir, capsys):
    config, out, argv = tiny_run
    best = json.loads((out / "result.json").read_text())["best"]
    assert main(["eval", "--checkpoint", str(out), "--data-dir", str(data_dir)]) == 0  # run dir -> best/
    text = capsys.readouterr().out
    assert f"test: accuracy {100 * best['test_acc']:.2f}%" in text and f"epoch {best['epoch']}" in text


def test_resume_via_cli_matches(tiny_run, data_dir, tmp_path):
    config, out, argv = tiny_run
    base = ["train", "--config", str(config), "--set", *TINY, "--data-dir", str(data_dir)]
    assert main(base + ["--out-dir", str(tmp_path / "split"), "--stop-after", "3"]) == 0
    assert main(["train", "--resume", str(tmp_path / "split" / "last"), "--data-dir", str(data_dir)]) == 0
    assert main(base + ["--out-dir", str(tmp_path / "straight")]) == 0
    strip = lambda p: [  # noqa: E731
        {k: v for k, v in json.loads(x).items() if k != "time_s"}
        for x in (p / "metrics.jsonl").read_text().splitlines()
    ]
    assert strip(tmp_path / "split") == strip(tmp_path / "straight")  # exactly equal floats


def test_bad_input_is_one_line_error(tiny_run, tmp_path, capsys):
    config, out, argv = tiny_run
    assert main(["train", "--config", str(config), "--set", "train.lrr=1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("torchssm train: error: unknown train config key(s) ['lrr']")
    assert main(["train", "--config", str(config), "--set", "task.name=nope", "--out-dir", str(tmp_path)]) == 2
    assert "unknown task 'nope'; expected one of" in capsys.readouterr().err
    assert main(["eval", "--checkpoint", str(tmp_path / "missing")]) == 2
    assert "no checkpoint at" in capsys.readouterr().err
    assert main(["train", "--resume", "--out-dir", str(tmp_path / "fresh")]) == 2
    assert re.search(r"no (intact )?checkpoint", capsys.readouterr().err)
    assert main(["train"]) == 2
    assert "needs --preset NAME or --config PATH" in capsys.readouterr().err


def test_tasks_lists_mnist1d(capsys):
    assert main(["tasks"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.split()[0] == "mnist1d" and "MNIST-1D" in line for line in lines)


def test_python_dash_m():
    proc = subprocess.run([sys.executable, "-m", "torchssm", "tasks"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "mnist1d" in proc.stdout


def test_cli_shows_the_librarys_info_messages_on_stderr(capsys):
    import logging

    from torchssm.cli import main

    assert main(["tasks"]) == 0
    capsys.readouterr()
    logging.getLogger("torchssm.data.lra.listops").info("ListOps: reading the %s files in %s", "official", "/x")
    assert "torchssm: ListOps: reading the official files in /x" in capsys.readouterr().err
    main(["tasks"])  # a second call adds no second handler
    logging.getLogger("torchssm.data.lra.listops").info("once")
    assert capsys.readouterr().err.count("once") == 1
