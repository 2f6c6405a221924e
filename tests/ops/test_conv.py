"""Long-convolution ops of the S4 family: FFT convolution, Vandermonde and Cauchy kernels.
Each fast op == its naive reference in float64, outputs and every gradient; bad input raises."""

import pytest
import torch

from torchssm.ops import conv
from torchssm.ops.cauchy import cauchy, cauchy_naive
from torchssm.ops.conv import conv_naive, fast_fft_length, fft_conv
from torchssm.ops.vandermonde import (
    _split,
    vandermonde,
    vandermonde_naive,
    vandermonde_transpose,
    vandermonde_transpose_naive,
)
from torchssm.testing import assert_values_and_grads_close

F64 = dict(rtol=1e-10, atol=1e-10)


def _assert_same(fast, ref, inputs):
    """Outputs and the gradients with respect to every input agree in float64."""
    inputs = [t.detach().clone().requires_grad_(True) for t in inputs]
    assert_values_and_grads_close([fast(*inputs)], [ref(*inputs)], inputs, **F64)


def _cplx(*shape, scale=1.0):
    return torch.complex(torch.randn(*shape, dtype=torch.float64), torch.randn(*shape, dtype=torch.float64)) * scale


# --- FFT convolution ------------------------------------------------------------------------------------
@pytest.mark.parametrize("length,klen", [(1, 1), (7, 7), (16, 20)])
def test_fft_conv_matches_naive_causal(length, klen):
    torch.manual_seed(0)
    u, k = torch.randn(2, length, 3, dtype=torch.float64), torch.randn(3, klen, dtype=torch.float64)
    _assert_same(fft_conv, conv_naive, [u, k])


def test_fft_conv_matches_naive_bidirectional():
    torch.manual_seed(1)
    u = torch.randn(2, 9, 3, dtype=torch.float64)
    k, kb = torch.randn(3, 9, dtype=torch.float64), torch.randn(3, 12, dtype=torch.float64)
    _assert_same(fft_conv, conv_naive, [u, k, kb])


@pytest.mark.parametrize("length", [11, 13])  # FFT sizes 24 and 27 > 2L: a zero gap in the circular kernel
def test_fft_conv_fast_size_bidirectional(length):
    torch.manual_seed(length)
    assert fast_fft_length(2 * length) > 2 * length
    u = torch.randn(2, length, 3, dtype=torch.float64)
    k, kb = torch.randn(3, length + 2, dtype=torch.float64), torch.randn(3, length, dtype=torch.float64)
    _assert_same(fft_conv, conv_naive, [u, k, kb])


# (B, L, H) = (3, 13, 5): FFT size n = 27; CHUNK_ELEMENTS = lines * n. None: the default (one block per
# batch row group); 2 * 27: channel blocks 2, 2, 1 (a partial one) per b; 1: one line per block;
# 2 * 5 * 27: two whole rows per block, then a partial group of one row.
BLOCKS = [None, 2 * 27, 1, 2 * 5 * 27]


@pytest.mark.parametrize("chunk", BLOCKS)
@pytest.mark.parametrize("bidirectional", [False, True])
def test_fft_conv_with_skip_matches_naive(monkeypatch, chunk, bidirectional):
    """y = K * u (+ K2 * u) + D u: output and du, dk, (dk_bwd), dD, over one block and over many."""
    if chunk is not None:
        monkeypatch.setattr(conv, "CHUNK_ELEMENTS", chunk)
    torch.manual_seed(5)
    assert fast_fft_length(2 * 13) == 27
    u, D = torch.randn(3, 13, 5, dtype=torch.float64), torch.randn(5, dtype=torch.float64)
    kernels = [torch.randn(5, 15, dtype=torch.float64)]  # k (H, Lk > L)
    if bidirectional:
        kernels.append(torch.randn(5, 13, dtype=torch.float64))  # k_bwd (H, L)
    if bidirectional:
        _assert_same(
            lambda u, k, kb, D: fft_conv(u, k, kb, D=D), lambda u, k, kb, D: conv_naive(u, k, kb, D=D), [u, *kernels, D]
        )
    else:
        _assert_same(lambda u, k, D: fft_conv(u, k, D=D), lambda u, k, D: conv_naive(u, k, D=D), [u, *kernels, D])


@pytest.mark.parametrize("chunk", BLOCKS)
def test_fft_conv_blocks_cover_every_line_once(monkeypatch, chunk):
    if chunk is not None:
        monkeypatch.setattr(conv, "CHUNK_ELEMENTS", chunk)
    seen = torch.zeros(3, 5, dtype=torch.int64)
    blocks = list(conv._chunks(3, 5, 27))
    for bs, hs in blocks:
        seen[bs, hs] += 1
        assert (bs.stop - bs.start) * (hs.stop - hs.start) <= max(1, conv.CHUNK_ELEMENTS // 27)
    assert (seen == 1).all()
    assert len(blocks) == {None: 1, 2 * 27: 9, 1: 15, 2 * 5 * 27: 2}[chunk]


@pytest.mark.parametrize("which", [0, 1, 2])
def test_fft_conv_gradient_of_one_input_only_with_skip(monkeypatch, which):
    """Only the requested gradient (du, dk or dD) is computed, over several blocks."""
    monkeypatch.setattr(conv, "CHUNK_ELEMENTS", 2 * 27)
    torch.manual_seed(6)
    inputs = [
        torch.randn(3, 13, 5, dtype=torch.float64),
        torch.randn(5, 13, dtype=torch.float64),
        torch.randn(5, dtype=torch.float64),
    ]
    inputs[which] = inputs[which].clone().requires_grad_(True)
    g = torch.randn(3, 13, 5, dtype=torch.float64)
    got = torch.autograd.grad((fft_conv(*inputs[:2], D=inputs[2]) * g).sum(), inputs[which])[0]
    want = torch.autograd.grad((conv_naive(*inputs[:2], D=inputs[2]) * g).sum(), inputs[which])[0]
    torch.testing.assert_close(got, want, **F64)


@pytest.mark.parametrize("which", [0, 1])
def test_fft_conv_gradient_of_one_input_only(which):
    """The autograd Function keeps only the spectrum the requested gradient needs."""
    torch.manual_seed(2)
    u, k = torch.randn(2, 6, 3, dtype=torch.float64), torch.randn(3, 6, dtype=torch.float64)
    inputs = [u, k]
    inputs[which] = inputs[which].clone().requires_grad_(True)
    g = torch.randn(2, 6, 3, dtype=torch.float64)
    got = torch.autograd.grad((fft_conv(*inputs) * g).sum(), inputs[which])[0]
    want = torch.autograd.grad((conv_naive(*inputs) * g).sum(), inputs[which])[0]
    torch.testing.assert_close(got, want, **F64)


def test_fast_fft_length_is_the_smallest_5_smooth_size():
    def smooth(m):
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        return m == 1

    for n in range(1, 600):
        got = fast_fft_length(n)
        assert smooth(got) and got >= n and not any(smooth(j) for j in range(n, got)), n
    assert fast_fft_length(2 * 4096) == 8192 and fast_fft_length(2 * 1001) == 2025
    with pytest.raises(ValueError, match="positive int"):
        fast_fft_length(0)


def test_conv_naive_is_the_written_sum():
    u = torch.randn(1, 5, 2, dtype=torch.float64)
    k, kb = torch.randn(2, 5, dtype=torch.float64), torch.randn(2, 5, dtype=torch.float64)
    D = torch.randn(2, dtype=torch.float64)
    y = conv_naive(u, k, kb, D=D)
    t, h = 2, 1
    want = sum(k[h, t - s] * u[0, s, h] for s in range(t + 1)) + sum(
        kb[h, s - t - 1] * u[0, s, h] for s in range(t + 1, 5)
    )
    torch.testing.assert_close(y[0, t, h], want + D[h] * u[0, t, h], **F64)


def test_fft_conv_low_precision_input_keeps_dtype():
    u = torch.randn(2, 32, 4).to(torch.bfloat16)
    k = torch.randn(4, 32)
    y = fft_conv(u, k)
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), conv_naive(u.float(), k), rtol=0.02, atol=0.05)


def test_fft_conv_bad_input():
    u = torch.randn(2, 8, 3)
    with pytest.raises(ValueError, match="shorter than the input length 8"):
        fft_conv(u, torch.randn(3, 7))
    with pytest.raises(ValueError, match=r"\(3, Lk\)"):
        fft_conv(u, torch.randn(4, 8))
    with pytest.raises(ValueError, match="channels"):
        fft_conv(u[0], torch.randn(3, 8))
    with pytest.raises(ValueError, match="empty"):
        fft_conv(u[:, :0], torch.randn(3, 8))
    for bad_D in (torch.randn(4), torch.randn(1, 3), [1.0, 2.0, 3.0]):
        for op in (fft_conv, conv_naive):
            with pytest.raises(ValueError, match=r"D must have shape \(channels,\)=\(3,\)"):
                op(u, torch.randn(3, 8), D=bad_D)


# --- Vandermonde -------------------------------------------------------------------------------------------
def _log_z(*shape):
    return torch.complex(-torch.rand(*shape, dtype=torch.float64), torch.randn(*shape, dtype=torch.float64))


LENGTHS = [1, 2, 3, 11, 16, 17, 50]  # 11, 17, 50: not squares, a partial last block; 1, 2: a single block


def test_split_blocks_cover_the_length():
    """z^(qT + r) for q < Q, r < T covers 0..L-1 with no whole block to spare, T = ceil(sqrt(L))."""
    for length in range(1, 2000):
        T, Q = _split(length)
        assert (T - 1) ** 2 < length <= T**2 and T * Q >= length > T * (Q - 1), length
    assert _split(11) == (4, 3) and _split(16384) == (128, 128)


@pytest.mark.parametrize("length", LENGTHS)
def test_vandermonde_matches_naive(length):
    torch.manual_seed(length)
    c, log_z = _cplx(2, 3, 4), _log_z(3, 4)  # c broadcasts over log_z's leading dimension
    _assert_same(lambda c, z: vandermonde(c, z, length), lambda c, z: vandermonde_naive(c, z, length), [c, log_z])


@pytest.mark.parametrize("length", LENGTHS)
def test_vandermonde_transpose_matches_naive(length):
    torch.manual_seed(100 + length)
    u, log_z = torch.randn(2, 3, length, dtype=torch.float64), _log_z(3, 4)
    _assert_same(vandermonde_transpose, vandermonde_transpose_naive, [u, log_z])
    w = _cplx(3, length)  # complex input, the same leading shape as log_z
    _assert_same(vandermonde_transpose, vandermonde_transpose_naive, [w, log_z])


def test_vandermonde_is_the_power_sum():
    c, log_z = _cplx(3), torch.tensor([-0.1 + 0.5j, -0.2 + 0.0j, -0.01 - 2j], dtype=torch.complex128)
    z = torch.exp(log_z)
    got = vandermonde(c, log_z, 6)
    torch.testing.assert_close(got, torch.stack([(c * z**l).sum() for l in range(6)]), **F64)


# |z| close to 1, several phases up to ~pi: the hardest case for long kernels
LONG_LOG_Z = torch.complex(
    torch.tensor([-1e-5, -1e-4, -1e-3, -3e-4], dtype=torch.float64),
    torch.tensor([1e-3, 0.7, 2.0, 3.1], dtype=torch.float64),
)


@pytest.mark.parametrize("dtype", [torch.complex128, torch.complex64])
def test_vandermonde_long_length_accuracy(dtype):
    """L = 16384 against exp(l log z) in float64 from the same (rounded) inputs. Both round the phase
    l Im(log z) once per factor, so per output l
        |fast_l - ref_l| <= eps (l |log z|_max + T + Q) sum_n |c_n| |z_n|^l     (eps of dtype's real part;
    the phase term dominates: about 1e-4 relative in float32, 2e-13 in float64, as exp(l log z) itself)."""
    torch.manual_seed(7)
    length, eps = 16384, torch.finfo(dtype.to_real()).eps
    log_z, c = LONG_LOG_Z.to(dtype), _cplx(4).to(dtype)
    z64, c64 = log_z.to(torch.complex128), c.to(torch.complex128)
    l = torch.arange(length, dtype=torch.float64)
    powers = torch.exp(z64[:, None] * l)  # (n, L): direct exp(l log z)
    ref = (c64[:, None] * powers).sum(0)  # (L,)
    got = vandermonde(c, log_z, length)
    assert got.dtype == dtype
    T, Q = _split(length)
    bound = eps * ((c64.abs()[:, None] * powers.abs()) * (l * z64.abs().max() + T + Q)).sum(0)  # (L,)
    assert ((got.to(torch.complex128) - ref).abs() <= bound).all()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_vandermonde_transpose_long_length_accuracy(dtype):
    """The same bound for sum_l u_l z_n^l at L = 16384:
    |fast_n - ref_n| <= eps sum_l |u_l| |z_n|^l (l |log z|_max + T + Q)."""
    torch.manual_seed(8)
    length, eps = 16384, torch.finfo(dtype).eps
    cdtype = torch.complex128 if dtype == torch.float64 else torch.complex64
    u, log_z = torch.randn(2, length, dtype=dtype), LONG_LOG_Z.to(cdtype)
    z64, u64 = log_z.to(torch.complex128), u.to(torch.float64)
    l = torch.arange(length, dtype=torch.float64)
    powers = torch.exp(z64[:, None] * l)  # (n, L)
    ref = (u64[:, None, :] * powers).sum(-1)  # (2, n)
    got = vandermonde_transpose(u, log_z)
    assert got.dtype == cdtype
    T, Q = _split(length)
    bound = eps * (u64.abs()[:, None, :] * powers.abs() * (l * z64.abs().max() + T + Q)).sum(-1)  # (2, n)
    assert ((got.to(torch.complex128) - ref).abs() <= bound).all()


def test_vandermonde_bad_input():
    with pytest.raises(ValueError, match=r"n=4"):
        vandermonde(_cplx(3), _cplx(4), 5)
    with pytest.raises(ValueError, match="length"):
        vandermonde(_cplx(4), _cplx(4), 0)
    for op in (vandermonde_transpose, vandermonde_transpose_naive):
        with pytest.raises(ValueError, match=r"L >= 1"):
            op(torch.randn(3, 0), _cplx(4))


# --- Cauchy --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("max_elements", [1 << 22, 6])
def test_cauchy_matches_naive(max_elements):
    torch.manual_seed(4)
    v, w, z = _cplx(2, 5), _cplx(2, 5), _cplx(9, scale=3.0)
    _assert_same(lambda v, z, w: cauchy(v, z, w, max_elements=max_elements), cauchy_naive, [v, z, w])


def test_cauchy_bad_input():
    with pytest.raises(ValueError, match=r"\(L,\)"):
        cauchy(_cplx(5), _cplx(2, 3), _cplx(5))
    with pytest.raises(ValueError, match="n=5"):
        cauchy(_cplx(4), _cplx(3), _cplx(5))
