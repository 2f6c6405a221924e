"""Resampling, noise at an SNR, synthetic reverberation, mu-law."""

import math

import numpy as np
import pytest

from torchssm.audio import dsp


def test_resample_matches_scipy_and_fallback():
    scipy_signal = pytest.importorskip("scipy.signal")
    x = np.random.default_rng(0).standard_normal(2205)
    for up, down in ((320, 441), (2, 1), (1, 3)):
        ref = scipy_signal.resample_poly(x, up, down)
        np.testing.assert_allclose(dsp._resample_sinc(x, up, down), ref, atol=1e-12)
    y = dsp.resample(x.astype(np.float32), 22050, 16000)
    assert y.shape == (1600,) and y.dtype == np.float32


def test_resample_keeps_a_tone_and_removes_aliases():
    t = np.arange(22050) / 22050
    tone = np.sin(2 * np.pi * 1000 * t)
    y = dsp.resample(tone, 22050, 16000)
    ref = np.sin(2 * np.pi * 1000 * np.arange(16000) / 16000)
    np.testing.assert_allclose(y[200:-200], ref[200:-200], atol=2e-3)  # Kaiser (beta 5) pass-band ripple
    alias = dsp.resample(np.sin(2 * np.pi * 10000 * t), 22050, 16000)  # above the new Nyquist (8 kHz)
    assert np.sqrt(np.mean(alias[200:-200] ** 2)) < 1e-2
    with pytest.raises(ValueError, match="new_rate"):
        dsp.resample(tone, 22050, 0)


@pytest.mark.parametrize("snr", [0.0, 10.0, 20.0])
def test_mix_at_snr_is_exact(snr):
    rng = np.random.default_rng(1)
    speech, noise = rng.standard_normal(8000), dsp.colored_noise(8000, rng, 1.0)
    mixed = dsp.mix_at_snr(speech, noise, snr)
    assert math.isclose(10 * math.log10(dsp.power(speech) / dsp.power(mixed - speech)), snr, abs_tol=1e-5)
    with pytest.raises(ValueError, match="silent"):
        dsp.mix_at_snr(np.zeros(10), noise[:10], snr)
    with pytest.raises(ValueError, match="same length"):
        dsp.mix_at_snr(speech, noise[:10], snr)


def test_pink_noise_spectrum_falls():
    x = dsp.colored_noise(1 << 16, np.random.default_rng(2), 1.0)
    p = np.abs(np.fft.rfft(x)) ** 2
    low, high = p[10:100].mean(), p[10000:20000].mean()
    assert low / high > 50  # ~1/f: a factor ~ 150 between these bands


def test_synthetic_rir_decays_by_60_db_over_rt60():
    rng = np.random.default_rng(3)
    rir = dsp.synthetic_rir(16000, 0.4, rng, predelay=0.0)
    tail = rir[1:].astype(np.float64) ** 2
    first, last = tail[:800].mean(), tail[-1600:-800].mean()  # 0-50 ms vs 300-350 ms
    expected_db = -60 * (0.325 - 0.025) / 0.4
    assert abs(10 * math.log10(last / first) - expected_db) < 4
    wet = dsp.reverberate(np.r_[1.0, np.zeros(99)].astype(np.float32), rir)
    np.testing.assert_allclose(wet, rir[:100] / np.abs(rir[:100]).max(), rtol=1e-4, atol=1e-6)


def test_mu_law_round_trip():
    x = np.linspace(-1, 1, 10001)
    codes = dsp.mu_law_encode(x)
    assert codes.min() == 0 and codes.max() == 255
    err = np.abs(dsp.mu_law_decode(codes) - x)
    assert err.max() < 0.035 and err[np.abs(x) < 0.01].max() < 1e-3  # fine steps near zero
    with pytest.raises(ValueError, match="codes"):
        dsp.mu_law_decode(np.array([256]))
