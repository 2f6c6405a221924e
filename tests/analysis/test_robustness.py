"""Fourier-mode perturbations (analysis/robustness.py): exact RMS, exact band, clean accuracy at eps = 0, errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from torchssm.analysis.robustness import (
    band_bins,
    evaluate_robustness,
    format_table,
    fourier_directions,
    perturb,
)


@pytest.mark.parametrize("length", [40, 41])
@pytest.mark.parametrize("band", ["high", "low", (3, 7), (0, 2)])
def test_perturbation_has_requested_rms_and_only_requested_bins(length, band):
    x = torch.randn(8, length, 2, dtype=torch.float64) * torch.linspace(0.5, 3.0, 8)[:, None, None] + 1.0
    k0, k1 = band_bins(length, band)
    d = fourier_directions(x.shape, (k0, k1), seed=3)
    eps = 0.2
    p = perturb(x, d, eps) - x  # (n, L, d)
    rms = lambda t: t.pow(2).mean(dim=(1, 2)).sqrt()  # noqa: E731
    torch.testing.assert_close(rms(p), eps * rms(x))
    spectrum = torch.fft.rfft(p, dim=1).abs()  # (n, L//2+1, d)
    inside = torch.zeros(length // 2 + 1, dtype=torch.bool)
    inside[k0:k1] = True
    assert spectrum[:, ~inside].max() < 1e-10 * spectrum.max()
    assert (spectrum[:, inside].amax(dim=1) > 0).all()  # every example and channel is perturbed


def test_named_bands():
    assert band_bins(40, "high") == (16, 21)  # 21 bins: the top quarter (5 bins) ends at Nyquist
    assert band_bins(40, "low") == (1, 6)  # the control: as many bins just above DC


def test_same_directions_for_same_seed_and_different_for_another():
    a = fourier_directions((4, 32, 1), (10, 17), seed=0)
    torch.testing.assert_close(a, fourier_directions((4, 32, 1), (10, 17), seed=0))
    assert not torch.allclose(a, fourier_directions((4, 32, 1), (10, 17), seed=1))


class _Classifier(nn.Module):
    """Mean over time of a linear read-out: (n, L, d) -> (n, C)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(1, 3)

    def forward(self, x):
        return self.lin(torch.tanh(5 * x)).mean(1)


def test_eps_zero_is_clean_accuracy_and_noise_changes_it():
    torch.manual_seed(0)
    x = torch.randn(64, 16, 1)
    model = _Classifier()
    y = torch.randint(0, 3, (64,))
    y[:32] = model(x[:32]).argmax(-1)  # half the labels are what the model predicts on clean inputs
    res = evaluate_robustness({"m": model}, x, y, eps=[0.0, 5.0], bands=["high"], seed=0)
    clean = (model(x).argmax(-1) == y).float().mean().item()
    accs = [r["acc"] for r in res["models"]["m"]]
    assert accs[0] == pytest.approx(clean)
    assert accs[1] != pytest.approx(clean)  # large noise changes the predictions
    assert "| m | high (7-8) |" in format_table(res)


def test_bad_input_raises_clear_errors():
    with pytest.raises(ValueError, match="0 <= k0 < k1"):
        band_bins(40, (18, 30))
    with pytest.raises(ValueError, match="0 <= k0 < k1"):
        band_bins(40, (5, 5))
    with pytest.raises(ValueError, match="unknown band"):
        band_bins(40, "mid")
    x, y = torch.randn(4, 16, 1), torch.zeros(4, dtype=torch.long)
    with pytest.raises(ValueError, match="eps must be"):
        evaluate_robustness({"m": _Classifier()}, x, y, eps=[0.1, -0.1])
    with pytest.raises(ValueError, match="eps must be"):
        perturb(x, fourier_directions(x.shape, "high"), -1.0)
    with pytest.raises(TypeError, match="real inputs"):
        evaluate_robustness({"m": _Classifier()}, torch.zeros(4, 16, dtype=torch.long), y)


def test_plot_robustness(tmp_path):
    pytest.importorskip("matplotlib")
    from torchssm.analysis.plots import plot_robustness

    x, y = torch.randn(16, 16, 1), torch.zeros(16, dtype=torch.long)
    res = evaluate_robustness({"a": _Classifier(), "b": _Classifier()}, x, y, eps=[0, 0.5], seed=0)
    out = plot_robustness(tmp_path / "r.png", res)
    assert (tmp_path / "r.png").stat().st_size > 0 and len(out["curves"]) == 4
    with pytest.raises(ValueError, match="torchssm robustness"):
        plot_robustness(tmp_path / "s.png", {})


def test_cli_rejects_bad_bands_and_labels(capsys, tmp_path):
    from torchssm.cli import main

    assert main(["robustness", str(tmp_path), "--bands", "mid"]) == 2
    assert "--bands takes high, low or K0:K1" in capsys.readouterr().err
    assert main(["robustness", str(tmp_path), "--labels", "a", "b"]) == 2
    assert "one name per run" in capsys.readouterr().err
    assert main(["robustness", str(tmp_path / "missing")]) == 2
    assert "no training run or checkpoint at" in capsys.readouterr().err
