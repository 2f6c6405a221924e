"""Checks shared by the Mamba and Mamba-2 layer tests."""

import torch


def check_reset_separates_packed(layer, d_model: int, split: int = 5, length: int = 11) -> None:
    """A packed row [seq1 | seq2] with reset at seq2's start == each sequence run alone."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(1, length, d_model, generator=g, dtype=torch.float64)
    reset = torch.zeros(1, length, dtype=torch.bool)
    reset[0, split] = True
    with torch.no_grad():
        y, (conv, ssm) = layer(x, reset=reset, return_state=True)
        y1 = layer(x[:, :split])
        y2, (conv2, ssm2) = layer(x[:, split:], return_state=True)
    torch.testing.assert_close(y[:, :split], y1)
    torch.testing.assert_close(y[:, split:], y2)
    torch.testing.assert_close(conv, conv2)
    torch.testing.assert_close(ssm, ssm2)


def check_conv_buffer_is_carried(layer, d_model: int) -> None:
    """Continuation needs the conv buffer: dropping it (zeros) changes the output right after the cut."""
    x = torch.randn(2, 8, d_model, dtype=torch.float64)
    with torch.no_grad():
        full = layer(x)
        _, (conv, ssm) = layer(x[:, :4], return_state=True)
        assert conv.abs().sum() > 0
        y_wrong = layer(x[:, 4:], (torch.zeros_like(conv), ssm))
    assert not torch.allclose(y_wrong[:, 0], full[:, 4])


def check_backends_agree_with_grads(make_layer, d_model: int, length: int = 9) -> None:
    """Layer with the naive op == layer with the fast op: outputs and every parameter gradient."""
    torch.manual_seed(0)
    fast = make_layer("auto").double()
    slow = make_layer("naive").double()
    slow.load_state_dict(fast.state_dict())
    x = torch.randn(2, length, d_model, dtype=torch.float64, requires_grad=True)
    grads = []
    for layer in (fast, slow):
        y = layer(x)
        loss = (y * torch.linspace(-1, 1, y.numel(), dtype=torch.float64).view_as(y)).sum()
        params = [x] + list(layer.parameters())
        grads.append((y, torch.autograd.grad(loss, params)))
    torch.testing.assert_close(grads[0][0], grads[1][0])
    for a, b in zip(grads[0][1], grads[1][1]):
        torch.testing.assert_close(a, b)


def check_float32_step(layer, d_model: int, length: int = 32) -> None:
    x = torch.randn(2, length, d_model)
    with torch.no_grad():
        y = layer(x)
        state = layer.init_state(2)
        outs = []
        for t in range(length):
            y_t, state = layer.step(x[:, t], state)
            outs.append(y_t)
    scale = y.abs().max().item()
    torch.testing.assert_close(torch.stack(outs, 1), y, rtol=1e-4, atol=1e-5 * max(scale, 1.0))


def train_lm_on(
    layer: str,
    layer_kwargs: dict,
    make_example,
    *,
    vocab: int,
    steps: int,
    batch: int = 32,
    d_model: int = 64,
    lr: float = 3e-3,
    seed: int = 0,
) -> float:
    """Train a 2-layer CausalLM on a synthetic seq2seq token task; return accuracy on fresh examples
    (scored where targets != -100)."""

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small model: one thread is faster than two contending OpenMP threads
    try:
        return _train(layer, layer_kwargs, make_example, vocab, steps, batch, d_model, lr, seed)
    finally:
        torch.set_num_threads(threads)


def _train(layer, layer_kwargs, make_example, vocab, steps, batch, d_model, lr, seed) -> float:
    from torchssm.models.lm import CausalLM, LMConfig
    from torchssm.train.optim import build_optimizer

    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    model = CausalLM(LMConfig(layer=layer, d_model=d_model, n_layer=2, vocab_size=vocab, layer_kwargs=layer_kwargs))
    opt = build_optimizer(model, lr=lr, weight_decay=0.1)

    def batch_of(n):
        ex = [make_example(g) for _ in range(n)]
        return torch.stack([e["inputs"] for e in ex]), torch.stack([e["targets"] for e in ex])

    for _ in range(steps):
        x, y = batch_of(batch)
        loss = torch.nn.functional.cross_entropy(model(x).flatten(0, 1), y.flatten(), ignore_index=-100)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    model.eval()
    x, y = batch_of(256)
    with torch.no_grad():
        pred = model(x).argmax(-1)
    mask = y != -100
    return (pred[mask] == y[mask]).float().mean().item()


def check_bf16_autocast(layer, d_model: int, length: int = 40) -> None:
    """Under bf16 autocast: finite outputs close to float32, and the SSM state stays float32."""
    x = torch.randn(2, length, d_model)
    with torch.no_grad():
        ref = layer(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y, state = layer(x, return_state=True)
            _, state = layer.step(x[:, 0], state)
    assert y.dtype == torch.bfloat16 and state[1].dtype == torch.float32
    assert ((y.float() - ref).norm() / ref.norm()).item() < 3e-2


def check_one_token_chunks_take_the_step(layer, d_model: int, length: int = 7) -> None:
    """Chunks of one token with a carried state (no gradients) run the cached fused step: the outputs and
    states equal those of the chunked scan (grad mode, which keeps the scan) and of one call; the cache is
    rebuilt after an in-place parameter change; the layer still deep-copies."""
    import copy

    x = torch.randn(2, length, d_model, dtype=torch.float64)
    with torch.no_grad():
        full = layer(x)
    state, scan_state, outs, scan_outs = layer.init_state(2), layer.init_state(2), [], []
    for t in range(length):
        with torch.no_grad():
            y, state = layer(x[:, t : t + 1], state, return_state=True)  # the step
        y_scan, scan_state = layer(x[:, t : t + 1], scan_state, return_state=True)  # grad on: the scan
        outs.append(y)
        scan_outs.append(y_scan.detach())
        scan_state = tuple(s.detach() for s in scan_state)
    assert "step_function" in layer.__dict__["_derived"]
    torch.testing.assert_close(torch.cat(outs, 1), full)
    torch.testing.assert_close(torch.cat(scan_outs, 1), full)
    for a, b in zip(state, scan_state):
        torch.testing.assert_close(a, b)
    clone = copy.deepcopy(layer)  # the cached closure is not copied
    assert "_derived" not in clone.__dict__
    with torch.no_grad():
        before = layer(x[:, :1], layer.init_state(2))
        layer.out_proj.weight.mul_(2.0)  # in place: the version counter moves
        after = layer(x[:, :1], layer.init_state(2))
        layer.out_proj.weight.div_(2.0)
    torch.testing.assert_close(after, 2.0 * before)
