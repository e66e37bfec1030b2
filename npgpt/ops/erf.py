"""The error function, for exact GELU: Phi(x) = (1 + erf(x / sqrt(2))) / 2.

NumPy has no erf and npgpt does not depend on SciPy, so:
  - float64 reads a table of erf and its Taylor coefficients at nodes 1/128 apart and sums seven
    Taylor terms (`erf_float64`, below; within a few ulps of the true erf, as the float64 parity
    tests need, and vectorized: mapping math.erf over one baby GPT hidden layer, (4096, 1536),
    took 0.95 s, the table 0.10-0.20 s);
  - float32 reads a table and takes one quadratic Taylor step (`erf_float32`, below);
  - CuPy arrays use CuPy's own erf kernel (backend.device_erf).

The float32 method. Put nodes on a grid of spacing 1/G over [-4, 4] (G = 512), x_k = k / G for
k = -4G..4G. For x in [-4, 4] let s = G x, r = round(s) and delta = s - r, so |delta| <= 1/2 and
x = x_r + delta / G. Taylor around the node, in delta:

    erf(x) = erf(x_r) + c1 delta + c2 delta^2 + R,
    c1 = erf'(x_r) / G,   c2 = erf''(x_r) / (2 G^2) = -x_r erf'(x_r) / G^2,
    erf'(x) = 2 exp(-x^2) / sqrt(pi),    |R| <= max|erf'''| / 6 * (1 / 2G)^3 < 3.6e-10.

Beyond |x| = 4, erf rounds to +-1 in float32 (1 - erf(4) = 1.5e-8), so x is clipped to [-4, 4].
erf(x_r) is stored as a float32 head plus a float32 tail (head + tail = erf(x_r) to ~1e-15), and
the small correction tail + delta (c1 + delta c2) (below 0.0012) is added to the head last, so the
result is rounded about once: absolute error below 3.1e-8, a few ulps near 0 where erf(x) ~ x.
"""

from __future__ import annotations

import math

import numpy as np

from .. import parallel
from ..backend import device_erf

NODES_PER_UNIT = 512  # G: table spacing 1/512, so |delta / G| <= 1/1024
X_MAX = 4.0  # erf(x) rounds to +-1 in float32 beyond |x| = 4
HALF_ROWS = int(X_MAX * NODES_PER_UNIT)  # K = 2048 nodes on (0, 4]; row k + K holds node x_k
BLOCK = 1 << 15  # elements per block: a block's scratch (768 KiB) stays in a core's L2 cache

_math_erf = np.frompyfunc(math.erf, 1, 1)


def _table() -> np.ndarray:
    """(2K + 1, 4) float32 rows [head, tail, c1, c2] for the nodes x_k, k = -K..K (16-byte rows,
    which np.take gathers fastest). The middle row holds head = tail = -0.0, so x = -0.0 gives -0.0
    and x = +0.0 gives +0.0 (-0.0 + +0.0 = +0.0)."""
    x = np.arange(-HALF_ROWS, HALF_ROWS + 1) / NODES_PER_UNIT  # (2K+1,) the nodes
    e = np.array(_math_erf(x), dtype=np.float64)  # erf(x_k) in float64
    head = e.astype(np.float32)
    d1 = 2.0 / math.sqrt(math.pi) * np.exp(-x * x)  # erf'(x_k)
    c1 = d1 / NODES_PER_UNIT
    c2 = -x * d1 / NODES_PER_UNIT**2
    table = np.stack([head, e - head, c1, c2], axis=1).astype(np.float32)
    table[HALF_ROWS, :2] = -0.0
    return table


TABLE = _table()

# Rounding by addition: for |s| < 2^22, the float32 sum s + 1.5 * 2^23 lies in [2^23, 2^24), where
# float32's spacing is exactly 1, so the addition itself rounds s to the nearest integer r, and the
# sum's bit pattern (as an int32) is ROUND_BITS + r. Subtracting ROUND_BITS - K gives the row r + K.
ROUND = np.float32(1.5 * 2**23)
ROUND_BITS = int(np.array(ROUND).view(np.int32))


def _flat_blocks(x: np.ndarray, out: np.ndarray, block: int, *work):
    """Yield (x block, out block, *work arrays) over matching flat blocks of `block` elements of x and
    out (out may be x itself: a caller reads each block of x before writing it), with one per-thread
    scratch array per (slot, trailing shape, dtype) in `work`, sliced to the block (a speed trick:
    each block's passes stay in cache and nothing is allocated per block)."""
    flat_x, flat_out = x.reshape(-1), out.reshape(-1)
    m = min(block, flat_x.size)
    bufs = [parallel.scratch(np, slot, (m, *shape), dtype) for slot, shape, dtype in work]
    for i in range(0, flat_x.size, block):
        xs = flat_x[i:i + block]
        n = xs.size
        yield (xs, flat_out[i:i + n], *(b[:n] for b in bufs))


def erf_float32(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """erf of a float32 NumPy array by the table and Taylor step above; NaN gives NaN.

    Walks the array in blocks through reused scratch arrays that stay in cache (a helper for speed:
    1.6 ms on 768x512, against 30 ms for mapping math.erf); each block computes
        s = G clip(x, -4, 4),  r = round(s),  delta = s - r,
        erf(x) = head[r] + (tail[r] + delta (c1[r] + delta c2[r])).
    """
    out = np.empty(x.shape, dtype=np.float32) if out is None else out
    for xs, o, s, r, rows in _flat_blocks(x, out, BLOCK, ("erf_s", (), np.float32), ("erf_r", (), np.float32),
                                          ("erf_rows", (4,), np.float32)):
        np.clip(xs, -X_MAX, X_MAX, out=s)
        s *= NODES_PER_UNIT  # s = G clip(x, -4, 4), exact (G is a power of two); NaN stays NaN
        np.add(s, ROUND, out=r)  # r's bits now hold ROUND_BITS + round(s)
        k = r.view(np.int32)
        k -= ROUND_BITS - HALF_ROWS  # k = round(s) + K: the row of the nearest node
        np.take(TABLE, k, axis=0, out=rows, mode="clip")  # (n, 4); NaN's garbage row is clipped, then NaN wins
        k += ROUND_BITS - HALF_ROWS  # r's bits back to ROUND + round(s)
        r -= ROUND  # r = round(s) (+0.0 for s = -0.0)
        s -= r  # delta = s - r, in [-1/2, 1/2]
        head, tail, c1, c2 = rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3]
        np.multiply(c2, s, out=r)
        r += c1
        r *= s
        r += tail  # tail + delta (c1 + delta c2)
        np.add(head, r, out=o)
    return out


# --- float64: Taylor steps from a table ---------------------------------------------------------
#
# Nodes x_r = r / G64 for r = 0 .. 6 G64 (G64 = 128); for |x| <= 6 let r = round(G64 |x|) and
# delta = |x| - x_r, so |delta| <= 1 / (2 G64) = 1/256. With d^k erf / dx^k = (2 / sqrt(pi)) (-1)^(k-1)
# H_(k-1)(x) exp(-x^2) (H_n the physicists' Hermite polynomials: H_0 = 1, H_1 = 2x,
# H_(n+1) = 2x H_n - 2n H_(n-1)), Taylor around the node gives
#     erf(|x|) = erf(x_r) + sum_(k=1..7) a_k(x_r) delta^k,   a_k = (2 / sqrt(pi)) exp(-x_r^2) (-1)^(k-1) H_(k-1)(x_r) / k!,
# with a remainder below |a_8| delta^8 <= 0.025 * 2^(-64) < 2e-21 (Cramer's bound |H_n(x)| <=
# 1.09 sqrt(2^n n!) e^(x^2 / 2) gives |a_8| <= 0.025 for every x): far below an ulp of erf(x) >= erf(1/256)
# at every node but x_r = 0, where erf(delta) = (2 / sqrt(pi)) (delta - delta^3 / 3 + ...) has no
# delta^8 term and what is left out is below 1e-21 of the sum. erf(x_r) is math.erf's (within an
# ulp), the correction is below 0.0045 and adds rounding only in its last bits, so the sum is within
# about two ulps (measured: at most 2.0, mean 0.25, against mpmath at 30 digits on 190,000 points);
# delta itself is exact (|x| and x_r are within a factor 2 of each other, or x_r = 0). Beyond |x| = 6, erf rounds to +-1 in float64
# (1 - erf(6) = 2.2e-17), so |x| is clipped to 6; erf is odd, so the sign is put back last.
G64 = 128
K64 = 7  # Taylor terms


def _table64() -> np.ndarray:
    """(6 G64 + 1, K64 + 1) float64 rows [erf(x_r), a_1, ..., a_7] for the nodes x_r = r / G64 (TABLE64 keeps it transposed)."""
    x = np.arange(0, 6 * G64 + 1) / G64
    cols = [np.array(_math_erf(x), dtype=np.float64)]
    scale = 2.0 / math.sqrt(math.pi) * np.exp(-x * x)
    h_prev, h = np.zeros_like(x), np.ones_like(x)  # H_(-1) (unused), H_0
    for k in range(1, K64 + 1):  # a_k from H_(k-1), then H_k for the next round
        cols.append(scale * (-1.0) ** (k - 1) * h / math.factorial(k))
        h_prev, h = h, 2.0 * x * h - 2.0 * (k - 1) * h_prev
    return np.stack(cols, axis=1)


TABLE64 = np.ascontiguousarray(_table64().T)  # (K64 + 1, nodes): one contiguous column per coefficient, for np.take
BLOCK64 = 1 << 14  # elements per block: a block's work arrays stay in a core's L2


def erf_float64(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """erf of a float64 NumPy array by the table and Taylor sum above; NaN gives NaN, +-inf +-1.
    Walks the array in blocks through reused scratch (a helper for speed, as erf_float32); each block:
        a = min(|x|, 6),  r = round(G64 a),  delta = a - r / G64,
        erf(x) = copysign(erf(x_r) + delta (a_1 + delta (a_2 + ... + delta a_7)), x),
    each coefficient gathered from its own table column as Horner's rule reaches it."""
    out = np.empty(x.shape, dtype=np.float64) if out is None else out
    for xs, o, a, r, c, k in _flat_blocks(x, out, BLOCK64, ("erf64_a", (), np.float64), ("erf64_r", (), np.float64),
                                          ("erf64_c", (), np.float64), ("erf64_k", (), np.intp)):
        np.abs(xs, out=a)
        np.minimum(a, 6.0, out=a)  # NaN stays NaN
        np.multiply(a, G64, out=r)  # exact: G64 is a power of two
        np.rint(r, out=r)
        with np.errstate(invalid="ignore"):
            np.copyto(k, r, casting="unsafe")  # the node's index; NaN's garbage index is clipped below, then NaN wins
        r /= G64  # x_r, exact
        a -= r  # delta, exact
        p = np.take(TABLE64[K64], k, out=r, mode="clip")  # Horner from a_7
        p *= a
        for j in range(K64 - 1, 0, -1):
            p += np.take(TABLE64[j], k, out=c, mode="clip")
            p *= a
        p += np.take(TABLE64[0], k, out=c, mode="clip")  # erf(x_r) + the correction
        np.copysign(p, xs, out=o)
    return out


_BY_DTYPE = {np.dtype(np.float32): erf_float32, np.dtype(np.float64): erf_float64}


def erf(x, out=None):
    """The error function elementwise, in x's dtype and on x's device (see the module docstring);
    into `out` (which may be x) when given."""
    y = device_erf(x)  # the device's own kernel; None for a NumPy array
    if y is None:
        x = np.asarray(x)
        vectorized = _BY_DTYPE.get(x.dtype)
        if vectorized is not None:
            if out is None or out.flags.c_contiguous:
                return vectorized(x, out)
            y = vectorized(x)
        else:
            y = np.asarray(_math_erf(x), dtype=x.dtype if x.dtype.kind == "f" else np.float64)
    if out is None:
        return y
    out[...] = y
    return out


# --- Phi(x) for exact GELU in float32, sharing GELU's exp(-x^2 / 2) -----------------------------
#
# For z = |x| / sqrt(2): Phi(-|x|) = erfc(z) / 2 = exp(-z^2) R(z) / 2 with R(z) = exp(z^2) erfc(z),
# a smooth function falling from R(0) = 1 like 1 / (z sqrt(pi)). With t = 1 / (1 + z / 2), which maps
# z in [0, inf) onto t in (0, 1], R(z) / 2 = t P(t) for a degree-8 polynomial P. exp(-z^2) is
# exp(-x^2 / 2), which GELU's derivative needs anyway, so Phi costs no exp of its own:
#     w = Phi(-|x|) = exp(-x^2 / 2) t P(t),    Phi(x) = 1 - w for x >= +0,  w for x <= -0.
# P's coefficients (highest power first) are a relative-error least-squares fit of R(z) / (2 t) on
# 4000 points of t in [1/7, 1] (z up to 12; beyond, exp(-x^2 / 2) underflows in float32), reweighted
# towards the worst points: max relative error 4.4e-8 in exact arithmetic; evaluated in float32,
# w is within a few ulps everywhere, and unlike 1 + erf(x / sqrt(2)) it keeps its relative accuracy
# in the left tail (no cancellation).
PHI_POLY = (
    -0.029681493746194706,
    0.14300512688192216,
    -0.24508635490004602,
    0.14073409572465437,
    -0.014483815118749653,
    0.10183841053725494,
    0.12142699940711807,
    0.1412047722058201,
    0.14104223704086047,
)
_T_SCALE = 2.0 * math.sqrt(2.0)  # t = 1 / (1 + |x| / (2 sqrt 2)) = 2 sqrt 2 / (2 sqrt 2 + |x|)


def normal_cdf_float32(x: np.ndarray, e: np.ndarray, out: np.ndarray, t: np.ndarray, sign: np.ndarray) -> np.ndarray:
    """Phi(x) of a float32 block into `out`, from e = exp(-x^2 / 2) (see above); `t` (float32) and
    `sign` (int32) are work arrays of x's shape. A polynomial in contiguous passes instead of erf's
    table gathers, and x's sign moved by bit operations (np.copysign and masked ufuncs are several
    times slower than a plain pass): a speed trick, so exact GELU costs little more than the tanh form."""
    np.abs(x, out=t)
    t += _T_SCALE
    np.divide(_T_SCALE, t, out=t)  # t = 1 / (1 + z / 2), z = |x| / sqrt 2
    np.multiply(t, PHI_POLY[0], out=out)
    out += PHI_POLY[1]
    for c in PHI_POLY[2:]:  # Horner: P(t)
        out *= t
        out += c
    out *= t
    out *= e  # w = Phi(-|x|) = exp(-x^2 / 2) t P(t) >= 0
    np.bitwise_and(x.view(np.int32), _SIGN_BIT, out=sign)  # x's sign bit
    w_bits = out.view(np.int32)
    w_bits |= sign  # out = copysign(w, x): +w for x >= +0, -w for x <= -0
    sign |= _HALF_BITS  # copysign(1/2, x)
    h = sign.view(np.float32)
    h += 0.5  # 1 for x >= +0, 0 for x <= -0 (exact)
    np.subtract(h, out, out=out)  # Phi = 1 - w, or 0 + w (exact)
    return out


_SIGN_BIT = np.int32(-(2**31))  # float32's sign bit as an int32 mask
_HALF_BITS = np.int32(np.array(0.5, dtype=np.float32).view(np.int32))
