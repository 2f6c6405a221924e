"""Checkpoint conversion (mamba_ssm and Hugging Face Mamba / Mamba-2 directories): the converted model's
logits equal an independent implementation written here from the raw tensors (plain loops, no torchssm
code), on tiny random checkpoints, including Mamba-2 with n_groups > 1 under both norm conventions."""

import json
import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

import torchssm
from torchssm.models.convert import detect_format, load_converted

H, V, NL, N, K = 16, 50, 2, 4, 4  # width, vocab, layers, state, conv width
D_INNER = 2 * H
HEADDIM, G = 8, 2
HEADS = D_INNER // HEADDIM


def _rand(gen, *shape, scale=0.3):
    return torch.randn(*shape, generator=gen) * scale


def _mamba1_weights(gen, vocab_rows):
    r = math.ceil(H / 16)
    sd = {
        "backbone.embedding.weight": _rand(gen, vocab_rows, H, scale=1.0),
        "backbone.norm_f.weight": 1 + _rand(gen, H),
    }
    for i in range(NL):
        p = f"backbone.layers.{i}."
        sd.update(
            {
                p + "norm.weight": 1 + _rand(gen, H),
                p + "mixer.in_proj.weight": _rand(gen, 2 * D_INNER, H),
                p + "mixer.conv1d.weight": _rand(gen, D_INNER, 1, K),
                p + "mixer.conv1d.bias": _rand(gen, D_INNER),
                p + "mixer.x_proj.weight": _rand(gen, r + 2 * N, D_INNER),
                p + "mixer.dt_proj.weight": _rand(gen, D_INNER, r),
                p + "mixer.dt_proj.bias": _rand(gen, D_INNER) - 2,
                p + "mixer.A_log": torch.log(torch.rand(D_INNER, N, generator=gen) * 3 + 0.5),
                p + "mixer.D": _rand(gen, D_INNER, scale=1.0),
                p + "mixer.out_proj.weight": _rand(gen, H, D_INNER),
            }
        )
    return sd


def _mamba2_weights(gen, vocab_rows, tie):
    conv_dim = D_INNER + 2 * G * N
    sd = {
        "backbone.embedding.weight": _rand(gen, vocab_rows, H, scale=1.0),
        "backbone.norm_f.weight": 1 + _rand(gen, H),
    }
    if not tie:
        sd["lm_head.weight"] = _rand(gen, vocab_rows, H, scale=1.0)
    for i in range(NL):
        p = f"backbone.layers.{i}."
        sd.update(
            {
                p + "norm.weight": 1 + _rand(gen, H),
                p + "mixer.in_proj.weight": _rand(gen, 2 * D_INNER + 2 * G * N + HEADS, H),
                p + "mixer.conv1d.weight": _rand(gen, conv_dim, 1, K),
                p + "mixer.conv1d.bias": _rand(gen, conv_dim),
                p + "mixer.dt_bias": _rand(gen, HEADS) - 2,
                p + "mixer.A_log": torch.log(torch.rand(HEADS, generator=gen) * 3 + 0.5),
                p + "mixer.D": _rand(gen, HEADS, scale=1.0),
                p + "mixer.norm.weight": 1 + _rand(gen, D_INNER),
                p + "mixer.out_proj.weight": _rand(gen, H, D_INNER),
            }
        )
    return sd


# ---- independent reference (float64, loops over time; written from the papers' equations) ----
def _rms(x, w, eps=1e-5):
    return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def _conv(x, w, b):  # x (l, c), causal depthwise
    l = x.shape[0]
    xp = torch.cat([torch.zeros(K - 1, x.shape[1], dtype=x.dtype), x])
    return torch.stack([(xp[t : t + K] * w[:, 0].T).sum(0) for t in range(l)]) + b


def _mamba1_mixer(sd, p, u):  # u (l, H)
    r = math.ceil(H / 16)
    xz = u @ sd[p + "in_proj.weight"].T
    x, z = xz[:, :D_INNER], xz[:, D_INNER:]
    x = F.silu(_conv(x, sd[p + "conv1d.weight"], sd[p + "conv1d.bias"]))
    dbc = x @ sd[p + "x_proj.weight"].T
    dt = F.softplus(dbc[:, :r] @ sd[p + "dt_proj.weight"].T + sd[p + "dt_proj.bias"])
    B, C = dbc[:, r : r + N], dbc[:, r + N :]
    A = -torch.exp(sd[p + "A_log"])
    h = torch.zeros(D_INNER, N, dtype=u.dtype)
    ys = []
    for t in range(u.shape[0]):
        h = torch.exp(dt[t, :, None] * A) * h + dt[t, :, None] * B[t] * x[t, :, None]
        ys.append(h @ C[t] + sd[p + "D"] * x[t])
    return (torch.stack(ys) * F.silu(z)) @ sd[p + "out_proj.weight"].T


def _mamba2_mixer(sd, p, u, grouped_norm):
    zxbcdt = u @ sd[p + "in_proj.weight"].T
    z, xBC, dt = zxbcdt[:, :D_INNER], zxbcdt[:, D_INNER : 2 * D_INNER + 2 * G * N], zxbcdt[:, -HEADS:]
    xBC = F.silu(_conv(xBC, sd[p + "conv1d.weight"], sd[p + "conv1d.bias"]))
    x, B, C = xBC[:, :D_INNER], xBC[:, D_INNER : D_INNER + G * N], xBC[:, D_INNER + G * N :]
    dt = F.softplus(dt + sd[p + "dt_bias"])
    A = -torch.exp(sd[p + "A_log"])
    y = torch.zeros(u.shape[0], D_INNER, dtype=u.dtype)
    for hd in range(HEADS):
        g = hd // (HEADS // G)
        s = torch.zeros(HEADDIM, N, dtype=u.dtype)
        cols = slice(hd * HEADDIM, (hd + 1) * HEADDIM)
        for t in range(u.shape[0]):
            s = torch.exp(dt[t, hd] * A[hd]) * s + dt[t, hd] * torch.outer(x[t, cols], B[t, g * N : (g + 1) * N])
            y[t, cols] = s @ C[t, g * N : (g + 1) * N] + sd[p + "D"][hd] * x[t, cols]
    y = y * F.silu(z)
    w = sd[p + "norm.weight"]
    if grouped_norm:
        y = torch.cat([_rms(c, wc) for c, wc in zip(y.chunk(G, -1), w.chunk(G))], -1)
    else:
        y = _rms(y, w)
    return y @ sd[p + "out_proj.weight"].T


def _reference_logits(sd, ids, mixer, tie=True):
    sd = {k.replace("embeddings", "embedding"): v.double() for k, v in sd.items()}
    x = sd["backbone.embedding.weight"][ids]
    for i in range(NL):
        p = f"backbone.layers.{i}."
        x = x + mixer(sd, p + "mixer.", _rms(x, sd[p + "norm.weight"]))
        if p + "mlp.fc1.weight" in sd:  # mamba_ssm's GatedMLP: fc2(y * silu(g)), [y, g] = fc1(norm2(x))
            y, g = (_rms(x, sd[p + "norm2.weight"]) @ sd[p + "mlp.fc1.weight"].T).chunk(2, dim=-1)
            x = x + (y * g * torch.sigmoid(g)) @ sd[p + "mlp.fc2.weight"].T
    head = sd["backbone.embedding.weight"] if tie else sd["lm_head.weight"]
    return (_rms(x, sd["backbone.norm_f.weight"]) @ head.T)[:, :V]


def _write(tmp_path, name, config, sd, kind):
    d = tmp_path / name
    d.mkdir()
    (d / "config.json").write_text(json.dumps(config))
    if kind == "safetensors":
        save_file({k: v.contiguous() for k, v in sd.items()}, d / "model.safetensors")
    else:
        torch.save(sd, d / "pytorch_model.bin")
    return d


IDS = torch.tensor([3, 1, 4, 1, 5, 9, 2, 6])


def _check(path, ref, fmt):
    assert detect_format(path) == fmt
    model = load_converted(path, dtype=torch.float64)
    got = model(IDS[None])[0]
    torch.testing.assert_close(got, ref)
    # the converted model also generates: prompt then steps == parallel logits
    logits, state = model(IDS[None, :5], return_state=True)
    for t in range(5, 8):
        lt, state = model.step(IDS[t : t + 1], state)
        torch.testing.assert_close(lt[0], ref[t])
    return model


def test_hf_mamba(tmp_path):
    gen = torch.Generator().manual_seed(0)
    sd = _mamba1_weights(gen, V)
    sd["backbone.embeddings.weight"] = sd.pop("backbone.embedding.weight")
    cfg = {
        "model_type": "mamba",
        "hidden_size": H,
        "num_hidden_layers": NL,
        "vocab_size": V,
        "state_size": N,
        "expand": 2,
        "conv_kernel": K,
        "intermediate_size": D_INNER,
        "time_step_rank": "auto",
        "use_bias": False,
        "use_conv_bias": True,
        "layer_norm_epsilon": 1e-5,
        "tie_word_embeddings": True,
    }
    path = _write(tmp_path, "hf_mamba", cfg, sd, "safetensors")
    _check(path, _reference_logits(sd, IDS, _mamba1_mixer), "hf_mamba")
    model = torchssm.from_pretrained(path)  # recognised by the generic loader
    assert model.config.layer == "mamba"


def test_mamba_ssm_mamba1_bin_with_padded_vocab(tmp_path):
    gen = torch.Generator().manual_seed(1)
    sd = _mamba1_weights(gen, 56)  # 50 padded to a multiple of 8
    sd["lm_head.weight"] = sd["backbone.embedding.weight"]  # mamba_ssm saves the tied head too
    cfg = {
        "d_model": H,
        "n_layer": NL,
        "vocab_size": V,
        "ssm_cfg": {"d_state": N},
        "rms_norm": True,
        "residual_in_fp32": True,
        "fused_add_norm": True,
        "pad_vocab_size_multiple": 8,
    }
    path = _write(tmp_path, "ssm_mamba", cfg, sd, "bin")
    _check(path, _reference_logits(sd, IDS, _mamba1_mixer), "mamba_ssm")


def test_mamba_ssm_with_gated_mlp_rounds_its_width_to_128(tmp_path):
    """d_intermediate = 100 in config.json: mamba_ssm's GatedMLP is 128 wide (multiple_of 128)."""
    gen = torch.Generator().manual_seed(5)
    sd = _mamba1_weights(gen, 56)
    for i in range(NL):
        p = f"backbone.layers.{i}."
        sd[p + "norm2.weight"] = 1 + _rand(gen, H)
        sd[p + "mlp.fc1.weight"] = _rand(gen, 2 * 128, H)
        sd[p + "mlp.fc2.weight"] = _rand(gen, H, 128, scale=0.1)
    cfg = {"d_model": H, "n_layer": NL, "vocab_size": V, "ssm_cfg": {"d_state": N}, "d_intermediate": 100}
    path = _write(tmp_path, "ssm_mlp", cfg, sd, "bin")
    model = _check(path, _reference_logits(sd, IDS, _mamba1_mixer), "mamba_ssm")
    assert model.config.d_intermediate == 128


def test_hf_mamba2_groups_whole_width_norm(tmp_path):
    gen = torch.Generator().manual_seed(2)
    sd = _mamba2_weights(gen, V, tie=False)
    sd["backbone.embeddings.weight"] = sd.pop("backbone.embedding.weight")
    cfg = {
        "model_type": "mamba2",
        "hidden_size": H,
        "num_hidden_layers": NL,
        "vocab_size": V,
        "state_size": N,
        "expand": 2,
        "num_heads": HEADS,
        "head_dim": HEADDIM,
        "n_groups": G,
        "conv_kernel": K,
        "chunk_size": 3,
        "use_bias": False,
        "use_conv_bias": True,
        "tie_word_embeddings": False,
        "transformers_version": "4.46.0",
    }
    path = _write(tmp_path, "hf_mamba2", cfg, sd, "safetensors")
    whole = _reference_logits(sd, IDS, lambda *a: _mamba2_mixer(*a, grouped_norm=False), tie=False)
    grouped = _reference_logits(sd, IDS, lambda *a: _mamba2_mixer(*a, grouped_norm=True), tie=False)
    assert not torch.allclose(whole, grouped)  # the convention matters with n_groups > 1
    _check(path, whole, "hf_mamba2")
    forced = load_converted(path, dtype=torch.float64, mamba2_norm="grouped")
    torch.testing.assert_close(forced(IDS[None])[0], grouped)


def test_mamba_ssm_mamba2_grouped_norm(tmp_path):
    gen = torch.Generator().manual_seed(3)
    sd = _mamba2_weights(gen, 56, tie=True)
    cfg = {
        "d_model": H,
        "n_layer": NL,
        "vocab_size": V,
        "d_intermediate": 0,
        "attn_layer_idx": [],
        "ssm_cfg": {"layer": "Mamba2", "d_state": N, "headdim": HEADDIM, "ngroups": G, "chunk_size": 5},
        "rms_norm": True,
        "residual_in_fp32": True,
        "pad_vocab_size_multiple": 8,
        "tie_embeddings": True,
    }
    path = _write(tmp_path, "ssm_mamba2", cfg, sd, "bin")
    _check(path, _reference_logits(sd, IDS, lambda *a: _mamba2_mixer(*a, grouped_norm=True)), "mamba_ssm")


def test_unsupported_and_mismatched(tmp_path):
    gen = torch.Generator().manual_seed(4)
    sd = _mamba1_weights(gen, 56)
    cfg = {"d_model": H, "n_layer": NL, "vocab_size": V, "ssm_cfg": {}, "attn_layer_idx": [1]}
    with pytest.raises(ValueError, match="hybrid"):
        load_converted(_write(tmp_path, "hybrid", cfg, sd, "bin"))
    cfg = {"d_model": H, "n_layer": NL + 1, "vocab_size": V, "ssm_cfg": {"d_state": N}}
    with pytest.raises(ValueError, match="missing"):
        load_converted(_write(tmp_path, "deeper", cfg, sd, "bin"))
    assert detect_format(tmp_path) is None
