"""Moving-digits clips (determinism, cache, the event, bad arguments) and the Selective S5 model (token
selection, straight-through gradient to the mask generator, momentum teacher, LSMCL, the runner)."""

import pytest
import torch

from torchssm.vision.selective_s5 import SelectiveS5
from torchssm.vision.video import DIGIT, MovingDigits, bounce


@pytest.fixture
def clips(tmp_path):
    return MovingDigits(12, 64, 12, data_dir=tmp_path, seed=3)


def test_clips_are_deterministic_cached_and_show_the_event(clips, tmp_path):
    assert len(list((tmp_path / "moving_digits").glob("*.npz"))) == 1  # specs cached, no temp files left
    again = MovingDigits(12, 64, 12, data_dir=tmp_path, seed=3)
    torch.testing.assert_close(again.render(range(12)), clips.render(range(12)))
    fresh = MovingDigits(12, 64, 12, seed=3, cache=False)
    torch.testing.assert_close(fresh.render([5]), clips.render([5]))  # the cache holds what the seed draws
    x = clips.render(range(12))  # (12, 64, 12, 12)
    ev = clips.event_mask(range(12))  # (12, 64)
    assert x.shape == (12, 64, 12, 12) and bool((ev.sum(1) == 4).all())
    assert bool((ev.float().argmax(1) < 0.1 * 64).all())  # the event is early
    # the flash: every event frame is brighter everywhere than any other frame of its clip
    dark = x.amin((2, 3))  # (12, 64)
    assert bool((dark[ev] >= 0.5).all()) and bool((dark[~ev] == 0).all())
    # the event digit is of another class than the base digit, and it is the label
    from torchssm.vision.video import _digit_pool

    pool_labels = _digit_pool("train")[1].numpy()
    assert (pool_labels[clips.specs.event] == clips.specs.labels).all()
    assert (pool_labels[clips.specs.base] != clips.specs.labels).all()


def test_bounce_stays_on_the_canvas_and_reflects():
    pos = bounce(torch.tensor([[0, 4]]), torch.tensor([[1, 1]]), 12, 4)[0]
    assert pos[:, 0].tolist() == [0, 1, 2, 3, 4, 3, 2, 1, 0, 1, 2, 3]
    assert pos[:, 1].tolist()[:3] == [4, 3, 2] and int(pos.max()) <= 12 - DIGIT


def test_bad_clip_arguments():
    with pytest.raises(ValueError, match="canvas"):
        MovingDigits(4, 64, 6, cache=False)
    with pytest.raises(ValueError, match="event"):
        MovingDigits(4, 20, 12, event_window=0.1, cache=False)  # 4 event frames do not fit in 2
    with pytest.raises(ValueError, match="split"):
        MovingDigits(4, 64, 12, split="val", cache=False)


def test_selection_keeps_k_tokens_in_order_and_trains_the_mask_generator(clips):
    torch.manual_seed(0)
    model = SelectiveS5(144, 10, d_model=16, n_layers=1, layer_kwargs={"d_state": 4}, keep=0.25)
    x = clips.render(range(4))
    logits, idx = model(x, return_selection=True)
    assert logits.shape == (4, 10) and idx.shape == (4, 16)
    assert bool((idx[:, 1:] > idx[:, :-1]).all())  # distinct, temporal order
    logits.sum().backward()
    assert model.mask_generator[0].weight.grad.abs().sum() > 0  # straight-through weights reach the scores
    assert all(p.grad is None for p in model.teacher.parameters())
    model.eval()  # no Gumbel noise: deterministic, the top-K of the scores
    torch.testing.assert_close(model(x), model(x))


def test_momentum_teacher_follows_the_student():
    torch.manual_seed(0)
    model = SelectiveS5(16, 3, d_model=8, n_layers=1, layer_kwargs={"d_state": 4}, momentum=0.9)
    t0 = model.teacher["encoder"][0].weight.clone()
    with torch.no_grad():
        model.encoder[0].weight.add_(1.0)
    model.update_teacher()
    torch.testing.assert_close(model.teacher["encoder"][0].weight, t0 + 0.1)


def test_lsmcl_loss_and_bad_input(clips):
    torch.manual_seed(0)
    model = SelectiveS5(144, 10, d_model=16, n_layers=1, layer_kwargs={"d_state": 4})
    loss = model.lsmcl_loss(clips.render(range(6)), generator=torch.Generator().manual_seed(0))
    assert loss.ndim == 0 and 0 < float(loss.detach())
    loss.backward()
    assert model.projector[0].weight.grad is not None and model.encoder[0].weight.grad is not None
    with pytest.raises(ValueError, match="batch >= 2"):
        model.lsmcl_loss(clips.render([0]))
    with pytest.raises(ValueError, match="144 pixels"):
        model(torch.rand(2, 8, 10, 10))
    with pytest.raises(ValueError, match="keep"):
        SelectiveS5(144, 10, keep=0.0)


def test_runner(tmp_path):
    from torchssm.vision.video_task import run_video_experiment

    res = run_video_experiment(
        tmp_path / "run",
        frames=48,
        n_train=16,
        n_test=8,
        d_model=8,
        d_state=4,
        pretrain_steps=2,
        steps=2,
        batch=4,
        throughput_frames=(32,),
        data_dir=tmp_path,
        progress=False,
    )
    assert set(res["arms"]) == {"s5", "s5_lsmcl", "s4_all"} and (tmp_path / "run" / "results.json").exists()
    assert res["arms"]["s4_all"]["kept_fraction"] == 1.0 and res["arms"]["s4_all"]["event_recall"] == 1.0
    assert res["arms"]["s5"]["kept_fraction"] == 0.25 and "pretrain" in res["arms"]["s5_lsmcl"]
    assert {r["model"] for r in res["throughput"]} >= {"transformer (all frames)"}
