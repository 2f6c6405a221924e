"""Warm-up + cosine schedule: exact values, group ratios kept, state round trip."""

import math

import pytest
import torch

from torchssm.train.schedule import WarmupCosine, build_scheduler


def test_values():
    f = WarmupCosine(total_steps=14, warmup_steps=4, min_ratio=0.1)
    assert [f(s) for s in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])  # linear warm-up
    # cosine from 1 at step 4 to min_ratio at the last step (13)
    assert f(4) == pytest.approx(1.0)
    assert f(13) == pytest.approx(0.1)
    mid = 4 + (13 - 4) / 2
    assert f(int(mid)) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (int(mid) - 4) / 9)))
    values = [f(s) for s in range(4, 14)]
    assert all(a >= b for a, b in zip(values, values[1:]))  # monotone decay
    assert f(100) == pytest.approx(0.1)  # clamped past the end


def test_no_warmup_and_bad_args():
    f = WarmupCosine(total_steps=3)
    assert [f(s) for s in range(3)] == pytest.approx([1.0, 0.5, 0.0])
    with pytest.raises(ValueError, match="total_steps"):
        WarmupCosine(0)
    with pytest.raises(ValueError, match="warmup_steps"):
        WarmupCosine(5, warmup_steps=6)


def test_scheduler_keeps_group_ratios_and_round_trips():
    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([{"params": [a], "lr": 1.0}, {"params": [b], "lr": 0.5}], lr=1.0)
    sched = build_scheduler(opt, total_steps=10, warmup_steps=2)
    lrs = []
    for _ in range(6):
        lrs.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx([0.5, 0.25]) and lrs[1] == pytest.approx([1.0, 0.5])
    assert all(x[1] == pytest.approx(x[0] * 0.5) for x in lrs)
    opt2 = torch.optim.AdamW([{"params": [a], "lr": 1.0}, {"params": [b], "lr": 0.5}], lr=1.0)
    sched2 = build_scheduler(opt2, total_steps=10, warmup_steps=2)
    sched2.load_state_dict(sched.state_dict())
    opt2.load_state_dict(opt.state_dict())
    assert [g["lr"] for g in opt2.param_groups] == [g["lr"] for g in opt.param_groups]
    sched.step(), sched2.step()
    assert [g["lr"] for g in opt2.param_groups] == [g["lr"] for g in opt.param_groups]
