"""A strict stand-in for CuPy on NumPy: device "strict", so the GPU path runs on every CPU test run.

No GPU has been lent to this project, and CuPy differs from NumPy in ways that only bite on a GPU.
This module is an array module like `cupy`, with NumPy doing the arithmetic underneath, that keeps
CuPy's rules where the two differ (checked against CuPy's own sources, cupy/_core/core.pyx,
_kernel.pyx, _routines_indexing.pyx):

  - no implicit trip to the host: `np.asarray(x)` / `np.array(x)` raise TypeError ("Implicit
    conversion to a NumPy array is not allowed"); `.get()` is the way back;
  - no mixing: a NumPy array (even a 0-d one) or a list given to a ufunc, an operator or a function
    of the module raises TypeError ("Unsupported type"), and so does `numpy_array + x`; Python and
    NumPy scalars are fine; `x[...] = numpy_array` raises ValueError unless it is a scalar;
    NumPy index arrays are taken (and uploaded), as CuPy takes them;
  - reductions and scalar indexing give 0-d arrays, never NumPy scalars; there is no __index__;
  - float(x), int(x), bool(x) work on one-element arrays only, each a synchronising read.

Every read from the device (`.get()`, float/int/bool/complex, item, tolist, tobytes, repr/str/format,
pickling) and every upload of host data is counted in `transfers`, with the line of npgpt that asked,
so a test can assert how many host transfers a training step makes.

`enable()` registers the device with npgpt.backend (backend.register_test_device); npgpt then treats
its arrays exactly as CuPy's: every backend branch that asks "is this a device array" says yes.
"""

from __future__ import annotations

import os
import sys
import types

import numpy as np

NAME = "strict"
_HERE = os.path.abspath(__file__)


class Transfers:
    """Counts of host transfers: `reads` (device -> host) and `writes` (host -> device), with
    (kind, shape, where) for each, `where` the first caller outside this file and npgpt/backend.py."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.reads, self.writes, self.read_log, self.write_log = 0, 0, [], []

    @staticmethod
    def _where() -> str:
        f = sys._getframe(2)
        while f is not None and (os.path.abspath(f.f_code.co_filename) == _HERE
                                 or f.f_code.co_filename.endswith(os.path.join("npgpt", "backend.py"))):
            f = f.f_back  # the line that asked: past this file and backend's to_numpy / to_device
        return "?" if f is None else f"{os.path.relpath(f.f_code.co_filename)}:{f.f_lineno}"

    def read(self, kind: str, shape) -> None:
        self.reads += 1
        self.read_log.append((kind, tuple(shape), self._where()))

    def write(self, kind: str, shape) -> None:
        self.writes += 1
        self.write_log.append((kind, tuple(shape), self._where()))


transfers = Transfers()

_PY_SCALARS = (int, float, bool, complex)


def _is_scalar(x) -> bool:
    return type(x) in _PY_SCALARS or isinstance(x, np.generic)


def _refuse(x):
    raise TypeError(f"Unsupported type {type(x)}")


def _arg(x):
    """An argument of a ufunc or operator: a device array (its NumPy data) or a scalar."""
    if isinstance(x, ndarray):
        return x._a
    if _is_scalar(x) or x is None:
        return x
    _refuse(x)


def _deep(x):
    """An argument of a module function: device arrays unwrapped inside lists and tuples; NumPy
    arrays refused; other objects (strings, dtypes, shapes, numbers, slices) passed as they are."""
    if isinstance(x, ndarray):
        return x._a
    if isinstance(x, np.ndarray):
        _refuse(x)
    if isinstance(x, (list, tuple)):
        return type(x)(_deep(v) for v in x)
    return x


def _wrap(r):
    """A result on the device: NumPy arrays and NumPy scalars become device arrays (0-d for scalars)."""
    if isinstance(r, np.ndarray):
        return ndarray(r)
    if isinstance(r, np.generic):
        return ndarray(np.asarray(r))
    if isinstance(r, tuple):
        return tuple(_wrap(v) for v in r)
    if isinstance(r, list):
        return [_wrap(v) for v in r]
    return r


def _index(key):
    """An index: device arrays unwrapped, NumPy arrays and lists taken and counted as uploads."""
    if isinstance(key, tuple):
        return tuple(_index(k) for k in key)
    if isinstance(key, ndarray):
        return key._a
    if isinstance(key, (np.ndarray, list)):
        a = np.asarray(key)
        transfers.write("index", a.shape)
        return a
    return key


def _has_array_index(key) -> bool:
    keys = key if isinstance(key, tuple) else (key,)
    return any(isinstance(k, (ndarray, np.ndarray, list)) for k in keys)


def _out(out):
    if out is None:
        return None
    if isinstance(out, tuple):
        return tuple(_out(o) for o in out)
    if isinstance(out, ndarray):
        return out._a
    raise TypeError(f"out must be a {NAME} array, got {type(out)}")


class ufunc:  # noqa: N801 - CuPy's name
    """A NumPy ufunc under CuPy's argument rules."""

    def __init__(self, u: np.ufunc):
        self._u = u
        self.__name__ = u.__name__

    def __repr__(self) -> str:
        return f"<{NAME} ufunc {self.__name__}>"

    def __getattr__(self, name):
        return getattr(self._u, name)  # nin, nout, identity, ...

    def _call(self, method, args, kwargs):
        out = kwargs.pop("out", None)
        args = [_arg(a) for a in args]
        kwargs = {k: _deep(v) for k, v in kwargs.items()}
        if out is not None:
            kwargs["out"] = _out(out)
        r = getattr(self._u, method)(*args, **kwargs) if method != "__call__" else self._u(*args, **kwargs)
        if out is not None:
            return out[0] if isinstance(out, tuple) and len(out) == 1 else out
        return _wrap(r)

    def __call__(self, *args, **kwargs):
        return self._call("__call__", args, kwargs)

    def reduce(self, *args, **kwargs):
        return self._call("reduce", args, kwargs)

    def accumulate(self, *args, **kwargs):
        return self._call("accumulate", args, kwargs)

    def outer(self, *args, **kwargs):
        return self._call("outer", args, kwargs)

    def at(self, a, indices, b=None):
        """a[indices] op= b, in place; NumPy index arrays and values are uploaded, as CuPy's
        scatter ops upload them."""
        if not isinstance(a, ndarray):
            _refuse(a)
        if isinstance(b, np.ndarray):
            transfers.write("scatter values", b.shape)
        elif b is not None:
            b = _arg(b)
        self._u.at(a._a, _index(indices), b)


_UFUNCS: dict = {}


def _ufunc(u: np.ufunc) -> ufunc:
    w = _UFUNCS.get(u)
    if w is None:
        w = _UFUNCS[u] = ufunc(u)
    return w


def _operand(x) -> bool:
    """Whether an operator handles `x` (else NotImplemented lets x's reflected operator try, as
    CuPy defers to a Tensor); NumPy arrays are handled, and refused."""
    return isinstance(x, (ndarray, np.ndarray)) or _is_scalar(x)


def _binary(u):
    f = _ufunc(u)

    def op(self, other):
        return f(self, other) if _operand(other) else NotImplemented

    def rop(self, other):
        return f(other, self) if _operand(other) else NotImplemented

    def iop(self, other):
        if not _operand(other):
            return NotImplemented
        f(self, other, out=self)
        return self

    return op, rop, iop


class ndarray:  # noqa: N801 - CuPy's name
    """A device array: NumPy data `_a` that never leaves except through counted reads."""

    __slots__ = ("_a",)
    __array_priority__ = 100  # CuPy's
    __hash__ = None

    def __init__(self, a: np.ndarray):
        self._a = a

    # --- the ways back to the host, each one counted --------------------------------------
    def get(self, stream=None, order="C", out=None, blocking=True) -> np.ndarray:
        transfers.read("get", self._a.shape)
        if out is not None:
            out[...] = self._a
            return out
        return np.array(self._a, order=order)

    def item(self):
        transfers.read("item", self._a.shape)
        return self._a.item()

    def tolist(self):
        transfers.read("tolist", self._a.shape)
        return self._a.tolist()

    def tobytes(self, order="C") -> bytes:
        transfers.read("tobytes", self._a.shape)
        return self._a.tobytes(order)

    def _scalar(self, kind: str):
        if self._a.size != 1:
            raise TypeError(f"only length-1 arrays can be converted to Python scalars ({kind} of shape {self._a.shape})")
        transfers.read(kind, self._a.shape)
        return self._a.reshape(())[()]

    def __float__(self) -> float:
        return float(self._scalar("float"))

    def __int__(self) -> int:
        return int(self._scalar("int"))

    def __complex__(self) -> complex:
        return complex(self._scalar("complex"))

    def __bool__(self) -> bool:
        if self._a.size > 1:
            raise ValueError("The truth value of an array with more than one element is ambiguous. Use a.any() or a.all()")
        if self._a.size == 0:
            return False
        return bool(self._scalar("bool"))

    def __repr__(self) -> str:
        transfers.read("repr", self._a.shape)
        return repr(self._a).replace("array(", f"{NAME}.array(", 1)

    def __str__(self) -> str:
        transfers.read("str", self._a.shape)
        return str(self._a)

    def __format__(self, spec: str) -> str:
        transfers.read("format", self._a.shape)
        return format(self._a, spec)

    def __reduce__(self):
        transfers.read("pickle", self._a.shape)
        return (array, (np.array(self._a),))

    def __array__(self, dtype=None, copy=None):
        raise TypeError("Implicit conversion to a NumPy array is not allowed. "
                        "Please use `.get()` to construct a NumPy array explicitly.")

    # --- NumPy's protocols: NumPy functions on device arrays run on the device ------------
    def __array_ufunc__(self, u, method, *inputs, **kwargs):
        if not all(_operand(x) for x in inputs + tuple(kwargs.get("out", ()))):
            return NotImplemented
        f = _ufunc(u)
        if "out" in kwargs and len(kwargs["out"]) == 1:
            kwargs["out"] = kwargs["out"][0]
        if method == "__call__":
            return f(*inputs, **kwargs)
        if method == "at":
            return f.at(*inputs, **kwargs)
        return getattr(f, method)(*inputs, **kwargs)

    def __array_function__(self, func, types_, args, kwargs):
        if not all(issubclass(t, (ndarray, np.ndarray)) for t in types_):
            return NotImplemented
        target = module
        for part in func.__module__.split(".")[1:]:
            if part.startswith("_"):
                continue
            target = getattr(target, part)
        return getattr(target, func.__name__)(*args, **kwargs)

    # --- container behaviour ----------------------------------------------------------------
    def __len__(self) -> int:
        if self._a.ndim == 0:
            raise TypeError("len() of unsized object")
        return len(self._a)

    def __iter__(self):
        if self._a.ndim == 0:
            raise TypeError("iteration over a 0-d array")
        return (self[i] for i in range(len(self._a)))

    def __getitem__(self, key):
        return _wrap(self._a[_index(key)])

    def __setitem__(self, key, value):
        if isinstance(value, ndarray):
            value = value._a
        elif isinstance(value, np.ndarray):
            if _has_array_index(key):
                transfers.write("setitem values", value.shape)
            elif value.ndim != 0:
                raise ValueError("non-scalar numpy.ndarray cannot be used for fill")
        elif not _is_scalar(value):
            _refuse(value)
        self._a[_index(key)] = value

    # --- attributes: facts pass through, methods run on the device --------------------------
    def __getattr__(self, name):
        attr = getattr(self._a, name)
        if name in ("__array_interface__", "__array_struct__", "ctypes", "data"):
            raise AttributeError(f"{NAME} arrays have no host {name}")
        if callable(attr):
            def method(*args, **kwargs):
                out = kwargs.pop("out", None)
                args = [_deep(a) for a in args]
                kwargs = {k: _deep(v) for k, v in kwargs.items()}
                if out is not None:
                    kwargs["out"] = _out(out)
                r = attr(*args, **kwargs)
                return out if out is not None else _wrap(r)
            return method
        return _wrap(attr)  # shape, dtype, ndim, size, strides, flags, T, real, ...

    def __copy__(self):
        return ndarray(self._a.copy())

    def __deepcopy__(self, memo):
        return ndarray(self._a.copy())

    def __neg__(self):
        return _ufunc(np.negative)(self)

    def __pos__(self):
        return _ufunc(np.positive)(self)

    def __abs__(self):
        return _ufunc(np.absolute)(self)

    def __invert__(self):
        return _ufunc(np.invert)(self)


for _name, _u in [("add", np.add), ("sub", np.subtract), ("mul", np.multiply), ("truediv", np.true_divide),
                  ("floordiv", np.floor_divide), ("mod", np.remainder), ("pow", np.power), ("matmul", np.matmul),
                  ("and", np.bitwise_and), ("or", np.bitwise_or), ("xor", np.bitwise_xor),
                  ("lshift", np.left_shift), ("rshift", np.right_shift)]:
    _op, _rop, _iop = _binary(_u)
    setattr(ndarray, f"__{_name}__", _op)
    setattr(ndarray, f"__r{_name}__", _rop)
    setattr(ndarray, f"__i{_name}__", _iop)
for _name, _u in [("lt", np.less), ("le", np.less_equal), ("eq", np.equal), ("ne", np.not_equal),
                  ("gt", np.greater), ("ge", np.greater_equal)]:
    setattr(ndarray, f"__{_name}__", _binary(_u)[0])


# --- the array module -----------------------------------------------------------------------------
def _upload(obj, dtype=None, copy: bool = True, order="K"):
    if isinstance(obj, ndarray):
        a = obj._a.astype(dtype) if dtype is not None else obj._a
        return ndarray(a.copy(order=order) if copy and a is obj._a else a)
    if isinstance(obj, (list, tuple)) and obj and all(isinstance(v, ndarray) for v in obj):
        return ndarray(np.array([v._a for v in obj], dtype=dtype))  # stacked on the device
    a = np.array(obj, dtype=dtype, order=order)  # a list holding a device array raises (its __array__)
    transfers.write("asarray", a.shape)
    return ndarray(a)


def array(obj, dtype=None, copy=True, order="K", subok=False, ndmin=0):
    r = _upload(obj, dtype, copy=True, order=order)
    if ndmin > r._a.ndim:
        r = ndarray(r._a.reshape((1,) * (ndmin - r._a.ndim) + r._a.shape))
    return r


def asarray(obj, dtype=None, order=None):
    return _upload(obj, dtype, copy=False, order=order or "K")


def ascontiguousarray(obj, dtype=None):
    r = _upload(obj, dtype, copy=False)
    return r if r._a.flags.c_contiguous else ndarray(np.ascontiguousarray(r._a))


def asnumpy(a):
    """cupy.asnumpy: a NumPy array from a device array (a counted read) or from host data."""
    return a.get() if isinstance(a, ndarray) else np.asarray(a)


class RandomState:
    """cupy.random.RandomState's draws that npgpt uses (on the device; NumPy's numbers, not cuRAND's)."""

    def __init__(self, seed=None):
        self._rs = np.random.RandomState(None if seed is None else int(seed) % (1 << 32))

    def random_sample(self, size=None, dtype=float):
        return ndarray(np.asarray(self._rs.random_sample(size)).astype(dtype))


def _function(f):
    def call(*args, **kwargs):
        out = kwargs.pop("out", None)
        args = [_deep(a) for a in args]
        kwargs = {k: _deep(v) for k, v in kwargs.items()}
        if out is not None:
            kwargs["out"] = _out(out)
            f(*args, **kwargs)
            return out
        return _wrap(f(*args, **kwargs))

    call.__name__ = getattr(f, "__name__", "function")
    return call


class _Namespace(types.ModuleType):
    """`cupy` (or a submodule such as cupy.linalg) over a NumPy namespace: ufuncs and functions
    under CuPy's rules, types and constants as NumPy's (CuPy reuses NumPy's dtypes)."""

    def __init__(self, name: str, base, own: dict):
        super().__init__(name)
        self._base = base
        self.__dict__.update(own)

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        attr = getattr(self._base, name)
        if isinstance(attr, np.ufunc):
            w = _ufunc(attr)
        elif isinstance(attr, types.ModuleType):
            w = _Namespace(f"{self.__name__}.{name}", attr, {})
        elif isinstance(attr, type) or not callable(attr):
            w = attr  # dtypes, finfo, constants
        else:
            w = _function(attr)
        setattr(self, name, w)
        return w


def _erf(x):
    """cupyx.scipy.special.erf's stand-in: erf elementwise on the device (npgpt's NumPy erf underneath)."""
    from npgpt.ops.erf import erf

    if not isinstance(x, ndarray):
        _refuse(x)
    return ndarray(erf(x._a))


module = _Namespace(NAME, np, {
    "ndarray": ndarray, "ufunc": ufunc, "array": array, "asarray": asarray, "asanyarray": asarray,
    "ascontiguousarray": ascontiguousarray, "asnumpy": asnumpy, "transfers": transfers,
    "random": _Namespace(f"{NAME}.random", np.random, {"RandomState": RandomState}),
})


def enable() -> None:
    """Register device "strict" with npgpt.backend."""
    from npgpt import backend

    backend.register_test_device(NAME, module, _erf)


def disable() -> None:
    from npgpt import backend

    backend.unregister_test_device(NAME)
