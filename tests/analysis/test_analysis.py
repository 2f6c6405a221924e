"""The numbers behind each analysis figure, and that `torchssm plot` writes non-empty files."""

import math
import os
import re

import pytest
import torch

from torchssm.analysis import dynamics, eigen, impulse
from torchssm.layers.base import SSMLayer
from torchssm.layers.init import lru_ring_init
from torchssm.ops.scan.naive import linear_scan_naive

# --- spring-mass-damper ---------------------------------------------------------------------------


@pytest.mark.parametrize("c", [-0.5, -0.1, 0.1, 0.5, 2.0, 3.0])
def test_eigenvalues_match_matrix_and_stability_sign(c):
    a, _ = dynamics.smd_matrices(1.5, 2.0, c)
    want = torch.linalg.eigvals(a)
    got = dynamics.smd_eigenvalues(1.5, 2.0, c)
    torch.testing.assert_close(
        sorted(got.tolist(), key=lambda z: (z.imag, z.real)), sorted(want.tolist(), key=lambda z: (z.imag, z.real))
    )
    assert bool((got.real < 0).all()) == (c > 0)  # positive damping <=> left half-plane


def test_damping_ratio_regimes():
    assert dynamics.damping_ratio(1.0, 4.0, 4.0) == pytest.approx(1.0)  # critical: c = 2 sqrt(mk)
    t, resp = dynamics.damping_responses((-0.05, 0.1, 1.0, 2.0), t_end=40.0)
    assert resp[0.1].min() < -0.5  # under-damped: overshoots through 0
    assert resp[1.0].min() > -1e-9 and resp[2.0].min() > -1e-9  # critically / over-damped: no crossing
    assert resp[-0.05][t > 30].abs().max() > 1.5  # negative damping grows
    # under-damped envelope exp(-zeta t)
    assert resp[0.1][t > 30].abs().max() <= math.exp(-0.1 * 30) * 1.01 + 1e-12


@pytest.mark.parametrize("method", ["zoh", "bilinear"])
def test_discrete_eigenvalues_match_discretized_matrices(method):
    a, b = dynamics.smd_matrices(1.0, 2.0, 0.3)
    dt = 0.4
    a_bar, _ = dynamics.discretize(a, b, dt, method)
    got = dynamics.discrete_eigenvalues(torch.linalg.eigvals(a), dt, method)
    want = torch.linalg.eigvals(a_bar)
    key = lambda z: (round(z.imag, 9), z.real)  # noqa: E731
    torch.testing.assert_close(sorted(got.tolist(), key=key), sorted(want.tolist(), key=key))


def test_stable_maps_into_unit_disk():
    lam = torch.complex(-torch.rand(100, dtype=torch.float64) * 3 - 1e-3, torch.randn(100, dtype=torch.float64) * 3)
    for method in ("zoh", "bilinear"):
        assert bool((dynamics.discrete_eigenvalues(lam, 0.7, method).abs() < 1).all())
        assert bool((dynamics.discrete_eigenvalues(-lam.conj(), 0.7, method).abs() > 1).all())


def test_zoh_is_exact_for_held_inputs():
    """simulate() with ZOH equals the closed form of a first-order system x' = -x + u, u = 1."""
    a, b = torch.tensor([[-1.0]], dtype=torch.float64), torch.tensor([[1.0]], dtype=torch.float64)
    states = dynamics.simulate(a, b, torch.ones(20), 0.25)
    t = torch.arange(21, dtype=torch.float64) * 0.25
    torch.testing.assert_close(states[:, 0], 1 - torch.exp(-t))


def test_zoh_singular_a():
    a = torch.tensor([[0.0, 1.0], [0.0, 0.0]], dtype=torch.float64)  # k = c = 0: free mass, singular
    b = torch.tensor([[0.0], [1.0]], dtype=torch.float64)
    a_bar, b_bar = dynamics.discretize(a, b, 2.0, "zoh")
    torch.testing.assert_close(a_bar, torch.tensor([[1.0, 2.0], [0.0, 1.0]], dtype=torch.float64))
    torch.testing.assert_close(b_bar, torch.tensor([[2.0], [2.0]], dtype=torch.float64))  # (dt^2/2, dt)


def test_information_propagation_aa_vs_ab():
    demo = dynamics.information_propagation()
    sep = demo["separation"]
    assert sep["low damping"] > 0.1  # the first token's information survives
    assert sep["high damping"] < 1e-6  # forgotten: final states coincide
    for seq in ("aa", "ab"):
        x = demo["response"]["negative damping"][seq]
        t = demo["t"]
        assert x[t > 20].abs().max() > 1.5 * x[t < 10].abs().max()  # grows without bound
        assert demo["final"]["high damping"][seq].abs().max() < 1e-6
    u = demo["inputs"]["ab"]
    assert u.max() == 1.0 and u.min() == -1.0
    assert demo["inputs"]["aa"].min() == 0.0


# --- LRU eigenvalues -------------------------------------------------------------------------------


def test_ring_init_eigenvalues_inside_ring():
    lam = eigen.ring_init_eigenvalues(4000, r_min=0.4, r_max=0.9, max_phase=math.pi / 10, seed=1)
    mag = lam.abs()
    assert mag.min() >= 0.4 - 1e-9 and mag.max() <= 0.9 + 1e-9
    assert lam.angle().min() >= 0 and lam.angle().max() <= math.pi / 10 + 1e-9
    # uniform over the ring's area (Lemma 3.2): E|lambda|^2 = (r_min^2 + r_max^2) / 2
    assert float((mag**2).mean()) == pytest.approx((0.16 + 0.81) / 2, abs=0.01)


def test_checkpoint_eigenvalues_from_state_dict_and_files(tmp_path):
    gen = torch.Generator().manual_seed(0)
    nu_log, theta_log = lru_ring_init(16, 0.9, 0.99, generator=gen)
    state = {"blocks.0.layer.nu_log": nu_log, "blocks.0.layer.theta_log": theta_log, "head.weight": torch.ones(2)}
    want = torch.exp(torch.complex(-nu_log.double().exp(), theta_log.double().exp()))
    got = eigen.checkpoint_eigenvalues(state)
    assert list(got) == ["blocks.0.layer"]
    torch.testing.assert_close(got["blocks.0.layer"], want)
    torch.save({"model": state, "step": 3}, tmp_path / "ckpt.pt")
    torch.testing.assert_close(eigen.checkpoint_eigenvalues(tmp_path / "ckpt.pt")["blocks.0.layer"], want)
    from safetensors.torch import save_file

    save_file(state, str(tmp_path / "m.safetensors"))
    torch.testing.assert_close(eigen.checkpoint_eigenvalues(tmp_path / "m.safetensors")["blocks.0.layer"], want)
    with pytest.raises(ValueError, match="nu_log"):
        eigen.checkpoint_eigenvalues({"w": torch.ones(1)})
    with pytest.raises(FileNotFoundError):
        eigen.checkpoint_eigenvalues(tmp_path / "missing.pt")
    with pytest.raises(FileNotFoundError, match="config.json"):
        eigen.checkpoint_eigenvalues(tmp_path)


def test_checkpoint_eigenvalues_of_a_training_run(tmp_path):
    """A training run directory: its best/ checkpoint, loaded with torchssm.from_pretrained."""
    from torchssm.models.backbone import build_model
    from torchssm.models.config import ModelConfig

    torch.manual_seed(0)
    model = build_model(
        ModelConfig(
            layer="lru",
            d_model=4,
            n_layers=2,
            d_input=1,
            d_output=2,
            layer_kwargs={"d_state": 6, "r_min": 0.6, "r_max": 0.8},
        )
    )
    model.save_pretrained(tmp_path / "run" / "best")
    got = eigen.checkpoint_eigenvalues(tmp_path / "run")
    assert len(got) == 2 and all(v.shape == (6,) for v in got.values())
    for lam in got.values():
        assert 0.6 - 1e-6 <= float(lam.abs().min()) and float(lam.abs().max()) <= 0.8 + 1e-6
    pytest.importorskip("matplotlib")
    from torchssm.cli import main

    assert (
        main(
            ["plot", "impulse", "--checkpoint", str(tmp_path / "run"), "--length", "8", "--out", str(tmp_path / "figs")]
        )
        == 0
    )
    assert os.path.getsize(tmp_path / "figs" / "impulse_response.png") > 1000


# --- impulse responses ---------------------------------------------------------------------------


class _DiagonalLTI(SSMLayer):
    """Test layer y_t = sum_k lambda^k x_{t-k} (diagonal, real): its kernel is K[t] = diag(lambda^t)."""

    def __init__(self, d_model):
        super().__init__(d_model)
        self.lam = torch.nn.Parameter(torch.linspace(0.5, 0.95, d_model, dtype=torch.float64))

    def forward(self, x, state=None, *, return_state=False):
        return linear_scan_naive(self.lam, x)


def test_impulse_response_is_the_convolution_kernel():
    layer = _DiagonalLTI(3)
    k = impulse.impulse_response(layer, length=10)
    assert k.shape == (10, 3, 3)
    t = torch.arange(10, dtype=torch.float64)[:, None]
    want = torch.diag_embed(layer.lam.detach()[None] ** t)
    torch.testing.assert_close(k, want)
    norms = impulse.kernel_norms(k)
    assert bool((norms[1:] < norms[:-1]).all())


def test_impulse_response_causal_attention_removes_bias():
    from torchssm.layers.attention import SelfAttention

    torch.manual_seed(0)
    layer = SelfAttention(4, n_heads=2).double()
    k = impulse.impulse_response(layer, length=6)
    assert k.shape == (6, 4, 4) and torch.isfinite(k).all()
    assert layer.training  # mode restored


def _legs(n):
    """HiPPO-LegS (Gu et al. 2020, Theorem 2): A_nk = -sqrt(2n+1)sqrt(2k+1) (n > k), -(n+1) (n = k), 0 else."""
    q = torch.sqrt(2 * torch.arange(n, dtype=torch.float64) + 1)
    a = -torch.tril(q[:, None] * q[None, :], -1)
    return a - torch.diag(torch.arange(n, dtype=torch.float64) + 1)


def test_hippo_matrices_when_available():
    mats = impulse.hippo_matrices(8)
    if "legs" not in mats:
        pytest.skip("torchssm.layers.init has no HiPPO-LegS yet")
    a = mats["legs"]
    want = _legs(8)
    assert a.shape == (8, 8)
    torch.testing.assert_close(a, want)


# --- files -----------------------------------------------------------------------------------------


def test_plot_cli_writes_files(tmp_path):
    pytest.importorskip("matplotlib")
    from torchssm.cli import main

    assert (
        main(
            [
                "plot",
                "all",
                "--out",
                str(tmp_path),
                "--layer",
                "transformer",
                "--d-model",
                "4",
                "--layer-kwargs",
                '{"n_heads": 2}',
                "--length",
                "16",
                "--n",
                "64",
            ]
        )
        == 0
    )
    for name in ("spring_mass_damper", "aa_vs_ab", "lru_ring_init", "impulse_response"):
        assert os.path.getsize(tmp_path / f"{name}.png") > 1000
    assert main(["plot", "ring", "--out", str(tmp_path), "--format", "svg"]) == 0
    assert (tmp_path / "lru_ring_init.svg").read_text().lstrip().startswith("<?xml")


def test_plot_checkpoint_eigenvalues(tmp_path):
    pytest.importorskip("matplotlib")
    from torchssm.analysis import plots
    from torchssm.cli import main

    gen = torch.Generator().manual_seed(0)
    state = dict(zip(("l.nu_log", "l.theta_log"), lru_ring_init(32, 0.5, 0.9, generator=gen)))
    torch.save(state, tmp_path / "sd.pt")
    res = plots.plot_checkpoint_eigenvalues(tmp_path / "e.png", tmp_path / "sd.pt", {"r_min": 0.5, "r_max": 0.9})
    assert os.path.getsize(res["path"]) > 1000
    assert 0.5 - 1e-6 <= res["summary"]["l"]["min_abs"] <= res["summary"]["l"]["max_abs"] <= 0.9 + 1e-6
    assert main(["plot", "eigs", "--checkpoint", str(tmp_path / "sd.pt"), "--out", str(tmp_path)]) == 0
    assert main(["plot", "eigs", "--out", str(tmp_path)]) == 2  # needs --checkpoint: one-line error
    with pytest.raises(ValueError, match=".png"):
        plots.plot_lru_ring(tmp_path / "x.jpg")


def test_save_figure_writes_each_format_atomically(tmp_path):
    pytest.importorskip("matplotlib")
    from torchssm.analysis import plots

    fig, axes = plots.new_figure(size=(2.0, 2.0))
    axes[0].plot([0, 1], [1, 0])
    for suffix, magic in ((".png", b"\x89PNG"), (".svg", b"<?xml"), (".pdf", b"%PDF")):
        path = plots.save_figure(fig, tmp_path / "sub" / f"f{suffix}")  # the temporary name has no suffix
        assert open(path, "rb").read(5).startswith(magic)
    (tmp_path / "old.png").write_bytes(b"old")

    class Broken:
        def savefig(self, *args, **kwargs):
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        plots.save_figure(Broken(), tmp_path / "old.png")
    assert (tmp_path / "old.png").read_bytes() == b"old" and sorted(os.listdir(tmp_path)) == ["old.png", "sub"]


def test_hippo_plot_skips_cleanly_without_provider(tmp_path, monkeypatch):
    import torchssm.layers.init as init
    from torchssm.analysis import plots

    monkeypatch.delattr(init, "hippo", raising=False)
    assert impulse.hippo_matrices(8) == {}
    res = plots.plot_hippo(tmp_path / "h.png")
    assert res["path"] is None and "hippo" in res["skipped"] and not (tmp_path / "h.png").exists()


# --- training runs: curves and the run's own initial eigenvalues ---------------------------------------


def _write_metrics(run, records, tail=""):
    import json

    run.mkdir(parents=True, exist_ok=True)
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records) + tail)
    return run


def _epoch(e, loss, acc=None, evaluated=True):
    r = {"epoch": e, "step": 10 * e, "lr": 1e-3, "train_loss": loss}
    if acc is not None:
        r["train_acc"] = acc
    if evaluated:
        r.update({"val_loss": loss + 0.1, "test_loss": loss + 0.2})
        if acc is not None:
            r.update({"val_acc": acc - 0.05, "test_acc": acc - 0.1})
    return r


def test_metrics_reading_and_series(tmp_path):
    from torchssm.analysis import curves

    run = _write_metrics(
        tmp_path / "a",
        [_epoch(1, 2.0, 0.3), _epoch(2, 1.5, 0.5, evaluated=False), _epoch(3, 1.0, 0.7)],
        tail='{"epoch": 4, "tra',
    )
    with pytest.warns(RuntimeWarning, match="last line, cut short"):
        records = curves.read_metrics(run)  # a run still writing: the torn last line is skipped
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert curves.series(records, "train_loss") == ([1, 2, 3], [2.0, 1.5, 1.0])
    assert curves.series(records, "val_acc") == (
        [1, 3],
        [pytest.approx(0.25), pytest.approx(0.65)],
    )  # epoch 2 not evaluated
    assert curves.series(records, "test_loss", x="step") == ([10, 30], [2.2, 1.2])
    # a resumed run re-writes an epoch: the later record wins, x sorted
    assert curves.series(records + [_epoch(2, 9.0)], "train_loss") == ([1, 2, 3], [2.0, 9.0, 1.0])
    assert curves.has_metric(records, "acc") and not curves.has_metric([_epoch(1, 1.0)], "acc")
    with pytest.raises(ValueError, match="x must be one of"):
        curves.series(records, "train_loss", x="time")
    bad = _write_metrics(tmp_path / "bad", [_epoch(1, 1.0)], tail="not json\n" + '{"epoch": 2}\n')
    with pytest.raises(ValueError, match=r"metrics.jsonl line 2 is not a JSON record"):
        curves.read_metrics(bad)
    with pytest.raises(ValueError, match="no records yet"):
        curves.read_metrics(_write_metrics(tmp_path / "empty", []))
    with pytest.raises(FileNotFoundError, match="no metrics.jsonl"):
        curves.read_metrics(tmp_path)
    with pytest.raises(FileNotFoundError, match="no such directory"):
        curves.read_metrics(tmp_path / "missing")


def test_run_labels_tell_runs_apart(tmp_path):
    from torchssm.analysis.curves import run_labels

    assert run_labels([tmp_path / "x" / "lru", tmp_path / "y" / "s4d"]) == ["lru", "s4d"]
    assert run_labels([tmp_path / "x" / "lru", tmp_path / "y" / "lru"]) == ["x/lru", "y/lru"]
    assert run_labels([tmp_path / "x" / "lru" / "metrics.jsonl"]) == ["lru"]


def test_plot_training_curves(tmp_path):
    pytest.importorskip("matplotlib")
    from torchssm.analysis import plots
    from torchssm.cli import main

    a = _write_metrics(tmp_path / "runs" / "a", [_epoch(e, 2.0 / e, 0.2 * e) for e in range(1, 5)])
    b = _write_metrics(tmp_path / "other" / "a", [_epoch(e, 3.0 / e, 0.1 * e) for e in range(1, 3)])
    res = plots.plot_training_curves(tmp_path / "c.png", [a, b])
    assert res["labels"] == ["runs/a", "other/a"] and os.path.getsize(res["path"]) > 10_000
    assert res["curves"]["runs/a"]["val_acc"][1] == pytest.approx([0.15, 0.35, 0.55, 0.75])
    assert set(res["curves"]["other/a"]) == {f"{s}_{k}" for s in ("train", "val", "test") for k in ("loss", "acc")}
    # regression runs (no accuracy): one panel, loss only
    reg = _write_metrics(tmp_path / "reg", [_epoch(e, 1.0 / e) for e in range(1, 4)])
    res = plots.plot_training_curves(tmp_path / "r.svg", [reg], x="step", labels=["adding"])
    assert res["labels"] == ["adding"] and res["curves"]["adding"]["train_loss"][0] == [10, 20, 30]
    with pytest.raises(ValueError, match="2 labels for 1 runs"):
        plots.plot_training_curves(tmp_path / "r.png", [reg], labels=["a", "b"])
    with pytest.raises(ValueError, match="at least one run"):
        plots.plot_training_curves(tmp_path / "r.png", [])
    assert main(["plot", "curves", str(a), str(b), "--out", str(tmp_path / "figs")]) == 0
    assert os.path.getsize(tmp_path / "figs" / "training_curves.png") > 10_000
    assert main(["plot", "curves", str(tmp_path / "nowhere"), "--out", str(tmp_path)]) == 2  # one-line error
    assert main(["plot", "ring", str(a), "--out", str(tmp_path)]) == 2  # only curves takes runs


@pytest.fixture(scope="module")
def lru_run(tmp_path_factory):
    """A 2-epoch LRU run on aa-vs-ab (64 examples of length 32, width 8) whose initial weights were captured
    by its model builder."""
    from torchssm.models import build_model
    from torchssm.train.config import ExperimentConfig
    from torchssm.train.loop import train

    root = tmp_path_factory.mktemp("lru_run")
    cfg = ExperimentConfig.from_dict(
        {
            "task": {"name": "aa_ab", "length": 32, "gap": 4, "n_train": 64, "n_val": 16, "n_test": 16},
            "model": {"layer": "lru", "d_model": 8, "n_layers": 2, "layer_kwargs": {"d_state": 8, "r_min": 0.5}},
            "train": {
                "epochs": 2,
                "batch_size": 16,
                "lr": 5e-2,
                "seed": 3,
                "threads": 1,
                "progress": False,
                "out_dir": str(root / "run"),
            },
        }
    )
    captured = {}

    def builder(model_cfg):
        model = build_model(model_cfg)
        captured.update({k: v.detach().clone() for k, v in model.state_dict().items()})
        return model

    train(cfg, data_dir=root / "data", model_builder=builder)
    return root / "run", captured


def test_initial_eigenvalues_are_the_runs_own(lru_run):
    """Rebuilt from the run's config and train.seed, the initial eigenvalues equal those the loop trained from
    (captured by its model builder), exactly; the trained ones moved away from them."""
    import random

    import numpy as np

    run, captured = lru_run
    states = torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy()
    initial, seed = eigen.initial_eigenvalues(run)
    assert seed == 3
    assert torch.equal(torch.get_rng_state(), states[0]) and random.getstate() == states[1]
    assert np.array_equal(np.random.get_state()[1], states[2])  # the caller's random state is untouched
    want = eigen.checkpoint_eigenvalues(captured)
    trained = eigen.checkpoint_eigenvalues(run)
    assert list(initial) == list(want) == list(trained) and len(initial) == 2
    for name in want:
        torch.testing.assert_close(initial[name], want[name], rtol=0, atol=0)
        assert float((trained[name] - want[name]).abs().max()) > 1e-4  # training moved them
    # from a checkpoint directory of the run too (last/, a snapshot)
    torch.testing.assert_close(eigen.initial_eigenvalues(run / "last")[0][name], want[name], rtol=0, atol=0)
    with pytest.raises(FileNotFoundError, match="trainer_state.json"):
        eigen.initial_eigenvalues(run.parent)


def test_plot_eigs_draws_the_runs_initial_eigenvalues(lru_run, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    from torchssm.analysis import plots
    from torchssm.cli import main

    run, captured = lru_run
    res = plots.plot_checkpoint_eigenvalues(tmp_path / "e.png", run, "run")
    assert res["before_label"] == "initial (train.seed 3)"
    assert re.fullmatch(r"trained \(best, epoch [12]\)", res["label"])  # a run directory: its best/ checkpoint
    for name, lam in eigen.checkpoint_eigenvalues(captured).items():
        torch.testing.assert_close(res["before"][name], lam, rtol=0, atol=0)
    assert main(["plot", "eigs", "--checkpoint", str(run), "--out", str(tmp_path)]) == 0
    assert "initial (train.seed 3)" in capsys.readouterr().out
    assert os.path.getsize(tmp_path / "lru_eigenvalues.png") > 10_000
    # a bare state dict has no run record: trained eigenvalues only, said so; --init ring is the old comparison
    gen = torch.Generator().manual_seed(0)
    torch.save(dict(zip(("l.nu_log", "l.theta_log"), lru_ring_init(16, 0.5, 0.9, generator=gen))), tmp_path / "sd.pt")
    assert main(["plot", "eigs", "--checkpoint", str(tmp_path / "sd.pt"), "--out", str(tmp_path)]) == 0
    assert "not a training run" in capsys.readouterr().out
    assert (
        main(["plot", "eigs", "--checkpoint", str(tmp_path / "sd.pt"), "--init", "ring", "--out", str(tmp_path)]) == 0
    )
    assert "a fresh ring-init draw" in capsys.readouterr().out
