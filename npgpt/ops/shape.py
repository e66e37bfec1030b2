"""Ops that move elements without computing: reshape, transpose, getitem (slicing), split, concatenate.

Each backward puts dy's elements back where they came from.
"""

from __future__ import annotations

from itertools import accumulate

from ..backend import get_xp, scatter_add
from ..function import Function
from ..tensor import Tensor


class Reshape(Function):
    """y = x viewed with a new shape (same elements, same order).

    Shapes:   x (...)  ->  y (shape), with as many elements
    Saved:    x's shape
    Backward: element i of y is element i of x, so dx = dy reshaped to x's shape
    """

    def forward(self, x, shape=None):
        self.shape = x.shape
        try:
            return x.reshape(shape)
        except ValueError as e:
            raise ValueError(f"cannot reshape a tensor of shape {tuple(x.shape)} into {tuple(shape)}") from e

    def backward(self, dy):
        return (dy.reshape(self.shape),)


class Transpose(Function):
    """y = x with its axes permuted (reversed when axes is None): y[i_axes[0], ...] = x[i_0, ...].

    Shapes:   x (d_0, ..., d_n)  ->  y (d_axes[0], ..., d_axes[n])
    Saved:    the inverse permutation
    Backward: dx = dy with its axes put back by the inverse permutation
    """

    def forward(self, x, axes=None):
        axes = tuple(range(x.ndim))[::-1] if axes is None else tuple(a % max(x.ndim, 1) for a in axes)
        if sorted(axes) != list(range(x.ndim)):
            raise ValueError(f"transpose: axes {axes} are not a permutation for shape {tuple(x.shape)}")
        self.inverse = tuple(sorted(range(len(axes)), key=axes.__getitem__))
        return x.transpose(axes)

    def backward(self, dy):
        return (dy.transpose(self.inverse),)


class GetItem(Function):
    """y = x[index] (basic or advanced NumPy indexing).

    Shapes:   x (...)  ->  y: whatever x[index] gives
    Saved:    x's shape and dtype, the index
    Backward: dx = zeros like x, then dx[index] += dy; with repeated indices every copy adds its part
    (np.add.at semantics, through a scatter-add).
    """

    def forward(self, x, index=None):
        self.shape, self.dtype, self.index = x.shape, x.dtype, index
        return x[index]

    def backward(self, dy):
        xp = get_xp(dy)
        dx = xp.zeros(self.shape, dtype=dy.dtype)
        if _is_basic(self.index):
            dx[self.index] += dy  # slices and ints never repeat an element
        else:
            scatter_add(dx, self.index, dy)
        return (dx,)


class Concatenate(Function):
    """y = the inputs joined along `axis`.

    Shapes:   x_k (..., n_k, ...)  ->  y (..., sum_k n_k, ...)
    Saved:    axis, the sizes n_k
    Backward: each element of y is one element of one x_k, so dx_k = the k-th piece of dy along axis
    """

    def forward(self, *xs, axis=0):
        xp = get_xp(*xs)
        self.axis = axis
        self.sizes = [x.shape[axis] for x in xs]
        return xp.concatenate(xs, axis=axis)

    def backward(self, dy):
        bounds = list(accumulate(self.sizes[:-1]))
        return tuple(get_xp(dy).split(dy, bounds, axis=self.axis))


def _is_basic(index) -> bool:
    """True for indices made of ints, slices, None and Ellipsis only (no arrays or lists)."""
    parts = index if isinstance(index, tuple) else (index,)
    return all(p is None or p is Ellipsis or isinstance(p, (int, slice)) for p in parts)


def _index(index):
    """Unwrap Tensors used as indices into their arrays."""
    if isinstance(index, Tensor):
        return index.data
    if isinstance(index, tuple):
        return tuple(i.data if isinstance(i, Tensor) else i for i in index)
    return index


def reshape(x, shape):
    return Reshape.apply(x, shape=tuple(shape))


def transpose(x, axes=None):
    return Transpose.apply(x, axes=axes)


def getitem(x, index):
    return GetItem.apply(x, index=_index(index))


def concatenate(tensors, axis=0):
    tensors = list(tensors)
    if not tensors:
        raise ValueError("concatenate needs at least one tensor")
    return Concatenate.apply(*tensors, axis=axis)


def split(x, sizes, axis=-1):
    """Cut x along `axis` into pieces: `sizes` is an int (equal pieces of that size) or a list of sizes."""
    n = x.shape[axis]
    if isinstance(sizes, int):
        if sizes <= 0 or n % sizes:
            raise ValueError(f"split: axis {axis} of length {n} does not divide into pieces of {sizes}")
        sizes = [sizes] * (n // sizes)
    if sum(sizes) != n or any(s < 0 for s in sizes):
        raise ValueError(f"split: sizes {list(sizes)} do not add up to the axis length {n}")
    pieces, start = [], 0
    ax = axis % x.ndim
    for s in sizes:
        index = (slice(None),) * ax + (slice(start, start + s),)
        pieces.append(getitem(x, index))
        start += s
    return pieces
