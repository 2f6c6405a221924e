"""Federated Granger causality between state-space clients (Mohanty, Mohamed, Ramanan & Gebraeel,
"Federated Granger Causality Learning for Interdependent Clients with State Space Representation",
ICLR 2025, arXiv:2501.13890), in a small version checked against a centralised VAR-Granger oracle.

The system (the paper's setting: interdependent clients, each a linear state-space model whose state is
driven by other clients' states; docs/granger.md):

    h_t     = A h_{t-1} + w_t,        w_t ~ N(0, q I)            joint state (M clients x p states)
    y_{m,t} = C_m h_{m,t} + v_{m,t},  v_{m,t} ~ N(0, r I)        client m sees only its own y (D >> p)

The off-diagonal block A_{mn} (p x p) is how client n's state drives client m's: client n
Granger-causes client m iff A_{mn} != 0. Raw data y never leave a client.

The federated loop (our reading of the paper's client / augmented client / server models, Sec. 3 and
its Tb. 1; the exact update rules and step sizes are UNVERIFIED, the paper's text was not reachable
here -- we use closed-form least squares where it uses gradient steps):

1. client m runs a Kalman filter on its own y_m with the *augmented* prediction
       h_{m,t|t-1} = A_{mm} h_{m,t-1|t-1} + sum_{n != m} A_{mn} h_{n,t-1}     (the server's term)
   and sends only its low-dimensional filtered states h_{m,t|t} (p numbers per step, not D);
2. the server fits the joint transition on the stacked states, A = argmin sum_t ||H_t - A H_{t-1}||^2
   (+ ridge), scores every ordered pair by ||A_{mn}||_F, and sends each client its row of blocks
   (its own A_{mm} and the cross term sum_n A_{mn} h_{n,t-1} computed from the other clients' states);
3. repeat for a few rounds (round 0 has no cross terms).

Oracles: (a) the *centralised state-space oracle*, the same iteration with one Kalman filter on all
clients' raw data at once (the paper's centralised oracle, which its theory bounds the federated
estimate against); (b) a *VAR-Granger oracle* on all raw observations together: a VAR fitted by
statsmodels and its Granger F-test of "client n's variables do not cause client m's" (the statistic
is the score). Support recovery is scored by AUROC over ordered pairs (scikit-learn).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass
class CoupledClients:
    """A simulated instance: true transition ``A`` (M p x M p), ``support`` (M, M) bool (n -> m at [m, n],
    diagonal False), observation maps ``C`` (M of D x p), noise levels, data ``y`` (M of T x D),
    true states ``h`` (T x M p)."""

    A: np.ndarray
    support: np.ndarray
    C: list
    q: float
    r: float
    y: list
    h: np.ndarray
    snr_db: float

    @property
    def clients(self) -> int:
        return len(self.C)

    @property
    def p(self) -> int:
        return self.C[0].shape[1]


def simulate_clients(
    clients: int = 6,
    p: int = 2,
    d_obs: int = 8,
    length: int = 2000,
    *,
    density: float = 0.25,
    coupling: float = 0.35,
    snr_db: float = 0.0,
    q: float = 1.0,
    seed: int = 0,
) -> CoupledClients:
    """Random interdependent clients with a known sparse coupling.

    Local dynamics: a damped rotation (radius 0.6-0.8) per client; each ordered pair (n -> m) is coupled
    with probability ``density`` by a random p x p block of spectral norm ``coupling``; A is rescaled
    (cross blocks only) until its spectral radius is < 0.95. The observation noise r is set so that
    the per-client SNR = var(C_m h_m) / var(v_m) equals ``snr_db`` (decibels)."""
    if clients < 2 or p < 1 or d_obs < p or length < 10:
        raise ValueError(f"need clients >= 2, p >= 1, d_obs >= p, length >= 10; got {clients}, {p}, {d_obs}, {length}")
    if not 0 < density <= 1:
        raise ValueError(f"density must be in (0, 1]; got {density}")
    rng = np.random.default_rng(seed)
    M, N = clients, clients * p
    A = np.zeros((N, N))
    for m in range(M):
        radius, angle = rng.uniform(0.6, 0.8), rng.uniform(0.2, 1.2)
        rot = radius * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        A[m * p : (m + 1) * p, m * p : (m + 1) * p] = rot[:p, :p] if p <= 2 else radius * np.eye(p)
    support = (rng.random((M, M)) < density) & ~np.eye(M, dtype=bool)
    if not support.any():  # at least one edge, so AUROC is defined
        m, n = rng.choice(M, 2, replace=False)
        support[m, n] = True
    for m, n in zip(*np.nonzero(support)):
        block = rng.standard_normal((p, p))
        A[m * p : (m + 1) * p, n * p : (n + 1) * p] = coupling * block / np.linalg.norm(block, 2)
    cross = ~np.kron(np.eye(M, dtype=bool), np.ones((p, p), dtype=bool))
    while np.max(np.abs(np.linalg.eigvals(A))) >= 0.95:
        A[cross] *= 0.9

    burn = 200
    h = np.zeros((length + burn, N))
    w = rng.standard_normal((length + burn, N)) * np.sqrt(q)
    for t in range(1, length + burn):
        h[t] = A @ h[t - 1] + w[t]
    h = h[burn:]
    C = [rng.standard_normal((d_obs, p)) / np.sqrt(p) for _ in range(M)]
    signal = np.mean([np.var(h[:, m * p : (m + 1) * p] @ C[m].T) for m in range(M)])
    r = float(signal / 10 ** (snr_db / 10))
    y = [h[:, m * p : (m + 1) * p] @ C[m].T + rng.standard_normal((length, d_obs)) * np.sqrt(r) for m in range(M)]
    return CoupledClients(A=A, support=support, C=C, q=q, r=r, y=y, h=h, snr_db=snr_db)


# --- the pieces of the federated loop ----------------------------------------------------------------
def kalman_filter(
    y: np.ndarray, A: np.ndarray, C: np.ndarray, q: float, r: float, drive: np.ndarray | None = None
) -> np.ndarray:
    """Filtered states (T, p) of h_t = A h_{t-1} + drive_t + w_t, y_t = C h_t + v_t (isotropic noises q, r).

    ``drive`` (T, p) is the known extra input of the prediction step (the augmented client's cross term,
    drive_t = sum_n A_mn h_{n,t-1}); None for none."""
    T, p = y.shape[0], A.shape[0]
    Q, R = q * np.eye(p), r * np.eye(C.shape[0])
    h, P = np.zeros(p), q * np.eye(p)
    out = np.empty((T, p))
    for t in range(T):
        h = A @ h + (drive[t] if drive is not None else 0.0)
        P = A @ P @ A.T + Q
        S = C @ P @ C.T + R
        K = np.linalg.solve(S, C @ P).T  # (p, D): P C^T S^-1 (S symmetric)
        h = h + K @ (y[t] - C @ h)
        P = (np.eye(p) - K @ C) @ P
        out[t] = h
    return out


def fit_transition(states: np.ndarray, ridge: float = 1e-3) -> np.ndarray:
    """Server model: A = argmin sum_t ||H_t - A H_{t-1}||^2 + ridge T ||A||^2 from states (T, N)."""
    X, Y = states[:-1], states[1:]
    G = X.T @ X + ridge * len(X) * np.eye(X.shape[1])
    return np.linalg.solve(G, X.T @ Y).T


def block_scores(A: np.ndarray, clients: int) -> np.ndarray:
    """(M, M) Frobenius norms of the blocks A_mn (n -> m), diagonal zeroed."""
    p = A.shape[0] // clients
    s = np.linalg.norm(A.reshape(clients, p, clients, p), axis=(1, 3))
    np.fill_diagonal(s, 0.0)
    return s


def federated_granger(data: CoupledClients, rounds: int = 5, ridge: float = 1e-3) -> dict:
    """The federated loop (module docstring): clients filter locally with the server's cross terms, the
    server refits the joint transition from the shared states. Returns the final ``A``, the pair
    ``scores`` (M, M), the per-round scores and the floats each client sent per step (p)."""
    M, p = data.clients, data.p
    A = np.zeros((M * p, M * p))
    for m in range(M):
        A[m * p : (m + 1) * p, m * p : (m + 1) * p] = 0.5 * np.eye(p)  # round 0: no cross terms
    states = np.zeros_like(data.h)
    history, transitions = [], []
    for _ in range(rounds):
        shared_prev = np.vstack([np.zeros((1, M * p)), states[:-1]])  # H_{t-1} as the server last saw it
        new = np.empty_like(states)
        for m in range(M):
            rows = slice(m * p, (m + 1) * p)
            cross = A[rows].copy()
            cross[:, rows] = 0.0
            drive = shared_prev @ cross.T  # (T, p): the server's term sum_{n != m} A_mn h_{n,t-1}
            new[:, rows] = kalman_filter(data.y[m], A[rows, rows], data.C[m], data.q, data.r, drive)
        states = new  # what the clients send: (T, M p) low-dimensional states
        A = fit_transition(states, ridge)
        history.append(block_scores(A, M))
        transitions.append(A)
    return {
        "A": A,
        "scores": history[-1],
        "history": history,
        "transitions": transitions,
        "floats_per_step_per_client": p,
    }


def centralised_state_space_oracle(data: CoupledClients, rounds: int = 5, ridge: float = 1e-3) -> dict:
    """The same iteration with one joint Kalman filter over all clients' raw data (full A at once)."""
    M, p = data.clients, data.p
    C = np.zeros((sum(c.shape[0] for c in data.C), M * p))
    row = 0
    for m, Cm in enumerate(data.C):
        C[row : row + Cm.shape[0], m * p : (m + 1) * p] = Cm
        row += Cm.shape[0]
    y = np.hstack(data.y)
    A = 0.5 * np.eye(M * p)
    for _ in range(rounds):
        A = fit_transition(kalman_filter(y, A, C, data.q, data.r), ridge)
    return {"A": A, "scores": block_scores(A, M)}


def var_granger_oracle(data: CoupledClients, maxlags: int = 4) -> dict:
    """Centralised VAR on all raw observations (statsmodels; lag order by BIC in 1..``maxlags``) and the
    Granger F statistic of each client's variables on each other client's: scores (M, M), n -> m at [m, n]."""
    from statsmodels.tsa.api import VAR

    M, D = data.clients, data.y[0].shape[1]
    model = VAR(np.hstack(data.y))
    res = model.fit(maxlags=maxlags, ic="bic", trend="c")
    if res.k_ar == 0:  # BIC may choose no lags at low SNR; Granger tests need at least one
        res = model.fit(1, trend="c")
    scores = np.zeros((M, M))
    for m in range(M):
        for n in range(M):
            if m != n:
                test = res.test_causality(
                    caused=list(range(m * D, (m + 1) * D)), causing=list(range(n * D, (n + 1) * D)), kind="f"
                )
                scores[m, n] = test.test_statistic
    return {"scores": scores, "lag_order": int(res.k_ar)}


def support_auroc(scores: np.ndarray, support: np.ndarray) -> float:
    """AUROC of off-diagonal ``scores`` for the true ``support`` (scikit-learn's roc_auc_score)."""
    off = ~np.eye(support.shape[0], dtype=bool)
    return _auroc(scores[off], support[off])


@dataclass
class GrangerExperiment:
    """Instances pooled per SNR (each has only M (M - 1) pairs); sizes of :func:`simulate_clients`."""

    snr_db: Sequence[float] = (-10.0, -5.0, 0.0, 10.0)
    seeds: Sequence[int] = (0, 1, 2, 3, 4)
    clients: int = 6
    p: int = 2
    d_obs: int = 8
    length: int = 2000
    rounds: int = 5
    kwargs: dict = field(default_factory=dict)


def granger_experiment(cfg: GrangerExperiment | None = None) -> list[dict]:
    """AUROC of federated / centralised-state-space / VAR-Granger scores, pooled over seeds, per SNR."""
    cfg = cfg or GrangerExperiment()
    rows = []
    for snr in cfg.snr_db:
        pooled: dict[str, list] = {"federated": [], "state_space_oracle": [], "var_granger_oracle": []}
        labels, t0 = [], time.process_time()
        a_err: dict[str, list] = {"federated_round0": [], "federated": [], "state_space_oracle": []}
        for seed in cfg.seeds:
            data = simulate_clients(cfg.clients, cfg.p, cfg.d_obs, cfg.length, snr_db=snr, seed=seed, **cfg.kwargs)
            off = ~np.eye(data.clients, dtype=bool)
            labels.append(data.support[off])
            fed, ora = federated_granger(data, cfg.rounds), centralised_state_space_oracle(data, cfg.rounds)
            pooled["federated"].append(fed["scores"][off])
            pooled["state_space_oracle"].append(ora["scores"][off])
            for name, A in (
                ("federated_round0", fed["transitions"][0]),
                ("federated", fed["A"]),
                ("state_space_oracle", ora["A"]),
            ):
                a_err[name].append(np.linalg.norm(A - data.A) / np.linalg.norm(data.A))
            pooled["var_granger_oracle"].append(var_granger_oracle(data)["scores"][off])
        y = np.concatenate(labels)
        row = {"snr_db": snr, "pairs": int(y.size), "edges": int(y.sum())}
        for name, s in pooled.items():
            row[f"auroc_{name}"] = round(_auroc(np.concatenate(s), y), 4)
        for name, errs in a_err.items():
            row[f"A_rel_error_{name}"] = round(float(np.mean(errs)), 3)
        row["cpu_s"] = round(time.process_time() - t0, 1)
        rows.append(row)
    return rows


def _auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    if labels.min() == labels.max():
        raise ValueError("AUROC needs both coupled and uncoupled pairs in the support")
    return float(roc_auc_score(labels.astype(int), scores))


__all__ = [
    "CoupledClients",
    "GrangerExperiment",
    "block_scores",
    "centralised_state_space_oracle",
    "federated_granger",
    "fit_transition",
    "granger_experiment",
    "kalman_filter",
    "simulate_clients",
    "support_auroc",
    "var_granger_oracle",
]
