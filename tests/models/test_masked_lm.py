"""Masked (bidirectional) LM over Hydra: BERT masking, bidirectionality, and training on lm_text."""

import pytest
import torch

from torchssm.models.masked_lm import MaskedLM, MaskedLMConfig, mask_tokens


def test_bert_masking_shares():
    ids = torch.randint(0, 50, (64, 256), generator=torch.Generator().manual_seed(0))
    inputs, targets = mask_tokens(ids, 50, torch.Generator().manual_seed(1))
    chosen = targets != -100
    assert 0.13 < chosen.float().mean() < 0.17  # 15% of the positions (BERT, Sec. 3.1)
    assert torch.equal(targets[chosen], ids[chosen])
    assert torch.equal(inputs[~chosen], ids[~chosen])  # unchosen positions are untouched
    masked = (inputs == 50) & chosen
    assert 0.75 < masked.sum() / chosen.sum() < 0.85  # 80% [MASK]
    kept = (inputs == ids) & chosen
    assert 0.07 < kept.sum() / chosen.sum() < 0.16  # 10% unchanged (+ random draws equal to the token)


def test_hydra_masked_lm_sees_both_sides():
    torch.manual_seed(0)
    model = MaskedLM(
        MaskedLMConfig(
            layer="hydra",
            d_model=16,
            n_layer=2,
            vocab_size=20,
            layer_kwargs={"d_state": 4, "headdim": 8, "chunk_size": 8},
        )
    )
    ids = torch.randint(0, 20, (1, 12))
    later = ids.clone()
    later[0, 9] = (later[0, 9] + 1) % 20
    out, out2 = model(ids), model(later)
    assert out.shape == (1, 12, 20)
    assert (out[0, 3] - out2[0, 3]).abs().max() > 0  # position 3 depends on token 9: bidirectional


@pytest.mark.slow  # ~15-40 s: Hydra's chunked SSD forward + backward on the CPU
def test_masked_objective_trains_on_lm_text(tmp_path):
    import torchssm
    from torchssm.train import load_config, train

    corpus = tmp_path / "c"
    corpus.mkdir()
    for i in range(5):
        (corpus / f"d{i}.txt").write_text(f"def f{i}(x):\n    return x * {i}\n" * 8)
    cfg = load_config(
        base={
            "task": {
                "name": "lm_text",
                "files": str(corpus),
                "context": 32,
                "objective": "masked",
                "val_fraction": 0.2,
                "test_fraction": 0.2,
            },
            "model": {
                "layer": "hydra",
                "d_model": 16,
                "n_layers": 1,
                "pooling": "none",
                "layer_kwargs": {"d_state": 4, "headdim": 8, "chunk_size": 8},
            },
            "train": {
                "epochs": 1,
                "batch_size": 2,
                "out_dir": str(tmp_path / "run"),
                "progress": False,
                "device": "cpu",
            },
        }
    )
    result = train(cfg, data_dir=tmp_path / "data", log=lambda s: None)
    assert 0 < result.last["val_loss"] < 10
    model = torchssm.from_pretrained(tmp_path / "run" / "last")
    assert isinstance(model, MaskedLM) and model.config.vocab_size == 256
