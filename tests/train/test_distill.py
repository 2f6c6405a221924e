"""Knowledge distillation (train/distill.py): the loss against a float64 reference, the teachers' mean
logits, and a distilled run through torchssm train."""

import pytest
import torch
import torch.nn.functional as F
from _loop_common import config, quiet, toy_task

import torchssm
from torchssm.data.loaders import TensorDictDataset, iterate_batches
from torchssm.data.registry import TaskInfo
from torchssm.train.distill import TEACHER_KEY, distillation_loss, teacher_logits, with_teacher_logits
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


@pytest.mark.parametrize(
    "override,message",
    [
        ("train.distill_temperature=0", "distill_temperature must be a positive number"),
        ("train.distill_weight=1.5", r"distill_weight must be in \[0, 1\]"),
    ],
)
def test_bad_distillation_settings_are_one_line(tmp_path, override, message):
    with pytest.raises(ValueError, match=message):
        config(tmp_path, override)
    with pytest.raises(ValueError, match="does not combine with train.tbptt_chunk"):
        config(tmp_path, "train.distill_from=[a]", "train.tbptt_chunk=4")
