"""Speech recognisers: a causal SSM encoder over log-mel frames with a CTC head, and Samba-ASR.

Encoder (shared; causal, so it can stream, see :mod:`torchssm.audio.streaming`)::

    audio (b, n) 16 kHz -> LogMel (b, t, n_mels)  25 ms / 10 ms frames
      [training only, ``vtlp: [low, high]``: each utterance's spectrum warped by alpha ~ U[low, high], VTLP]
      -> LayerNorm over mel channels (per frame)
      -> [training only, ``spec_augment`` policy: SpecAugment's frequency / time masks, Park et al. 2019]
      -> 2 x causal Conv1d(kernel 3, stride 2) + GELU          (b, ceil(ceil(t/2)/2), d_model)  40 ms frames
                                                              (``subsampling: 2``: the second conv has
                                                              stride 1, (b, ceil(t/2), d_model), 20 ms frames)
      -> n_layers x [x + SSM(LayerNorm(x))]                   (a registered causal layer; Mamba by default)
                    [x + SSM(LN(x)) + R(SSM'(R(LN(x))))]       ``bidirectional: true`` (offline only)
      -> LayerNorm                                            (b, t', d_model)

Frame rate (``subsampling``, default 4 = 40 ms). CTC needs at least one frame per target character plus one
blank between two equal neighbours (Graves et al. 2006, Sec. 3.1: the paths of a labelling, of length
|l| + repeats at least). eSpeak speaks the docstring sentences at about 18 characters per second
(RESULTS.md, Speech, session 10): at 40 ms (25 frames per second) the median training utterance needs 0.73
of its frames, 10% need over 0.9 and 1% cannot be aligned at all (7% when played at speed 1.1), so the
model must emit a character on almost every frame; at 20 ms the largest need is 0.59. Character CTC
systems subsample less than word-piece ones: Deep Speech 2 (Amodei et al. 2016, the "Striding" section,
section number UNVERIFIED) found a time stride of 4 hurt English with character outputs and went to bigram
outputs to stride further; ``subsampling: 2`` (20 ms) is the option for characters.

Bidirectional encoder (``bidirectional: true``, off by default): each block adds a second instance SSM' of
the same causal layer run over every utterance reversed *within its own length* (R; padding stays behind
the valid frames, so it never reaches them in either direction), the two directions summed as in the
bidirectional RNNs of offline CTC recognisers (Graves, Mohamed & Hinton 2013; Deep Speech 2 sums its
forward and backward recurrences). Such an encoder sees the future, so it cannot stream
(:class:`torchssm.audio.streaming.StreamingRecognizer` refuses it).

Samba-ASR (Shakhadri et al. 2025, arXiv:2501.02832): "a Mamba encoder over log-mel frames (with
convolutional subsampling) and a Mamba decoder over text tokens joined by the Mamba-cross-connection,
trained with cross-entropy". What that paper states and this module follows: log-mel input (80 channels,
25 ms / 10 ms), convolutional layers then Mamba blocks in the encoder, Mamba blocks in the decoder over
token embeddings, a Mamba-cross-connection that lets the decoder read the encoded audio, cross-entropy
training, autoregressive decoding. UNVERIFIED (this is our construction): the paper describes the
cross-connection in words only (Fig. 1's caption: the decoder with it generates transcriptions "by
integrating audio context with text representations"); no equation, state size or scan order of it could
be found in the copies of the paper we could read (session 9). Each decoder block is

    x = x + Mamba_self(LN(x))                               causal over the text            (b, u, d)
    x = x + Mamba_cross([M ; LN(x)])[:, t':]                the cross-connection: one selective scan
                                                            over the encoded audio M (b, t', d), then
                                                            the text, so every text position reads the
                                                            audio through the scan's state
    x = x + MLP(LN(x))

so the decoder is attention-free like the paper's: the audio enters through the cross layer's state,
computed once per utterance (the prefix state) and then stepped token by token when decoding. The
decoder never reads single frames: the whole utterance reaches the text through that one state (d_inner x
d_state numbers per block), as the source reaches the decoder of an encoder-decoder without attention
(Sutskever et al. 2014) or of a Mamba decoder-only recogniser with a speech prefix (Masuyama et al. 2024,
MADEON). ``cross_order="reversed"`` (off by default) scans the frames last to first, so the first
characters are read from the most recent part of the state (Sutskever et al. 2014, Sec. 3.3).
Padded audio frames are placed *before* each utterance's frames and the scan is reset at its first
real frame (Mamba's ``reset``), so padding never leaks into the state.

Cross-attention decoder (``cross_connection: attention``, off by default; our addition, it departs from the
paper's attention-free design): each block's cross-connection is replaced by multi-head attention from the text
positions to every encoded frame, the encoder-decoder attention of Vaswani et al. 2017 (Sec. 3.2.3) and of attention
recognisers (Chan et al. 2016, "Listen, Attend and Spell"):

    x = x + MHA(LN(x), M + P, M + P)                        queries: the text (b, u, d); keys / values: the
                                                            encoded frames M (b, t', d) in time order plus the
                                                            fixed sinusoidal positions P (Sec. 3.5); padded
                                                            frames masked out; ``cross_heads`` heads (4)

so every text position can read single frames; the self-mixer over the text stays Mamba. Decoding keeps the
encoded frames as the cross "state" (O(t') work per token instead of the scan's O(1)).

Hybrid CTC / decoder (``ctc_weight`` > 0, off by default; our addition, not in the Samba-ASR paper): a CTC head
(Linear d_model -> blank + characters) on the same encoded frames, trained jointly,
``loss = ctc_weight * CTC + (1 - ctc_weight) * CE`` (the multi-task objective of Kim, Hori & Watanabe 2017,
"Joint CTC-attention based end-to-end speech recognition using multi-task learning"; Watanabe et al. 2017's hybrid
CTC/attention): CTC's monotonic alignment trains the encoder, the decoder learns the text given the audio. It decodes
by attention rescoring (:meth:`SambaASR.rescore`; WeNet's two-pass decoding, Zhang et al. 2020, arXiv:2012.05481):
the CTC prefix beam search (with the character language model fused, if any) proposes its ``beam`` best
transcripts y, each scored ``search score(y) + decoder_weight * log p_dec(y </s> | x)`` (teacher-forced through the
decoder), the best kept. WeNet weighs the CTC score instead (decoder + ctc_weight * CTC); with the weight on the
decoder, ``decoder_weight`` 0 is the CTC search itself. Greedy / beam decoding by the decoder alone (the paper's)
stays :meth:`SambaASR.transcribe`.

CTC baseline (Graves et al. 2006) on the same encoder: Linear d_model -> blank + characters.
Several trained CTC recognisers decode as one through :class:`CTCEnsemble` (their frame posteriors combined); hybrid
Samba-ASR models join it by their CTC heads, and their decoders then rescore the ensemble's n-best lists
(:meth:`CTCEnsemble.scored_nbest`: the mean of the decoders' log p_dec(y </s> | x) in place of one decoder's).
Test-time warping: a CTC recogniser reading a VTLP-warped spectrum (:class:`FrequencyWarped`) joins an
ensemble as one more member (:func:`warped_members`), so one recogniser at several warps decodes as an ensemble.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, TypeGuard, cast

import torch
import torch.nn.functional as F
from torch import nn

from torchssm.audio.features import SPEC_AUGMENT_POLICIES, LogMel, check_warp_range, draw_warps, spec_augment
from torchssm.audio.text import BLANK, CharVocabulary
from torchssm.checks import unit_interval
from torchssm.layers import build_layer
from torchssm.layers.base import SSMLayer
from torchssm.models.config import ConfigDict

MEL_WINDOW, MEL_HOP = 400, 160  # log-mel frames of 25 ms every 10 ms at 16 kHz (module docstring)


@dataclass
class ASRConfig(ConfigDict):
    """Architecture of a recogniser (saved with its checkpoint)."""

    config_name = "model"  # class attribute (no annotation): not a dataclass field

    kind: str = "ctc"  # "ctc" | "samba"
    n_mels: int = 80  # Samba-ASR's front end (Sec. 3), as Whisper's
    d_model: int = 128
    n_layers: int = 4  # encoder blocks
    n_decoder_layers: int = 2  # Samba-ASR decoder blocks
    layer: str = "mamba"
    layer_kwargs: dict[str, Any] = field(default_factory=lambda: {"d_state": 16, "expand": 2})
    dropout: float = 0.0
    # SpecAugment policy of Park et al. 2019, Table 1 ("LB", "LD", "SM", "SS"; no time warping), applied in
    # training after the input LayerNorm; "none" (default): off
    spec_augment: str = "none"
    # vocal tract length perturbation in training: each utterance's power spectrum warped by its own alpha, uniform
    # on [low, high] (Jaitly & Hinton 2013 draw [0.9, 1.1] per utterance; audio.features.spectrum_warp, f_hi 4800 Hz),
    # before the log; () (default): off. Evaluation and decoding never warp (test-time warping: FrequencyWarped)
    vtlp: tuple = ()
    # order in which the Samba-ASR cross-connection scans the encoded audio before the text: "forward"
    # (default) or "reversed" (last frame first, so the state the decoder starts from is freshest for the
    # start of the utterance; Sutskever et al. 2014, Sec. 3.3, reversed the source for their one-state LSTM
    # encoder-decoder)
    cross_order: str = "forward"
    # encoder frame period in 10 ms frames: 4 (default; two stride-2 convolutions, 40 ms frames) or 2 (the
    # second convolution has stride 1: 20 ms frames, the frame rate character CTC needs here; module docstring)
    subsampling: int = 4
    # add a backward pass of every encoder block (offline only; module docstring); default False: causal
    bidirectional: bool = False
    # Samba-ASR only: how the decoder reads the encoded audio: "mamba" (default: the Mamba-cross-connection, one scan
    # state) or "attention" (multi-head cross-attention to every frame; our addition, module docstring)
    cross_connection: str = "mamba"
    cross_heads: int = 4  # heads of cross_connection "attention" (this library's choice, as layers.attention's)
    # Samba-ASR only: weight of a CTC head's loss trained beside the decoder's cross-entropy, in [0, 1) (module
    # docstring, "Hybrid CTC / decoder"); 0 (default): no CTC head, the paper's model
    ctc_weight: float = 0.0

    def __post_init__(self):
        if self.kind not in ("ctc", "samba"):
            raise ValueError(f"ASR kind must be 'ctc' or 'samba', got {self.kind!r}")
        if self.cross_order not in ("forward", "reversed"):
            raise ValueError(f"cross_order must be 'forward' or 'reversed', got {self.cross_order!r}")
        if self.spec_augment != "none" and self.spec_augment not in SPEC_AUGMENT_POLICIES:
            raise ValueError(
                f"spec_augment must be 'none' or one of {sorted(SPEC_AUGMENT_POLICIES)}, got {self.spec_augment!r}"
            )
        self.vtlp = check_warp_range(self.vtlp, "vtlp")
        if self.cross_connection not in ("mamba", "attention"):
            raise ValueError(f"cross_connection must be 'mamba' or 'attention', got {self.cross_connection!r}")
        if self.cross_connection == "attention" and self.cross_order != "forward":
            raise ValueError(
                "cross_order orders the Mamba cross-connection's scan; cross-attention reads frames by position: "
                f"leave cross_order 'forward' with cross_connection 'attention', got {self.cross_order!r}"
            )
        if self.subsampling not in (2, 4) or isinstance(self.subsampling, bool):
            raise ValueError(f"subsampling must be 2 (20 ms frames) or 4 (40 ms frames), got {self.subsampling!r}")
        if not isinstance(self.bidirectional, bool):
            raise ValueError(f"bidirectional must be true or false, got {self.bidirectional!r}")
        self.ctc_weight = unit_interval("ctc_weight", self.ctc_weight, "a loss weight", include_one=False)
        if self.ctc_weight and self.kind != "samba":
            raise ValueError(
                f"ctc_weight weighs a CTC head beside Samba-ASR's decoder: kind must be 'samba', got {self.kind!r}"
            )
        for name in ("n_mels", "d_model", "n_layers"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive int, got {getattr(self, name)!r}")
        if self.cross_connection != "mamba" and self.kind != "samba":
            raise ValueError(
                f"cross_connection is how Samba-ASR's decoder reads the audio: kind must be 'samba', got {self.kind!r}"
            )
        heads = self.cross_heads
        if self.cross_connection == "attention" and (not isinstance(heads, int) or heads < 1 or self.d_model % heads):
            raise ValueError(
                f"cross_heads must be a positive divisor of d_model={self.d_model}, got {self.cross_heads!r}"
            )


class CausalConv1d(nn.Module):
    """Conv1d over time with ``kernel - 1`` zeros of left padding: output j sees inputs <= j * stride."""

    def __init__(self, d_in: int, d_out: int, kernel: int = 3, stride: int = 2):
        super().__init__()
        self.kernel, self.stride = kernel, stride
        self.conv = nn.Conv1d(d_in, d_out, kernel, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (b, t, c) -> (b, ceil(t / stride), d_out)
        return self.conv(F.pad(x.transpose(1, 2), (self.kernel - 1, 0))).transpose(1, 2)

    def stream(self, x: torch.Tensor, buffer: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Outputs completed by ``x`` (b, c_in frames); ``buffer``: the unconsumed inputs (None at the start)."""
        if buffer is None:
            buffer = x.new_zeros(x.shape[0], self.kernel - 1, x.shape[2])  # the left padding
        seq = torch.cat([buffer, x], 1)
        n = max(0, (seq.shape[1] - self.kernel) // self.stride + 1)
        if n == 0:
            return x.new_zeros(x.shape[0], 0, self.conv.out_channels), seq
        out = self.conv(seq[:, : (n - 1) * self.stride + self.kernel].transpose(1, 2)).transpose(1, 2)
        return out, seq[:, n * self.stride :]


class SpeechEncoder(nn.Module):
    """audio (b, n) -> encoded frames (b, t', d_model), causal (see the module docstring)."""

    def __init__(self, cfg: ASRConfig):
        super().__init__()
        self.front = LogMel(16000, n_fft=MEL_WINDOW, hop=MEL_HOP, n_mels=cfg.n_mels)
        self.in_norm = nn.LayerNorm(cfg.n_mels)
        self.sub1 = CausalConv1d(cfg.n_mels, cfg.d_model)
        self.sub2 = CausalConv1d(cfg.d_model, cfg.d_model, stride=cfg.subsampling // 2)
        self.norms = nn.ModuleList(nn.LayerNorm(cfg.d_model) for _ in range(cfg.n_layers))
        self.layers = nn.ModuleList(
            build_layer(cfg.layer, cfg.d_model, **cfg.layer_kwargs) for _ in range(cfg.n_layers)
        )
        # the backward direction of a bidirectional encoder: the same causal layer over reversed utterances
        self.backward_layers = nn.ModuleList(
            build_layer(cfg.layer, cfg.d_model, **cfg.layer_kwargs)
            for _ in range(cfg.n_layers if cfg.bidirectional else 0)
        )
        for layer in [*self.layers, *self.backward_layers]:
            if not getattr(layer, "causal", False):
                raise ValueError(
                    f"the speech encoder's layers must be causal (streaming; model.bidirectional=true adds the "
                    f"backward pass itself); layer {cfg.layer!r} is not"
                )
        self.causal = not cfg.bidirectional
        self.out_norm = nn.LayerNorm(cfg.d_model)
        self.dropout = nn.Dropout(cfg.dropout)
        self.spec_augment, self.vtlp = cfg.spec_augment, cfg.vtlp
        self.subsampling = cfg.subsampling

    def log_mel(self, audio: torch.Tensor) -> torch.Tensor:
        """audio (b, n) -> log-mel frames (b, t, n_mels); in training with ``vtlp`` bounds, each utterance's
        spectrum is warped by a factor drawn uniformly between them (global RNG, as SpecAugment's masks)."""
        warps = draw_warps(len(audio), self.vtlp) if self.training and self.vtlp else None
        return self.front(audio, warps)

    def frame_lengths(self, n_samples: torch.Tensor) -> torch.Tensor:
        """Encoded frames of utterances of ``n_samples`` samples (:func:`encoder_frames`)."""
        return encoder_frames(n_samples, self.subsampling)

    def subsample(self, mel: torch.Tensor, n_samples: torch.Tensor | None = None) -> torch.Tensor:
        """(b, t, n_mels) -> (b, t', d); in training with a SpecAugment policy, masks are drawn within each
        utterance's frames (``n_samples``: its samples; None: all frames)."""
        x = self.in_norm(mel)
        if self.training and self.spec_augment != "none":
            frames = None if n_samples is None else log_mel_frames(n_samples, self.front.n_fft, self.front.hop)
            x = spec_augment(x, frames, self.spec_augment)
        return F.gelu(self.sub2(F.gelu(self.sub1(x))))

    def blocks(self, x: torch.Tensor, states: list | None = None, frames: torch.Tensor | None = None):
        """(b, t', d) through the SSM blocks; with ``states`` (list per layer, None entries allowed) also
        returns the new states (causal encoders only). ``frames`` (b,): each utterance's valid frames, which
        a bidirectional encoder reverses (None: all t')."""
        if states is not None and not self.causal:
            raise ValueError("a bidirectional encoder (model.bidirectional=true) has no state: it cannot stream")
        reverse = None
        if not self.causal:
            reverse = _reversal_index(x.shape[1], frames, x.device)[..., None].expand(-1, -1, x.shape[2])
        new_states = []
        for i, (norm, layer) in enumerate(zip(self.norms, self.layers)):
            if states is None:
                h = norm(x)
                y = layer(h)
                if reverse is not None:
                    back = self.backward_layers[i](torch.gather(h, 1, reverse))
                    y = y + torch.gather(back, 1, reverse)  # the reversal is its own inverse
                x = x + self.dropout(y)
            else:
                y, s = layer(norm(x), states[i], return_state=True)
                x = x + y
                new_states.append(s)
        x = self.out_norm(x)
        return x if states is None else (x, new_states)

    def forward(self, audio: torch.Tensor, audio_lengths: torch.Tensor | None = None) -> torch.Tensor:
        return self.encode_mel(self.log_mel(audio), audio_lengths)

    def encode_mel(self, mel: torch.Tensor, audio_lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Log-mel frames (b, t, n_mels) of utterances of ``audio_lengths`` samples -> encoded frames (b, t', d)."""
        x = self.subsample(mel, audio_lengths)
        frames = None
        if audio_lengths is not None and not self.causal:
            frames = torch.clamp(self.frame_lengths(audio_lengths), min=0, max=x.shape[1])
        return self.blocks(x, frames=frames)


def log_mel_frames(n_samples, window: int = MEL_WINDOW, hop: int = MEL_HOP) -> torch.Tensor:
    """Log-mel frames of utterances of ``n_samples`` samples: floor((n - window) / hop) + 1, at least 0 (the
    frames :class:`torchssm.audio.features.LogMel` gives; used by :func:`encoder_frames` and by
    :meth:`SpeechEncoder.subsample` for SpecAugment's per-utterance time masks)."""
    return torch.clamp(torch.div(torch.as_tensor(n_samples) - window, hop, rounding_mode="floor") + 1, min=0)


def encoder_frames(n_samples: torch.Tensor, subsampling: int = 4) -> torch.Tensor:
    """Encoded frames of utterances of ``n_samples`` 16 kHz samples (:meth:`SpeechEncoder.frame_lengths`, also
    without a model): 25 ms / 10 ms log-mel frames, then ceil(t / 2) per stride-2 convolution."""
    if subsampling not in (2, 4):
        raise ValueError(f"subsampling must be 2 (20 ms frames) or 4 (40 ms frames), got {subsampling!r}")
    frames = log_mel_frames(n_samples)
    for _ in range(subsampling // 2):  # each causal stride-2 convolution: ceil(t / 2)
        frames = torch.div(frames + 1, 2, rounding_mode="floor")
    return frames


def _reversal_index(t: int, frames: torch.Tensor | None, device) -> torch.Tensor:
    """(b, t) time index that reverses each row's first ``frames`` positions and keeps the rest (padding)
    in place; ``frames`` None: the whole row, (1, t)."""
    j = torch.arange(t, device=device)[None, :]
    if frames is None:
        return t - 1 - j
    n = frames.to(device)[:, None]
    return torch.where(j < n, n - 1 - j, j)


class CTCTranscription(nn.Module):
    """A module whose ``forward(audio, audio_lengths)`` gives CTC log-probabilities (b, t', n_ctc), with its
    ``frame_lengths`` and ``vocab``, and their shared ``transcribe``: :class:`CTCRecognizer`, :class:`CTCEnsemble`."""

    vocab: CharVocabulary

    def frame_lengths(self, audio_lengths: torch.Tensor) -> torch.Tensor:
        """(b,) the number of valid output frames of each utterance of ``audio_lengths`` samples."""
        raise NotImplementedError

    @torch.no_grad()
    def transcribe(
        self,
        audio: torch.Tensor,
        audio_lengths: torch.Tensor,
        beam: int = 1,
        lm=None,
        alpha: float = 0.0,
        beta: float = 0.0,
    ) -> list[str]:
        """Greedy (``beam`` 1, no ``lm``) or prefix-beam-search transcripts (:func:`decode_ctc`)."""
        log_probs = self(audio, audio_lengths)  # the lengths matter to a bidirectional encoder only
        frames = self.frame_lengths(audio_lengths)
        return decode_ctc(log_probs, frames, self.vocab, beam, lm, alpha, beta)


class CTCRecognizer(CTCTranscription):
    """Encoder + Linear to blank and characters; ``forward`` returns log-probabilities (b, t', n_ctc)."""

    def __init__(self, cfg: ASRConfig, vocab: CharVocabulary | None = None):
        super().__init__()
        self.cfg, self.vocab = cfg, vocab or CharVocabulary()
        self.encoder = SpeechEncoder(cfg)
        self.head = nn.Linear(cfg.d_model, self.vocab.n_ctc)

    def forward(self, audio: torch.Tensor, audio_lengths: torch.Tensor | None = None) -> torch.Tensor:
        return self.mel_log_probs(self.encoder.log_mel(audio), audio_lengths)

    def mel_log_probs(self, mel: torch.Tensor, audio_lengths: torch.Tensor | None = None) -> torch.Tensor:
        """CTC log-probabilities (b, t', n_ctc) of log-mel frames (b, t, n_mels), the front end's output."""
        return F.log_softmax(self.head(self.encoder.encode_mel(mel, audio_lengths)), dim=-1)

    def loss(self, audio, audio_lengths, targets, target_lengths) -> torch.Tensor:
        """Mean CTC loss per target character (:func:`ctc_loss`)."""
        log_probs = self(audio, audio_lengths)  # (b, t', v)
        return ctc_loss(log_probs, self.frame_lengths(audio_lengths), targets, target_lengths)

    def frame_lengths(self, audio_lengths: torch.Tensor) -> torch.Tensor:
        return self.encoder.frame_lengths(audio_lengths)


class FrequencyWarped(CTCTranscription):
    """A :class:`CTCRecognizer` that reads audio through its front end with the spectrum warped by ``warp``
    (VTLP, :mod:`torchssm.audio.features`, ``LogMel.warped``): test-time warping, as if the speaker's vocal tract
    were longer or shorter. The recogniser's weights are shared, not copied. Several warps combine as a
    :class:`CTCEnsemble` (:func:`warped_members`)."""

    def __init__(self, recognizer: CTCRecognizer, warp: float):
        super().__init__()
        if not isinstance(recognizer, CTCRecognizer):
            raise ValueError(
                f"test-time warping reads a CTCRecognizer's log-mel front end, got {type(recognizer).__name__}"
            )
        self.recognizer, self.vocab, self.cfg = recognizer, recognizer.vocab, recognizer.cfg
        self.front = recognizer.encoder.front.warped(warp)

    @property
    def warp(self) -> float:
        """The VTLP factor its front end reads the spectrum at."""
        return self.front.warp

    def forward(self, audio: torch.Tensor, audio_lengths: torch.Tensor | None = None) -> torch.Tensor:
        return self.recognizer.mel_log_probs(self.front(audio), audio_lengths)

    def frame_lengths(self, audio_lengths: torch.Tensor) -> torch.Tensor:
        return self.recognizer.frame_lengths(audio_lengths)


def check_warps(warps) -> tuple[float, ...]:
    """``warps`` as a tuple of floats: one or more distinct VTLP warp factors (:func:`~torchssm.audio.features.
    check_warp`), or ValueError."""
    from torchssm.audio.features import check_warp

    out = tuple(check_warp(a) for a in warps)
    if not out or len(set(out)) != len(out):
        raise ValueError(f"warps must be one or more distinct warp factors, got {list(warps)}")
    return out


def warped_members(members, warps=(1.0,)) -> list:
    """Each of ``members`` read at each of ``warps``, member by member (warp 1: the member itself; any other:
    :class:`FrequencyWarped`, so a CTC recogniser only): the members of a test-time-warped :class:`CTCEnsemble`."""
    warps = check_warps(warps)
    return [m if a == 1.0 else FrequencyWarped(m, a) for m in members for a in warps]


def ctc_loss(log_probs: torch.Tensor, frames: torch.Tensor, targets: torch.Tensor, target_lengths) -> torch.Tensor:
    """Mean CTC loss per target character (``F.ctc_loss``, blank 0, summed then divided by the characters) of
    log-probabilities (b, t', n_ctc) whose first ``frames`` (b,) are valid; an utterance CTC cannot align
    (:func:`ctc_unalignable`) adds zero (``zero_infinity``)."""
    frames = torch.clamp(frames, max=log_probs.shape[1])
    total = F.ctc_loss(
        log_probs.transpose(0, 1), targets, frames, target_lengths, blank=BLANK, reduction="sum", zero_infinity=True
    )
    return total / target_lengths.sum()


def decode_ctc(
    log_probs: torch.Tensor,
    frames: torch.Tensor,
    vocab: CharVocabulary,
    beam: int = 1,
    lm=None,
    alpha: float = 0.0,
    beta: float = 0.0,
) -> list[str]:
    """Transcripts of a batch of emissions ``log_probs`` (b, t', n_ctc), the first ``frames`` (b,) of each
    valid: greedy (``beam`` 1, no ``lm``) or the prefix beam search; with ``lm`` (a :class:`torchssm.audio.lm.
    CharNGramLM`) the search fuses it with weight ``alpha`` and a word bonus ``beta``
    (:func:`torchssm.audio.ctc.prefix_beam_search`)."""
    from torchssm.audio.ctc import greedy_decode, prefix_beam_search

    out = []
    for lp, n in zip(log_probs, frames.tolist()):
        if beam == 1 and lm is None:
            ids = greedy_decode(lp[:n])
        else:
            ids = list(prefix_beam_search(lp[:n], beam, lm=lm, alpha=alpha, beta=beta)[0][0])
        out.append(vocab.decode(ids))
    return out


class AttentionRescoring:
    """``rescore`` for a model whose ``scored_nbest`` gives attention rescoring's n-best lists (module docstring):
    :class:`SambaASR` with a CTC head, :class:`CTCEnsemble` with hybrid members (``decoders``)."""

    vocab: CharVocabulary

    def scored_nbest(
        self, audio: torch.Tensor, audio_lengths: torch.Tensor, beam: int = 8, lm=None, alpha=0.0, beta=0.0
    ) -> list[list[tuple[list[int], float, float]]]:
        raise NotImplementedError

    @torch.no_grad()
    def rescore(
        self,
        audio: torch.Tensor,
        audio_lengths: torch.Tensor,
        beam: int = 8,
        decoder_weight: float = 1.0,
        lm=None,
        alpha: float = 0.0,
        beta: float = 0.0,
    ) -> list[str]:
        """Attention rescoring (module docstring): per utterance, the ``beam`` best transcripts of the CTC prefix beam
        search (fusing ``lm`` with ``alpha``, ``beta`` when given, :func:`torchssm.audio.ctc.prefix_beam_search`),
        the best by ``search score + decoder_weight * log p_dec(y </s> | x)``."""
        lists = self.scored_nbest(audio, audio_lengths, beam, lm, alpha, beta)
        return [self.vocab.decode(best_rescored(entries, decoder_weight)) for entries in lists]


def scored_nbest_of(
    log_probs: torch.Tensor, frames: list[int], beam: int, lm, alpha: float, beta: float, decoder_log_probs
) -> list[list[tuple[list[int], float, float]]]:
    """Per utterance i of the CTC log-probabilities ``log_probs`` (b, t', n_ctc): [(labelling, search score,
    decoder log-probability)] of the ``beam`` best of the prefix beam search over its ``frames[i]`` frames (``lm``
    fused with ``alpha`` / ``beta``), the decoder's from ``decoder_log_probs(i, labellings)`` ((k,) tensor; a neural
    LM's in :func:`torchssm.audio.neural_lm.rescore_with_lm`)."""
    from torchssm.audio.ctc import prefix_beam_search

    out = []
    for i in range(log_probs.shape[0]):
        nbest = prefix_beam_search(log_probs[i, : frames[i]], beam, lm=lm, alpha=alpha, beta=beta)
        labellings = [list(y) for y, _ in nbest]  # CTC ids: character id c is CTC id c
        scores = decoder_log_probs(i, labellings).tolist()
        out.append([(y, score, d) for y, (_, score), d in zip(labellings, nbest, scores)])
    return out


class CTCEnsemble(CTCTranscription, AttentionRescoring):
    """K trained CTC recognisers of one alphabet and one frame rate decoded as one model: ``forward`` combines
    their log-probabilities frame by frame (:func:`torchssm.audio.ctc.combine_emissions`; ``combine="prob"``:
    log (1/K) sum_k p_t^k, the mean of the posteriors; ``"logprob"``: their renormalised geometric mean), and
    ``transcribe`` decodes that (:func:`decode_ctc`). Each member runs every whole utterance, so an ensemble
    decodes offline only (no streaming). Same interface as :class:`CTCRecognizer` for decoding.

    Members are :class:`CTCRecognizer` s or the CTC heads of hybrid Samba-ASR models (:class:`SambaCTCHead`); the
    hybrids' decoders (``decoders``) then rescore the ensemble's n-best lists (:meth:`scored_nbest`, ``rescore``)."""

    def __init__(self, members, combine: str = "prob"):
        super().__init__()
        from torchssm.audio.ctc import check_combine

        members = list(members)
        if not members:
            raise ValueError("CTCEnsemble needs at least one CTC recogniser, got none")
        for m in members:
            if not isinstance(m, (CTCRecognizer, SambaCTCHead, FrequencyWarped)):
                raise ValueError(
                    f"CTCEnsemble combines CTC recognisers and hybrid Samba-ASR CTC heads (SambaCTCHead) only, got "
                    f"{type(m).__name__} (a FrequencyWarped recogniser counts as a CTC recogniser)"
                )
        alphabets = sorted({m.vocab.alphabet for m in members})
        if len(alphabets) > 1:
            raise ValueError(f"the ensemble's recognisers must share one alphabet, got {alphabets}")
        rates = sorted({m.cfg.subsampling for m in members})
        if len(rates) > 1:
            raise ValueError(f"the ensemble's recognisers must share one frame rate, got model.subsampling {rates}")
        self.members = nn.ModuleList(members)
        self.vocab, self.combine = members[0].vocab, check_combine(combine)

    def frame_lengths(self, audio_lengths: torch.Tensor) -> torch.Tensor:
        return cast(CTCTranscription, self.members[0]).frame_lengths(audio_lengths)

    def forward(self, audio: torch.Tensor, audio_lengths: torch.Tensor | None = None) -> torch.Tensor:
        from torchssm.audio.ctc import combine_emissions

        return combine_emissions([m(audio, audio_lengths) for m in self.members], self.combine)  # (b, t', n_ctc)

    @property
    def decoders(self) -> list[SambaASR]:
        """The hybrid Samba-ASR members (their CTC heads are members; their decoders rescore)."""
        return [m.samba for m in self.members if isinstance(m, SambaCTCHead)]

    @torch.no_grad()
    def scored_nbest(
        self,
        audio: torch.Tensor,
        audio_lengths: torch.Tensor,
        beam: int = 8,
        lm=None,
        alpha: float = 0.0,
        beta: float = 0.0,
    ) -> list[list[tuple[list[int], float, float]]]:
        """Per utterance, [(labelling, search score, decoder log-probability)] of the ``beam`` best of the prefix
        beam search over the combined emissions (``lm`` fused), the decoder's the mean of the hybrid members'
        log p_dec(y </s> | x), each decoder reading its own encoder's frames (encoded once for head and decoder)."""
        from torchssm.audio.ctc import combine_emissions

        if not self.decoders:
            raise ValueError("attention rescoring needs a hybrid Samba-ASR member (model.ctc_weight > 0): none here")
        hybrids: list[tuple[SambaASR, torch.Tensor]] = []  # (a hybrid member, its encoded frames (b, t', d))
        emissions = []
        for member in self.members:
            if isinstance(member, SambaCTCHead):
                hybrids.append((member.samba, member.samba.encoder(audio, audio_lengths)))
                emissions.append(member.samba._ctc_head_log_probs(hybrids[-1][1]))
            else:
                emissions.append(member(audio, audio_lengths))
        log_probs = combine_emissions(emissions, self.combine)  # (b, t', n_ctc)

        def decoder_log_probs(i: int, labellings: list[list[int]]) -> torch.Tensor:
            one = audio_lengths[i : i + 1]
            scores = [samba._transcript_log_probs(enc[i : i + 1], one, labellings) for samba, enc in hybrids]
            return torch.stack(scores).mean(0)  # (k,)

        frames = self.frame_lengths(audio_lengths).tolist()
        return scored_nbest_of(log_probs, frames, beam, lm, alpha, beta, decoder_log_probs)


class SambaCTCHead(CTCTranscription):
    """The CTC head of a hybrid :class:`SambaASR` (``has_ctc``) as a CTC recogniser: ``forward`` gives its
    log-probabilities (b, t', n_ctc), so CTC decoding, language-model grids and ensembles take it as they take a
    :class:`CTCRecognizer` (CTC decoding leaves its decoder unused; in a :class:`CTCEnsemble` the decoder rescores)."""

    def __init__(self, samba: SambaASR):
        super().__init__()
        if not is_hybrid(samba):
            raise ValueError("SambaCTCHead needs a Samba-ASR model with a CTC head (model.ctc_weight > 0)")
        self.samba, self.vocab, self.cfg = samba, samba.vocab, samba.cfg

    def forward(self, audio: torch.Tensor, audio_lengths: torch.Tensor | None = None) -> torch.Tensor:
        return self.samba.ctc_log_probs(audio, audio_lengths)

    def frame_lengths(self, audio_lengths: torch.Tensor) -> torch.Tensor:
        return self.samba.frame_lengths(audio_lengths)


def ctc_unalignable(frames: torch.Tensor, targets: torch.Tensor, target_lengths: torch.Tensor) -> torch.Tensor:
    """(b,) bool: the utterances whose ``frames`` are fewer than CTC's shortest path of their target
    (one frame per label plus a blank between equal neighbours, :func:`torchssm.audio.ctc.min_frames`);
    ``targets`` (b, u) padded, ``target_lengths`` (b,)."""
    u = targets.shape[1]
    same = targets[:, 1:] == targets[:, :-1]  # (b, u - 1): label j + 1 repeats label j
    inside = torch.arange(1, u, device=targets.device)[None, :] < target_lengths[:, None]
    need = target_lengths + (same & inside).sum(1)
    return frames.to(need.device) < need


def count_unalignable(model, audio_lengths: torch.Tensor, targets: torch.Tensor, target_lengths) -> int:
    """How many utterances of a batch the CTC loss of ``model`` (a :class:`CTCRecognizer` or a hybrid
    :class:`SambaASR`, :func:`is_hybrid`) cannot align (:func:`ctc_unalignable` at its frame rate): ``F.ctc_loss`` is
    infinite there and ``zero_infinity`` in :func:`ctc_loss` silently drops them."""
    return int(ctc_unalignable(model.frame_lengths(audio_lengths), targets, target_lengths).sum())


def is_hybrid(model) -> TypeGuard[SambaASR]:
    """Whether ``model`` is a hybrid Samba-ASR recogniser: a :class:`SambaASR` with a CTC head (``ctc_weight`` > 0)."""
    return isinstance(model, SambaASR) and model.has_ctc


def can_rescore(model) -> TypeGuard[AttentionRescoring]:
    """Whether ``model`` decodes by attention rescoring: a hybrid Samba-ASR model, or a :class:`CTCEnsemble` with at
    least one hybrid member."""
    return is_hybrid(model) or (isinstance(model, CTCEnsemble) and bool(model.decoders))


def _accepts_reset(layer: nn.Module) -> bool:
    return "reset" in inspect.signature(layer.forward).parameters


def _select_state(state, index: torch.Tensor):
    """Rows ``index`` of every tensor in a (nested) layer state."""
    if isinstance(state, torch.Tensor):
        return state.index_select(0, index)
    if isinstance(state, (tuple, list)):
        return type(state)(_select_state(s, index) for s in state)
    if isinstance(state, dict):
        return {k: _select_state(v, index) for k, v in state.items()}
    return state


class CrossConnectedBlock(nn.Module):
    """Decoder block: Mamba over the text, the Mamba-cross-connection, MLP (see the module docstring)::

    x = x + Mamba_self(LN(x));  x = x + read_audio(LN(x), memory);  x = x + MLP(LN(x))
    """

    def __init__(self, cfg: ASRConfig):
        super().__init__()
        d = cfg.d_model
        self.norm_self, self.norm_cross, self.norm_mlp = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.self_mixer = build_layer(cfg.layer, d, **cfg.layer_kwargs)
        self.cross = self._cross_layer(cfg)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

    def _cross_layer(self, cfg: ASRConfig) -> nn.Module:
        return build_layer(cfg.layer, cfg.d_model, **cfg.layer_kwargs)

    def prefix_state(self, memory: torch.Tensor, mask: torch.Tensor | None):
        """The cross layer's state after scanning the encoded audio ``memory`` (b, t', d) (``mask``: the reset)."""
        kwargs = {"reset": mask} if mask is not None and _accepts_reset(self.cross) else {}
        return self.cross(memory, return_state=True, **kwargs)[1]

    def read_audio(self, queries: torch.Tensor, memory: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """(b, u, d): one scan over [memory ; queries], the text positions' outputs (``mask``: the reset)."""
        t = memory.shape[1]
        joined = torch.cat([memory, queries], 1)  # (b, t' + u, d)
        kwargs = {}
        if mask is not None and _accepts_reset(self.cross):
            kwargs["reset"] = torch.cat([mask, mask.new_zeros(queries.shape[0], queries.shape[1])], 1)
        return self.cross(joined, **kwargs)[:, t:]

    def read_audio_step(self, query_t: torch.Tensor, state):
        """(y (b, d), next state) of one query (b, d) given the state of :meth:`prefix_state` or of the last step."""
        return cast(SSMLayer, self.cross).step(query_t, state)

    def forward(self, x: torch.Tensor, memory: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        x = x + self.self_mixer(self.norm_self(x))
        x = x + self.read_audio(self.norm_cross(x), memory, mask)
        return x + self.mlp(self.norm_mlp(x))

    def step(self, x_t: torch.Tensor, state: tuple):
        """One token (b, d) with state (self state, cross state)."""
        s_self, s_cross = state
        y, s_self = self.self_mixer.step(self.norm_self(x_t), s_self)
        x_t = x_t + y
        y, s_cross = self.read_audio_step(self.norm_cross(x_t), s_cross)
        x_t = x_t + y
        return x_t + self.mlp(self.norm_mlp(x_t)), (s_self, s_cross)


class CrossAttentionBlock(CrossConnectedBlock):
    """Decoder block reading every encoded frame by multi-head cross-attention (``cross_connection: attention``;
    module docstring): ``read_audio(q, M) = MHA(q, M + P, M + P)`` with padded frames masked out, P sinusoidal
    positions (:func:`sinusoidal_positions`, added in :meth:`SambaASR.memory`). Its "state" is the memory itself."""

    def _cross_layer(self, cfg: ASRConfig) -> nn.Module:
        return nn.MultiheadAttention(cfg.d_model, cfg.cross_heads, batch_first=True)

    def prefix_state(self, memory: torch.Tensor, mask: torch.Tensor | None):
        """(memory (b, t', d), padding mask (b, t')): all a step needs (nothing is scanned)."""
        return memory, mask

    def read_audio(self, queries: torch.Tensor, memory: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """(b, u, d): each query attends over the frames of ``memory`` where ``mask`` (True = padding) is False."""
        return self.cross(queries, memory, memory, key_padding_mask=mask, need_weights=False)[0]

    def read_audio_step(self, query_t: torch.Tensor, state):
        memory, mask = state
        return self.read_audio(query_t[:, None], memory, mask)[:, 0], state


def sinusoidal_positions(t: int, d: int, device=None, dtype=None) -> torch.Tensor:
    """(t, d) fixed positions (Vaswani et al. 2017, Sec. 3.5): PE(p, 2i) = sin(p / 10000^(2i/d)), PE(p, 2i+1) =
    cos(p / 10000^(2i/d))."""
    position = torch.arange(t, dtype=torch.float64)[:, None]  # (t, 1)
    inv_freq = 10000.0 ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)  # (ceil(d / 2),)
    out = torch.zeros(t, d, dtype=torch.float64)
    out[:, 0::2] = torch.sin(position * inv_freq)
    out[:, 1::2] = torch.cos(position * inv_freq[: d // 2])
    return out.to(device=device, dtype=dtype)


class SambaASR(AttentionRescoring, nn.Module):
    """Mamba encoder + cross-connected Mamba decoder over characters (``cfg.cross_connection`` "attention": reading
    the frames by cross-attention instead), cross-entropy; with ``cfg.ctc_weight`` > 0
    also a CTC head on the encoder, trained jointly and decoded by attention rescoring (module docstring)."""

    def __init__(self, cfg: ASRConfig, vocab: CharVocabulary | None = None):
        super().__init__()
        self.cfg, self.vocab = cfg, vocab or CharVocabulary()
        self.encoder = SpeechEncoder(cfg)
        self.embed = nn.Embedding(len(self.vocab), cfg.d_model)
        block = CrossAttentionBlock if cfg.cross_connection == "attention" else CrossConnectedBlock
        self.blocks = nn.ModuleList(block(cfg) for _ in range(cfg.n_decoder_layers))
        self.out_norm = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, len(self.vocab))
        self.ctc_head = nn.Linear(cfg.d_model, self.vocab.n_ctc) if cfg.ctc_weight else None

    @property
    def has_ctc(self) -> bool:
        """Whether this model has a CTC head (``cfg.ctc_weight`` > 0)."""
        return self.ctc_head is not None

    def frame_lengths(self, audio_lengths: torch.Tensor) -> torch.Tensor:
        """(b,) encoded frames of utterances of ``audio_lengths`` samples."""
        return self.encoder.frame_lengths(audio_lengths)

    def ctc_log_probs(self, audio: torch.Tensor, audio_lengths: torch.Tensor | None = None) -> torch.Tensor:
        """The CTC head's log-probabilities (b, t', n_ctc) over the encoded frames (a model with ``has_ctc``)."""
        return self._ctc_head_log_probs(self.encoder(audio, audio_lengths))

    def _ctc_head_log_probs(self, encoded: torch.Tensor) -> torch.Tensor:
        if self.ctc_head is None:
            raise ValueError("this Samba-ASR model has no CTC head: train it with model.ctc_weight > 0")
        return F.log_softmax(self.ctc_head(encoded), dim=-1)

    def memory(self, audio: torch.Tensor, audio_lengths: torch.Tensor):
        """What the decoder reads, (memory (b, t', d), mask (b, t')). Mamba cross-connection: the encoded audio
        moved to the right end of each row (padding first) and the reset mask (its first real frame); with
        ``cross_order="reversed"`` each utterance's frames are in reverse time order (last frame first).
        Cross-attention: the encoded frames in time order plus sinusoidal positions, and the padding mask."""
        return self._memory_of(self.encoder(audio, audio_lengths), audio_lengths)

    def _memory_of(self, encoded: torch.Tensor, audio_lengths: torch.Tensor):
        """:meth:`memory` of already encoded audio (b, t', d)."""
        frames = torch.clamp(self.encoder.frame_lengths(audio_lengths), min=1, max=encoded.shape[1])
        t = encoded.shape[1]
        if self.cfg.cross_connection == "attention":
            padding = torch.arange(t, device=encoded.device)[None, :] >= frames[:, None]  # (b, t')
            positions = sinusoidal_positions(t, encoded.shape[2], encoded.device, encoded.dtype)
            return encoded + positions, padding
        shift = t - frames  # (b,)
        if self.cfg.cross_order == "reversed":  # row j >= shift holds frame t - 1 - j: frames - 1, ..., 0
            memory = encoded.flip(1)
        else:  # row j >= shift holds frame j - shift: 0, ..., frames - 1
            index = (torch.arange(t, device=encoded.device)[None, :] - shift[:, None]) % t
            memory = torch.gather(encoded, 1, index[..., None].expand(-1, -1, encoded.shape[2]))
        valid = torch.arange(t, device=encoded.device)[None, :] >= shift[:, None]
        memory = memory * valid[..., None]
        reset = torch.arange(t, device=encoded.device)[None, :] == shift[:, None]  # first real frame
        return memory, reset

    def logits(self, audio, audio_lengths, tokens) -> torch.Tensor:
        """Teacher-forced next-token logits (b, u, vocabulary) for input ``tokens`` (b, u) (``<s>`` first)."""
        return self._decode(self.memory(audio, audio_lengths), tokens)

    def _decode(self, memory_and_reset, tokens: torch.Tensor) -> torch.Tensor:
        memory, reset = memory_and_reset
        x = self.embed(tokens)  # (b, u, d)
        for block in self.blocks:
            x = block(x, memory, reset)
        return self.head(self.out_norm(x))  # (b, u, vocabulary)

    def _teacher_forcing(self, targets: torch.Tensor, target_lengths: torch.Tensor):
        """(inputs ``<s> y`` (b, u + 1), outputs ``y </s>`` with -100 after the end (b, u + 1)) of targets (b, u)."""
        b, u = targets.shape
        inputs = torch.cat([targets.new_full((b, 1), self.vocab.bos), targets], 1)
        outputs = torch.cat([targets, targets.new_zeros(b, 1)], 1)
        outputs[torch.arange(b), target_lengths] = self.vocab.eos
        mask = torch.arange(u + 1, device=targets.device)[None, :] <= target_lengths[:, None]
        return inputs, outputs.masked_fill(~mask, -100)

    def loss(self, audio, audio_lengths, targets, target_lengths) -> torch.Tensor:
        """Cross-entropy of ``<s> y`` -> ``y </s>`` per predicted token (targets (b, u) padded with 0); with a CTC
        head, ``ctc_weight * CTC + (1 - ctc_weight) * CE`` (CTC per target character, :func:`ctc_loss`)."""
        encoded = self.encoder(audio, audio_lengths)  # (b, t', d)
        inputs, outputs = self._teacher_forcing(targets, target_lengths)
        logits = self._decode(self._memory_of(encoded, audio_lengths), inputs)
        ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), outputs.reshape(-1), ignore_index=-100)
        if self.ctc_head is None:
            return ce
        ctc = ctc_loss(self._ctc_head_log_probs(encoded), self.frame_lengths(audio_lengths), targets, target_lengths)
        return self.cfg.ctc_weight * ctc + (1.0 - self.cfg.ctc_weight) * ce

    @torch.no_grad()
    def transcript_log_probs(self, audio: torch.Tensor, audio_lengths: torch.Tensor, transcripts) -> torch.Tensor:
        """(k,) the decoder's log p(y </s> | x) of k transcripts ``transcripts`` (lists of character ids) of the
        one utterance ``audio`` (1, n), teacher-forced in one batch."""
        if audio.shape[0] != 1:
            raise ValueError(f"transcript_log_probs scores one utterance, got a batch of {audio.shape[0]}")
        return self._transcript_log_probs(self.encoder(audio, audio_lengths), audio_lengths, transcripts)

    def _transcript_log_probs(self, encoded: torch.Tensor, audio_lengths: torch.Tensor, transcripts) -> torch.Tensor:
        k = len(transcripts)
        lengths = torch.tensor([len(y) for y in transcripts], dtype=torch.long)
        targets = torch.zeros(k, max(1, int(lengths.max())), dtype=torch.long)
        for row, y in enumerate(transcripts):
            targets[row, : len(y)] = torch.as_tensor(list(y), dtype=torch.long)
        inputs, outputs = self._teacher_forcing(targets.to(encoded.device), lengths.to(encoded.device))
        memory, reset = self._memory_of(encoded.expand(k, -1, -1), audio_lengths.expand(k))
        logp = F.log_softmax(self._decode((memory, reset), inputs), dim=-1)  # (k, u + 1, vocabulary)
        picked = logp.gather(2, outputs.clamp(min=0)[..., None])[..., 0]  # (k, u + 1)
        return (picked * (outputs >= 0)).sum(1)

    @torch.no_grad()
    def scored_nbest(
        self,
        audio: torch.Tensor,
        audio_lengths: torch.Tensor,
        beam: int = 8,
        lm=None,
        alpha: float = 0.0,
        beta: float = 0.0,
    ) -> list[list[tuple[list[int], float, float]]]:
        """Per utterance, [(labelling, search score, decoder log p(y </s> | x))] of the CTC head's ``beam`` best
        (``rescore`` before its choice, so that any decoder weight is then a sum, :func:`best_rescored`)."""
        encoded = self.encoder(audio, audio_lengths)  # (b, t', d)
        log_probs = self._ctc_head_log_probs(encoded)  # (b, t', n_ctc)

        def decoder_log_probs(i: int, labellings: list[list[int]]) -> torch.Tensor:
            return self._transcript_log_probs(encoded[i : i + 1], audio_lengths[i : i + 1], labellings)

        frames = self.frame_lengths(audio_lengths).tolist()
        return scored_nbest_of(log_probs, frames, beam, lm, alpha, beta, decoder_log_probs)

    def _start(self, audio, audio_lengths):
        memory, reset = self.memory(audio, audio_lengths)
        states = []
        for block in self.blocks:
            s_self = block.self_mixer.init_state(memory.shape[0], device=memory.device, dtype=memory.dtype)
            states.append((s_self, block.prefix_state(memory, reset)))
        return states

    def _next_logprobs(self, tokens: torch.Tensor, states: list):
        x = self.embed(tokens)  # (b, d)
        new_states = []
        for block, state in zip(cast("list[CrossConnectedBlock]", list(self.blocks)), states):
            x, state = block.step(x, state)
            new_states.append(state)
        return F.log_softmax(self.head(self.out_norm(x)), dim=-1), new_states

    @torch.no_grad()
    def transcribe(
        self,
        audio: torch.Tensor,
        audio_lengths: torch.Tensor,
        beam: int = 1,
        lm=None,
        alpha: float = 0.0,
        beta: float = 0.0,
        *,
        max_tokens: int = 300,
    ) -> list[str]:
        """Greedy (``beam`` 1) or beam-search decoding, one utterance at a time for the beam, of at most
        ``max_tokens`` characters (keyword-only: the other arguments sit where the CTC recognisers' ``transcribe``
        has them). With ``lm`` (a :class:`torchssm.audio.lm.CharNGramLM` over this vocabulary's characters) each next
        token scores ``log p_dec + alpha log p_lm + beta`` (the bonus for a character that starts a word): shallow
        fusion (Gulcehre et al. 2015; the CTC search's objective, :mod:`torchssm.audio.lm`)."""
        fusion = None
        if lm is not None:
            if lm.alphabet != self.vocab.alphabet:
                raise ValueError(f"the language model's alphabet {lm.alphabet!r} is not {self.vocab.alphabet!r}")
            fusion = (lm, float(alpha), float(beta))
        elif alpha or beta:
            raise ValueError("alpha and beta weigh a language model: pass lm= (torchssm.audio.lm.CharNGramLM)")
        if beam == 1:
            return self._greedy(audio, audio_lengths, max_tokens, fusion)
        return [
            self._beam(audio[i : i + 1], audio_lengths[i : i + 1], beam, max_tokens, fusion)
            for i in range(audio.shape[0])
        ]

    def _fused(self, logp: torch.Tensor, prefixes: list[list[int]], fusion) -> torch.Tensor:
        """``logp`` (k, vocabulary) plus alpha log p_lm(token | prefix) + beta for tokens starting a word."""
        if fusion is None:
            return logp
        lm, alpha, beta = fusion
        n = len(self.vocab.alphabet)
        space = self.vocab.index.get(" ", -1)
        extra = torch.zeros_like(logp)
        for row, prefix in enumerate(prefixes):
            lp = torch.from_numpy(lm.next_log_probs_after_labels(prefix))
            extra[row, 1 : n + 1] = alpha * lp[:n].to(logp.dtype)
            extra[row, self.vocab.eos] = alpha * float(lp[n])
            if not prefix or prefix[-1] == space:  # a character other than the space starts a word here
                extra[row, 1 : n + 1] += beta
                if space > 0:
                    extra[row, space] -= beta
        return logp + extra

    def _greedy(self, audio, audio_lengths, max_tokens, fusion=None):
        states = self._start(audio, audio_lengths)
        b = audio.shape[0]
        token = torch.full((b,), self.vocab.bos, dtype=torch.long, device=audio.device)
        out, done = [[] for _ in range(b)], torch.zeros(b, dtype=torch.bool, device=audio.device)
        for _ in range(max_tokens):
            logp, states = self._next_logprobs(token, states)
            logp = self._fused(logp, out, fusion)
            logp[:, [BLANK, self.vocab.bos]] = -float("inf")
            token = logp.argmax(-1)
            done |= token == self.vocab.eos
            for i in range(b):
                if not done[i]:
                    out[i].append(int(token[i]))
            if bool(done.all()):
                break
        return [self.vocab.decode(ids) for ids in out]

    def _beam(self, audio, audio_lengths, beam, max_tokens, fusion=None) -> str:
        """Beam search over character sequences, hypotheses ranked by total log-probability / length."""
        states = self._start(audio, audio_lengths)
        hyps: list[tuple[list[int], float]] = [([], 0.0)]
        finished: list[tuple[list[int], float]] = []
        for _ in range(max_tokens):
            tokens = torch.tensor([h[-1] if h else self.vocab.bos for h, _ in hyps], device=audio.device)
            if len(hyps) != states_batch(states):
                states = _select_state(states, torch.zeros(len(hyps), dtype=torch.long, device=audio.device))
            logp, states = self._next_logprobs(tokens, states)
            logp = self._fused(logp, [h for h, _ in hyps], fusion)
            logp[:, [BLANK, self.vocab.bos]] = -float("inf")
            scores = torch.tensor([s for _, s in hyps], device=audio.device)[:, None] + logp  # (k, v)
            top = scores.flatten().topk(min(beam, scores.numel()))
            keep, next_hyps = [], []
            for value, flat in zip(top.values.tolist(), top.indices.tolist()):
                row, tok = divmod(flat, scores.shape[1])
                if tok == self.vocab.eos:
                    finished.append((hyps[row][0], value))
                else:
                    next_hyps.append((hyps[row][0] + [tok], value))
                    keep.append(row)
            if not next_hyps or len(finished) >= beam:
                break
            hyps = next_hyps
            states = _select_state(states, torch.tensor(keep, device=audio.device))
        pool = finished or hyps
        best = max(pool, key=lambda h: h[1] / (len(h[0]) + 1))
        return self.vocab.decode(best[0])


def best_rescored(entries, decoder_weight: float) -> list[int]:
    """The labelling of ``entries`` ([(labelling, search score, decoder log-probability)], :meth:`SambaASR.
    scored_nbest`) with the highest search score + ``decoder_weight`` x decoder log-probability; of equal scores the
    first (the search's order). The second score may also be a neural LM's (:mod:`torchssm.audio.neural_lm`)."""
    return list(max(entries, key=lambda entry: entry[1] + decoder_weight * entry[2])[0])


def rescored_transcripts(lists, vocab: CharVocabulary, decoder_weight: float) -> list[str]:
    """The transcript :func:`best_rescored` chooses in each n-best list of ``lists`` (entries [(labelling, search
    score, second score)]: :meth:`SambaASR.scored_nbest`'s, or :func:`torchssm.audio.neural_lm.lm_scored_lists`')."""
    return [vocab.decode(best_rescored(entries, decoder_weight)) for entries in lists]


def states_batch(states) -> int:
    """Batch size of a nested state (the first tensor's first dimension)."""
    if isinstance(states, torch.Tensor):
        return states.shape[0]
    for s in states.values() if isinstance(states, dict) else states:
        n = states_batch(s)
        if n >= 0:
            return n
    return -1


def build_recognizer(cfg: ASRConfig) -> CTCRecognizer | SambaASR:
    return CTCRecognizer(cfg) if cfg.kind == "ctc" else SambaASR(cfg)
