"""train.averaging: the mean of checkpoints equals a float64 reference; batch-norm statistics re-estimated equal a
pass computed by hand (dropout on), also for one checkpoint alone (PreciseBN); bad input is a one-line error;
``torchssm average`` writes a checkpoint that reloads (load_run) and gives the outputs of the averaged,
re-estimated model."""

import json

import pytest
import torch
from _loop_common import tiny_train
from safetensors.torch import load_file
from torch import nn

from torchssm.cli import main
from torchssm.data.loaders import epoch_generator, iterate_batches
from torchssm.train import reload
from torchssm.train.averaging import (
    average_checkpoints,
    average_run,
    average_state_dicts,
    checkpoint_has_batch_norm,
    reestimate_batch_norm,
)
from torchssm.train.checkpoint import SIDECAR, WEIGHTS, read_checkpoint_state
from torchssm.train.config import load_config
from torchssm.train.loop import train
from torchssm.train.losses import forward_batch
from torchssm.train.reload import load_run

CONFIG = {  # induction heads (vocab 6), one small S4D block with batch norm and dropout: well under a second
    "task": {"name": "induction_heads", "length": 8, "vocab_size": 6, "n_train": 40, "n_val": 8, "n_test": 8},
    "model": {
        "layer": "s4d",
        "d_model": 8,
        "n_layers": 2,
        "pooling": "none",
        "norm": "batch",
        "dropout": 0.2,
        "layer_kwargs": {"d_state": 4},
    },
    "train": tiny_train(keep_checkpoints=3),
}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("averaging") / "run"
    cfg = load_config(base={**CONFIG, "train": {**CONFIG["train"], "out_dir": str(out)}})
    train(cfg, log=lambda msg: None)
    return out


def _tiny_state_dicts():
    g = torch.Generator().manual_seed(0)
    return [
        {
            "w": torch.randn(3, 4, generator=g),
            "h": torch.randn(5, generator=g).to(torch.float16),
            "z": torch.randn(2, generator=g, dtype=torch.complex64),
            "norm.num_batches_tracked": torch.tensor(10 * (i + 1)),
            "index": torch.arange(4),
        }
        for i in range(3)
    ]


def test_mean_equals_a_float64_reference():
    sds = _tiny_state_dicts()
    avg = average_state_dicts(sds)
    for key, dtype in (("w", torch.float32), ("h", torch.float16), ("z", torch.complex64)):
        wide = torch.complex128 if dtype.is_complex else torch.float64
        ref = (sds[0][key].to(wide) + sds[1][key].to(wide) + sds[2][key].to(wide)) / 3
        assert avg[key].dtype == dtype
        torch.testing.assert_close(avg[key], ref.to(dtype), rtol=0, atol=0)  # rounded once, from float64
        assert not torch.equal(avg[key], sds[-1][key])
    assert int(avg["norm.num_batches_tracked"]) == 30  # the counter: the last checkpoint's, not a mean
    assert torch.equal(avg["index"], torch.arange(4))


def test_bad_state_dicts_are_one_line_errors():
    sds = _tiny_state_dicts()
    with pytest.raises(ValueError, match="at least 2"):
        average_state_dicts(sds[:1])
    with pytest.raises(ValueError, match="at least 2"):
        average_state_dicts(sds[0])  # one state dict, not a list of them
    bad = {**sds[1], "extra": torch.zeros(1)}
    with pytest.raises(ValueError, match=r"missing keys \[\], extra keys \['extra'\]"):
        average_state_dicts([sds[0], bad], names=["A", "B"])
    bad = {**sds[1], "w": torch.zeros(4, 3)}
    with pytest.raises(ValueError, match=r"'w' is torch.float32 \(4, 3\) there, torch.float32 \(3, 4\) in A"):
        average_state_dicts([sds[0], bad], names=["A", "B"])
    bad = {**sds[1], "w": sds[1]["w"].double()}
    with pytest.raises(ValueError, match="'w' is torch.float64"):
        average_state_dicts([sds[0], bad])
    bad = {**sds[1], "index": torch.arange(4) + 1}
    with pytest.raises(ValueError, match="'index' .* differs between A and B: integer and boolean"):
        average_state_dicts([sds[0], bad], names=["A", "B"])


def test_batch_norm_statistics_equal_a_pass_by_hand():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.5), nn.BatchNorm1d(4))
    model.eval()
    momentum = model[2].momentum
    g = torch.Generator().manual_seed(1)
    batches = [torch.randn(n, 3, generator=g) for n in (8, 8, 5)]
    rng_before = torch.get_rng_state()
    n = reestimate_batch_norm(model, batches, seed=7)
    assert n == 3
    assert torch.equal(torch.get_rng_state(), rng_before)  # the global RNG is untouched
    assert not model.training and model[2].momentum == momentum  # mode and momentum restored
    # by hand: the same dropout masks (seed 7, one draw per batch), the mean over batches of each batch's mean
    # and unbiased variance (update_bn: momentum None, every batch weighted equally)
    torch.manual_seed(7)
    with torch.no_grad():
        hidden = [nn.functional.dropout(model[0](x).double(), 0.5, training=True) for x in batches]
    mean = torch.stack([h.mean(0) for h in hidden]).mean(0)
    var = torch.stack([h.var(0, unbiased=True) for h in hidden]).mean(0)
    torch.testing.assert_close(model[2].running_mean.double(), mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(model[2].running_var.double(), var, rtol=1e-5, atol=1e-6)
    assert int(model[2].num_batches_tracked) == 3
    torch.manual_seed(7)  # dropout was on: without it the statistics differ
    with torch.no_grad():
        plain = torch.stack([model[0](x).double().var(0, unbiased=True) for x in batches]).mean(0)
    assert not torch.allclose(plain, var, rtol=1e-2)


def test_reestimation_without_batches_or_batch_norm():
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    model[1].running_mean.fill_(2.0)
    with pytest.raises(ValueError, match="got no batches"):
        reestimate_batch_norm(model, [])
    assert torch.equal(model[1].running_mean, torch.full((4,), 2.0))  # left as it was
    assert reestimate_batch_norm(nn.Linear(3, 4), [torch.zeros(2, 3)]) == 0  # nothing to do


def test_average_checkpoints_of_a_run(finished, tmp_path):
    snaps = [finished / "checkpoints" / f"epoch-00000{e}" for e in (1, 2, 3)]
    avg = average_checkpoints(snaps)
    weights = [load_file(str(p / WEIGHTS)) for p in snaps]
    for key, value in avg.items():
        if value.is_floating_point():
            ref = sum(w[key].double() for w in weights) / 3
            torch.testing.assert_close(value, ref.float(), rtol=0, atol=0)
    with pytest.raises(ValueError, match="at least 2"):
        average_checkpoints(snaps[:1])
    with pytest.raises(ValueError, match="at least 2"):
        average_checkpoints(str(snaps[0]))
    with pytest.raises(ValueError, match="same checkpoint twice"):
        average_checkpoints([snaps[0], snaps[0]])
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        average_checkpoints([snaps[0], tmp_path / "missing"])


def test_other_architecture_is_refused(finished, tmp_path):
    other = tmp_path / "other"
    cfg = load_config(
        base={**CONFIG, "model": {**CONFIG["model"], "d_model": 12}, "train": {**CONFIG["train"], "epochs": 1}},
        overrides=[f"train.out_dir={other}"],
    )
    train(cfg, log=lambda msg: None)
    with pytest.raises(ValueError, match="does not match .* extra keys|'.*' is torch.float32"):
        average_state_dicts(
            [load_file(str(finished / "last" / WEIGHTS)), load_file(str(other / "last" / WEIGHTS))], names=["A", "B"]
        )
    with pytest.raises(ValueError, match="another model config"):
        average_checkpoints([finished / "last", other / "last"])


def test_torchssm_average_writes_a_checkpoint_that_reloads(finished, tmp_path, capsys):
    out = tmp_path / "avg"
    assert main(["average", str(finished), "--epochs", "2", "3", "--out", str(out)]) == 0
    line = capsys.readouterr().out
    assert "averaged 2 checkpoints" in line and "re-estimated on 3 training batches (40 examples, dropout on)" in line
    state = read_checkpoint_state(out)
    assert state["epoch"] == 3 and state["batch_norm"]["batches"] == 3 and len(state["averaged_from"]) == 2
    assert "optimizer.pt" not in state["files"]
    # the same steps by hand: mean of the two checkpoints, then one pass over the run's training set
    run = load_run(finished / "checkpoints" / "epoch-000003")
    run.model.load_state_dict(average_checkpoints([finished / "checkpoints" / f"epoch-00000{e}" for e in (2, 3)]))
    tc = run.config.train
    batches = iterate_batches(run.task.train, 16, shuffle=True, generator=epoch_generator(tc.seed, 3), min_batch=2)
    reestimate_batch_norm(run.model, batches, seed=tc.seed)
    run.model.eval()
    reloaded = load_run(out, task="induction_heads")
    saved = load_file(str(out / WEIGHTS))
    for key, value in run.model.state_dict().items():
        torch.testing.assert_close(saved[key], value, rtol=0, atol=0)
    batch = next(iterate_batches(reloaded.task.test, 8))
    with torch.no_grad():
        torch.testing.assert_close(forward_batch(reloaded.model, batch), forward_batch(run.model, batch))
    # the running statistics changed from the plain mean of the checkpoints' statistics
    plain = average_checkpoints([finished / "checkpoints" / f"epoch-00000{e}" for e in (2, 3)])
    key = next(k for k in saved if k.endswith("running_var"))
    assert not torch.allclose(saved[key], plain[key])
    # the default output goes into the run directory; a second run refuses to overwrite
    assert main(["average", str(finished), "--out", str(out)]) == 2
    assert "already holds a checkpoint" in capsys.readouterr().err
    assert json.loads((out / SIDECAR).read_text())["averaged_from"][0].endswith("epoch-000002")
    average_run(finished, out, epochs=[1, 2, 3], overwrite=True)  # replaced in place, the same way
    assert read_checkpoint_state(out)["averaged_from"][0].endswith("epoch-000001")
    assert not torch.equal(load_file(str(out / WEIGHTS))[key], saved[key])


def test_one_checkpoint_keeps_its_weights_and_reestimates_batch_norm(finished, tmp_path, capsys):
    """PreciseBN: one checkpoint in, the same weights out, only the batch norms' running statistics recomputed
    (a pass by hand over the same batches gives them to the bit)."""
    last = finished / "checkpoints" / "epoch-000003"
    out = tmp_path / "precise"
    assert checkpoint_has_batch_norm(last)
    assert main(["average", "--checkpoints", str(last), "--out", str(out)]) == 0
    line = capsys.readouterr().out
    assert "kept the weights of 1 checkpoint" in line and "re-estimated on 3 training batches" in line
    saved, before = load_file(str(out / WEIGHTS)), load_file(str(last / WEIGHTS))
    run = load_run(last)
    tc = run.config.train
    batches = iterate_batches(run.task.train, 16, shuffle=True, generator=epoch_generator(tc.seed, 3), min_batch=2)
    reestimate_batch_norm(run.model, batches, seed=tc.seed)
    statistics = [k for k in saved if k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert statistics
    for key, value in run.model.state_dict().items():
        torch.testing.assert_close(saved[key], value, rtol=0, atol=0)
        if key not in statistics:
            assert torch.equal(saved[key], before[key]), key  # weights untouched
    assert any(not torch.equal(saved[k], before[k]) for k in statistics if k.endswith("running_var"))
    assert read_checkpoint_state(out)["averaged_from"] == [str(last)]
    assert main(["average", str(finished), "--epochs", "3", "--out", str(tmp_path / "e3")]) == 0  # the same by epoch
    assert "kept the weights of 1 checkpoint" in capsys.readouterr().out
    for key, value in load_file(str(tmp_path / "e3" / WEIGHTS)).items():
        assert torch.equal(value, saved[key]), key
    with pytest.raises(ValueError, match="no checkpoints"):
        average_run([], tmp_path / "none")


def test_one_checkpoint_without_batch_norm_is_refused(tmp_path, capsys, monkeypatch):
    """One checkpoint of a model with no batch norm would be written back unchanged: a one-line error instead."""
    out = tmp_path / "layer_norm"
    model = {**CONFIG["model"], "norm": "layer"}
    train(load_config(base={**CONFIG, "model": model, "train": {**CONFIG["train"], "out_dir": str(out)}}), log=print)
    capsys.readouterr()
    last = out / "checkpoints" / "epoch-000003"
    assert not checkpoint_has_batch_norm(last)

    def no_task(*args, **kwargs):
        raise AssertionError("the refusal built the run's task")

    monkeypatch.setattr(reload, "load_run", no_task)  # refused from the weights' keys, before any data is built
    assert main(["average", "--checkpoints", str(last), "--out", str(tmp_path / "copy")]) == 2
    monkeypatch.undo()
    assert "one checkpoint of a model without batch norm" in capsys.readouterr().err
    assert not (tmp_path / "copy").exists()
    assert main(["average", str(out), "--out", str(tmp_path / "mean")]) == 0  # three checkpoints: averaged
    line = capsys.readouterr().out
    assert "averaged 3 checkpoints" in line and "no batch norm" in line


def test_cli_bad_input_is_one_line(finished, tmp_path, capsys):
    assert main(["average", str(finished), "--epochs", "1", "7", "--out", str(tmp_path / "x")]) == 2
    assert "kept no checkpoint of epoch(s) [7] (kept: [1, 2, 3]" in capsys.readouterr().err
    assert main(["average", str(tmp_path)]) == 2
    assert "is not a run directory" in capsys.readouterr().err
    assert main(["average", "--checkpoints", str(finished / "last"), str(finished / "best")]) == 2
    assert "--checkpoints needs --out" in capsys.readouterr().err
