"""Log-mel front end vs a reference computed from the definitions; streaming == offline."""

import math

import numpy as np
import pytest
import torch

from torchssm.audio.features import LogMel, mel_filterbank


def reference_log_mel(x, sample_rate, n_fft, hop, n_mels):
    """Explicit DFT sums and triangle filters written from the definitions (float64 numpy loops)."""
    mel = lambda f: 2595 * math.log10(1 + f / 700)  # noqa: E731
    inv = lambda m: 700 * (10 ** (m / 2595) - 1)  # noqa: E731
    edges = [inv(mel(0) + (mel(sample_rate / 2) - mel(0)) * i / (n_mels + 1)) for i in range(n_mels + 2)]
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)  # periodic Hann
    n_frames = 1 + (len(x) - n_fft) // hop
    k = np.arange(n_fft // 2 + 1)
    out = np.zeros((n_frames, n_mels))
    for t in range(n_frames):
        seg = x[t * hop : t * hop + n_fft] * window
        m = np.arange(n_fft)
        spec = np.array([np.sum(seg * np.exp(-2j * np.pi * kk * m / n_fft)) for kk in k])
        power = np.abs(spec) ** 2
        for j in range(n_mels):
            lo, c, hi = edges[j], edges[j + 1], edges[j + 2]
            weights = []
            for kk in k:
                f = kk * sample_rate / n_fft
                weights.append(max(0.0, min((f - lo) / (c - lo), (hi - f) / (hi - c))))
            out[t, j] = math.log(max(np.dot(weights, power), 1e-10))
    return out


def test_log_mel_matches_reference():
    x = np.random.default_rng(0).standard_normal(1200)
    ref = reference_log_mel(x, 8000, 128, 64, 12)
    got = LogMel(8000, n_fft=128, hop=64, n_mels=12).double()(torch.from_numpy(x)[None])[0]
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-9, atol=1e-9)


def test_filterbank_shape_and_peaks():
    fb = mel_filterbank(40, 400, 16000)
    assert fb.shape == (40, 201) and fb.min() >= 0 and fb.max() <= 1
    assert (fb.sum(1) > 0).all()  # no empty filter at 40 channels / 25 ms


@pytest.mark.parametrize("chunk", [160, 37, 1000])
def test_streaming_equals_offline(chunk):
    x = torch.randn(2, 4000, dtype=torch.float64)
    front = LogMel(16000, n_mels=20).double()
    offline = front(x)
    frames, buffer = [], None
    for start in range(0, x.shape[1], chunk):
        out, buffer = front.stream(x[:, start : start + chunk], buffer)
        frames.append(out)
    torch.testing.assert_close(torch.cat(frames, 1), offline)
    assert offline.shape == (2, front.num_frames(4000), 20)


def test_bad_input():
    front = LogMel()
    with pytest.raises(ValueError, match="shorter than one window"):
        front(torch.zeros(1, 100))
    with pytest.raises(ValueError, match="float waveform"):
        front(torch.zeros(1, 2, 3, 4))
    with pytest.raises(ValueError, match="n_mels"):
        LogMel(n_mels=0)
