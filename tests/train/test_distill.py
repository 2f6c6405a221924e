"""Knowledge distillation (train/distill.py): the loss against a float64 reference, the teachers' mean
logits, and a distilled run through torchssm train."""

import pytest
import torch
import torch.nn.functional as F
from _loop_common import config, quiet, toy_task
from safetensors.torch import save_file

import torchssm
from torchssm.data.loaders import TensorDictDataset, iterate_batches
from torchssm.data.registry import TaskInfo
from torchssm.train import distill
from torchssm.train.distill import (
    TEACHER_KEY,
    cached_teacher_logits,
    distillation_loss,
    soft_target_key,
    teacher_logits,
    with_teacher_logits,
)
from torchssm.train.loop import train
from torchssm.train.losses import evaluate, model_loss_and_correct
from torchssm.train.reload import read_run_config


def test_distillation_loss_and_gradient_match_a_float64_reference():
    g = torch.Generator().manual_seed(0)
    student = torch.randn(5, 4, generator=g, dtype=torch.float64, requires_grad=True)  # (b, c)
    teacher = torch.randn(5, 4, generator=g, dtype=torch.float64) * 3
    T = 2.5
    loss = distillation_loss(student, teacher, T)
    loss.backward()
    p = torch.softmax(teacher / T, -1)  # (b, c) soft targets
    q = torch.softmax(student.detach() / T, -1)
    reference = T**2 * (p * (p.log() - q.log())).sum(-1).mean()
    torch.testing.assert_close(loss.double(), reference, rtol=1e-6, atol=1e-6)  # computed in float32
    torch.testing.assert_close(student.grad, T * (q - p) / 5, rtol=1e-5, atol=1e-6)  # d/ds of T^2 KL = T (q - p) / b
    assert float(distillation_loss(teacher, teacher, T)) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match=r"teacher logits \(5, 3\) do not match the student's \(5, 4\)"):
        distillation_loss(student, teacher[:, :3], T)


def test_model_loss_mixes_the_labels_and_the_soft_targets():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))
    x, y = torch.randn(8, 4, 3), torch.randint(0, 3, (8,))
    soft = torch.randn(8, 3)
    info = TaskInfo(name="toy", d_input=3, d_output=3, length=4)
    batch = {"inputs": x, "targets": y, TEACHER_KEY: soft}
    loss, correct, n = model_loss_and_correct(model, batch, info, (3.0, 0.75))
    logits = model(x)
    expected = 0.25 * F.cross_entropy(logits, y) + 0.75 * distillation_loss(logits, soft, 3.0)
    torch.testing.assert_close(loss, expected)
    assert int(correct) == int((logits.argmax(-1) == y).sum()) and n == 8
    plain, _, _ = model_loss_and_correct(model, batch, info)  # no distillation asked: the labels only
    torch.testing.assert_close(plain, F.cross_entropy(logits, y))


def test_teacher_logits_are_the_mean_of_the_teachers_outputs(tmp_path):
    task = toy_task()
    teachers = []
    for seed in (0, 1):
        out = tmp_path / f"teacher{seed}"
        train(config(out, f"train.seed={seed}", "train.epochs=1"), task=task, log=quiet)
        teachers.append(str(out))
    each = []
    for teacher in teachers:
        model = torchssm.from_pretrained(read_run_config(teacher)[0]).eval()  # the checkpoint its run chose
        with torch.no_grad():
            each.append(torch.cat([model(b["inputs"]) for b in iterate_batches(task.train, 40)]))
    lines = []
    one = teacher_logits(teachers[:1], task.train, task.info, batch_size=32, log=lines.append)
    torch.testing.assert_close(one, each[0])
    both = teacher_logits(teachers, task.train, task.info, batch_size=32, log=quiet)
    torch.testing.assert_close(both, (each[0] + each[1]) / 2)
    assert "1 teacher(s) scored 96 training examples" in lines[0]
    other = TaskInfo(name="other", d_input=3, d_output=3, length=6)
    with pytest.raises(ValueError, match="trained on task 'toy'; the student's is 'other'"):
        teacher_logits(teachers, task.train, other)
    regression = TaskInfo(name="toy", d_input=3, d_output=1, length=6, kind="regression")
    with pytest.raises(ValueError, match="needs a classification task"):
        teacher_logits(teachers, task.train, regression)
    with pytest.raises(ValueError, match="5 teacher logits for 96 examples"):
        with_teacher_logits(task.train, one[:5])
    data = with_teacher_logits(task.train, one)
    assert isinstance(data, TensorDictDataset) and torch.equal(data[3][TEACHER_KEY], one[3])


def test_a_distilled_run(tmp_path):
    """Weight 0 trains exactly as without teachers (nothing else moves: seeds, batches); weight 0.9 trains
    another model, whose val/test losses are still the plain cross-entropy."""
    task = toy_task()
    teacher = tmp_path / "teacher"
    train(config(teacher, "train.seed=5"), task=task, log=quiet)
    plain = train(config(tmp_path / "plain"), task=task, log=quiet)
    teachers = f"train.distill_from=[{teacher}]"
    zero = train(config(tmp_path / "zero", teachers, "train.distill_weight=0.0"), task=task, log=quiet)
    strip = lambda r: {k: v for k, v in r.items() if k != "time_s"}  # noqa: E731
    assert [strip(r) for r in zero.history] == [strip(r) for r in plain.history]
    lines = []
    out = tmp_path / "distilled"
    cfg = config(out, teachers, "train.distill_temperature=2")
    assert cfg.train.distill_from == [str(teacher)] and cfg.train.distillation == (2.0, 0.9)
    distilled = train(cfg, task=task, log=lines.append)
    assert any("distillation: 1 teacher(s) scored 96 training examples" in line for line in lines)
    assert distilled.history[-1]["train_loss"] != plain.history[-1]["train_loss"]
    model = torchssm.from_pretrained(out / "last")
    assert evaluate(model, task.val, task.info)["loss"] == pytest.approx(distilled.history[-1]["val_loss"], rel=1e-5)


def test_cached_teacher_logits_are_scored_once(tmp_path, monkeypatch):
    """The first call scores and keeps the logits; the same teachers and data read them back to the bit;
    other data or other teachers get another key; damaged or misshapen files are one-line errors."""
    task = toy_task()
    teachers = []
    for seed in (0, 1):
        teachers.append(str(tmp_path / f"teacher{seed}"))
        train(config(teachers[-1], f"train.seed={seed}", "train.epochs=1"), task=task, log=quiet)
    cache, lines = tmp_path / "cache", []
    first = cached_teacher_logits(teachers, task.train, task.info, cache, batch_size=32, log=lines.append)
    torch.testing.assert_close(first, teacher_logits(teachers, task.train, task.info, batch_size=32, log=quiet))
    (kept,) = cache.glob("teacher_logits_*.safetensors")
    assert kept.name == f"teacher_logits_{soft_target_key(teachers, task.train, task.info)}.safetensors"
    assert f"kept at {kept}" in lines[-1]

    def no_scoring(*args, **kwargs):
        raise AssertionError("the teachers were scored again")

    monkeypatch.setattr(distill, "teacher_logits", no_scoring)
    lines.clear()
    again = cached_teacher_logits(teachers, task.train, task.info, cache, log=lines.append)
    assert torch.equal(again, first) and f"logits of 96 training examples read from {kept}" in lines[-1]

    key = soft_target_key(teachers, task.train, task.info)
    assert soft_target_key(teachers[:1], task.train, task.info) != key  # other teachers
    assert soft_target_key(teachers[::-1], task.train, task.info) != key  # their order (the float sum's)
    assert soft_target_key(teachers, task.train.subset(slice(0, 95)), task.info) != key  # other data
    moved = TensorDictDataset(**{**task.train.tensors, "inputs": task.train.tensors["inputs"] + 1e-6})
    assert soft_target_key(teachers, moved, task.info) != key
    with pytest.raises(ValueError, match="needs a training set held in tensors; list is not"):
        soft_target_key(teachers, [task.train[0]], task.info)
    save_file({"logits": torch.zeros(3, 3)}, str(kept))
    with pytest.raises(ValueError, match=r"holds logits \(3, 3\), expected \(96, 3\); delete it"):
        cached_teacher_logits(teachers, task.train, task.info, cache)
    kept.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="cannot read cached teacher logits .*; delete it"):
        cached_teacher_logits(teachers, task.train, task.info, cache)


def test_students_sharing_teachers_score_them_once(tmp_path):
    """train.distill_cache: the second student reads the first one's logits and, with the same seed,
    trains exactly as the first."""
    task = toy_task()
    teacher = tmp_path / "teacher"
    train(config(teacher, "train.seed=5", "train.epochs=1"), task=task, log=quiet)
    runs, logs = [], []
    for name in ("first", "second"):
        lines: list[str] = []
        cfg = config(tmp_path / name, f"train.distill_from=[{teacher}]", f"train.distill_cache={tmp_path / 'cache'}")
        runs.append(train(cfg, task=task, log=lines.append))
        logs.append(lines)
    assert any("1 teacher(s) scored 96 training examples" in line for line in logs[0])
    assert not any("scored" in line for line in logs[1]) and any("read from" in line for line in logs[1])
    strip = lambda r: {k: v for k, v in r.items() if k != "time_s"}  # noqa: E731
    assert [strip(r) for r in runs[1].history] == [strip(r) for r in runs[0].history]


@pytest.mark.parametrize(
    "override,message",
    [
        ("train.distill_temperature=0", "distill_temperature must be a positive number"),
        ("train.distill_weight=1.5", r"distill_weight must be a weight in \[0, 1\]"),
    ],
)
def test_bad_distillation_settings_are_one_line(tmp_path, override, message):
    with pytest.raises(ValueError, match=message):
        config(tmp_path, override)
    with pytest.raises(ValueError, match="does not combine with train.tbptt_chunk"):
        config(tmp_path, "train.distill_from=[a]", "train.tbptt_chunk=4")
    with pytest.raises(ValueError, match="train.distill_cache needs train.distill_from"):
        config(tmp_path, "train.distill_cache=cache")
