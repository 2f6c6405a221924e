"""Streaming recognition: the causal CTC recogniser run chunk by chunk with its state carried over.

Every stage of :class:`torchssm.audio.asr.CTCRecognizer` is causal, so audio can be fed in chunks of
10-20 ms and each stage keeps what it needs from the past:

    LogMel.stream        the samples not yet covered by a whole 25 ms window
    CausalConv1d.stream  the last frames the next stride-2 output needs (x2)
    SSM layers           their recurrent state (``forward(x, state, return_state=True)``)

so the emissions of a stream, concatenated, equal those of one offline pass over the whole utterance
(tested). A chunk yields an encoder frame every 40 ms (4 x 10 ms hops; 20 ms with ``model.subsampling: 2``);
a bidirectional encoder (``model.bidirectional``) is refused: it needs the whole utterance. The latency
of the result for a frame is the chunk size plus the time to process the chunk. The real-time factor is
processing time / audio duration.
"""

from __future__ import annotations

import time

import torch

from torchssm.audio.asr import CTCRecognizer
from torchssm.audio.ctc import collapse


class StreamingRecognizer:
    """Feed audio chunks (b, c) to :meth:`feed`; read log-probabilities of the new encoder frames."""

    def __init__(self, model: CTCRecognizer):
        if not isinstance(model, CTCRecognizer):
            raise TypeError(
                f"streaming needs a CTCRecognizer (a causal encoder with a CTC head), got {type(model).__name__}"
            )
        if not model.encoder.causal:
            raise ValueError(
                "streaming needs a causal encoder; this recogniser's is bidirectional (model.bidirectional)"
            )
        self.model = model.eval()
        self.reset()

    def reset(self) -> None:
        self._mel_buffer: torch.Tensor | None = None
        self._sub1_buffer: torch.Tensor | None = None
        self._sub2_buffer: torch.Tensor | None = None
        self._states: list | None = None
        self.emissions: list[torch.Tensor] = []

    @torch.no_grad()
    def feed(self, chunk: torch.Tensor) -> torch.Tensor:
        """Log-probabilities (b, t_new, n_ctc) of the encoder frames this chunk (b, c) completes (t_new may be 0)."""
        if chunk.dim() != 2 or not chunk.is_floating_point():
            raise ValueError(f"expected a float chunk (batch, samples), got {tuple(chunk.shape)} {chunk.dtype}")
        enc = self.model.encoder
        mel, self._mel_buffer = enc.front.stream(chunk, self._mel_buffer)
        h = enc.in_norm(mel)
        h, self._sub1_buffer = enc.sub1.stream(h, self._sub1_buffer)
        h, self._sub2_buffer = enc.sub2.stream(torch.nn.functional.gelu(h), self._sub2_buffer)
        h = torch.nn.functional.gelu(h)
        if h.shape[1] == 0:
            out = h.new_zeros(h.shape[0], 0, self.model.vocab.n_ctc)
        else:
            if self._states is None:
                self._states = [None] * len(enc.layers)
            h, self._states = enc.blocks(h, self._states)
            out = torch.log_softmax(self.model.head(h), dim=-1)
        self.emissions.append(out)
        return out

    def transcript(self, index: int = 0) -> str:
        """Greedy CTC transcript of everything fed so far (batch row ``index``)."""
        if not self.emissions:
            return ""
        ids = torch.cat(self.emissions, 1)[index].argmax(-1).tolist()
        return self.model.vocab.decode(collapse(ids))


def stream_audio(
    model: CTCRecognizer, audio: torch.Tensor, chunk_ms: float = 20.0, sample_rate: int = 16000
) -> tuple[torch.Tensor, dict]:
    """Run ``audio`` (n,) through a stream in chunks of ``chunk_ms``; returns (emissions (t', n_ctc), timing).

    timing: {"chunk_ms", "chunks", "mean_chunk_ms" / "max_chunk_ms" (processing time per chunk, CPU
    time of this process, after a warm-up stream of 8 chunks), "rtf" (total processing CPU time / audio
    duration), "rtf_wall"}.
    """
    if audio.dim() != 1:
        raise ValueError(f"expected audio (samples,), got {tuple(audio.shape)}")
    size = int(round(chunk_ms * sample_rate / 1000))
    if size < 1:
        raise ValueError(f"chunk_ms={chunk_ms} is shorter than one sample")
    warm = StreamingRecognizer(model)  # first calls pay one-off costs (kernel compilation, allocations)
    for start in range(0, min(len(audio), 8 * size), size):
        warm.feed(audio[None, start : start + size])
    stream = StreamingRecognizer(model)
    cpu_times = []
    wall0 = time.perf_counter()
    for start in range(0, len(audio), size):
        t0 = time.process_time()
        stream.feed(audio[None, start : start + size])
        cpu_times.append(time.process_time() - t0)
    wall = time.perf_counter() - wall0
    duration = len(audio) / sample_rate
    timing = {
        "chunk_ms": chunk_ms,
        "chunks": len(cpu_times),
        "mean_chunk_ms": 1000 * sum(cpu_times) / len(cpu_times),
        "max_chunk_ms": 1000 * max(cpu_times),
        "rtf": sum(cpu_times) / duration,
        "rtf_wall": wall / duration,
    }
    return torch.cat(stream.emissions, 1)[0], timing
