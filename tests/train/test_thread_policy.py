"""train.threads = 0 (the default) runs with the thread policy torchssm.cpu_threads.auto_cpu_threads
(docs/benchmarks.md, "Thread policy"), and restores the caller's threads afterwards."""

import torch
from _loop_common import config, quiet, toy_task  # the toy task and its config

from torchssm.models import build_model
from torchssm.train.config import TrainConfig


def test_default_threads_follow_the_policy_and_are_restored(tmp_path, monkeypatch):
    import torchssm.train.loop as loop

    assert TrainConfig().threads == 0
    before = torch.get_num_threads()
    wanted = 1 if before > 1 else 2  # differs from the current count, so the test can fail
    monkeypatch.setattr(loop, "auto_cpu_threads", lambda: wanted)
    seen = []

    def builder(cfg):
        model = build_model(cfg)
        model.register_forward_hook(lambda *args: seen.append(torch.get_num_threads()))
        return model

    cfg = config(tmp_path, "train.epochs=1", "train.threads=0")
    loop.train(cfg, task=toy_task(), model_builder=builder, log=quiet)
    assert seen and set(seen) == {wanted}
    assert torch.get_num_threads() == before
