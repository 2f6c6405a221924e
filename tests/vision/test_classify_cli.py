"""Patch tokens equal the patch embedding, the deep model runs every 2-D layer, a short training run
learns digits, and the `torchssm vision` commands work end to end on tiny settings."""

import json

import pytest
import torch

from torchssm.vision.classify import build_classifier, patch_tokens, run_classification
from torchssm.vision.patch import PatchEmbed


def test_patch_tokens_are_the_patch_embedding_as_a_linear_map():
    torch.manual_seed(0)
    images = torch.randn(2, 3, 8, 12)
    emb = PatchEmbed(3, 5, patch_size=4)
    tokens = patch_tokens(images, 4)  # (2, 6, 48)
    assert tokens.shape == (2, 6, 48)
    linear = tokens @ emb.proj.weight.reshape(5, -1).T + emb.proj.bias  # (2, 6, 5)
    torch.testing.assert_close(linear, emb(images).reshape(2, 6, 5))
    with pytest.raises(ValueError, match="not divisible by the patch size 5"):
        patch_tokens(images, 5)


@pytest.mark.parametrize(
    "layer,kwargs",
    [
        ("cross_scan", {"mixer": "mamba", "share": True, "mixer_kwargs": {"d_state": 4}}),
        ("spatial_mamba", {}),
        ("s4nd", {"d_state": 4}),
    ],
)
def test_deep_model_with_2d_layers(layer, kwargs):
    model = build_classifier({"layer": layer, "d_model": 8, "layer_kwargs": kwargs}, 4, 3, (4, 4))
    assert model(torch.randn(2, 16, 4)).shape == (2, 3)


def test_shared_cross_scan_has_the_parameters_of_the_raster_layer():
    spec = {"layer_kwargs": {"d_state": 4}, "d_model": 8}
    raster = build_classifier({"layer": "mamba", **spec}, 4, 3, (4, 4))
    scan2d = build_classifier(
        {
            "layer": "cross_scan",
            "d_model": 8,
            "layer_kwargs": {"mixer": "mamba", "share": True, "mixer_kwargs": {"d_state": 4}},
        },
        4,
        3,
        (4, 4),
    )
    assert sum(p.numel() for p in raster.parameters()) == sum(p.numel() for p in scan2d.parameters())


def test_short_run_learns_digits(tmp_path):
    pytest.importorskip("sklearn")
    specs = {"sm": {"layer": "spatial_mamba", "d_model": 16, "layer_kwargs": {"d_state": 1}}}
    res = run_classification(tmp_path, specs, data="digits", patch=2, steps=150, batch=32, lr=5e-3, progress=False)
    assert res["models"]["sm"]["test_accuracy"] > 0.5  # 10 classes: chance is 0.1
    assert json.loads((tmp_path / "results.json").read_text())["models"]["sm"]["parameters"] > 0


def test_cli_cost_and_restore(tmp_path, capsys):
    from torchssm.cli import main

    assert (
        main(
            [
                "vision",
                "cost",
                "--mixers",
                "spatial_mamba",
                "attention",
                "--resolutions",
                "8",
                "16",
                "--width",
                "4",
                "--out",
                str(tmp_path / "cost.json"),
            ]
        )
        == 0
    )
    rows = json.loads((tmp_path / "cost.json").read_text())
    att = [r for r in rows if r["model"] == "attention"]
    assert att[1]["attn_matrix_mib"] == pytest.approx(16 * att[0]["attn_matrix_mib"])  # (4x tokens)^2
    assert all(r["gflops"] > 0 and r["saved_mib"] > 0 for r in rows)
    capsys.readouterr()
    assert main(["vision", "classify", "--preset", "no_such_preset", "--out", str(tmp_path)]) == 2
    assert "no vision preset 'no_such_preset'" in capsys.readouterr().err


def test_pathfinder_cache_from_another_generator_version_is_not_reused(tmp_path):
    from torchssm.vision.classify import load_images

    cache = tmp_path / "pf.pt"
    stale = {
        "key": {"n_images": 2, "seed": 0, "size": 32},
        "images": torch.zeros(2, 1, 32, 32),
        "labels": torch.zeros(2),
    }
    torch.save(stale, cache)  # what the cache held before the key had the generator version
    x, y, classes = load_images("pathfinder", 2, 0, cache)
    assert classes == 2 and x.abs().sum() > 0 and y.tolist() == [0, 1]  # regenerated, and rewritten
    assert torch.equal(torch.load(cache)["images"], x)


@pytest.mark.slow  # three restore runs with the classical baselines: ~15 s on the loaded machine
def test_cli_restore_non_blind_stops_and_resumes(tmp_path, capsys):
    """`vision restore --noise-map --unshuffle 2`: stopped after 1 of 2 steps (--train-until), then resumed
    from checkpoint.pt; the results name the model, the steps reached and every baseline at the sigma."""
    pytest.importorskip("skimage")
    from torchssm.cli import main

    args = ["vision", "restore", "--mixer", "spatial_mamba", "--mixer-kwargs", '{"d_state": 1}', "--noise-map"]
    args += ["--unshuffle", "2", "--width", "4", "--depths", "1", "1", "--steps", "2", "--batch", "2"]
    args += ["--patch", "16", "--crop", "32", "--sigmas", "25", "--checkpoint-every", "1", "--out", str(tmp_path)]
    assert main([*args, "--train-until", "1"]) == 0
    first = json.loads((tmp_path / "results.json").read_text())
    assert first["trained_steps"] == 1 and first["noise_map"] and first["unshuffle"] == 2
    assert main(args) == 0
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["trained_steps"] == 2 and res["train_cpu_s"] > first["train_cpu_s"]
    assert res["depths"] == [1, 1] and "sigma=25.0: degraded" in capsys.readouterr().out
    assert {"model", "nl_means", "tv"} <= set(res["results"]["25.0"]["mean"])
    # fine-tuning from that model.pt at one noise level for one step: Adam's first step moves every weight
    # by at most lr (2e-3), so the tuned weights are within that of the loaded ones (seed 1's own init is not)
    tuned = tmp_path / "tuned"
    ft = [*args[:-1], str(tuned), "--steps", "1", "--sigma-range", "25", "25", "--seed", "1"]  # another init
    assert main([*ft, "--init-from", str(tmp_path / "model.pt")]) == 0
    res_ft = json.loads((tuned / "results.json").read_text())
    assert res_ft["init_from"] == str(tmp_path / "model.pt") and res_ft["sigma_range"] == [25.0, 25.0]
    start, end = torch.load(tmp_path / "model.pt"), torch.load(tuned / "model.pt")
    for name in start:
        torch.testing.assert_close(end[name], start[name], rtol=0, atol=2.1e-3, msg=name)
