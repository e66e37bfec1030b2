"""Elementwise ops with broadcasting: add, sub, mul, div, neg, pow (by a scalar), exp, log, tanh.

A binary op broadcasts its inputs as NumPy does; in backward each input's gradient is summed back
to that input's shape (`unbroadcast`).
"""

from __future__ import annotations

from ..backend import get_xp
from ..function import Function
from ._util import unbroadcast


class Add(Function):
    """y = a + b.

    Shapes:   a, b broadcastable  ->  y (their broadcast shape)
    Saved:    the shapes of a and b
    Backward: dy/da = dy/db = 1 elementwise, so da = dy, db = dy, each summed back to its own shape
    """

    def forward(self, a, b):
        self.a_shape, self.b_shape = a.shape, b.shape
        return a + b

    def backward(self, dy):
        return unbroadcast(dy, self.a_shape), unbroadcast(dy, self.b_shape)


class Sub(Function):
    """y = a - b.

    Shapes:   a, b broadcastable  ->  y (their broadcast shape)
    Saved:    the shapes of a and b
    Backward: dy/da = 1, dy/db = -1, so da = dy, db = -dy, each summed back to its own shape
    """

    def forward(self, a, b):
        self.a_shape, self.b_shape = a.shape, b.shape
        return a - b

    def backward(self, dy):
        db = -unbroadcast(dy, self.b_shape) if self.needs_grad[1] else None
        return unbroadcast(dy, self.a_shape), db


class Mul(Function):
    """y = a * b.

    Shapes:   a, b broadcastable  ->  y (their broadcast shape)
    Saved:    a, b
    Backward: dy/da = b, dy/db = a, so da = dy * b, db = dy * a, each summed back to its own shape
    """

    def forward(self, a, b):
        self.a, self.b = a, b
        return a * b

    def backward(self, dy):
        da = unbroadcast(dy * self.b, self.a.shape) if self.needs_grad[0] else None
        db = unbroadcast(dy * self.a, self.b.shape) if self.needs_grad[1] else None
        return da, db


class Div(Function):
    """y = a / b.

    Shapes:   a, b broadcastable  ->  y (their broadcast shape)
    Saved:    the shape of a, b, y
    Backward: dy/da = 1 / b, dy/db = -a / b^2 = -y / b, so da = dy / b, db = -dy * y / b,
              each summed back to its own shape
    """

    def forward(self, a, b):
        self.a_shape, self.b = a.shape, b
        self.y = a / b
        return self.y

    def backward(self, dy):
        da = unbroadcast(dy / self.b, self.a_shape) if self.needs_grad[0] else None
        db = unbroadcast(-dy * self.y / self.b, self.b.shape) if self.needs_grad[1] else None
        return da, db


class Neg(Function):
    """y = -x.

    Shapes:   x (...)  ->  y (...)
    Saved:    nothing
    Backward: dy/dx = -1, so dx = -dy
    """

    def forward(self, x):
        return -x

    def backward(self, dy):
        return (-dy,)


class Pow(Function):
    """y = x^p for a constant scalar p.

    Shapes:   x (...)  ->  y (...)
    Saved:    x, p
    Backward: dy/dx = p x^(p-1), so dx = dy * p * x^(p-1)
    """

    def forward(self, x, p: float):
        self.x, self.p = x, p
        return x**p

    def backward(self, dy):
        return (dy * self.p * self.x ** (self.p - 1),)


class Exp(Function):
    """y = exp(x).

    Shapes:   x (...)  ->  y (...)
    Saved:    y
    Backward: dy/dx = exp(x) = y, so dx = dy * y
    """

    def forward(self, x):
        self.y = get_xp(x).exp(x)
        return self.y

    def backward(self, dy):
        return (dy * self.y,)


class Log(Function):
    """y = log(x).

    Shapes:   x (...)  ->  y (...)
    Saved:    x
    Backward: dy/dx = 1 / x, so dx = dy / x
    """

    def forward(self, x):
        self.x = x
        return get_xp(x).log(x)

    def backward(self, dy):
        return (dy / self.x,)


class Tanh(Function):
    """y = tanh(x).

    Shapes:   x (...)  ->  y (...)
    Saved:    y
    Backward: tanh' = 1 - tanh^2, so dx = dy * (1 - y^2)
    """

    def forward(self, x):
        self.y = get_xp(x).tanh(x)
        return self.y

    def backward(self, dy):
        return (dy * (1 - self.y * self.y),)


def add(a, b):
    return Add.apply(a, b)


def sub(a, b):
    return Sub.apply(a, b)


def mul(a, b):
    return Mul.apply(a, b)


def div(a, b):
    return Div.apply(a, b)


def neg(x):
    return Neg.apply(x)


def pow(x, p):  # noqa: A001 - the operator's name
    if not isinstance(p, (int, float)) or isinstance(p, bool):
        raise ValueError(f"pow takes a scalar exponent (int or float), got {type(p).__name__}")
    return Pow.apply(x, p=p)


def exp(x):
    return Exp.apply(x)


def log(x):
    return Log.apply(x)


def tanh(x):
    return Tanh.apply(x)
