"""Log-mel filterbank features in torch, offline and streaming.

For a waveform x (b, n) at ``sample_rate`` Hz, frame t covers x[t*hop : t*hop + n_fft] (no centre
padding, so frames depend only on past samples and a stream gives exactly the offline frames):

    X_t(k)   = sum_m w(m) x[t*hop + m] exp(-2 pi i k m / n_fft),     w = periodic Hann window
    P_t(k)   = |X_t(k)|^2                                             k = 0 .. n_fft/2
    M_t(j)   = sum_k F(j, k) P_t(k)                                   F: triangular mel filters
    out_t(j) = log(max(M_t(j), floor))                                (b, frames, n_mels)

with ``frames = 1 + (n - n_fft) // hop``. The mel scale is HTK's, mel(f) = 2595 log10(1 + f / 700)
(Young et al., The HTK Book, Sec. 5.4), filters with unit peak spaced uniformly in mel between
``f_min`` and ``f_max``. Defaults: 25 ms windows every 10 ms and 80 mel channels, the front end of
Samba-ASR (Shakhadri et al. 2025, Sec. 3: "80-channel log-mel spectrogram with a 25 ms window and a
stride of 10 ms", as Whisper, Radford et al. 2022, Sec. 2.2), 40 channels for keyword spotting (the
Speech Commands front end of Warden 2018, Sec. 4, is 40 MFCC-like channels; UNVERIFIED which exact
filterbank it uses).

``warp`` alpha (1: none) warps the frequency axis by vocal tract length perturbation (VTLP, Jaitly & Hinton 2013,
"Vocal Tract Length Perturbation (VTLP) improves speech recognition", ICML Workshop on Deep Learning for Audio,
Speech and Language), :func:`vtlp_warp`: frequency f maps to

    f' = alpha f                                                         f <= f_hi min(alpha, 1) / alpha
    f' = S/2 - (S/2 - f_hi min(alpha, 1)) / (S/2 - f_hi min(alpha, 1) / alpha) (S/2 - f)      otherwise

(S the sample rate, f_hi = 4800 Hz), a piecewise-linear map of [0, S/2] onto itself. The warp acts on the power
spectrum: P'(f_k) = P(f'(f_k)), P read between DFT bins by linear interpolation (:func:`spectrum_warp`), and the same
filters read P', so a tone at alpha f (below the bend) reaches the filters that a tone at f reaches unwarped. Moving
the filters' edges instead (the other way to apply it) fails here: 80 filters on 40 Hz bins make the lowest ones
narrower than a bin, so their weights swing with the warp and at alpha 0.85 the lowest filter is empty (log of the
floor; measured in RESULTS.md, Speech, session 29). Jaitly & Hinton draw alpha from [0.9, 1.1] per utterance in
training: ``LogMel.forward(waveform, warps)`` warps each utterance by its own factor (:func:`draw_warps`; the
recognisers' ``model.vtlp``), and :class:`torchssm.audio.asr.FrequencyWarped` reads test audio at fixed warps
(test-time warping).
"""

from __future__ import annotations

import math

import torch
from torch import nn


def hz_to_mel(f):
    """HTK mel of ``f`` Hz (a float or a tensor)."""
    if isinstance(f, (int, float)):
        return 2595.0 * math.log10(1.0 + f / 700.0)
    return 2595.0 * torch.log10(1.0 + f / 700.0)


def mel_to_hz(m):
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)


# VTLP's upper boundary frequency f_hi (Jaitly & Hinton 2013, Sec. 2: 4800 Hz; section number UNVERIFIED) and the
# range of its warp factors (the same paper: alpha uniform on [0.9, 1.1] in training)
VTLP_F_HI = 4800.0
VTLP_RANGE = (0.9, 1.1)


def check_warp(alpha) -> float:
    """``alpha`` as a float, or ValueError unless it is a number in ``VTLP_RANGE`` widened to [0.5, 2]."""
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.5 <= alpha <= 2.0:
        low, high = VTLP_RANGE
        raise ValueError(
            f"a VTLP warp factor must be a number in [0.5, 2] (VTLP draws [{low:g}, {high:g}]), got {alpha!r}"
        )
    return float(alpha)


def vtlp_warp(freqs: torch.Tensor, alpha: float, sample_rate: int, f_hi: float = VTLP_F_HI) -> torch.Tensor:
    """Frequencies ``freqs`` (Hz, any shape) under VTLP's piecewise-linear warp by ``alpha`` (module docstring):
    alpha f up to the boundary f_hi min(alpha, 1) / alpha, then the line through there and (S/2, S/2); 0 and S/2 are
    fixed, and alpha 1 is the identity."""
    alpha = check_warp(alpha)
    half = sample_rate / 2.0
    if not 0.0 < f_hi < half:
        raise ValueError(f"VTLP's f_hi must lie in (0, sample_rate / 2 = {half:g}), got {f_hi!r}")
    scaled = f_hi * min(alpha, 1.0)  # where the boundary lands
    boundary = scaled / alpha
    upper = half - (half - scaled) / (half - boundary) * (half - freqs)
    return torch.where(freqs <= boundary, alpha * freqs, upper)


def check_warp_range(bounds, name: str = "vtlp") -> tuple[float, ...]:
    """``bounds`` as () (no warping) or (low, high) with 0.5 <= low <= high <= 2 (:func:`check_warp`), or ValueError."""
    if not isinstance(bounds, (list, tuple)) or len(bounds) not in (0, 2):
        raise ValueError(f"{name} must be [] (off) or [low, high], e.g. {list(VTLP_RANGE)}, got {bounds!r}")
    values = tuple(check_warp(a) for a in bounds)
    if values and values[0] > values[1]:
        raise ValueError(f"{name} must be [low, high] with low <= high, got {list(bounds)}")
    return values


def draw_warps(n: int, bounds: tuple[float, float], generator: torch.Generator | None = None) -> torch.Tensor:
    """(n,) float64 warp factors uniform on [low, high] = ``bounds``, one per utterance (VTLP in training)."""
    low, high = bounds
    return low + (high - low) * torch.rand(n, dtype=torch.float64, generator=generator)


def spectrum_warp(n_fft: int, sample_rate: int, alpha: float) -> torch.Tensor:
    """(k, k) float64 matrix W, k = n_fft // 2 + 1, with (W P)(f_k) = P(vtlp_warp(f_k)) for a power spectrum P on the
    DFT bins, read between bins by linear interpolation (module docstring); alpha 1 gives the identity."""
    k = n_fft // 2 + 1
    hz_per_bin = sample_rate / n_fft
    source = vtlp_warp(torch.arange(k, dtype=torch.float64) * hz_per_bin, alpha, sample_rate) / hz_per_bin  # (k,)
    lower = torch.clamp(torch.floor(source), max=k - 2).long()  # the bin at or below, the last pair at the top
    frac = source - lower  # (k,) in [0, 1]
    rows = torch.arange(k)
    warp = torch.zeros(k, k, dtype=torch.float64)
    warp[rows, lower] = 1.0 - frac
    warp[rows, lower + 1] += frac
    return warp


def mel_filterbank(
    n_mels: int,
    n_fft: int,
    sample_rate: int,
    f_min: float = 0.0,
    f_max: float | None = None,
    dtype=torch.float32,
    warp: float = 1.0,
) -> torch.Tensor:
    """(n_mels, n_fft // 2 + 1) triangular filters on the DFT bins, unit peak, HTK mel scale; ``warp`` != 1: the
    filters reading the VTLP-warped spectrum (filters @ :func:`spectrum_warp`)."""
    f_max = sample_rate / 2.0 if f_max is None else float(f_max)
    if not 0.0 <= f_min < f_max <= sample_rate / 2.0:
        raise ValueError(f"need 0 <= f_min < f_max <= sample_rate / 2, got {f_min}, {f_max}, {sample_rate}")
    edges = mel_to_hz(torch.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2, dtype=torch.float64))
    bins = torch.arange(n_fft // 2 + 1, dtype=torch.float64) * sample_rate / n_fft  # (k,) Hz
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]  # (n_mels, 1)
    rising = (bins - lower) / (centre - lower)
    falling = (upper - bins) / (upper - centre)
    filters = torch.clamp(torch.minimum(rising, falling), min=0.0)  # (n_mels, k)
    if check_warp(warp) != 1.0:
        filters = filters @ spectrum_warp(n_fft, sample_rate, warp)
    return filters.to(dtype)


class LogMel(nn.Module):
    """Waveform (b, n) or (b, n, 1) -> log-mel frames (b, frames, n_mels); see the module docstring (``warp``: VTLP)."""

    window: torch.Tensor  # (n_fft,) Hann window, float64 buffer
    filters: torch.Tensor  # (n_mels, n_fft / 2 + 1) mel filterbank, float64 buffer

    def __init__(
        self,
        sample_rate: int = 16000,
        n_fft: int = 400,
        hop: int = 160,
        n_mels: int = 80,
        f_min: float = 0.0,
        f_max: float | None = None,
        floor: float = 1e-10,
        warp: float = 1.0,
    ):
        super().__init__()
        for name, value in (("sample_rate", sample_rate), ("n_fft", n_fft), ("hop", hop), ("n_mels", n_mels)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self.sample_rate, self.n_fft, self.hop, self.n_mels, self.floor = sample_rate, n_fft, hop, n_mels, floor
        self.f_min, self.f_max, self.warp = f_min, f_max, check_warp(warp)
        # float64 constants, cast to the input's dtype in forward (a float64 input gets float64 filters)
        self.register_buffer("window", torch.hann_window(n_fft, periodic=True, dtype=torch.float64), persistent=False)
        self.register_buffer(
            "filters", mel_filterbank(n_mels, n_fft, sample_rate, f_min, f_max, torch.float64, warp), persistent=False
        )

    def warped(self, alpha: float) -> LogMel:
        """The same front end reading the spectrum warped by ``alpha`` (:func:`spectrum_warp`; built from the unwarped
        filters, whatever this one's warp)."""
        return LogMel(self.sample_rate, self.n_fft, self.hop, self.n_mels, self.f_min, self.f_max, self.floor, alpha)

    def num_frames(self, n_samples: int) -> int:
        return 0 if n_samples < self.n_fft else 1 + (n_samples - self.n_fft) // self.hop

    def forward(self, waveform: torch.Tensor, warps: torch.Tensor | None = None) -> torch.Tensor:
        """Log-mel frames (b, frames, n_mels); ``warps`` (b,): each utterance's spectrum warped by its own factor
        (:func:`spectrum_warp`, built from the unwarped filters, whatever this front end's ``warp``)."""
        if waveform.dim() == 3 and waveform.shape[-1] == 1:
            waveform = waveform[..., 0]
        if waveform.dim() != 2 or not waveform.is_floating_point():
            raise ValueError(
                f"expected a float waveform (batch, samples) or (batch, samples, 1), "
                f"got {tuple(waveform.shape)} {waveform.dtype}"
            )
        if waveform.shape[1] < self.n_fft:
            raise ValueError(f"waveform of {waveform.shape[1]} samples is shorter than one window ({self.n_fft})")
        frames = waveform.unfold(1, self.n_fft, self.hop)  # (b, t, n_fft)
        spectrum = torch.fft.rfft(frames * self.window.to(waveform.dtype), dim=-1)  # (b, t, n_fft/2+1)
        power = spectrum.real**2 + spectrum.imag**2
        if warps is None:
            mel = power @ self.filters.to(power.dtype).T  # (b, t, n_mels)
        else:
            mel = torch.einsum("btk,bmk->btm", power, self.utterance_filters(warps, len(power)).to(power))
        return torch.log(torch.clamp(mel, min=self.floor))

    def utterance_filters(self, warps: torch.Tensor, batch: int) -> torch.Tensor:
        """(batch, n_mels, k) float64 filters, utterance i's reading the spectrum warped by ``warps[i]``: the unwarped
        filters (built once) @ :func:`spectrum_warp` of each factor, as :func:`mel_filterbank` warps them."""
        if warps.shape != (batch,):
            raise ValueError(f"warps must hold one factor per utterance, shape ({batch},), got {tuple(warps.shape)}")
        unwarped = mel_filterbank(self.n_mels, self.n_fft, self.sample_rate, self.f_min, self.f_max, torch.float64)
        return torch.stack([unwarped @ spectrum_warp(self.n_fft, self.sample_rate, a) for a in warps.tolist()])

    def stream(self, chunk: torch.Tensor, buffer: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Frames completed by ``chunk`` (b, c) given the unconsumed ``buffer`` (b, r) from the last call.

        Returns (frames (b, t, n_mels) with t possibly 0, new buffer). Feeding a waveform in chunks of
        any size yields, concatenated, exactly ``forward(waveform)``.
        """
        samples = chunk if buffer is None else torch.cat([buffer, chunk], dim=1)  # (b, r + c)
        t = self.num_frames(samples.shape[1])
        if t == 0:
            return samples.new_zeros(samples.shape[0], 0, self.n_mels), samples
        frames = self.forward(samples[:, : (t - 1) * self.hop + self.n_fft])
        return frames, samples[:, t * self.hop :]


# SpecAugment (Park et al. 2019, "SpecAugment: A Simple Data Augmentation Method for Automatic Speech
# Recognition", Interspeech, Sec. 2 and Table 1): (F, m_F, T, p, m_T) = frequency-mask width bound,
# number of frequency masks, time-mask width bound, time-mask bound as a fraction of the utterance,
# number of time masks. The paper's time warping (W) is not implemented (its Sec. 2 and 5 find it the
# least important of the three, at the highest cost).
SPEC_AUGMENT_POLICIES: dict[str, tuple[int, int, int, float, int]] = {
    "LB": (27, 1, 100, 1.0, 1),
    "LD": (27, 2, 100, 1.0, 2),
    "SM": (15, 2, 70, 0.2, 2),
    "SS": (27, 2, 40, 0.2, 2),
}
# The policies' F is for the paper's 80-dimensional log-mel filterbanks (Park et al. 2019, Sec. 4: LibriSpeech
# and Switchboard both with 80 filterbank channels; section number UNVERIFIED). With c channels this library
# scales it to round(F * c / 80) (half up), the same fraction of the band; at 80 channels F is unchanged.
SPEC_AUGMENT_CHANNELS = 80


def spec_augment_freq_bound(max_f: int, channels: int) -> int:
    """A policy's frequency-mask bound ``max_f`` (for 80 channels) scaled to ``channels``: round(max_f * c / 80)."""
    return (2 * max_f * channels + SPEC_AUGMENT_CHANNELS) // (2 * SPEC_AUGMENT_CHANNELS)


def spec_augment(
    features: torch.Tensor, lengths: torch.Tensor | None, policy: str, generator: torch.Generator | None = None
) -> torch.Tensor:
    """``features`` (b, t, channels) with SpecAugment's masks set to 0 (Park et al. 2019, Sec. 2).

    Per utterance: ``m_F`` frequency masks [f0, f0 + f) with f ~ U{0..F'}, f0 ~ U{0..channels - f} (F' = F
    scaled from the paper's 80 channels to ``channels``, :func:`spec_augment_freq_bound`), and
    ``m_T`` time masks [t0, t0 + w) with w ~ U{0..min(T, floor(p * tau))}, t0 ~ U{0..tau - w}, where tau
    is the utterance's number of frames (``lengths``; None: all t). The features are expected to be
    normalised to zero mean (masking to 0 = masking to the mean, as the paper). Returns a new tensor.
    """
    if policy not in SPEC_AUGMENT_POLICIES:
        raise ValueError(f"SpecAugment policy must be one of {sorted(SPEC_AUGMENT_POLICIES)}, got {policy!r}")
    if features.dim() != 3:
        raise ValueError(f"expected features (batch, frames, channels), got shape {tuple(features.shape)}")
    max_f, n_freq, max_t, ratio, n_time = SPEC_AUGMENT_POLICIES[policy]
    b, t, channels = features.shape
    taus = [t] * b if lengths is None else torch.clamp(lengths, 0, t).tolist()
    keep = torch.ones(b, t, channels, dtype=torch.bool, device=features.device)

    def draw(high: int) -> int:  # uniform on {0, ..., high}
        return int(torch.randint(0, max(high, 0) + 1, (1,), generator=generator))

    for i, tau in enumerate(taus):
        for _ in range(n_freq):
            f = draw(min(spec_augment_freq_bound(max_f, channels), channels))
            f0 = draw(channels - f)
            keep[i, :, f0 : f0 + f] = False
        for _ in range(n_time):
            w = draw(min(max_t, int(ratio * tau)))
            t0 = draw(tau - w)
            keep[i, t0 : t0 + w, :] = False
    return features * keep
