"""Benchmark helpers and commands at tiny shapes (no timing asserts: only structure and arithmetic)."""

import json
import math
import os

import pytest
import torch

from torchssm.bench import common
from torchssm.cli import main


def test_fit_power_law_recovers_exponent():
    ls = [256, 512, 1024, 2048]
    k, a = common.fit_power_law(ls, [3e-6 * l**1.7 for l in ls])
    assert k == pytest.approx(1.7) and a == pytest.approx(3e-6)
    assert common.fit_power_law([10], [1.0]) is None
    assert common.fit_power_law([10, 20], [None, 1.0]) is None


def test_crossover_measured_and_fitted():
    ls = [100, 200, 400, 800]
    ssm = [1e-3 * l for l in ls]  # linear
    attn = [2.5e-6 * l**2 for l in ls]  # quadratic: equal at L = 400
    cross = common.crossover(ls, ssm, attn)
    assert cross["fitted"] == pytest.approx(400.0)
    assert cross["measured"] == 800  # at 400 they tie (not faster)
    assert common.crossover(ls, attn, ssm) == {"measured": None, "fitted": None}  # grows faster: never wins


def test_peak_memory_cpu_counts_live_tensors():
    def fn():
        a = torch.empty(1 << 20)  # 4 MiB
        b = torch.empty(1 << 19)  # 2 MiB
        del a
        c = torch.empty(1 << 21)  # 8 MiB: live 10 MiB at most
        return b, c

    peak, method = common.peak_memory(fn, torch.device("cpu"))
    assert peak == 10 * 2**20 and "profiler" in method


def test_time_fn_and_table():
    calls = []
    t = common.time_fn(lambda: calls.append(1), torch.device("cpu"), repeats=4, warmup=2)
    assert len(calls) == 6 and len(t["times"]) == 4 and t["min"] <= t["median"] <= t["max"] and t["iqr"] >= 0
    busy = common.time_fn(lambda: sum(range(20000)), torch.device("cpu"), repeats=2, warmup=0, clock="cpu")
    assert all(t >= 0 for t in busy["times"])
    with pytest.raises(ValueError, match="clock"):
        common.time_fn(lambda: None, torch.device("cuda"), clock="cpu")
    table = common.format_table([{"a": 1.23456, "b": None}], ["a", "b"])
    assert "1.23" in table and "-" in table.splitlines()[-1]
    env = common.environment(torch.device("cpu"))
    assert {"torch", "device_name", "date_utc", "cpu_threads", "cpu_capability"} <= set(env)
    with pytest.raises(ValueError, match="float32"):
        common.resolve_dtype("float31")


def test_bench_layers_cli(tmp_path, capsys):
    path_json, path_png = tmp_path / "layers.json", tmp_path / "layers.png"
    args = [
        "bench",
        "layers",
        "--layers",
        "lru,transformer",
        "-B",
        "1",
        "-L",
        "16,32",
        "-H",
        "8",
        "-N",
        "4",
        "--repeats",
        "1",
        "--warmup",
        "0",
        "--clock",
        "cpu",
        "--threads",
        "1",
        "--json",
        str(path_json),
    ]
    if pytest.importorskip("matplotlib"):
        args += ["--plot", str(path_png)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "exponent_k" in out and "transformer" in out
    data = json.loads(path_json.read_text())
    assert data["shapes"] == {"batch": 1, "lengths": [16, 32], "d_model": 8, "d_state": 4}
    assert data["environment"]["torch"] == torch.__version__ and data["repeats"] == 1 and data["clock"] == "cpu"
    assert data["environment"]["cpu_threads"] == 1
    rows = data["results"]
    assert [(r["layer"], r["L"]) for r in rows] == [("lru", 16), ("lru", 32), ("transformer", 16), ("transformer", 32)]
    assert all(r["status"] == "ok" and r["time_s"] > 0 and r["peak_mb"] > 0 for r in rows)
    assert {s["layer"] for s in data["summary"]} == {"lru", "transformer"}
    assert os.path.getsize(path_png) > 1000


def test_bench_ops_cpu_clock(tmp_path, capsys):
    out = tmp_path / "ops.json"
    assert (
        main(
            [
                "bench",
                "ops",
                "--device",
                "cpu",
                "--sel-shapes",
                "1x16x4x2",
                "--ssd-shapes",
                "1x16x2x4x2",
                "--chunk-size",
                "8",
                "--repeats",
                "2",
                "--clock",
                "cpu",
                "--threads",
                "1",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    assert "cpu times in ms" in capsys.readouterr().out
    data = json.loads(out.read_text())
    assert data["clock"] == "cpu" and data["repeats"] == 2
    sel = {r["impl"] for r in data["results"] if r["op"] == "selective_scan"}
    assert {"naive", "fused/cpu"} <= sel and any(i.startswith("chunked/") for i in sel)
    assert all(r["fwd_min_ms"] >= 0 and r["fwdbwd_min_ms"] >= 0 and r["copy_ms"] >= 0 for r in data["results"])
    with pytest.raises(SystemExit):  # argparse: not one of wall | cpu
        main(["bench", "ops", "--clock", "gpu"])


def test_bench_layers_skips_after_slow_length():
    from torchssm.bench.layers import bench_layer

    rows = bench_layer(
        "transformer",
        [8, 16],
        batch=1,
        d_model=8,
        d_state=4,
        device=torch.device("cpu"),
        dtype=torch.float32,
        repeats=1,
        warmup=0,
        memory=False,
        max_seconds=0.0,
        extra_kwargs={"n_heads": 2},
    )
    assert rows[0]["status"] == "ok" and rows[1]["status"].startswith("skipped")


def test_bench_extrapolation_cli(tmp_path, capsys):
    from torchssm.models.backbone import build_model
    from torchssm.models.config import ModelConfig

    torch.manual_seed(0)
    model = build_model(
        ModelConfig(layer="lru", d_model=8, n_layers=1, layer_kwargs={"d_state": 4}, d_input=1, d_output=2)
    )
    model.save_pretrained(tmp_path / "ckpt")
    opts = json.dumps({"n_train": 1, "n_val": 0, "n_test": 8, "gap": 4})
    assert (
        main(
            [
                "bench",
                "extrapolation",
                "--checkpoint",
                str(tmp_path / "ckpt"),
                "--task",
                "aa_ab",
                "--task-options",
                opts,
                "--train-length",
                "16",
                "--factors",
                "1,2,4",
                "--json",
                str(tmp_path / "e.json"),
            ]
        )
        == 0
    )
    data = json.loads((tmp_path / "e.json").read_text())
    assert [r["length"] for r in data["results"]] == [16, 32, 64]
    assert all(
        r["status"] == "ok" and r["n"] == 8 and 0 <= r["acc"] <= 1 and math.isfinite(r["loss"]) for r in data["results"]
    )
    assert main(["bench", "extrapolation", "--checkpoint", str(tmp_path / "ckpt")]) == 2  # no record: needs --task


def test_bench_extrapolation_reads_training_record(tmp_path, capsys):
    """A training run directory: task, options, seed and L come from its trainer_state.json."""
    from torchssm.models.backbone import build_model
    from torchssm.models.config import ModelConfig
    from torchssm.train.checkpoint import save_checkpoint
    from torchssm.train.config import ExperimentConfig

    torch.manual_seed(0)
    mcfg = ModelConfig(layer="lru", d_model=8, n_layers=1, layer_kwargs={"d_state": 4}, d_input=1, d_output=2)
    exp = ExperimentConfig(
        task={"name": "aa_ab", "length": 12, "gap": 4, "n_train": 1, "n_val": 0, "n_test": 4}, model=mcfg
    )
    save_checkpoint(tmp_path / "run" / "best", build_model(mcfg), config=exp.to_dict(), epoch=1)
    assert (
        main(
            [
                "bench",
                "extrapolation",
                "--checkpoint",
                str(tmp_path / "run"),
                "--factors",
                "1,2",
                "--json",
                str(tmp_path / "e.json"),
            ]
        )
        == 0
    )
    data = json.loads((tmp_path / "e.json").read_text())
    assert data["task"] == "aa_ab" and data["train_length"] == 12
    assert [(r["length"], r["n"]) for r in data["results"]] == [(12, 4), (24, 4)]


class _OOMLayer(torch.nn.Module):
    """Runs out of memory above 16 tokens (stands in for a real OOM)."""

    def __init__(self, d_model, d_state=4):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(d_model))

    def forward(self, x):
        if x.shape[1] > 16:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1 TiB")
        return x * self.w


def test_bench_layers_records_oom_and_skips_longer(monkeypatch):
    from torchssm.bench.layers import bench_layer
    from torchssm.layers import registry

    monkeypatch.setitem(registry._LAYERS, "oom_test", (__name__, "_OOMLayer"))
    rows = bench_layer(
        "oom_test",
        [8, 32, 64],
        batch=1,
        d_model=4,
        d_state=4,
        device=torch.device("cpu"),
        dtype=torch.float32,
        repeats=1,
        warmup=0,
        memory=False,
    )
    assert [r["status"] for r in rows] == ["ok", "oom", "skipped (oom at a shorter L)"]
    assert rows[0]["time_s"] > 0 and rows[1]["time_s"] is None


def test_is_oom_recognises_cuda_and_cpu_allocator_failures():
    from torchssm.bench.common import is_oom

    assert is_oom(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    # The CPU allocator's message (e.g. under `ulimit -v`): a layer that does not fit is skipped, not fatal.
    assert is_oom(
        RuntimeError(
            "[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: "
            "can't allocate memory: you tried to allocate 17179869184 bytes."
        )
    )
    assert is_oom(MemoryError())
    assert not is_oom(RuntimeError("shape mismatch"))


def test_training_record_of_a_missing_path_is_a_clear_error(tmp_path, capsys):
    from torchssm.bench.extrapolation import training_record

    with pytest.raises(FileNotFoundError, match="no training run or checkpoint at"):
        training_record(tmp_path / "missing")
    assert main(["bench", "extrapolation", "--checkpoint", str(tmp_path / "missing"), "--task", "aa_ab"]) == 2
    assert "no training run or checkpoint at" in capsys.readouterr().err


def test_training_record_of_a_checkpoint_without_training_config(tmp_path):
    """A trainer checkpoint whose sidecar holds no config (not written by torchssm train) is no record."""
    from torchssm.bench.extrapolation import training_record
    from torchssm.models.backbone import build_model
    from torchssm.models.config import ModelConfig
    from torchssm.train.checkpoint import save_checkpoint

    mcfg = ModelConfig(layer="lru", d_model=8, n_layers=1, layer_kwargs={"d_state": 4}, d_input=1, d_output=2)
    save_checkpoint(tmp_path / "c", build_model(mcfg), epoch=1)
    assert training_record(tmp_path / "c") == (str(tmp_path / "c"), None)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_bench_device_without_cuda_is_one_line(capsys):
    # the benchmarks resolve --device as torchssm train does (torchssm.devices)
    assert main(["bench", "scan", "--device", "cuda"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "device 'cuda' asked for, but" in err
    assert common.resolve_device("cpu") == torch.device("cpu")
