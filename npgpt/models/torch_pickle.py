"""Reading a PyTorch state dict (pytorch_model.bin) into NumPy arrays, without PyTorch.

The file (torch.save's zip format, PyTorch 1.6 and later) is a zip archive:
    <prefix>/data.pkl     a pickle of the state dict, whose tensors refer to storages by key
    <prefix>/data/<key>   each storage's raw little-endian bytes
    <prefix>/byteorder    "little" (absent in older files, which are little-endian too)
In data.pkl a tensor is the call _rebuild_tensor_v2(storage, offset, size, stride, ...), and a storage
is a persistent id ("storage", <dtype>Storage, key, location, numel).

A pickle can name any Python callable, so loading an untrusted one can run code. This reader is an
Unpickler whose `find_class` answers only the names a state dict needs (the storage types,
_rebuild_tensor_v2 / _rebuild_parameter, OrderedDict) with stand-ins of its own and refuses every
other name, as torch.load(weights_only=True) does: nothing in the file is ever imported or called.
bfloat16 storages are widened to float32 (exact: bfloat16 is float32's top 16 bits).
"""

from __future__ import annotations

import collections
import io
import pickle
import zipfile

import numpy as np

_STORAGE_DTYPES = {
    "DoubleStorage": "<f8", "FloatStorage": "<f4", "HalfStorage": "<f2", "BFloat16Storage": "bfloat16",
    "LongStorage": "<i8", "IntStorage": "<i4", "ShortStorage": "<i2", "CharStorage": "i1",
    "ByteStorage": "u1", "BoolStorage": "?",
}


class _StorageType:
    """Stands for torch.<dtype>Storage in the pickle: it only names the element type."""

    def __init__(self, name: str):
        self.name, self.dtype = name, _STORAGE_DTYPES[name]


def _rebuild_tensor(storage, offset, size, stride, *_ignored):
    """The tensor storage[offset + sum_i index_i * stride_i] of shape `size`, as a new array."""
    size, stride = tuple(int(n) for n in size), tuple(int(s) for s in stride)
    if len(size) != len(stride) or any(n < 0 for n in size) or any(s < 0 for s in stride) or offset < 0:
        raise pickle.UnpicklingError(f"a tensor of size {size}, stride {stride}, offset {offset} is malformed")
    last = offset + sum((n - 1) * s for n, s in zip(size, stride)) if all(size) else offset - 1
    if last >= storage.size:
        raise pickle.UnpicklingError(f"a tensor of size {size} reaches element {last} of a storage of {storage.size}")
    if not all(size):
        return np.zeros(size, dtype=storage.dtype)
    view = np.lib.stride_tricks.as_strided(storage[offset:], shape=size,
                                           strides=tuple(s * storage.itemsize for s in stride), writeable=False)
    return view.copy()


def _rebuild_parameter(data, requires_grad, backward_hooks, *_ignored):
    return data


_ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): _StorageType(name) for name in _STORAGE_DTYPES},
}


class _StateDictUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, read_storage):
        super().__init__(io.BytesIO(data))
        self._read_storage, self._storages = read_storage, {}

    def find_class(self, module, name):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"it names {module}.{name}, which a state dict of tensors never needs; "
                                         "refused (nothing was run)") from None

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 3 and pid[0] == "storage" and isinstance(pid[1], _StorageType)):
            raise pickle.UnpicklingError(f"an unknown persistent id {pid!r}")
        kind, key = pid[1], str(pid[2])
        if key not in self._storages:
            raw = self._read_storage(key)
            if kind.dtype == "bfloat16":
                storage = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
            else:
                storage = np.frombuffer(raw, dtype=kind.dtype)
            self._storages[key] = storage
        return self._storages[key]


def load_state_dict(path: str) -> dict:
    """{name: np.ndarray} of the tensors in a torch.save'd state dict at `path` (see the module docstring)."""
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise ValueError(f"{path}: not a PyTorch zip archive (torch.save's format since PyTorch 1.6; an older "
                         "file must be re-saved with a recent PyTorch, or converted to model.safetensors)") from None
    with archive:
        names = archive.namelist()
        pickles = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pickles) != 1:
            raise ValueError(f"{path}: a PyTorch archive holds one data.pkl, this one {len(pickles)}")
        prefix = pickles[0][:-len("data.pkl")]
        if f"{prefix}byteorder" in names and archive.read(f"{prefix}byteorder").strip() != b"little":
            raise ValueError(f"{path}: its tensors are big-endian, which npgpt does not read")

        def read_storage(key: str) -> bytes:
            try:
                return archive.read(f"{prefix}data/{key}")
            except KeyError:
                raise pickle.UnpicklingError(f"storage {key} is missing from the archive") from None

        try:
            state = _StateDictUnpickler(archive.read(pickles[0]), read_storage).load()
        except (pickle.UnpicklingError, EOFError, TypeError, ValueError, AttributeError, IndexError) as e:
            raise ValueError(f"{path}: not a readable state dict: {e}") from None
    if not isinstance(state, dict):
        raise ValueError(f"{path}: holds a {type(state).__name__}, not a state dict {{name: tensor}}")
    return {name: a for name, a in state.items() if isinstance(a, np.ndarray)}
