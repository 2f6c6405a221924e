"""Input selectivity in Mamba, as constructions that check themselves (Huang, Sarabia, Moudgil,
Rodriguez, Zappella & Danieli 2025, "Understanding Input Selectivity in Mamba: Impact on Approximation
Power, Memorization, and Associative Recall Capacity", ICML 2025, arXiv:2506.11891).

What we could verify of the paper (its abstract; a figure caption quoted by chatpaper.com): (i) the S6
layer can represent projections onto Haar wavelets, an edge over S4D for discontinuous functions;
(ii) S6 can dynamically counteract memory decay -- the caption cites "Lem. 2": to keep information
over T steps the model must push e^{-lambda Delta_t} -> 1, and Mamba additionally forgets irrelevant
tokens (e^{-lambda Delta_t} ~ 0) on the KEEP n-TH task of its "Tab. 1"; (iii) analytical MQAR
solutions for the Mamba architecture with Mamba, Mamba-2 and S4D mixers. The paper's theorem
statements, constructions and instance sizes could not be read here: everything below is OUR
construction of each claim (UNVERIFIED against the paper's own), built on this library's real ops
and layers and checked numerically (tests/theory/test_selectivity.py).

S6 (Gu & Dao 2023, Alg. 2) per channel d and state n, as in :func:`torchssm.ops.selective.selective_scan`:

    h_t[d, n] = exp(Delta_t[d] A[d, n]) h_{t-1}[d, n] + Delta_t[d] B_t[n] u_t[d],   y_t[d] = C_t . h_t[d]

S4D is the same recurrence with Delta, B, C independent of the input (a time-invariant kernel).

(i) Haar projection. With A = -1, one state per channel, and Delta_t, B_t chosen from the position t
(the input's positional features), channel k computes a *running mean* of s_k(t) u_t over the
support of the Haar function psi_k (s_k = its sign pattern): Delta_t = 0 outside the support (hold:
decay 1, no input), and at the m-th step inside it exp(-Delta_t) = 1 - 1/(m+1), Delta_t B_t =
s_k(t) / (m+1). The final state is then exactly <u, psi_k> / sqrt(|supp psi_k|): 2^J channels hold the
projection onto the first 2^J Haar functions. S4D's final state is sum_s Abar^{L-1-s} Bbar u_s: the
projection onto span{damped exponentials}, smooth functions that pay for every jump.

(ii) Memory. With Delta_t = softplus(w m_t + b) from a marker m_t in {0, 1} of the input, b << 0 and
w >> 0, the state holds (e^{-Delta_t} ~ 1, nothing written) except at the marked token, which
overwrites it (e^{-Delta_t} ~ 0, Delta_t B_t = 1): KEEP n-TH is solved at every length with retention
exp(-sum softplus(b)) ~ 1. An LTI state of size N cannot isolate token n once T - n >= N later
tokens have entered it; its best linear recall error is computed in closed form.

(iii) MQAR. Weights of this library's Mamba / Mamba2 layers (and the Mamba block with an LTI S4D
mixer, i.e. the same class with Delta, B, C made input-independent) set so that one layer answers
every query of the Zoology MQAR task (``torchssm.data.synthetic.recall.mqar_example``):
  Mamba / Mamba-2: the short conv shifts the previous token (the key) into B at the value's
  position, the value is the SSM input, so the state accumulates sum_i v_i k_i^T (one-hot keys, no
  decay); at a query C = its key reads v_i back (linear attention through the selective B, C);
  S4D: B, C are fixed, so the pairing must happen before the SSM: one channel per (key, value) pair,
  the conv + SiLU acts as an AND of "previous token = key" and "current token = value", the LTI SSM
  integrates it, and the gate silu(z) opens the channel when the current token is that key.
Sizes: Mamba state d_inner x n = 2(V + 8) x V/2, Mamba-2 (V + 8) x V/2, S4D (V/2 - 1) V/2 channels x 1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from torchssm.ops.selective import selective_scan

# --- (i) Haar wavelets ------------------------------------------------------------------------------


def _check_power_of_two(name: str, value: int) -> None:
    if not isinstance(value, int) or value < 1 or value & (value - 1):
        raise ValueError(f"{name} must be a power of two; got {value!r}")


def haar_functions(length: int, count: int) -> torch.Tensor:
    """The first ``count`` orthonormal discrete Haar functions on ``length`` points, (count, length) float64.

    Row 0 is the scaling function (constant); then level j = 0, 1, ... with 2^j wavelets each
    (+1 on the left half of their support, -1 on the right). ``count`` and ``length`` powers of two."""
    _check_power_of_two("length", length)
    _check_power_of_two("count", count)
    if count > length:
        raise ValueError(f"count must be <= length; got count={count}, length={length}")
    rows = [torch.full((length,), 1.0 / math.sqrt(length), dtype=torch.float64)]
    j = 0
    while len(rows) < count:
        width = length >> j
        for k in range(1 << j):
            psi = torch.zeros(length, dtype=torch.float64)
            psi[k * width : k * width + width // 2] = 1.0
            psi[k * width + width // 2 : (k + 1) * width] = -1.0
            rows.append(psi / math.sqrt(width))
        j += 1
    return torch.stack(rows)  # (count, length)


def s6_haar_parameters(length: int, count: int, reset_delta: float = 40.0) -> dict:
    """S6 parameters whose final state holds the projection onto the first ``count`` Haar functions.

    One channel per Haar function (d = count), one state (n = 1), A = -1. Returns tensors for
    :func:`selective_scan` with ``delta_softplus=False``: ``delta`` (1, l, d), ``B`` (1, l, d, 1) grouped
    per channel (B_t differs per Haar function), ``C`` ones, ``A`` (d, 1), and ``scale`` (d,) such that
    coefficient_k = scale_k * h_L[k]. ``reset_delta`` stands for Delta = infinity at a support's first
    step (exp(-40) ~ 4e-18: the earlier state is forgotten)."""
    psi = haar_functions(length, count)  # (d, l)
    support = psi != 0
    m = torch.cumsum(support.double(), dim=1) - 1  # (d, l): index inside the support
    alpha = torch.where(support, 1.0 / (m + 1), torch.zeros_like(m))  # running-mean weights
    delta = torch.where(m == 0, torch.full_like(m, reset_delta), -torch.log1p(-alpha))  # exp(-Delta) = 1 - alpha
    delta = torch.where(support, delta, torch.zeros_like(m))  # hold outside the support
    # Delta_t B_t = s_k(t) alpha_t inside the support, 0 outside
    B = torch.where(support, torch.sign(psi) * alpha / delta.clamp_min(1e-300), torch.zeros_like(m))
    d = count
    return {
        "delta": delta.T[None],  # (1, l, d)
        "A": -torch.ones(d, 1, dtype=torch.float64),  # (d, 1)
        "B": B.T[None, :, :, None],  # (1, l, d, 1): group g = channel d
        "C": torch.ones(1, length, d, 1, dtype=torch.float64),  # (1, l, d, 1)
        "scale": support.sum(1).double().sqrt(),  # (d,): <u, psi_k> = sqrt(|supp|) * mean(s_k u)
    }


def s6_haar_coefficients(u: torch.Tensor, count: int, backend: str = "naive") -> torch.Tensor:
    """Run the selective scan with :func:`s6_haar_parameters` on u (b, l): Haar coefficients (b, count)."""
    if u.dim() != 2:
        raise ValueError(f"u must have shape (batch, length); got {tuple(u.shape)}")
    b, length = u.shape
    p = s6_haar_parameters(length, count)
    x = u.to(torch.float64)[:, :, None].expand(b, length, count)  # (b, l, d): every channel reads u
    _, h = selective_scan(
        x,
        p["delta"].expand(b, -1, -1),
        p["A"],
        p["B"].expand(b, -1, -1, -1),
        p["C"].expand(b, -1, -1, -1),
        return_final_state=True,
        backend=backend,
    )  # h (b, d, 1)
    return h[..., 0] * p["scale"]


def s4d_state_basis(length: int, n_real: int, init: str = "lin", dt: float | None = None) -> torch.Tensor:
    """The functions an S4D state of ``n_real`` real numbers projects onto, (n_real, length) float64.

    The final state after reading u is h[n] = sum_s Abar_n^{l-1-s} Bbar_n u_s (ZOH, B = 1, dt = 1/l by
    default so the window is t in [0, 1)): its real and imaginary parts (n_real / 2 complex modes).
    init: "lin" (S4D-Lin, A_n = -1/2 + i pi n) or "inv" (S4D-Inv, A_n = -1/2 + i (N/pi)(N/(2n+1) - 1))
    (Gu, Gupta, Goel & Re 2022, "On the Parameterization and Initialization of Diagonal SSMs", Sec. 4)."""
    if n_real < 2 or n_real % 2:
        raise ValueError(f"n_real must be an even number >= 2 (complex modes); got {n_real!r}")
    N = n_real // 2
    n = torch.arange(N, dtype=torch.float64)
    if init == "lin":
        A = torch.complex(torch.full_like(n, -0.5), math.pi * n)
    elif init == "inv":
        A = torch.complex(torch.full_like(n, -0.5), (N / math.pi) * (N / (2 * n + 1) - 1))
    else:
        raise ValueError(f"init must be 'lin' or 'inv'; got {init!r}")
    dt = 1.0 / length if dt is None else dt
    lags = torch.arange(length - 1, -1, -1, dtype=torch.float64)  # l-1-s for s = 0..l-1
    Abar = torch.exp(dt * A)  # (N,)
    Bbar = (Abar - 1) / A  # ZOH with B = 1
    K = Bbar[:, None] * Abar[:, None] ** lags[None, :]  # (N, l) complex
    return torch.cat([K.real, K.imag])  # (2N, l)


def projection_error(u: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """Relative L2 error of the best reconstruction of u (b, l) from <u, basis_k> (k, l): ||u - P u|| / ||u||.

    P is the orthogonal projection onto span(basis) (least squares in float64, rank-revealing): the best
    any linear decoder of that state can do without a prior on u."""
    Q, R = torch.linalg.qr(basis.T.to(torch.float64))  # (l, k)
    keep = R.diagonal().abs() > 1e-10 * R.diagonal().abs().max()  # drop numerically dependent directions
    Q = Q[:, keep]
    u = u.to(torch.float64)
    r = u - (u @ Q) @ Q.T
    return r.norm(dim=-1) / u.norm(dim=-1)


def piecewise_constant(
    batch: int, length: int, jumps: int, *, dyadic_level: int | None = None, seed: int = 0
) -> torch.Tensor:
    """(batch, length) random step functions with ``jumps`` jumps (levels ~ N(0, 1)).

    Jump positions uniform over the grid, or on multiples of length / 2^dyadic_level if given."""
    g = torch.Generator().manual_seed(seed)
    out = torch.empty(batch, length, dtype=torch.float64)
    for i in range(batch):
        if dyadic_level is None:
            cuts = torch.randperm(length - 1, generator=g)[:jumps] + 1
        else:
            grid = length >> dyadic_level
            cuts = (torch.randperm((1 << dyadic_level) - 1, generator=g)[:jumps] + 1) * grid
        levels = torch.randn(jumps + 1, generator=g, dtype=torch.float64)
        idx = torch.bucketize(torch.arange(length), torch.sort(cuts).values, right=True)
        out[i] = levels[idx]
    return out


def haar_vs_s4d(
    length: int = 1024,
    sizes: Sequence[int] = (4, 8, 16, 32, 64, 128, 256),
    batch: int = 64,
    jumps: int = 6,
    seed: int = 0,
) -> list[dict]:
    """Relative L2 error of reconstructing step functions from a state of ``n`` real numbers.

    Targets: ``jumps`` jumps on the level-4 dyadic grid ("dyadic") and at uniform positions ("uniform");
    and a smooth control (sum of 3 low-frequency sines). S6: the Haar construction (its state computed by
    :func:`s6_haar_coefficients`; reconstruction error from the coefficients); S4D: projection onto
    :func:`s4d_state_basis` (Lin and Inv)."""
    targets = {
        "dyadic": piecewise_constant(batch, length, jumps, dyadic_level=4, seed=seed),
        "uniform": piecewise_constant(batch, length, jumps, seed=seed + 1),
    }
    g = torch.Generator().manual_seed(seed + 2)
    t = torch.arange(length, dtype=torch.float64) / length
    f = torch.randint(1, 4, (batch, 3), generator=g).double()
    a = torch.randn(batch, 3, generator=g, dtype=torch.float64)
    targets["smooth"] = (a[:, :, None] * torch.sin(2 * math.pi * f[:, :, None] * t)).sum(1)
    rows = []
    for n in sizes:
        row: dict[str, float] = {"state": n}
        psi = haar_functions(length, n)
        for name, u in targets.items():
            c = s6_haar_coefficients(u, n)  # (b, n): the S6 state, rescaled
            rec = c @ psi
            row[f"s6_haar_{name}"] = float(((u - rec).norm(dim=-1) / u.norm(dim=-1)).mean())
            for init in ("lin", "inv"):
                row[f"s4d_{init}_{name}"] = float(projection_error(u, s4d_state_basis(length, n, init)).mean())
        rows.append(row)
    return rows


# --- (ii) memory decay ------------------------------------------------------------------------------


def s6_keep_marked(u: torch.Tensor, marker: torch.Tensor, w: float = 60.0, b: float = -30.0) -> torch.Tensor:
    """S6 with Delta_t = softplus(w m_t + b), A = -1, B_t = m_t / softplus(w + b), C = 1 on u (bt, l):
    outputs y (bt, l) = the last marked token so far (0 before any). Uses the library's selective scan."""
    bt, length = u.shape
    m = marker.to(torch.float64)
    B = (m / torch.nn.functional.softplus(torch.tensor(w + b, dtype=torch.float64)))[:, :, None]  # (bt, l, 1)
    y = selective_scan(
        u.to(torch.float64)[:, :, None],  # (bt, l, 1)
        (w * m)[:, :, None],  # raw dt (bt, l, 1); + bias b, softplus inside the op
        -torch.ones(1, 1, dtype=torch.float64),
        B,
        torch.ones_like(B),
        delta_bias=torch.tensor([b], dtype=torch.float64),
        delta_softplus=True,
        backend="naive",
    )
    assert isinstance(y, torch.Tensor)  # no final state requested
    return y[..., 0]


def s6_retention(length: int, b: float = -30.0) -> float:
    """exp(-sum_t softplus(b)) over ``length`` unmarked steps: how much of the kept token survives."""
    return math.exp(-length * math.log1p(math.exp(b)))


def s6_keep_first_mse(length: int, keep: int = 1, batch: int = 64, seed: int = 0) -> float:
    """Measured KEEP n-TH MSE of :func:`s6_keep_marked` (marker on token ``keep``, 1-based) at step T."""
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(batch, length, generator=g, dtype=torch.float64)
    marker = torch.zeros(batch, length)
    marker[:, keep - 1] = 1.0
    return float((s6_keep_marked(u, marker)[:, -1] - u[:, keep - 1]).pow(2).mean())


def lti_recall_error(
    n_real: int,
    lengths: Sequence[int],
    keep: int = 1,
    init: str = "lin",
    dts: Sequence[float] = (1e-3, 1e-2, 1e-1, 1.0),
) -> list[float]:
    """KEEP n-TH for an S4D state of ``n_real`` real numbers: best linear recall MSE of token x_keep
    (tokens i.i.d., unit variance) from the state after T tokens, for each T in ``lengths``.

    h_T = sum_{s=1}^T k(T - s) x_s with k(j) the state's response to a token j steps earlier (the basis
    of :func:`s4d_state_basis` at step dt); the best estimate of x_keep has MSE 1 - k^T G^+ k with
    k = k(T - keep) and G = sum_{j < T} k(j) k(j)^T. The minimum over the step sizes ``dts`` is
    reported (a trained S4D would pick its dt)."""
    out = []
    for T in lengths:
        if not 1 <= keep <= T:
            raise ValueError(f"need 1 <= keep <= T; got keep={keep}, T={T}")
        best = 1.0
        for dt in dts:
            K = s4d_state_basis(T, n_real, init, dt=dt).T.flip(0)  # (T, n): row j = k(j)
            G = K.T @ K
            k = K[T - keep]
            best = min(best, float(1.0 - k @ torch.linalg.pinv(G, hermitian=True, rtol=1e-12) @ k))
        out.append(max(best, 0.0))
    return out


def plot_selectivity(path, haar_rows: list[dict], lengths: Sequence[int] = (4, 8, 16, 32, 64, 128, 256, 512)) -> dict:
    """Two panels: (i) step-function error vs state size (S6 Haar vs S4D), (ii) KEEP n-TH recall error vs lag."""
    from torchssm.analysis.plots import legend, new_figure, save_figure

    fig, (ax_h, ax_m) = new_figure(2, 1)
    n = [r["state"] for r in haar_rows]
    floor = 1e-5  # exact zeros (S6 on dyadic steps) are drawn here
    styles = {"s6_haar": "-o", "s4d_lin": "--s", "s4d_inv": ":^"}
    for model, style in styles.items():
        for name, colour in (("dyadic", "tab:blue"), ("uniform", "tab:orange"), ("smooth", "tab:green")):
            ax_h.loglog(
                n,
                [max(r[f"{model}_{name}"], floor) for r in haar_rows],
                style,
                color=colour,
                ms=3,
                label=f"{model} / {name}",
            )
    ax_h.axhline(floor, color="gray", lw=0.6, ls=":")
    ax_h.text(n[0], floor * 1.5, "0 (exact, float64)", fontsize=7, color="gray")
    ax_h.set_xlabel("state size (real numbers)")
    ax_h.set_ylabel("relative L2 reconstruction error")
    ax_h.set_title("(i) step functions: S6 Haar vs S4D")
    legend(ax_h, ncols=3, fontsize=6)
    rows = {}
    for n_real in (4, 16, 64):
        err = lti_recall_error(n_real, lengths)
        rows[f"s4d_lin_n{n_real}"] = err
        ax_m.semilogx(lengths, err, "--o", ms=3, label=f"S4D-Lin, state {n_real} (best dt)")
    s6 = [s6_keep_first_mse(T) for T in lengths]
    rows["s6"] = s6
    ax_m.semilogx(lengths, s6, "-o", color="k", ms=3, label="S6 marker construction (state 1)")
    ax_m.set_xlabel("sequence length T (keep token 1)")
    ax_m.set_ylabel("recall MSE of the kept token")
    ax_m.set_title("(ii) KEEP n-TH: memory decay")
    legend(ax_m)
    return {"path": save_figure(fig, path), "recall": rows}


# --- (iii) MQAR -------------------------------------------------------------------------------------


def _embed_dim(vocab_size: int) -> int:
    """One-hot tokens, a constant feature at index V, padded to a multiple of 8 (Mamba-2 heads of 8)."""
    return vocab_size + 8


def embed_tokens(tokens: torch.Tensor, vocab_size: int, dtype=torch.float64) -> torch.Tensor:
    """tokens (b, l) -> (b, l, V + 8): one-hot, plus 1 in the constant feature (index V)."""
    x = torch.zeros(*tokens.shape, _embed_dim(vocab_size), dtype=dtype)
    x.scatter_(-1, tokens[..., None], 1.0)
    x[..., vocab_size] = 1.0
    return x


def _split_vocab(vocab_size: int) -> tuple[int, int]:
    """MQAR's vocabulary (recall.mqar_example): keys 1..V/2-1 (0 = pad), values V/2..V-1."""
    if vocab_size < 8 or vocab_size % 8:
        raise ValueError(f"vocab_size must be a multiple of 8 (>= 8); got {vocab_size!r}")
    kv = vocab_size // 2
    return kv, vocab_size - kv


def key_codes(num_keys: int, key_dim: int | None, seed: int = 0) -> torch.Tensor:
    """(n, num_keys) float64 codes of the keys written into B and read by C: one-hot (n = num_keys + 1,
    row 0 for the pad token) when ``key_dim`` is None, else unit-norm Gaussian codes in n = key_dim
    dimensions -- a compressed memory whose crosstalk <k_i, q> != 0 can confuse queries."""
    if key_dim is None:
        return torch.eye(num_keys + 1, dtype=torch.float64)[:, 1:]
    if not isinstance(key_dim, int) or key_dim < 1:
        raise ValueError(f"key_dim must be a positive int or None; got {key_dim!r}")
    R = torch.randn(key_dim, num_keys, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return R / R.norm(dim=0, keepdim=True)


@torch.no_grad()
def mqar_mamba(vocab_size: int, dt_bias: float = 0.0, a_log: float = -14.0, key_dim: int | None = None):
    """A :class:`torchssm.layers.mamba.Mamba` layer (float64) whose weights solve MQAR (module docstring).

    ``key_dim`` None: one-hot keys (d_state = V/2, exact); an int: random key codes of that size
    (d_state = key_dim), to see how a smaller state degrades (:func:`key_codes`)."""
    from torchssm.layers.mamba import Mamba

    kv, nv = _split_vocab(vocab_size)
    dm = _embed_dim(vocab_size)
    codes = key_codes(kv - 1, key_dim)  # (n, kv - 1): column i-1 codes key i
    n = codes.shape[0]
    layer = Mamba(dm, d_state=n, d_conv=2, expand=2, dt_rank=1, backend="naive").double()
    d = layer.d_inner
    for p in layer.parameters():
        p.zero_()
    keys, vals = torch.arange(1, kv), torch.arange(nv)
    prev, cur, val = keys, kv + keys, 2 * kv + vals  # channel groups in d_inner
    W = layer.in_proj.weight  # (2d, dm): [x; z]
    W[prev, keys] = 1.0
    W[cur, keys] = 1.0
    W[val, kv + vals] = 1.0
    W[d:, vocab_size] = 4.0  # z = 4 everywhere: a constant gate silu(4)
    conv = layer.conv1d.weight  # (d, 1, 2): tap 1 = current token, tap 0 = previous
    conv[prev, 0, 0] = 1.0
    conv[cur, 0, 1] = 1.0
    conv[val, 0, 1] = 1.0
    r = layer.dt_rank
    layer.x_proj.weight[r : r + n, prev] = codes  # B_t = code of the previous token's key
    layer.x_proj.weight[r + n : r + 2 * n, cur] = codes  # C_t = code of the current token's key
    layer.dt_proj.bias.fill_(dt_bias)  # Delta = softplus(dt_bias): constant
    layer.A_log.fill_(a_log)  # A = -exp(a_log) ~ 0: no decay over the sequence
    layer.out_proj.weight[kv + vals, val] = 1.0  # value channel -> that value's logit
    assert d >= 2 * kv + nv
    return layer


@torch.no_grad()
def mqar_mamba2(vocab_size: int, dt_bias: float = 0.0, a_log: float = -14.0):
    """A :class:`torchssm.layers.mamba2.Mamba2` layer (float64, heads of 8) whose weights solve MQAR."""
    from torchssm.layers.mamba2 import Mamba2

    kv, nv = _split_vocab(vocab_size)
    dm = _embed_dim(vocab_size)
    layer = Mamba2(dm, d_state=kv, d_conv=2, expand=1, headdim=8, ngroups=1, backend="naive").double()
    d, n = layer.d_inner, kv
    for p in layer.parameters():
        p.zero_()
    keys, vals = torch.arange(1, kv), torch.arange(nv)
    W = layer.in_proj.weight  # (2d + 2n + nh, dm): [z, x, B, C, dt]
    W[:d, vocab_size] = 4.0  # z: constant gate
    W[d + vals, kv + vals] = 1.0  # x: the value's one-hot (channel j <-> value kv + j)
    W[2 * d + keys, keys] = 1.0  # B: key one-hot, shifted by the conv
    W[2 * d + n + keys, keys] = 1.0  # C: key one-hot, current token
    conv = layer.conv1d.weight  # (d + 2n, 1, 2)
    conv[vals, 0, 1] = 1.0
    conv[d + keys, 0, 0] = 1.0  # B reads the previous token
    conv[d + n + keys, 0, 1] = 1.0  # C reads the current token
    layer.dt_bias.fill_(dt_bias)
    layer.A_log.fill_(a_log)
    layer.norm.weight.fill_(1.0)
    layer.out_proj.weight[kv + vals, vals] = 1.0
    return layer


@torch.no_grad()
def mqar_s4d_mixer(vocab_size: int, dt_bias: float = 0.0, a_log: float = -14.0, sharp: float = 40.0):
    """The Mamba block with an S4D (time-invariant) mixer solving MQAR: the :class:`Mamba` class with
    Delta, B, C made input-independent (dt from its bias only; B = C = a constant channel; one state)."""
    from torchssm.layers.mamba import Mamba

    kv, nv = _split_vocab(vocab_size)
    dm = _embed_dim(vocab_size)
    pairs = (kv - 1) * nv
    expand = math.ceil((pairs + 1) / dm)
    layer = Mamba(dm, d_state=1, d_conv=2, expand=expand, dt_rank=1, backend="naive").double()
    d = layer.d_inner
    for p in layer.parameters():
        p.zero_()
    key = torch.arange(1, kv).repeat_interleave(nv)  # (pairs,): channel c <-> (key, value)
    val = kv + torch.arange(nv).repeat(kv - 1)  # (pairs,)
    ch = torch.arange(pairs)
    one = pairs  # a constant channel feeding B and C
    W = layer.in_proj.weight  # (2d, dm): [x; z]
    W[ch, key] = 1.0
    W[ch, val] = -1.0
    W[one, vocab_size] = 1.0
    W[d + ch, key] = sharp  # z = sharp ([current = key] - 1/2): the gate opens at the key's query
    W[d + ch, vocab_size] = -sharp / 2
    conv, bias = layer.conv1d.weight, layer.conv1d.bias
    assert bias is not None  # conv_bias=True
    conv[ch, 0, 0] = sharp  # previous token: +sharp if key, -sharp if value
    conv[ch, 0, 1] = -sharp  # current token: +sharp if value, -sharp if key
    bias[ch] = -1.5 * sharp  # silu(...) > 0 only for (previous, current) = (key, value)
    conv[one, 0, 1] = 1.0
    r = layer.dt_rank
    layer.x_proj.weight[r, one] = 1.0  # B = silu(1), constant
    layer.x_proj.weight[r + 1, one] = 1.0  # C = silu(1), constant
    layer.dt_proj.bias.fill_(dt_bias)
    layer.A_log.fill_(a_log)
    layer.out_proj.weight[val, ch] = 1.0  # sum over keys per value
    return layer


MQAR_CONSTRUCTIONS = {"mamba": mqar_mamba, "mamba2": mqar_mamba2, "s4d": mqar_s4d_mixer}


def state_size(kind: str, vocab_size: int) -> int:
    """Recurrent state (real numbers per sequence) of each construction, conv window excluded."""
    kv, nv = _split_vocab(vocab_size)
    dm = _embed_dim(vocab_size)
    if kind == "mamba":
        return 2 * dm * kv
    if kind == "mamba2":
        return dm * kv
    if kind == "s4d":
        return math.ceil(((kv - 1) * nv + 1) / dm) * dm
    raise ValueError(f"kind must be one of {sorted(MQAR_CONSTRUCTIONS)}; got {kind!r}")


@torch.no_grad()
def mqar_accuracy(
    kind: str,
    *,
    vocab_size: int,
    length: int,
    num_kv_pairs: int,
    examples: int = 64,
    batch: int = 16,
    random_non_queries: bool = False,
    seed: int = 0,
    backend: str = "naive",
    key_dim: int | None = None,
) -> dict:
    """Query accuracy of a construction on MQAR examples from the library's generator.

    Logits are the layer's outputs over the vocabulary (no residual: the one-hot token would otherwise
    add to its own logit); accuracy counts positions with a target (the queries). ``backend`` goes to the
    layer's scan ("cpu" keeps Mamba's memory at the state's size for large vocabularies)."""
    from torchssm.data.synthetic.recall import mqar_example

    if kind not in MQAR_CONSTRUCTIONS:
        raise ValueError(f"kind must be one of {sorted(MQAR_CONSTRUCTIONS)}; got {kind!r}")
    if key_dim is not None and kind != "mamba":
        raise ValueError(f"key_dim (compressed key codes) is implemented for kind='mamba' only; got {kind!r}")
    layer = MQAR_CONSTRUCTIONS[kind](vocab_size) if key_dim is None else mqar_mamba(vocab_size, key_dim=key_dim)
    layer.backend = backend
    g = torch.Generator().manual_seed(seed)
    correct = total = 0
    for start in range(0, examples, batch):
        ex = [
            mqar_example(
                g,
                length=length,
                vocab_size=vocab_size,
                num_kv_pairs=num_kv_pairs,
                random_non_queries=random_non_queries,
            )
            for _ in range(min(batch, examples - start))
        ]
        inputs = torch.stack([e["inputs"] for e in ex])  # (b, l)
        targets = torch.stack([e["targets"] for e in ex])  # (b, l), -100 off the queries
        logits = layer(embed_tokens(inputs, vocab_size))[..., :vocab_size]  # (b, l, V)
        q = targets >= 0
        correct += int((logits.argmax(-1)[q] == targets[q]).sum())
        total += int(q.sum())
    return {
        "kind": kind,
        "vocab_size": vocab_size,
        "length": length,
        "num_kv_pairs": num_kv_pairs,
        "random_non_queries": random_non_queries,
        "queries": total,
        "accuracy": correct / total,
        "key_dim": key_dim,
        "state": state_size(kind, vocab_size) if key_dim is None else 2 * _embed_dim(vocab_size) * key_dim,
        "params": sum(p.numel() for p in layer.parameters()),
    }


__all__ = [
    "MQAR_CONSTRUCTIONS",
    "embed_tokens",
    "haar_functions",
    "haar_vs_s4d",
    "key_codes",
    "lti_recall_error",
    "mqar_accuracy",
    "mqar_mamba",
    "mqar_mamba2",
    "mqar_s4d_mixer",
    "piecewise_constant",
    "plot_selectivity",
    "projection_error",
    "s4d_state_basis",
    "s6_haar_coefficients",
    "s6_haar_parameters",
    "s6_keep_first_mse",
    "s6_keep_marked",
    "s6_retention",
    "state_size",
]
