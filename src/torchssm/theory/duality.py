"""State-space duality beyond scalar A: diagonal SSMs, the rank condition, and why softmax has no dual.

References:
  [SSD]  Dao & Gu 2024, "Transformers are SSMs: Generalized Models and Efficient Algorithms Through
         Structured State Space Duality", ICML; Def. 3.1 (N-semiseparable matrix: every submatrix on or
         below the diagonal has rank <= N), Sec. 3-5 (scalar-identity SSM == 1-SS masked attention).
  [HSSD] Hu, Zhang, ElSheikh, Wu, Liu 2025, "On Structured State-Space Duality", arXiv:2510.04944:
         (i) SSD extended to diagonal state matrices as a sum of N 1-SS masked attentions; (ii) the same
         O(T N) training cost as the scalar case; (iii) a necessary and sufficient condition for an SSM
         to equal 1-SS masked attention; (iv) no such dual for softmax attention ("rank explosion").
         The claims are taken from its abstract; theorem numbers and the exact wording of (iii) are
         UNVERIFIED here. The condition implemented below is the one we derive and test: the SSM's
         matrix M[t, s] = C_t A_{t:s} B_s must have semiseparable rank <= 1; for a time-invariant SSM
         that rank is the rank of its Hankel matrix (its McMillan degree, the minimal state size).

Diagonal SSM (one channel group, values p, states n), a_t in (0, 1]^n per-state decays:

    h_t = diag(a_t) h_{t-1} + x_t B_t^T  (p x n),   y_t = h_t C_t
        = sum_{s<=t} [ sum_k C_t[k] B_s[k] prod_{r=s+1}^t a_r[k] ] x_s          (the attention form)

so M = sum_k (C[:, k] B[:, k]^T) * L_k with L_k the 1-SS mask of state k: N-semiseparable, and
1-semiseparable when all states share one decay (the scalar case of [SSD]).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from torchssm.ops.ssd.chunked import segsum


def _check_diag(x: torch.Tensor, log_a: torch.Tensor, B: torch.Tensor, C: torch.Tensor) -> None:
    if x.dim() != 3:
        raise ValueError(f"x must be (batch, length, p); got shape {tuple(x.shape)}")
    want = (*x.shape[:2], log_a.shape[-1])
    for name, t in (("log_a", log_a), ("B", B), ("C", C)):
        if t.dim() != 3 or tuple(t.shape) != want:
            raise ValueError(f"{name} must be (batch, length, n) = {want}; got shape {tuple(t.shape)}")


def diagonal_ssm_recurrent(
    x: torch.Tensor,
    log_a: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    h0: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference loop. x (b, l, p), log_a (b, l, n) log-decays (<= 0), B, C (b, l, n), h0 (b, p, n).
    Returns y (b, l, p), h_last (b, p, n)."""
    _check_diag(x, log_a, B, C)
    b, l, p = x.shape
    h = h0 if h0 is not None else x.new_zeros(b, p, log_a.shape[-1])  # (b, p, n)
    ys = []
    for t in range(l):
        h = torch.exp(log_a[:, t, None, :]) * h + x[:, t, :, None] * B[:, t, None, :]
        ys.append(torch.einsum("bpn,bn->bp", h, C[:, t]))
    return torch.stack(ys, dim=1), h


def diagonal_ssm_matrix(log_a: torch.Tensor, B: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
    """The attention matrix M (b, l, l) of a diagonal SSM: sum over states of (C_k B_k^T) * L_k,
    L_k[t, s] = exp(sum_{r=s+1}^t log_a[r, k]). O(l^2 n) memory: for checks and small l."""
    masks = torch.exp(segsum(log_a.transpose(1, 2)))  # (b, n, l, l)
    return torch.einsum("btk,bsk,bkts->bts", C, B, masks)


def diagonal_ssm_attention(x: torch.Tensor, log_a: torch.Tensor, B: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
    """y = M x with M = :func:`diagonal_ssm_matrix` (the quadratic dual, [HSSD] (i)). y (b, l, p)."""
    _check_diag(x, log_a, B, C)
    return torch.einsum("bts,bsp->btp", diagonal_ssm_matrix(log_a, B, C), x)


def diagonal_ssm_chunked(
    x: torch.Tensor,
    log_a: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    h0: torch.Tensor | None = None,
    chunk_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Chunked algorithm for per-state decays, the diagonal analogue of Mamba-2's (``ssd_chunked``).

    Inside a chunk of T steps the attention form with one mask per state: scores[i, j] =
    sum_k C_i[k] B_j[k] exp(acum_i[k] - acum_j[k]): O(T^2 n) per chunk, i.e. O(l T n) in all -- the
    cost of the scalar case's C B^T, which is also O(l T n) ([HSSD] (ii)); plus O(l T p) to apply it.
    Across chunks a recurrence on the (p, n) chunk states with per-state decays exp(acum_T[k]):
    O(l n p), as in the scalar case. Returns y (b, l, p), h_last (b, p, n).
    """
    _check_diag(x, log_a, B, C)
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be an int >= 1; got {chunk_size!r}")
    b, l, p = x.shape
    n = log_a.shape[-1]
    T = min(chunk_size, l)
    pad = (-l) % T
    c = (l + pad) // T
    # padding: log_a = 0 (decay 1) and x = 0 (nothing added): the final state is unchanged
    xs, la, Bs, Cs = (F.pad(t, (0, 0, 0, pad)).view(b, c, T, t.shape[-1]) for t in (x, log_a, B, C))
    acum = torch.cumsum(la, dim=2)  # (b, c, T, n)
    seg = torch.exp(segsum(la.transpose(2, 3)))  # (b, c, n, T, T) per-state intra-chunk masks
    scores = torch.einsum("bcik,bcjk,bckij->bcij", Cs, Bs, seg)  # (b, c, T, T)
    y_diag = torch.einsum("bcij,bcjp->bcip", scores, xs)  # (b, c, T, p)
    to_end = torch.exp(acum[:, :, -1:, :] - acum)  # (b, c, T, n) decay from j to the chunk's end
    states = torch.einsum("bcjk,bcjp->bcpk", to_end * Bs, xs)  # (b, c, p, n) each chunk's own end state
    h = h0 if h0 is not None else x.new_zeros(b, p, n)
    carried = []  # state entering each chunk
    for ci in range(c):
        carried.append(h)
        h = torch.exp(acum[:, ci, -1])[:, None, :] * h + states[:, ci]
    H = torch.stack(carried, dim=1)  # (b, c, p, n)
    y_off = torch.einsum("bcik,bcpk->bcip", Cs * torch.exp(acum), H)  # (b, c, T, p)
    y = (y_diag + y_off).reshape(b, c * T, p)[:, :l]
    return y, h


def semiseparable_rank(M: torch.Tensor, rtol: float = 1e-9) -> int:
    """The smallest N with M N-semiseparable ([SSD] Def. 3.1): max over j of rank(M[j:, :j+1]) (the
    maximal submatrices on or below the diagonal), numerical rank with singular values > rtol * max|M|.
    M: (l, l)."""
    if M.dim() != 2 or M.shape[0] != M.shape[1]:
        raise ValueError(f"M must be a square (l, l) matrix; got shape {tuple(M.shape)}")
    M = M.to(torch.float64)
    scale = float(M.abs().max())
    if scale == 0.0:
        return 0
    return max(int((torch.linalg.svdvals(M[j:, : j + 1]) > rtol * scale).sum()) for j in range(M.shape[0]))


def lti_hankel_rank(A: torch.Tensor, B: torch.Tensor, C: torch.Tensor, length: int, rtol: float = 1e-9) -> int:
    """Semiseparable rank of a time-invariant SSM's matrix M[t, s] = C A^{t-s} B (A (n, n), B, C (n,)),
    from its Hankel matrix H[i, j] = C A^{i+j} B (i, j < length // 2 + 1): M[j:, :j+1] = O R factors
    through the Hankel block, so this is the minimal state size (McMillan degree) once length >= 2n."""
    A, B, C = (t.to(torch.float64) for t in (A, B, C))
    m = length // 2 + 1
    markov = [C @ B]
    v = B
    for _ in range(2 * m - 2):
        v = A @ v
        markov.append(C @ v)
    h = torch.stack(markov)  # (2m - 1,) Markov parameters C A^k B
    H = torch.stack([h[i : i + m] for i in range(m)])  # (m, m)
    scale = float(H.abs().max())
    return 0 if scale == 0.0 else int((torch.linalg.svdvals(H) > rtol * scale).sum())


def equals_one_ss_attention(A: torch.Tensor, B: torch.Tensor, C: torch.Tensor, length: int = 64) -> bool:
    """The rank condition ([HSSD] (iii), as derived in the module docstring): a time-invariant SSM
    (A, B, C) is 1-semiseparable masked attention iff its Hankel rank is <= 1, i.e. it is a
    one-state SSM in disguise: a scalar-times-identity A, or a diagonal A whose modes with
    C_k B_k != 0 share one decay. A Jordan block (one eigenvalue, not diagonalisable) fails it."""
    return lti_hankel_rank(A, B, C, length) <= 1


def causal_softmax_matrix(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Causal softmax attention matrix softmax(q k^T + causal mask): q, k (l, d) -> (l, l)."""
    l = q.shape[0]
    s = (q @ k.T).masked_fill(torch.triu(torch.ones(l, l, dtype=torch.bool, device=q.device), 1), float("-inf"))
    return torch.softmax(s, dim=-1)


def softmax_rank_growth(lengths: Sequence[int] = (8, 16, 32, 64), d: int = 4, seed: int = 0) -> list[dict]:
    """[HSSD] (iv) numerically: the semiseparable rank of causal softmax attention grows with l (here
    it reaches the largest possible, ceil(l/2)), while masked linear attention tril(q k^T) with the same
    d stays at d and an SSM's stays at its state size: softmax attention has no fixed-N SSM form."""
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for l in lengths:
        q, k = torch.randn(2, l, d, generator=gen, dtype=torch.float64)
        rows.append(
            {
                "length": l,
                "d": d,
                "softmax": semiseparable_rank(causal_softmax_matrix(q, k)),
                "linear": semiseparable_rank(torch.tril(q @ k.T)),
            }
        )
    return rows


__all__ = [
    "causal_softmax_matrix",
    "diagonal_ssm_attention",
    "diagonal_ssm_chunked",
    "diagonal_ssm_matrix",
    "diagonal_ssm_recurrent",
    "equals_one_ss_attention",
    "lti_hankel_rank",
    "semiseparable_rank",
    "softmax_rank_growth",
]
