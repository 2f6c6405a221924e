"""The timeseries presets train end to end through `torchssm train` on a tiny slice (one epoch)."""

import pytest

from torchssm.cli import main


def test_imu_lru_preset_trains(tmp_path):
    assert (
        main(
            [
                "train",
                "--preset",
                "timeseries/imu_lru",
                "--set",
                "task.n_train=8",
                "--set",
                "task.n_val=4",
                "--set",
                "task.n_test=4",
                "--set",
                "task.seconds=0.5",
                "--set",
                "train.epochs=1",
                "--set",
                f"train.out_dir={tmp_path / 'imu'}",
            ]
        )
        == 0
    )


def test_basicmotions_hiss_preset_trains(tmp_path):
    pytest.importorskip("sktime")
    assert (
        main(
            [
                "train",
                "--preset",
                "timeseries/basicmotions_hiss",
                "--set",
                "train.epochs=1",
                "--set",
                f"train.out_dir={tmp_path / 'bm'}",
            ]
        )
        == 0
    )
