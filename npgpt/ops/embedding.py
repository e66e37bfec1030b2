"""Embeddings: token lookup (gather forward, scatter-add backward) and positional encodings.

Learned positions (GPT-2's wpe) are the same lookup with ids 0..T-1; sinusoidal positions
(Vaswani et al., 2017) are a constant table with no gradient.
"""

from __future__ import annotations

from ..backend import get_xp, resolve_dtype, scatter_add
from ..function import Function
from ..tensor import Tensor
from ._util import check_float


class Embedding(Function):
    """y[..., :] = w[ids[...], :]   (a row lookup).

    Shapes:   ids (*S) integers in [0, V), w (V, C)  ->  y (*S, C)
    Saved:    ids, V
    Backward: y[n] = w[ids[n]] copies row ids[n], so dw[v] = sum over every n with ids[n] == v of
              dy[n]: a scatter-add of dy's rows into zeros (V, C). A plain `dw[ids] += dy` would keep
              one contribution per repeated id; scatter_add keeps all. ids get no gradient.
    """

    def forward(self, ids, w, check_ids=True):
        if ids.dtype.kind not in "iu":
            raise ValueError(f"embedding: ids must be integers, got dtype {ids.dtype} (shape {tuple(ids.shape)})")
        check_float("embedding", w)
        if w.ndim != 2:
            raise ValueError(f"embedding: the table must have shape (V, C), got {tuple(w.shape)}")
        V = w.shape[0]
        if check_ids and ids.size:
            bad = (ids < 0) | (ids >= V)
            if bool(bad.any()):  # never let NumPy's negative indexing wrap silently
                first = int(ids.reshape(-1)[int(bad.reshape(-1).argmax())])
                raise IndexError(f"embedding: id {first} is out of range for a vocabulary of size {V} (ids must be in [0, {V}))")
        self.ids, self.V = ids, V
        return w[ids]  # (*S, C)

    def backward(self, dy):
        if not self.needs_grad[1]:
            return None, None
        xp = get_xp(dy)
        C = dy.shape[-1]
        dw = xp.zeros((self.V, C), dtype=dy.dtype)  # (V, C)
        scatter_add(dw, self.ids.reshape(-1), dy.reshape(-1, C))
        return None, dw


def embedding(ids, w, check_ids: bool = True):
    """Rows of w (V, C) picked by integer ids of any shape -> (*ids.shape, C).

    `check_ids=False` skips the range check (a host round trip on the GPU) for ids known to be in
    range: positions 0..T-1, or ids GPT.forward has checked."""
    if not isinstance(ids, Tensor):
        xp = get_xp(w.data if isinstance(w, Tensor) else w)
        ids = xp.asarray(ids)
        if ids.dtype.kind not in "iu":  # say it here, before it becomes a graph constant
            raise ValueError(f"embedding: ids must be integers, got dtype {ids.dtype} (shape {tuple(ids.shape)})")
    return Embedding.apply(ids, w, check_ids=bool(check_ids))


def position_embedding(T: int, wpe):
    """Learned positions: rows 0..T-1 of wpe (block_size, C) -> (T, C), broadcastable over a batch."""
    table = wpe.data if isinstance(wpe, Tensor) else wpe
    if isinstance(T, bool) or not isinstance(T, int) or T < 1:
        raise ValueError(f"position_embedding: T must be a positive int, got {T!r}")
    if table.ndim != 2:
        raise ValueError(f"position_embedding: the table must have shape (block_size, C), got {tuple(table.shape)}")
    if T > table.shape[0]:
        raise ValueError(f"position_embedding: sequence length T={T} exceeds the position table's {table.shape[0]} rows")
    return embedding(get_xp(table).arange(T), wpe, check_ids=False)


def sinusoidal_positions(T: int, C: int, dtype=None, like=None):
    """The fixed sinusoidal position table (T, C) of Vaswani et al., a plain array (no gradient).

        PE[p, 2i]   = sin(p / 10000^(2i/C))
        PE[p, 2i+1] = cos(p / 10000^(2i/C))
    For odd C the last column, 2i = C-1, is a sin. Computed in float64, then cast.
    `like` (an array or Tensor) gives the device, and the dtype when `dtype` is None;
    without either the table is a float32 NumPy array.
    """
    for name, n in (("T", T), ("C", C)):
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"sinusoidal_positions: {name} must be a positive int, got {n!r}")
    data = like.data if isinstance(like, Tensor) else like
    xp = get_xp(data) if data is not None else get_xp()
    dtype = resolve_dtype(data.dtype if dtype is None and data is not None else dtype)
    p = xp.arange(T, dtype=xp.float64)[:, None]  # (T, 1)
    two_i = xp.arange(0, C, 2, dtype=xp.float64)  # (ceil(C/2),)
    angle = p / xp.power(10000.0, two_i / C)  # (T, ceil(C/2))
    pe = xp.empty((T, C), dtype=xp.float64)
    pe[:, 0::2] = xp.sin(angle)
    pe[:, 1::2] = xp.cos(angle[:, : C // 2])
    return pe.astype(dtype)

