"""Export a trained model's recurrent ``step`` to ONNX, for inference without PyTorch.

    torchssm export --checkpoint runs/mnist1d_lru --onnx lru_step.onnx [--verify-steps 300]

The graph is one token in, one token out, with the state as explicit inputs and outputs::

    inputs:  x_t (b, d_input) float  [or (b,) int64 token ids],  state_0, state_1, ...
    outputs: y_t (b, d_output),                                  new_state_0, new_state_1, ...

The model's state (a nested dict/list/tuple of tensors: per-layer SSM states, conv buffers, the
running pooled sum) is flattened in a fixed order; ``state_i`` of the outputs feeds ``state_i`` of
the inputs at the next step. ONNX has no complex type, so a complex state (LRU, S4, S4D, DSS, S5)
travels as its real and imaginary planes: a complex (b, n) state is a float (b, n, 2) tensor
(``torch.view_as_real``). Zero states are the initial states.

How: the step is traced with ``torch.export``; every subgraph that depends on parameters only
(the discretisation lambda = exp(-exp(nu) + i exp(theta)), exp(dt A), B_bar, ...) is evaluated
once in PyTorch and kept as a constant (:func:`fold_constants`), so the ONNX graph holds only the
per-token arithmetic (complex products and sums, which the exporter lowers to real ones; it
has no complex ``exp``). Models whose state grows with the position (the Transformer's KV
cache) cannot be a fixed-shape graph and are refused. The exporter is ``torch.onnx.export(dynamo=True)`` (needs
``onnx`` and ``onnxscript``; ``onnxruntime`` runs the result: ``pip install torchssm[export]``).
The batch size is fixed at export time (``batch``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, cast

import torch
from torch import nn


# --- state flattening -----------------------------------------------------------------------------------------------
def flatten_state(state: Any) -> tuple[list[torch.Tensor], Callable[[list[torch.Tensor]], Any]]:
    """A nested dict/list/tuple of tensors -> (leaves in a fixed order, a function rebuilding the structure)."""
    if isinstance(state, torch.Tensor):
        return [state], lambda leaves: leaves[0]
    if isinstance(state, dict):
        keys = list(state)
        parts = [flatten_state(state[k]) for k in keys]
    elif isinstance(state, (list, tuple)):
        keys = None
        parts = [flatten_state(s) for s in state]
    else:
        raise TypeError(f"a state must be tensors in dicts/lists/tuples; got {type(state).__name__}")
    sizes = [len(p[0]) for p in parts]

    def rebuild(leaves: list[torch.Tensor]):
        out, i = [], 0
        for (_, fn), n in zip(parts, sizes):
            out.append(fn(leaves[i : i + n]))
            i += n
        if keys is not None:
            return dict(zip(keys, out))
        return type(state)(out)

    return [t for p in parts for t in p[0]], rebuild


def to_planes(t: torch.Tensor) -> torch.Tensor:
    """Complex (...) -> real (..., 2) planes; real tensors unchanged."""
    return torch.view_as_real(t) if t.is_complex() else t


# --- the exported module --------------------------------------------------------------------------------------------
class Steppable(Protocol):
    """What :class:`StepGraph` calls: a causal model's or layer's ``init_state`` and ``step``."""

    def init_state(self, batch: int) -> Any: ...

    def step(self, x_t: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]: ...


class StepGraph(nn.Module):
    """``model.step`` with a flat, real state: ``forward(x_t, *state) -> (y_t, *new_state)``.

    Works for any model or layer with ``step(x_t, state)`` and ``init_state(batch)``: a causal
    :class:`~torchssm.layers.base.SSMLayer`, :class:`~torchssm.models.backbone.DeepSSM`, or
    :class:`~torchssm.models.lm.CausalLM`.
    """

    def __init__(self, model: nn.Module, batch: int = 1):
        super().__init__()
        if not (callable(getattr(model, "step", None)) and callable(getattr(model, "init_state", None))):
            raise TypeError(f"{type(model).__name__} has no step()/init_state(): only causal models can be exported")
        self.model = model
        template = self.stepper.init_state(batch)
        leaves, self._rebuild = flatten_state(template)
        with torch.no_grad():
            after, _ = flatten_state(self.stepper.step(example_input(model, batch), template)[1])
        if [t.shape for t in after] != [t.shape for t in leaves]:
            raise ValueError(
                f"the state of {type(model).__name__} changes shape from step to step (a growing KV "
                f"cache?): a fixed-shape ONNX step graph cannot carry it"
            )
        self.complex_leaves = [t.is_complex() for t in leaves]
        self.batch = batch

    @property
    def stepper(self) -> Steppable:
        """``model`` as the type checker should see it (its step / init_state were checked in __init__)."""
        return cast(Steppable, self.model)

    def initial_state(self) -> list[torch.Tensor]:
        """The zero state as the graph's real tensors."""
        leaves, _ = flatten_state(self.stepper.init_state(self.batch))
        return [to_planes(t) for t in leaves]

    def forward(self, x_t: torch.Tensor, *state: torch.Tensor):
        leaves = [torch.view_as_complex(s) if c else s for s, c in zip(state, self.complex_leaves)]
        y_t, new_state = self.stepper.step(x_t, self._rebuild(leaves))
        new_leaves, _ = flatten_state(new_state)
        return (y_t, *[to_planes(t) for t in new_leaves])


def _deterministic_factory(target) -> bool:
    """Whether a node with no tensor inputs (``eye``, ``arange``, ``full``, ...) always gives the same value,
    so that it may be folded like a parameter (S4's dense step solves with ``I - A_bar^L``)."""
    return isinstance(target, torch._ops.OpOverload) and torch.Tag.nondeterministic_seeded not in target.tags


def fold_constants(graph: StepGraph, args: tuple) -> torch.fx.GraphModule:
    """``graph`` traced by ``torch.export``, with every node that depends on parameters, buffers and
    deterministic factories only (each layer's discretisation: exp of complex eigenvalues, B_bar, ...) evaluated once in
    PyTorch and stored as a constant buffer; the result computes the same step."""
    with torch.no_grad():
        gm = torch.export.export(graph, args, strict=False).module()
        values: dict[torch.fx.Node, Any] = {}  # node -> its value, for nodes that depend on constants only
        for node in list(gm.graph.nodes):
            if node.op == "get_attr":
                value: Any = gm
                for part in node.target.split("."):
                    value = getattr(value, part)
                values[node] = value
                continue
            if (
                node.op != "call_function"
                or isinstance(node.target, torch._ops.HigherOrderOperator)
                or not all(n in values for n in node.all_input_nodes)
            ):
                continue
            if not node.all_input_nodes and not _deterministic_factory(node.target):
                continue  # e.g. a random op: evaluated per call, never frozen
            fetch = lambda n: values[n]  # noqa: E731
            value = node.target(*torch.fx.node.map_arg(node.args, fetch), **torch.fx.node.map_arg(node.kwargs, fetch))
            if isinstance(value, torch.Tensor):
                name = f"_folded_{len(values)}"
                gm.register_buffer(name, value.detach().clone())
                with gm.graph.inserting_before(node):
                    const = gm.graph.get_attr(name)
                node.replace_all_uses_with(const)
                gm.graph.erase_node(node)
                values[const] = value
            elif isinstance(value, (tuple, list)):
                values[node] = value  # consumed by getitem nodes, folded in turn
        gm.graph.eliminate_dead_code()
        gm.delete_all_unused_submodules()
        gm.recompile()
    return gm


def example_input(model: nn.Module, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """A random x_t for ``model.step``: token ids for token models, else (b, d_input) or (b, d_model)."""
    cfg = getattr(model, "config", None)
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    if cfg is not None and (getattr(cfg, "input_kind", None) == "tokens" or hasattr(cfg, "vocab_size")):
        vocab = getattr(cfg, "vocab_size", None) or cfg.d_input
        return torch.randint(0, vocab, (batch,), generator=g)
    width = cast(int, getattr(cfg, "d_input", None) or model.d_model)
    dtype = next(model.parameters()).dtype
    return torch.randn(batch, width, generator=g, dtype=dtype)


def export_step(model: nn.Module, path: str | Path, batch: int = 1) -> Path:
    """Write ``model.step`` as an ONNX graph at ``path`` (see the module docstring); returns ``path``."""
    path = Path(path)
    model = model.eval()
    graph = StepGraph(model, batch)
    args = (example_input(model, batch), *graph.initial_state())
    names = ["x_t"] + [f"state_{i}" for i in range(len(args) - 1)]
    out_names = ["y_t"] + [f"new_state_{i}" for i in range(len(args) - 1)]
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        folded = fold_constants(graph, args)
        with torch.no_grad():
            torch.onnx.export(
                folded,
                args,
                str(path),
                input_names=names,
                output_names=out_names,
                dynamo=True,
                external_data=False,
                verbose=False,
            )
    except Exception as err:  # torch.export / the ONNX translator fail in many ways; one clear line
        first = next((line for line in str(err).splitlines() if line.strip()), type(err).__name__)
        raise ValueError(f"cannot export the step of {type(model).__name__} to ONNX: {first[:300]}") from err
    return path


def compare_with_onnxruntime(
    model: nn.Module, path: str | Path, steps: int = 300, batch: int = 1, seed: int = 0
) -> float:
    """Run ``steps`` tokens through ``model.step`` and the ONNX graph side by side (states fed back on
    both sides); return the largest absolute difference of the outputs, relative to their scale."""
    import numpy as np
    import onnxruntime as ort

    model = model.eval()
    graph = StepGraph(model, batch)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    torch_state = graph.initial_state()
    onnx_state = [t.numpy() for t in torch_state]
    g = torch.Generator().manual_seed(seed)
    worst, scale = 0.0, 1e-12
    for _ in range(steps):
        x_t = example_input(model, batch, g)
        with torch.no_grad():
            y, *torch_state = graph(x_t, *torch_state)
        feeds = {"x_t": x_t.numpy(), **{f"state_{i}": s for i, s in enumerate(onnx_state)}}
        y_onnx, *onnx_state = session.run(None, feeds)
        worst = max(worst, float(np.abs(y_onnx - y.numpy()).max()))
        scale = max(scale, float(np.abs(y.numpy()).max()))
    return worst / scale


# --- command line ---------------------------------------------------------------------------------------------------
def _run_export(args) -> int:
    from torchssm.models.pretrained import from_pretrained
    from torchssm.runs import find_checkpoint

    checkpoint = find_checkpoint(args.checkpoint)
    model = from_pretrained(checkpoint)
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as err:
        raise ValueError(
            f"torchssm export needs the onnx extras ({err.name} is missing): pip install 'torchssm[export]'"
        ) from None
    path = export_step(model, args.onnx, batch=args.batch)
    graph = StepGraph(model, args.batch)
    print(
        f"wrote {path}: step of {type(model).__name__} from {checkpoint}; "
        f"inputs x_t {tuple(example_input(model, args.batch).shape)} "
        f"+ {len(graph.complex_leaves)} state tensor(s) ({sum(graph.complex_leaves)} complex as re/im planes)"
    )
    if args.verify_steps:
        rel_err = compare_with_onnxruntime(model, path, args.verify_steps, args.batch)
        print(f"onnxruntime vs PyTorch over {args.verify_steps} steps: max |diff| / max |y| = {rel_err:.2e}")
        if rel_err > 1e-4:
            print("torchssm export: warning: the ONNX graph disagrees with PyTorch", file=sys.stderr)
            return 1
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("export", help="export a trained model's recurrent step to ONNX")
    p.add_argument("--checkpoint", required=True, help="a run directory (uses best/, else last/) or checkpoint dir")
    p.add_argument("--onnx", required=True, help="output .onnx file")
    p.add_argument("--batch", type=int, default=1, help="batch size of the exported graph (fixed)")
    p.add_argument(
        "--verify-steps",
        type=int,
        default=0,
        metavar="N",
        help="run N random tokens through onnxruntime and PyTorch and compare",
    )
    p.set_defaults(func=_run_export)
