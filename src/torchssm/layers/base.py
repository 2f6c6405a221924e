"""The SSM layer contract shared by every layer (docs/index.md, "The layer contract").

Symbols in shape comments: the glossary of docs/architecture.md (b batch, l length, h = d_model model
width, n = d_state state size, ...).

Every layer:

* ``forward(x, state=None, *, return_state=False)`` maps ``x`` of shape (b, l, h) to ``y``
  of shape (b, l, h). ``state`` is the initial hidden state (``None`` = zero); with
  ``return_state=True`` the call returns ``(y, final_state)``, otherwise ``y``.
* ``step(x_t, state) -> (y_t, new_state)`` for one token ``x_t`` of shape (b, h); pure and O(1)
  in the length. Only causal layers (``self.causal``) have it.
* ``init_state(batch, device=None, dtype=None)``: the zero state.

Inference without autograd: ``step_function()`` returns the one-token update with the weights derived from
the parameters (discretisation, A = exp(dt A), normalised B, ...) computed once; ``step`` and a causal
``forward`` on a one-token chunk with a carried state (streaming frame by frame) reuse it while no parameter
changes (:meth:`SSMLayer._derived_once`), so each call pays the update, not the derivation or a scan.

The checks below cost no device synchronisation (shapes and dtypes only), so ``torch.compile``
and CUDA graphs keep working; value checks (NaN/Inf) are opt-in via :func:`torchssm.set_debug`
or the environment variable ``TORCHSSM_DEBUG=1``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

import torch
from torch import nn

State = Any  # a tensor, or a tuple of tensors (e.g. Mamba's (conv_buffer, ssm_state))
Device = str | torch.device | None
LayerOutput = torch.Tensor | tuple[torch.Tensor, Any]  # y, or (y, final state) with return_state=True
StepOutput = tuple[torch.Tensor, Any]  # (y_t, new state)
StepFunction = Callable[[torch.Tensor, Any], StepOutput]  # (x_t (b, h), state) -> (y_t (b, h), new_state)
T = TypeVar("T")

DEBUG_ENV = "TORCHSSM_DEBUG"  # TORCHSSM_DEBUG=1 turns the value checks on at import


def _flag(value: str) -> bool:
    return value.strip().lower() not in ("", "0", "false", "no", "off")


_DEBUG = _flag(os.environ.get(DEBUG_ENV, ""))


def set_debug(enabled: bool = True) -> None:
    """Turn on value checks (NaN/Inf in inputs and states). Off by default: they sync the device."""
    global _DEBUG
    _DEBUG = bool(enabled)


def debug_enabled() -> bool:
    return _DEBUG


def check_sequence(x: torch.Tensor, d_model: int, name: str = "x") -> None:
    """Raise a clear error unless ``x`` is a (batch, length, d_model) floating tensor with length >= 1."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (batch, length, {d_model}), got {type(x).__name__}")
    if x.dim() != 3:
        raise ValueError(
            f"{name} must have shape (batch, length, d_model={d_model}); got a {x.dim()}-D tensor of shape "
            f"{tuple(x.shape)}"
        )
    if x.shape[-1] != d_model:
        raise ValueError(f"{name} must have last dimension d_model={d_model}; got shape {tuple(x.shape)}")
    if x.shape[1] == 0:
        raise ValueError(f"{name} is an empty sequence (length 0); expected shape (batch, length>=1, {d_model})")
    if not (x.is_floating_point() or x.is_complex()):
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if _DEBUG and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or Inf (debug checks are on)")


def check_token(x_t: torch.Tensor, d_model: int, name: str = "x_t") -> None:
    """Raise a clear error unless ``x_t`` is a (batch, d_model) floating tensor (one step)."""
    if not isinstance(x_t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (batch, {d_model}), got {type(x_t).__name__}")
    if x_t.dim() != 2 or x_t.shape[-1] != d_model:
        raise ValueError(f"{name} must have shape (batch, d_model={d_model}); got shape {tuple(x_t.shape)}")
    if not (x_t.is_floating_point() or x_t.is_complex()):
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x_t.dtype}")
    if _DEBUG and not bool(torch.isfinite(x_t).all()):
        raise ValueError(f"{name} contains NaN or Inf (debug checks are on)")


def check_lengths(lengths: torch.Tensor | None, batch: int) -> None:
    """Shape/dtype check of a (batch,) integer ``lengths`` tensor (no device sync)."""
    if lengths is None:
        return
    if not isinstance(lengths, torch.Tensor) or tuple(lengths.shape) != (batch,):
        shape = tuple(lengths.shape) if isinstance(lengths, torch.Tensor) else type(lengths).__name__
        raise ValueError(f"lengths must have shape (batch,)=({batch},); got {shape}")
    if lengths.is_floating_point() or lengths.is_complex() or lengths.dtype == torch.bool:
        raise TypeError(f"lengths must be an integer tensor; got dtype {lengths.dtype}")


def valid_steps(lengths: torch.Tensor, length: int, device: Device = None) -> torch.Tensor:
    """(b,) valid lengths of a right-padded batch -> (b, length) bool, True where t < lengths (on ``device``,
    by default the lengths' own)."""
    lengths = lengths.to(device) if device is not None else lengths
    return torch.arange(length, device=lengths.device)[None, :] < lengths[:, None]


def _flatten(state: State) -> list:
    if isinstance(state, (tuple, list)):
        out = []
        for s in state:
            out.extend(_flatten(s))
        return out
    return [state]


def check_state_like(state: State, expected: State, name: str = "state") -> None:
    """Check that ``state`` has the structure, shapes and dtypes of ``expected``.

    ``expected`` is normally ``layer.init_state(batch, device="meta", dtype=...)``: a meta tensor
    costs no memory, so the check is free.
    """
    got, want = _flatten(state), _flatten(expected)
    if len(got) != len(want):
        raise ValueError(f"{name} must hold {len(want)} tensor(s); got {len(got)}")
    for i, (g, w) in enumerate(zip(got, want)):
        label = name if len(want) == 1 else f"{name}[{i}]"
        if not isinstance(g, torch.Tensor):
            raise TypeError(f"{label} must be a torch.Tensor of shape {tuple(w.shape)}, got {type(g).__name__}")
        if tuple(g.shape) != tuple(w.shape):
            raise ValueError(f"{label} must have shape {tuple(w.shape)}; got {tuple(g.shape)}")
        if g.dtype != w.dtype:
            raise TypeError(f"{label} must have dtype {w.dtype}; got {g.dtype}")
        if _DEBUG and not bool(torch.isfinite(torch.view_as_real(g) if g.is_complex() else g).all()):
            raise ValueError(f"{label} contains NaN or Inf (debug checks are on)")


def to_param_dtype(layer: SSMLayer, x: torch.Tensor) -> torch.Tensor:
    """Inputs in another dtype than the parameters (e.g. float64 or bf16 into a float32 layer, outside
    autocast) are computed in the parameters' dtype; the caller casts the output back (:func:`out_dtype`)."""
    return x if torch.is_autocast_enabled(x.device.type) else x.to(layer._param_dtype())


def out_dtype(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The output in the input's dtype, except under autocast (where the autocast dtype is the contract)."""
    return y if torch.is_autocast_enabled(x.device.type) else y.to(x.dtype)


def parameters_version(module: nn.Module) -> tuple:
    """A key that changes whenever a parameter of ``module`` does: its storage, in-place version counter (an
    optimizer step, ``load_state_dict``), dtype or device (``.to()``); for values derived from the weights."""
    return tuple((p.data_ptr(), p._version, p.dtype, p.device) for p in module.parameters())


def _recomputes_derived() -> bool:
    """Whether values derived from the weights must be computed in the call itself: under autograd (gradients
    flow through them), ``torch.compile`` / ``torch.export`` or a JIT trace (the graph computes them)."""
    return torch.is_grad_enabled() or torch.compiler.is_compiling() or torch.jit.is_tracing()


class SSMLayer(nn.Module):
    """Base class of every sequence-mixing layer; subclasses implement the contract above.

    Class attributes:
        causal: whether output t depends only on inputs <= t (then ``step`` exists).
        optim_overrides: the layer's parameter tags ``{path: {"lr" | "lr_scale", "weight_decay", "reinit"}}``
            (:mod:`torchssm.layers.tags`, the one tagging mechanism), read by the optimizer builder and
            the LM's init to reproduce each paper's conventions (e.g. LRU: recurrent parameters at
            lr * 0.5 and no weight decay).
    """

    causal: bool = True
    optim_overrides: dict = {}

    def __init__(self, d_model: int):
        super().__init__()
        if not isinstance(d_model, int) or d_model < 1:
            raise ValueError(f"d_model must be a positive int, got {d_model!r}")
        self.d_model = d_model

    # --- contract -------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, state: State | None = None, *, return_state: bool = False) -> LayerOutput:
        raise NotImplementedError

    def step(self, x_t: torch.Tensor, state: State) -> StepOutput:
        raise NotImplementedError(f"{type(self).__name__} is not causal and has no step()")

    def init_state(self, batch: int, device: Device = None, dtype: torch.dtype | None = None) -> State:
        raise NotImplementedError

    def step_function(self) -> StepFunction:
        """The one-token update ``(x_t, state) -> (y_t, new_state)`` without input checks, with the weights
        derived from the parameters computed when it is built: valid while the parameters do not change.
        Default: :meth:`step` itself (a layer whose step derives weights overrides this)."""
        return self.step

    # --- helpers for subclasses -----------------------------------------------------------------
    def _derived_once(self, name: str, build: Callable[[], T], *key: Any) -> T:
        """``build()``, kept under ``name`` and built again only when a parameter changed (its storage, dtype,
        device or in-place version counter: an optimizer step, ``load_state_dict``, ``.to()``) or ``key`` did.
        Only for inference: under autograd, ``torch.compile`` / ``torch.export`` or a JIT trace it is
        ``build()`` every call (gradients flow through it; a traced graph computes it). Pickles and deep
        copies leave the kept values out (:meth:`__getstate__`)."""
        if _recomputes_derived():
            return build()
        version = key + parameters_version(self)
        kept = self.__dict__.setdefault("_derived", {})
        if name not in kept or kept[name][0] != version:
            kept[name] = (version, build())
        return kept[name][1]

    def __getstate__(self) -> dict:
        """Pickling (``torch.save``, ``copy.deepcopy``) leaves out what :meth:`_derived_once` kept."""
        state = dict(super().__getstate__())
        state.pop("_derived", None)
        return state

    def _one_token_forward(self, x: torch.Tensor, state: State | None, return_state: bool) -> LayerOutput | None:
        """A causal ``forward``'s fast path: a one-token chunk ``x`` (b, 1, h) with a carried ``state``, outside
        autograd and compilation, runs the kept :meth:`step_function` (the same update, tested equal to the
        chunked path in float64). Returns forward's output, or None when the call does not qualify."""
        if x.shape[1] != 1 or state is None or _recomputes_derived():
            return None
        y_t, new_state = self._derived_once("step_function", self.step_function)(x[:, 0], state)
        return (y_t[:, None], new_state) if return_state else y_t[:, None]

    def _param_dtype(self) -> torch.dtype:
        for p in self.parameters():
            return p.dtype
        return torch.get_default_dtype()

    def _check_forward(self, x: torch.Tensor, state: State | None) -> None:
        check_sequence(x, self.d_model)
        if state is not None:
            self._check_state(state, x.shape[0])

    def _check_step(self, x_t: torch.Tensor, state: State) -> None:
        if not self.causal:
            raise NotImplementedError(f"{type(self).__name__} is not causal (bidirectional) and has no step()")
        check_token(x_t, self.d_model)
        self._check_state(state, x_t.shape[0])

    def _check_state(self, state: State, batch: int) -> None:
        check_state_like(state, self.init_state(batch, device="meta"))
