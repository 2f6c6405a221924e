"""Signal processing for speech data: resampling, noise at a chosen SNR, synthetic room reverberation, mu-law.

All functions take and return float numpy arrays (samples in [-1, 1] for speech); randomness comes
from an explicit ``numpy.random.Generator`` so every result is reproducible.

* :func:`resample`: band-limited rational resampling (polyphase FIR with a Kaiser-windowed sinc,
  ``scipy.signal.resample_poly``; a direct windowed-sinc fallback in numpy when scipy is absent).
* :func:`speed_perturb`: speed perturbation (Ko et al. 2015, "Audio augmentation for speech
  recognition", Interspeech: the signal resampled so that it plays ``factor`` times faster, which
  scales its duration by 1 / factor and every frequency, pitch and formants alike, by ``factor``;
  their 3-fold copies use 0.9, 1.0, 1.1).
* :func:`mix_at_snr`: ``speech + g * noise`` with ``g`` such that 10 log10(P_speech / P_noise') = SNR.
* :func:`synthetic_rir`: the statistical room impulse response of Polack (1988; see also Lehmann &
  Johansson 2008, JASA 124(1), Sec. II): a direct path followed by Gaussian noise under the energy decay
  exp(-6 ln(10) t / RT60) (-60 dB after RT60 seconds), from a pre-delay of a few milliseconds.
* :func:`mu_law_encode` / :func:`mu_law_decode`: ITU-T G.711 mu-law companding, F(x) = sign(x)
  ln(1 + mu |x|) / ln(1 + mu), quantised to 256 levels as in WaveNet (van den Oord et al. 2016, Sec. 2.2).
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np


def _as_signal(x, name: str = "signal") -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 1:
        raise ValueError(f"{name} must be 1-D (samples,), got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        raise TypeError(f"{name} must be floating point, got dtype {x.dtype}")
    return x


def resample(x: np.ndarray, orig_rate: int, new_rate: int) -> np.ndarray:
    """``x`` (n,) at ``orig_rate`` Hz -> (ceil(n * new / orig),) at ``new_rate`` Hz, anti-aliased.

    The rate ratio is reduced to up/down (22050 -> 16000 Hz: 320/441) and filtered by a polyphase
    Kaiser-windowed-sinc low-pass at min(orig, new) / 2 (scipy's ``resample_poly`` design, beta 5).
    """
    x = _as_signal(x)
    for name, rate in (("orig_rate", orig_rate), ("new_rate", new_rate)):
        if isinstance(rate, bool) or not isinstance(rate, (int, np.integer)) or rate < 1:
            raise ValueError(f"{name} must be a positive int (Hz), got {rate!r}")
    if orig_rate == new_rate:
        return x.copy()
    ratio = Fraction(int(new_rate), int(orig_rate))
    try:
        from scipy.signal import resample_poly
    except ImportError:
        return _resample_sinc(x, ratio.numerator, ratio.denominator)
    return resample_poly(x, ratio.numerator, ratio.denominator).astype(x.dtype, copy=False)


def _resample_sinc(x: np.ndarray, up: int, down: int, beta: float = 5.0) -> np.ndarray:
    """``resample_poly``'s filter evaluated only at the output samples (numpy, no scipy).

    Upsampled by ``up`` (zero stuffing), low-pass filtered by h (2 * 10 * max(up, down) + 1 taps of a
    Kaiser(``beta``)-windowed sinc with cut-off 1 / max(up, down), unit DC gain, times ``up``), and
    downsampled by ``down``: y[k] = sum_i x[i] h(k down - i up), h centred at 0.
    """
    max_rate = max(up, down)
    half = 10 * max_rate
    taps = np.arange(-half, half + 1)
    h = np.sinc(taps / max_rate) * np.kaiser(2 * half + 1, beta)
    h = h / h.sum() * up  # (2 half + 1,)
    n_out = -(-len(x) * up // down)
    position = np.arange(n_out) * down  # output k on the upsampled grid
    first = -(-(position - half) // up)  # first input index whose upsampled position is in reach
    idx = first[:, None] + np.arange(2 * half // up + 1)[None, :]  # (n_out, taps per phase)
    offset = position[:, None] - idx * up  # (n_out, taps per phase)
    valid = (idx >= 0) & (idx < len(x)) & (np.abs(offset) <= half)
    weights = np.where(valid, h[np.clip(offset + half, 0, 2 * half)], 0.0)
    return (weights * x[np.clip(idx, 0, len(x) - 1)]).sum(1).astype(x.dtype)


def check_speed_factors(factors, what: str = "speed_perturb", allow_one: bool = True) -> tuple[float, ...]:
    """``factors`` as a tuple of floats, each a speed in [0.5, 2] (and not 1 where ``allow_one`` is False);
    else a ValueError naming ``what``."""
    ok = isinstance(factors, (list, tuple)) and all(
        isinstance(f, (int, float)) and not isinstance(f, bool) and 0.5 <= f <= 2.0 and (allow_one or f != 1.0)
        for f in factors
    )
    if not ok:
        other = "" if allow_one else " other than 1"
        raise ValueError(f"{what} must be a list of speed factors in [0.5, 2]{other}, got {factors!r}")
    return tuple(float(f) for f in factors)


def speed_perturb(x: np.ndarray, factor: float) -> np.ndarray:
    """``x`` played ``factor`` times faster (Ko et al. 2015): (:func:`speed_perturbed_length`,), frequencies
    times ``factor``.

    ``factor`` is rounded to a ratio with a denominator <= 100 (1.1 -> 11/10) and the signal resampled
    from that ratio by :func:`resample` (anti-aliased when ``factor`` > 1).
    """
    x = _as_signal(x)
    ratio = _speed_ratio(factor)
    return resample(x, ratio.numerator, ratio.denominator)


def speed_perturbed_length(n: int, factor: float) -> int:
    """``len(speed_perturb(x, factor))`` for ``len(x) == n``, without resampling: ceil(n q / p) for the
    rounded ratio p / q of :func:`speed_perturb` (1.1 -> 11/10; about ceil(n / factor), not always equal)."""
    ratio = _speed_ratio(factor)
    return -(-int(n) * ratio.denominator // ratio.numerator)


def _speed_ratio(factor: float) -> Fraction:
    """``factor`` checked (:func:`check_speed_factors`) and rounded to a ratio with a denominator <= 100."""
    (factor,) = check_speed_factors((factor,), "speed factor")
    return Fraction(factor).limit_denominator(100)


def power(x: np.ndarray) -> float:
    """Mean square of ``x``."""
    return float(np.mean(np.square(x, dtype=np.float64)))


def mix_at_snr(speech: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """``speech + g * noise`` with the noise scaled to ``snr_db`` dB below the speech power."""
    speech, noise = _as_signal(speech, "speech"), _as_signal(noise, "noise")
    if speech.shape != noise.shape:
        raise ValueError(f"speech {speech.shape} and noise {noise.shape} must have the same length")
    if not math.isfinite(snr_db):
        raise ValueError(f"snr_db must be a finite number of dB, got {snr_db!r}")
    p_speech, p_noise = power(speech), power(noise)
    if p_speech == 0.0:
        raise ValueError("speech is silent (zero power): the SNR is undefined")
    if p_noise == 0.0:
        raise ValueError("noise is silent (zero power): it cannot be scaled to an SNR")
    gain = math.sqrt(p_speech / (p_noise * 10.0 ** (snr_db / 10.0)))
    return (speech + gain * noise).astype(speech.dtype, copy=False)


def colored_noise(n: int, rng: np.random.Generator, exponent: float = 0.0) -> np.ndarray:
    """(n,) float32 Gaussian noise with power spectrum ~ 1 / f^exponent (0 white, 1 pink, 2 brown)."""
    white = rng.standard_normal(n)
    if exponent == 0.0:
        return white.astype(np.float32)
    spectrum = np.fft.rfft(white)
    freqs = np.fft.rfftfreq(n)
    freqs[0] = freqs[1] if n > 1 else 1.0
    shaped = np.fft.irfft(spectrum / freqs ** (exponent / 2.0), n)
    return (shaped / (shaped.std() + 1e-12)).astype(np.float32)


def synthetic_rir(
    sample_rate: int, rt60: float, rng: np.random.Generator, predelay: float = 0.005, direct_to_reverb_db: float = 0.0
) -> np.ndarray:
    """A room impulse response (Polack's statistical model, see the module docstring).

    (n,) float32 of length ``predelay + RT60`` seconds: a unit direct path at t = 0, and from
    ``predelay`` on a Gaussian tail with amplitude envelope exp(-3 ln(10) t / RT60), scaled so the
    direct-to-reverberant energy ratio is ``direct_to_reverb_db`` dB.
    """
    if not rt60 > 0:
        raise ValueError(f"rt60 must be > 0 seconds, got {rt60!r}")
    n_tail = max(1, int(round(rt60 * sample_rate)))
    start = int(round(predelay * sample_rate))
    t = np.arange(n_tail) / sample_rate
    tail = rng.standard_normal(n_tail) * np.exp(-3.0 * math.log(10.0) * t / rt60)
    tail *= math.sqrt(10.0 ** (-direct_to_reverb_db / 10.0) / np.sum(tail**2))
    rir = np.zeros(start + n_tail, dtype=np.float64)
    rir[0] = 1.0
    rir[start:] += tail
    return rir.astype(np.float32)


def reverberate(x: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """``x`` convolved with ``rir``, truncated to ``len(x)``, rescaled to ``x``'s peak amplitude."""
    x, rir = _as_signal(x), _as_signal(rir, "rir")
    n = len(x) + len(rir) - 1
    size = 1 << (n - 1).bit_length()
    wet = np.fft.irfft(np.fft.rfft(x, size) * np.fft.rfft(rir, size), size)[: len(x)]
    peak_in, peak_out = np.abs(x).max(initial=0.0), np.abs(wet).max(initial=0.0)
    return (wet * (peak_in / peak_out if peak_out > 0 else 1.0)).astype(x.dtype)


def mu_law_encode(x: np.ndarray, channels: int = 256) -> np.ndarray:
    """Samples in [-1, 1] -> int64 codes in [0, channels) (mu = channels - 1)."""
    x = np.clip(np.asarray(x, dtype=np.float64), -1.0, 1.0)
    mu = channels - 1
    companded = np.sign(x) * np.log1p(mu * np.abs(x)) / math.log1p(mu)
    return np.clip(np.floor((companded + 1.0) / 2.0 * channels), 0, mu).astype(np.int64)


def mu_law_decode(codes: np.ndarray, channels: int = 256) -> np.ndarray:
    """Codes in [0, channels) -> samples in [-1, 1] (the centre of each code's interval)."""
    codes = np.asarray(codes)
    if codes.size and (codes.min() < 0 or codes.max() >= channels):
        raise ValueError(f"mu-law codes must lie in [0, {channels}), got range [{codes.min()}, {codes.max()}]")
    mu = channels - 1
    companded = (codes.astype(np.float64) + 0.5) / channels * 2.0 - 1.0
    return (np.sign(companded) * np.expm1(np.abs(companded) * math.log1p(mu)) / mu).astype(np.float32)
