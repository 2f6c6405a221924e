"""Offline real data: UCR/UEA .ts parser and task, scikit-learn digits (skipped without scikit-learn)."""

import importlib.metadata

import pytest
import torch

from torchssm.data import build_task
from torchssm.data.lra.common import DataFormatError
from torchssm.data.timeseries import _package_dir, read_ts

HEADER = "#comment\n@problemName Toy\n@timeStamps false\n@univariate {uni}\n@classLabel true a b c\n@data\n"


def _write(folder, name, train_rows, test_rows, uni="true"):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}_TRAIN.ts").write_text(HEADER.format(uni=uni) + "\n".join(train_rows) + "\n")
    (folder / f"{name}_TEST.ts").write_text(HEADER.format(uni=uni) + "\n".join(test_rows) + "\n")


def test_ts_parser_univariate_multivariate_and_unequal(tmp_path):
    _write(tmp_path / "UCR" / "Toy", "Toy", ["1,2,3,4:a", "2,?,4,5:b", "0,0,1:c"], ["1,1,1,1:b"])
    series, labels, classes = read_ts(tmp_path / "UCR" / "Toy" / "Toy_TRAIN.ts")
    assert classes == ["a", "b", "c"] and labels == ["a", "b", "c"]
    assert series[0].shape == (4, 1) and series[2].shape == (3, 1) and torch.isnan(series[1][1, 0])
    td = build_task("ucr", data_dir=tmp_path, dataset="Toy", standardize=False)
    assert (td.info.d_input, td.info.d_output, td.info.length) == (1, 3, 4)
    ex = td.train[2]
    assert ex["inputs"].shape == (4, 1) and ex["inputs"].dtype == torch.float32
    assert int(ex["lengths"]) == 3 and int(ex["targets"]) == 2
    assert float(td.train[1]["inputs"][1, 0]) == 0.0  # missing -> 0
    std = build_task("ucr", data_dir=tmp_path, dataset="Toy")
    valid = torch.arange(4)[None] < std.train[:]["lengths"][:, None]
    vals = std.train[:]["inputs"][valid]
    torch.testing.assert_close(vals.mean(), torch.tensor(0.0), atol=1e-6, rtol=0)
    _write(tmp_path / "Multi", "Multi", ["1,2,3:4,5,6:a", "1,2,3:4,5,6:c"], ["0,0,0:1,1,1:b"], uni="false")
    multi = build_task("ucr", data_dir=tmp_path, dataset="Multi", standardize=False)
    assert multi.info.d_input == 2 and multi.train[0]["inputs"][:, 1].tolist() == [4.0, 5.0, 6.0]


@pytest.mark.parametrize(
    "row, match",
    [("1,2,3:z", "not declared"), ("1,x,3:a", "bad value"), ("1,2:3,4,5:a", "same length"), ("a", "expected 'values")],
)
def test_ts_malformed_lines(tmp_path, row, match):
    _write(tmp_path, "Bad", ["1,2,3:a", row], ["1,2,3:a"])
    with pytest.raises(DataFormatError, match=match) as err:
        read_ts(tmp_path / "Bad_TRAIN.ts")
    assert "Bad_TRAIN.ts:8" in str(err.value)


def test_ts_equal_length_file_rejects_a_truncated_case(tmp_path):
    header = "@problemName Eq\n@univariate true\n@equalLength {eq}\n{length}@classLabel true a b\n@data\n"
    path = tmp_path / "Eq_TRAIN.ts"
    path.write_text(header.format(eq="true", length="") + "1,2,3,4:a\n1,2,3:b\n")
    with pytest.raises(DataFormatError, match="@equalLength true but this case has 3 values") as err:
        read_ts(path)
    assert f"{path}:7:" in str(err.value)
    path.write_text(header.format(eq="true", length="@seriesLength 4\n") + "1,2,3:a\n")
    with pytest.raises(DataFormatError, match=f"{path}:7: .* @seriesLength 4"):
        read_ts(path)
    path.write_text(header.format(eq="false", length="") + "1,2,3,4:a\n1,2,3:b\n")  # unequal is fine here
    assert [s.shape[0] for s in read_ts(path)[0]] == [4, 3]
    path.write_bytes(header.format(eq="true", length="").encode() + b"1,2:a\n1,\xff:b\n")
    with pytest.raises(DataFormatError, match=f"{path}:7: invalid UTF-8"):
        read_ts(path)


def test_ucr_missing_message(tmp_path):
    with pytest.raises(FileNotFoundError, match="timeseriesclassification.com"):
        build_task("ucr", data_dir=tmp_path, dataset="NoSuchSet")


@pytest.mark.skipif(
    not any(_package_dir(p, "GunPoint") for p in ("aeon", "sktime")),
    reason="neither aeon nor sktime (which ship GunPoint) is installed",
)
def test_gunpoint_from_installed_package(tmp_path):
    td = build_task("ucr", data_dir=tmp_path, dataset="GunPoint")
    assert (len(td.train), len(td.test), td.info.length, td.info.d_output) == (50, 150, 150, 2)


def _has_sklearn():
    try:
        importlib.metadata.distribution("scikit-learn")
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


@pytest.mark.skipif(not _has_sklearn(), reason="scikit-learn (optional) is not installed")
def test_digits():
    td = build_task("digits", seed=0)
    assert len(td.train) + len(td.val) + len(td.test) == 1797
    ex = td.train[0]
    assert ex["inputs"].shape == (64, 1) and 0 <= float(ex["inputs"].min()) and float(ex["inputs"].max()) <= 1
    assert ex["targets"].dtype == torch.long


@pytest.mark.skipif(_has_sklearn(), reason="scikit-learn is installed")
def test_digits_without_sklearn_says_what_to_install():
    with pytest.raises(FileNotFoundError, match="pip install scikit-learn"):
        build_task("digits")


_HAS_GUNPOINT = any(_package_dir(p, "GunPoint") for p in ("aeon", "sktime"))
_PRESETS = [
    pytest.param("digits_lru.yaml", marks=pytest.mark.skipif(not _has_sklearn(), reason="needs scikit-learn")),
    pytest.param("gunpoint_lru.yaml", marks=pytest.mark.skipif(not _HAS_GUNPOINT, reason="needs sktime or aeon")),
]


@pytest.mark.parametrize("name", _PRESETS)
def test_real_data_preset_builds_and_learns(name, tmp_path):
    """The digits_lru and gunpoint_lru presets: the task and the model at the preset's sizes and
    optimizer; 40 full-batch steps on 32 training examples fit them (full runs: RESULTS.md)."""
    from torchssm.models import build_model
    from torchssm.presets import preset_path
    from torchssm.train.config import load_config, model_config_for_task
    from torchssm.train.loop import loss_and_correct
    from torchssm.train.optim import build_optimizer

    cfg = load_config(preset_path(name))
    td = build_task(cfg.task_name, data_dir=tmp_path, **cfg.task_options)
    torch.manual_seed(0)
    model = build_model(model_config_for_task(cfg.model, td.info))
    opt = build_optimizer(model, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    batch = td.train[0:32]  # inputs (32, L, 1), targets (32,)
    losses = []
    for _ in range(40):
        opt.zero_grad(set_to_none=True)
        loss, correct, _ = loss_and_correct(model(batch["inputs"]), batch["targets"], td.info)
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert losses[-1] < 0.5 * losses[0] and int(correct) >= 28, (losses, int(correct))
