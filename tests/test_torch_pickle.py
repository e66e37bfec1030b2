"""npgpt/torch_pickle.py: torch.save'd state dicts read without PyTorch, and nothing else read at all."""

from __future__ import annotations

import io
import os
import pickle
import zipfile

import numpy as np
import pytest
import torch

from npgpt.models.torch_pickle import load_state_dict


def test_every_dtype_layout_and_shared_storage_reads_as_torch_load_gives(tmp_path):
    base = torch.arange(24, dtype=torch.float64).reshape(4, 6)
    state = {
        "f64": base, "f32": base.float(), "f16": base.half(), "i64": base.long(), "bool": base > 5,
        "transposed": base.T, "sliced": base[1:3, ::2], "scalar": torch.tensor(3.5), "empty": torch.zeros(0, 3),
        "shared_view": base[2],  # shares base's storage, at an offset
        "bf16": torch.randn(5, 3).bfloat16(),
    }
    path = tmp_path / "sd.bin"
    torch.save(state, path)
    got = load_state_dict(str(path))
    assert got.keys() == state.keys()
    for k, t in state.items():
        want = t.float().numpy() if t.dtype == torch.bfloat16 else t.numpy()
        assert got[k].dtype == want.dtype and got[k].shape == want.shape and np.array_equal(got[k], want), k
    assert got["transposed"].flags.writeable and not np.shares_memory(got["f64"], got["shared_view"])


def _archive(tmp_path, payload: bytes, storages=None) -> str:
    path = tmp_path / "evil.bin"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", payload)
        for key, raw in (storages or {}).items():
            z.writestr(f"archive/data/{key}", raw)
    return str(path)


def test_a_pickle_naming_anything_else_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = _archive(tmp_path, pickle.dumps({"w": Evil()}, protocol=2))
    with pytest.raises(ValueError, match=r"names (posix|os)\.system.*refused \(nothing was run\)"):
        load_state_dict(path)
    assert not marker.exists()


def test_broken_files_get_clear_errors(tmp_path):
    (tmp_path / "legacy.bin").write_bytes(pickle.dumps({"w": 1}))
    with pytest.raises(ValueError, match="not a PyTorch zip archive"):
        load_state_dict(str(tmp_path / "legacy.bin"))
    buf = io.BytesIO()
    torch.save({"w": torch.ones(3)}, buf)
    with zipfile.ZipFile(buf) as z:
        pkl = z.read([n for n in z.namelist() if n.endswith("data.pkl")][0])
    with pytest.raises(ValueError, match="storage 0 is missing"):
        load_state_dict(_archive(tmp_path, pkl))
    with pytest.raises(ValueError, match="reaches element"):  # a size larger than its storage
        load_state_dict(_archive(tmp_path, pkl, {"0": np.ones(2, np.float32).tobytes()}))
    with pytest.raises(ValueError, match="not a state dict"):
        load_state_dict(_archive(tmp_path, pickle.dumps([1, 2], protocol=2)))
