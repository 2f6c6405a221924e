"""FLOPs and training memory of restoration networks vs image resolution (Serpent's comparison,
Sepehri et al. 2024, Sec. 5 / Fig. 1: SSM vs attention cost as the image grows).

For each resolution R (a 1 x 1 x R x R image) and network:

* ``gflops``: forward FLOPs counted by ``torch.utils.flop_counter.FlopCounterMode`` (matmuls,
  convolutions, attention), plus the selective scans' elementwise work, which that counter does not
  see (the scan runs in a fused kernel): 9 FLOPs per (step, channel, state) entry of every S6 scan
  (exp(dt A), dt u B, the state update a h + b, the C readout: an estimate, stated as such);
  The attention products QK^T and AV (4 L^2 d per layer) are added the same way when the counter has
  no formula for the attention kernel that ran (the case of the CPU flash kernel in torch 2.13);
* ``saved_mib``: the bytes of every tensor autograd keeps for the backward pass (distinct storages,
  recorded with ``torch.autograd.graph.saved_tensors_hooks``): the activation memory of training,
  measured rather than sampled from a noisy process RSS;
* ``cpu_s``: CPU time of one forward + backward (``time.process_time``, one thread).

Attention uses PyTorch's scaled_dot_product_attention, whose CPU kernel is a flash-style one that
keeps O(L) for the backward; the O(L^2) score matrix it avoids is reported as ``attn_matrix_mib``
(what a plain softmax(QK^T) implementation, as in ViT, would store per layer).
"""

from __future__ import annotations

import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from torchssm.vision.restoration import RestorationUNet


def _scan_flops(model: torch.nn.Module, height: int, width: int) -> float:
    """Elementwise FLOPs of every Mamba S6 scan in ``model`` for one (height, width) image (estimate)."""
    from torchssm.layers.mamba import Mamba
    from torchssm.vision.spatial_mamba import SpatialMamba

    total = 0.0
    for stage_scale, module in _scaled_modules(model):
        tokens = (height // stage_scale) * (width // stage_scale)
        if isinstance(module, (Mamba, SpatialMamba)):
            total += 9.0 * tokens * module.d_inner * module.d_state
    return total


def _scaled_modules(model: RestorationUNet):
    """(downsampling factor, module) for every module inside each level's stages."""
    for i, stage in enumerate(model.encoders):
        for m in stage.modules():
            yield 2**i, m
    for i, stage in enumerate(model.decoders):
        for m in stage.modules():
            yield 2**i, m


def _attention_matrix_bytes(model: RestorationUNet, height: int, width: int) -> float:
    from torchssm.layers.attention import SelfAttention

    total = 0.0
    for scale, m in _scaled_modules(model):
        if isinstance(m, SelfAttention):
            tokens = (height // scale) * (width // scale)
            total += 4.0 * m.n_heads * tokens * tokens  # float32 scores of one image
    return total


def _attention_flops(model: RestorationUNet, height: int, width: int) -> float:
    """FLOPs of the softmax attention products QK^T and AV: 2 * 2 * L^2 * d per layer (multiply-adds)."""
    from torchssm.layers.attention import SelfAttention

    total = 0.0
    for scale, m in _scaled_modules(model):
        if isinstance(m, SelfAttention):
            tokens = (height // scale) * (width // scale)
            total += 4.0 * tokens * tokens * m.d_model
    return total


def measure(model: RestorationUNet, resolution: int) -> dict:
    """FLOPs, saved activation memory and CPU time of one forward(+backward) at resolution x resolution."""
    x = torch.rand(1, model.in_channels, resolution, resolution)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(x)
    flops = counter.get_total_flops() + _scan_flops(model, resolution, resolution)
    counted_ops = {str(op) for ops in counter.get_flop_counts().values() for op in ops}
    if not any("scaled_dot_product" in op for op in counted_ops):  # the CPU flash kernel is not in the counter
        flops += _attention_flops(model, resolution, resolution)
    storages = {}

    def pack(t):
        if isinstance(t, torch.Tensor) and t.device.type != "meta":
            try:
                s = t.untyped_storage()
                storages[s.data_ptr()] = s.nbytes()
            except RuntimeError:
                pass
        return t

    t0 = time.process_time()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = model(x)
    y.square().mean().backward()
    cpu = time.process_time() - t0
    model.zero_grad(set_to_none=True)
    return {
        "resolution": resolution,
        "gflops": flops / 1e9,
        "saved_mib": sum(storages.values()) / 2**20,
        "attn_matrix_mib": _attention_matrix_bytes(model, resolution, resolution) / 2**20,
        "cpu_s": cpu,
    }


def cost_table(models: dict, resolutions, progress: bool = True) -> list:
    """Rows {"model", "parameters", "resolution", ...measure()} for every model and resolution."""
    from tqdm.auto import tqdm

    rows = []
    jobs = [(name, r) for r in resolutions for name in models]
    for name, r in tqdm(jobs, desc="cost", disable=not progress):
        model = models[name]
        rows.append({"model": name, "parameters": sum(p.numel() for p in model.parameters()), **measure(model, r)})
    return rows
