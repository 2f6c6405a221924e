"""The training loss applies the output head to the scored steps only (``DeepSSM.logits_at`` through
``model_loss_and_correct``): the same loss, gradients and correct count as the full output, in float64;
batches where every step is scored, and other models, take the plain call."""

import pytest
import torch

from torchssm.data import build_task
from torchssm.data.loaders import iterate_batches
from torchssm.models import build_model
from torchssm.models.config import ModelConfig
from torchssm.train.config import TrainConfig
from torchssm.train.distributed import DistContext
from torchssm.train.epoch import train_step
from torchssm.train.losses import evaluate, forward_batch, loss_and_correct, model_loss_and_correct


def mqar_setup(layer="mamba"):
    task = build_task("mqar", length=32, vocab_size=64, num_kv_pairs=4, n_train=8, n_val=4, n_test=4)
    torch.manual_seed(0)
    model = build_model(
        ModelConfig(
            layer=layer,
            d_model=8,
            n_layers=2,
            d_input=task.info.d_input,
            d_output=task.info.d_output,
            input_kind="tokens",
            norm="layer",
            pooling="none",
            layer_kwargs={"d_state": 4},
        )
    ).double()
    batch = next(iter(iterate_batches(task.train, 8)))
    return model, task, batch


def grads(model):
    out = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    return out


@pytest.mark.parametrize("layer", ["mamba", "s4d"])
def test_scored_rows_give_the_full_outputs_loss_gradients_and_accuracy(layer):
    model, task, batch = mqar_setup(layer)
    info = task.info
    scored = batch["targets"] != info.ignore_index
    assert 0 < int(scored.sum()) < scored.numel()  # MQAR scores the queries only: the fast path is taken
    ref_loss, ref_c, ref_n = loss_and_correct(forward_batch(model, batch), batch["targets"], info)
    ref_loss.backward()
    ref_grads = grads(model)
    loss, c, n = model_loss_and_correct(model, batch, info)
    loss.backward()
    torch.testing.assert_close(loss, ref_loss)
    for g, r in zip(grads(model), ref_grads):
        torch.testing.assert_close(g, r)
    assert (int(c), n) == (int(ref_c), ref_n) and n == int(scored.sum())
    # the logits themselves are the full output's rows
    torch.testing.assert_close(model.logits_at(batch["inputs"], scored), model(batch["inputs"])[scored])


def test_a_trained_model_counts_the_same_correct_predictions():
    model, task, batch = mqar_setup()
    with torch.no_grad():  # bias the head toward the targets so that some, not all, predictions are right
        model.head.bias[batch["targets"][batch["targets"] >= 0][:5]] += 50.0
    _, ref_c, _ = loss_and_correct(forward_batch(model, batch), batch["targets"], task.info)
    _, c, n = model_loss_and_correct(model, batch, task.info)
    assert 0 < int(c) == int(ref_c) < n


def test_every_step_scored_or_another_model_takes_the_plain_call(monkeypatch):
    model, task, batch = mqar_setup()

    def fail(*args, **kwargs):
        raise AssertionError("logits_at must not be used here")

    monkeypatch.setattr(model, "logits_at", fail)
    full = dict(batch, targets=torch.randint(0, task.info.d_output, batch["targets"].shape))
    loss, c, n = model_loss_and_correct(model, full, task.info)
    ref = loss_and_correct(forward_batch(model, full), full["targets"], task.info)
    assert loss.item() == ref[0].item() and int(c) == int(ref[1]) and n == full["targets"].numel()
    wrapped = Wrapper(model)  # as DDP / torch.compile: its own forward must run
    loss, _, _ = model_loss_and_correct(wrapped, batch, task.info)
    assert loss.item() == loss_and_correct(forward_batch(model, batch), batch["targets"], task.info)[0].item()


class Wrapper(torch.nn.Module):
    def __init__(self, module):
        super().__init__()
        self.module = module

    def forward(self, inputs):
        return self.module(inputs)


def test_train_step_and_evaluate_use_it_with_the_same_numbers():
    model, task, batch = mqar_setup()
    info = task.info
    tc = TrainConfig(batch_size=8, grad_accum=2)
    calls = []
    logits_at = model.logits_at
    model.logits_at = lambda *a: calls.append(1) or logits_at(*a)  # type: ignore[method-assign]
    loss, correct, n, _ = train_step(model, batch, info, tc, DistContext(), torch.device("cpu"))
    got = grads(model)
    ref_loss, _, ref_n = loss_and_correct(forward_batch(model, batch), batch["targets"], info)
    ref_loss.backward()  # one mean over the whole batch: the two micro-batches' weighted sum
    for g, r in zip(got, grads(model)):
        torch.testing.assert_close(g, r)
    torch.testing.assert_close(loss, ref_loss.detach())
    assert n == ref_n and len(calls) == 2  # one per micro-batch
    ev = evaluate(model, task.test, info, batch_size=3)
    assert len(calls) == 4  # two evaluation batches
    test_batch = next(iter(iterate_batches(task.test, 4)))
    with torch.no_grad():
        ref = loss_and_correct(forward_batch(model, test_batch), test_batch["targets"], info)
    assert ev["n"] == ref[2]
    torch.testing.assert_close(ev["loss"], float(ref[0]))
    assert ev["acc"] == int(ref[1]) / ref[2]


def test_logits_at_refuses_a_pooled_model_and_a_wrong_mask():
    model, _, batch = mqar_setup()
    with pytest.raises(ValueError, match="bool tensor of shape"):
        model.logits_at(batch["inputs"], (batch["targets"] >= 0)[:, :3])
    with pytest.raises(ValueError, match="bool tensor of shape"):
        model.logits_at(batch["inputs"], batch["targets"])
    pooled = build_model(ModelConfig(layer="s4d", d_model=8, n_layers=1, d_input=4, d_output=3, pooling="mean"))
    with pytest.raises(ValueError, match="per-step model"):
        pooled.logits_at(torch.randn(2, 5, 4), torch.ones(2, 5, dtype=torch.bool))


def tied_model(**kw):
    cfg = dict(layer="s4d", d_model=8, n_layers=1, d_input=64, d_output=64, input_kind="tokens", pooling="none")
    return build_model(ModelConfig(**{**cfg, **kw, "tie_embeddings": True}))


def test_tied_head_reads_the_embedding_and_keeps_it_through_save_and_load(tmp_path):
    from torchssm.models.pretrained import from_pretrained

    torch.manual_seed(0)
    model = tied_model()
    assert model.head.weight is model.encoder.weight
    assert abs(float(model.encoder.weight.detach().std()) - 0.02) < 0.002  # GPT-2 / mamba_ssm's N(0, 0.02), 512 values
    x = torch.randint(0, 64, (2, 5))
    feats = model.features(x)
    torch.testing.assert_close(model(x), feats @ model.encoder.weight.T + model.head.bias)
    model.save_pretrained(tmp_path / "m")
    with torch.no_grad():
        model.encoder.weight.add_(1.0)  # the loaded copy must not come from this one
    loaded = from_pretrained(tmp_path / "m")
    assert loaded.head.weight is loaded.encoder.weight
    torch.testing.assert_close(loaded.encoder.weight, model.encoder.weight - 1.0)
    assert sum(p.numel() for p in loaded.parameters()) == sum(p.numel() for p in model.parameters())


def test_tied_head_with_the_scored_rows_gives_the_full_gradients():
    _, task, batch = mqar_setup()
    torch.manual_seed(0)
    model = tied_model(d_input=task.info.d_input, d_output=task.info.d_output).double()
    ref = loss_and_correct(forward_batch(model, batch), batch["targets"], task.info)[0]
    ref.backward()
    ref_grads = grads(model)
    model_loss_and_correct(model, batch, task.info)[0].backward()
    for g, r in zip(grads(model), ref_grads):
        torch.testing.assert_close(g, r)


@pytest.mark.parametrize("kw", [{"input_kind": "real"}, {"d_output": 10}, {"paired": True, "pooling": "mean"}], ids=str)
def test_tied_head_needs_one_token_vocabulary_in_and_out(kw):
    with pytest.raises(ValueError, match="tie_embeddings needs token inputs and outputs over one vocabulary"):
        tied_model(**kw)
