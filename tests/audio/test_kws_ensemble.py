"""audio.kws.ensemble_accuracy: the mean of several keyword-spotting checkpoints' logits (or probabilities);
accuracy_by_ensemble_size: every ensemble of k of them."""

import itertools

import pytest
import torch

TASK = {"name": "spoken_commands", "n_train": 10, "n_val": 0, "n_test": 30, "features": "logmel", "n_mels": 8}


def _train(tmp_path, name: str, seed: int, **task) -> str:
    from torchssm.train.config import ExperimentConfig
    from torchssm.train.loop import train

    cfg = ExperimentConfig.from_dict(
        {
            "task": {**TASK, "voice_split": "speakers", **task},
            "model": {"layer": "s4d", "d_model": 8, "n_layers": 1, "pooling": "mean"},
            "train": {"epochs": 1, "batch_size": 10, "seed": seed, "out_dir": str(tmp_path / name), "progress": False},
        }
    )
    train(cfg, data_dir=tmp_path, log=lambda s: None)
    return str(tmp_path / name / "last")


def _reference(checkpoints, data_dir, average: str, snr_db=None) -> dict:
    """The ensemble's accuracies computed here: each run rebuilt by load_run, its float64 logits, their mean."""
    from torchssm.audio.kws import voice_groups
    from torchssm.train.reload import load_run

    overrides = {"n_train": 1, "n_val": 0} | ({} if snr_db is None else {"snr_db": snr_db})
    runs = [load_run(c, data_dir=data_dir, **overrides) for c in checkpoints]
    x, y = (runs[0].task.test.tensors[k] for k in ("inputs", "targets"))
    with torch.no_grad():
        logits = torch.stack([run.model.double()(x.double()) for run in runs])
    scores = logits.mean(0) if average == "logits" else logits.softmax(-1).mean(0)
    correct = scores.argmax(-1) == y
    out = {"all": correct.double().mean().item()}
    for group, idx in voice_groups(len(y), voice_split="speakers").items():
        out[group] = correct[idx].double().mean().item()
    return out


@pytest.mark.slow  # four tiny training runs (1 epoch of 10 clips) and their evaluations: 4-12 s (load 0.5-5)
def test_ensemble_accuracy(tmp_path, heard_voices, capsys):
    from torchssm.audio.kws import ensemble_accuracy, snr_sweep_by_family
    from torchssm.train.losses import evaluate
    from torchssm.train.reload import load_run

    a, b = _train(tmp_path, "a", seed=0), _train(tmp_path, "b", seed=1)
    c = _train(tmp_path, "c", seed=2, n_train=20, speed_perturb=[1.1])  # other training clips, the same test clips
    for average in ("logits", "probs"):
        r = ensemble_accuracy([a, b, c], average=average, data_dir=tmp_path)
        ref = _reference([a, b, c], tmp_path, average)
        assert r["ensemble"].keys() == ref.keys() and "test_only" in ref
        for group, acc in ref.items():
            assert r["ensemble"][group] == pytest.approx(acc, abs=1e-12)
        for checkpoint, member in zip([a, b, c], r["members"]):  # each member as the training loop scores it
            run = load_run(checkpoint, data_dir=tmp_path, n_train=1, n_val=0)
            assert member["all"] == evaluate(run.model, run.task.test, run.task.info)["acc"]
    one = ensemble_accuracy([a], snr_db=0.0, data_dir=tmp_path)  # an ensemble of one model is that model
    assert one["ensemble"] == one["members"][0] == snr_sweep_by_family(a, [0.0], data_dir=tmp_path)[0.0]
    assert one["ensemble"]["all"] == pytest.approx(_reference([a], tmp_path, "logits", snr_db=0.0)["all"], abs=1e-12)

    from torchssm.cli import main

    assert main(["speech", "kws-ensemble", "--checkpoints", a, b, c, "--data-dir", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    r = ensemble_accuracy([a, b, c], data_dir=tmp_path, by_size=True)
    assert lines[0].startswith(f"ensemble: test accuracy {r['ensemble']['all']:.4f} (")
    assert [line.split(": test accuracy")[0] for line in lines[1:]] == [a, b, c] and "test_only" in lines[0]
    # by size: ensembles of one are the members, the ensemble of all three is the ensemble
    assert r["by_size"][1]["mean"] == pytest.approx(sum(m["all"] for m in r["members"]) / 3, abs=1e-12)
    assert r["by_size"][3] == {
        "mean": r["ensemble"]["all"],
        "min": r["ensemble"]["all"],
        "max": r["ensemble"]["all"],
        "ensembles": 1,
    }
    figure = tmp_path / "by_size.png"
    args = ["speech", "kws-ensemble", "--checkpoints", a, b, c, "--by-size", "--figure", str(figure)]
    assert main([*args, "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"2 model(s), 3 ensemble(s): mean {r['by_size'][2]['mean']:.4f}" in out and figure.stat().st_size > 0
    assert main(["speech", "kws-ensemble", "--checkpoints", a, "--figure", str(figure)]) == 2
    assert "give --by-size too" in capsys.readouterr().err

    other = _train(tmp_path, "d", seed=0, n_test=20)  # other test clips: no common test set
    with pytest.raises(ValueError, match="tested on other clips"):
        ensemble_accuracy([a, other], data_dir=tmp_path)
    assert main(["speech", "kws-ensemble", "--checkpoints", a, other, "--data-dir", str(tmp_path)]) == 2
    assert "tested on other clips" in capsys.readouterr().err  # one line, no traceback
    with pytest.raises(ValueError, match="average must be one of"):
        ensemble_accuracy([a], average="median", data_dir=tmp_path)
    with pytest.raises(ValueError, match="non-empty list"):
        ensemble_accuracy([], data_dir=tmp_path)
    with pytest.raises(ValueError, match="non-empty list"):
        ensemble_accuracy(a, data_dir=tmp_path)  # one path, not a list of them
    with pytest.raises(ValueError, match="by_size scores every subset: at most 16 checkpoints, got 17"):
        ensemble_accuracy([a] * 17, by_size=True, data_dir=tmp_path)


def test_accuracy_by_ensemble_size_on_hand_made_logits(tmp_path):
    """Three members, four clips of two classes: each subset's accuracy worked out by hand."""
    from torchssm.audio.kws import accuracy_by_ensemble_size, plot_accuracy_by_ensemble_size

    targets = torch.tensor([0, 0, 1, 1])
    logits = torch.tensor(  # (members, clips, classes); right: member 0 on clips 0-1, member 1 on 0-2, member 2 on 1-3
        [
            [[1.5, 0.0], [1.5, 0.0], [1.5, 0.0], [1.5, 0.0]],
            [[1.0, 0.0], [1.0, 0.0], [0.0, 2.0], [1.0, 0.0]],
            [[0.0, 4.0], [1.0, 0.0], [0.0, 1.0], [0.0, 2.0]],
        ]
    )
    by_size = accuracy_by_ensemble_size(logits, targets)
    # summed logits of the pairs: {0,1} classes 0,0,1,0 -> 3/4; {0,2} 1,0,0,1 -> 2/4; {1,2} 1,0,1,1 -> 3/4
    # all three: (2.5, 4) (3.5, 0) (1.5, 3) (2.5, 2) -> 1,0,1,0 -> 2/4 (no ties anywhere)
    assert by_size[1] == {"mean": pytest.approx(2 / 3), "min": 0.5, "max": 0.75, "ensembles": 3}
    assert by_size[2] == {"mean": pytest.approx(2 / 3), "min": 0.5, "max": 0.75, "ensembles": 3}
    assert by_size[3] == {"mean": 0.5, "min": 0.5, "max": 0.5, "ensembles": 1}
    for members in itertools.combinations(range(3), 2):  # the probability average is its own rule
        probs = accuracy_by_ensemble_size(logits[list(members)], targets, average="probs")
        manual = (logits[list(members)].softmax(-1).mean(0).argmax(-1) == targets).double().mean().item()
        assert probs[2]["mean"] == pytest.approx(manual)
    path = plot_accuracy_by_ensemble_size(by_size, tmp_path / "curve.png")
    assert (tmp_path / "curve.png").stat().st_size > 0 and path.endswith("curve.png")
    with pytest.raises(ValueError, match="expected logits"):
        accuracy_by_ensemble_size(logits, targets[:3])
    with pytest.raises(ValueError, match="expected 1 to 16 members"):
        accuracy_by_ensemble_size(torch.zeros(17, 4, 2), targets)
    with pytest.raises(ValueError, match="average must be one of"):
        accuracy_by_ensemble_size(logits, targets, average="median")
    with pytest.raises(ValueError, match="must end in"):
        plot_accuracy_by_ensemble_size(by_size, tmp_path / "curve.txt")
