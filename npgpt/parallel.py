"""The CPU's thread pool over row blocks: NumPy releases the GIL inside ufuncs and BLAS calls, so
an op's row blocks (which it already walks for cache locality) run on every core at once.

    parallel.run(fn, blocks)    # fn(i0, i1) for each (i0, i1) in blocks; the results in block order

Rules that keep results exact and repeatable:
  - the caller cuts the blocks from the problem's shape alone, never from the thread count;
  - each block writes only its own rows of the outputs;
  - a sum over blocks adds the blocks' partial sums in block order (`sum_in_order`).
So a result has the same bits whatever the thread count, and the same run twice gives the same bits.

Threads: `set_num_threads(n)`, else $NPGPT_THREADS, else the BLAS's own thread count (threadpoolctl
when installed, else OpenBLAS asked directly, else OPENBLAS_NUM_THREADS / OMP_NUM_THREADS, else the
cores). While the pool runs, the BLAS is held to one thread (a block's small matmuls stay on their
own core) and given its threads back after, so the big matmuls outside the pool use every core and
the two never fight over them. On the GPU there is no pool: ops pass one block (row_blocks gives
one for CuPy arrays) and `run` then calls fn once, in the caller's thread.
"""

from __future__ import annotations

import contextlib
import ctypes
import glob
import itertools
import os
import threading
from concurrent.futures import ThreadPoolExecutor

from .backend import reuses_scratch

_lock = threading.Lock()
_local = threading.local()  # .inside: this thread is running pool work (a nested run() goes serial)
_requested: int | None = None  # set_num_threads()
_pool: ThreadPoolExecutor | None = None
_pool_size = 0
_blas = None  # (get, set) callables for the BLAS's thread count, or False when none can be found


def _find_blas():
    """(get_threads, set_threads) for NumPy's BLAS, or False. threadpoolctl when installed, else
    OpenBLAS's own entry points (NumPy's wheels ship OpenBLAS in numpy.libs)."""
    try:
        from threadpoolctl import ThreadpoolController  # noqa: PLC0415 - optional
    except ImportError:
        pass
    else:
        libs = [c for c in ThreadpoolController().lib_controllers if c.user_api == "blas"]
        libs = [c for c in libs if "numpy" in str(c.filepath)] or libs  # NumPy's own first
        if libs:
            return (lambda: libs[0].num_threads), (lambda n: [c.set_num_threads(n) for c in libs])
    import numpy as np  # noqa: PLC0415 - the CPU backend

    here = os.path.dirname(np.__file__)
    for path in sorted(glob.glob(os.path.join(here, "..", "numpy.libs", "*openblas*"))
                       + glob.glob(os.path.join(here, "..", "scipy_openblas*", "lib", "*.so*"))):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for suffix in ("scipy_openblas_{}64_", "openblas_{}64_", "openblas_{}"):
            get, put = suffix.format("get_num_threads"), suffix.format("set_num_threads")
            if hasattr(lib, get) and hasattr(lib, put):
                return getattr(lib, get), getattr(lib, put)
    return False


def _blas_handles():
    global _blas
    if _blas is None:
        _blas = _find_blas()
    return _blas


def blas_threads() -> int | None:
    """The BLAS's current thread count, or None when it cannot be asked."""
    h = _blas_handles()
    return int(h[0]()) if h else None


def set_blas_threads(n: int) -> None:
    h = _blas_handles()
    if h:
        h[1](int(n))


def _env_threads() -> int | None:
    v = os.environ.get("NPGPT_THREADS")
    if v is None or v == "":
        return None
    try:
        n = int(v)
    except ValueError:
        raise ValueError(f"$NPGPT_THREADS must be a positive integer, got {v!r}") from None
    if n < 1:
        raise ValueError(f"$NPGPT_THREADS must be a positive integer, got {v!r}")
    return n


def num_threads() -> int:
    """Threads the pool uses: set_num_threads(), else $NPGPT_THREADS, else the BLAS's, else the cores."""
    if _requested is not None:
        return _requested
    n = _env_threads()
    if n is not None:
        return n
    n = _blas_saved if _active else blas_threads()
    if n:
        return n
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
        if os.environ.get(var, "").isdigit() and int(os.environ[var]) > 0:
            return int(os.environ[var])
    return os.cpu_count() or 1


def set_num_threads(n: int | None) -> None:
    """Use n threads for the pool (None: back to $NPGPT_THREADS / the BLAS's count)."""
    global _requested
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ValueError(f"set_num_threads needs a positive int or None, got {n!r}")
    _requested = n


def _executor(n: int) -> ThreadPoolExecutor:
    global _pool, _pool_size
    with _lock:
        if _pool is None or _pool_size < n:
            if _pool is not None:
                _pool.shutdown(wait=True)
            _pool = ThreadPoolExecutor(max_workers=n, thread_name_prefix="npgpt")
            _pool_size = n
        return _pool


_active = 0  # pool runs in progress (from any thread)
_blas_saved: int | None = None  # the BLAS's thread count before the first of them held it to one


@contextlib.contextmanager
def _blas_on_one_thread():
    """Hold the BLAS to one thread while pool workers call it, so n workers use n cores, not n^2;
    the count comes back when the last run in progress ends."""
    global _active, _blas_saved
    with _lock:
        if _active == 0:
            _blas_saved = blas_threads()
            if _blas_saved is not None and _blas_saved > 1:
                set_blas_threads(1)
        _active += 1
    try:
        yield
    finally:
        with _lock:
            _active -= 1
            if _active == 0 and _blas_saved is not None and _blas_saved > 1:
                set_blas_threads(_blas_saved)


MIN_WORK = 1 << 18  # elements per thread below which a run stays on the calling thread


def run(fn, blocks, size: int | None = None, blas: bool = False) -> list:
    """[fn(i0, i1) for (i0, i1) in blocks], run on the pool's threads; results in block order.

    `size` (elements touched in all) caps the threads at one per MIN_WORK elements: below that
    the hand-off costs more than it saves, and on a busy machine a worker that is not scheduled
    in time holds the whole run up, so small problems stay on the calling thread. `blas=True`
    says the blocks call the BLAS (small matmuls): it is then held to one thread for the run;
    blocks that do not call it leave its setting alone.

    Workers take the next block from a shared counter, so a core slowed by other work simply does
    fewer blocks. Each block's result lands in its own slot: the order of the results never depends
    on which thread ran which block. An exception in any block is raised here once all have stopped.
    """
    blocks = list(blocks)
    n = min(num_threads(), len(blocks))
    if size is not None:
        n = min(n, max(1, size // MIN_WORK))
    if getattr(_local, "inside", False):
        return [fn(i0, i1) for i0, i1 in blocks]
    hold = _blas_on_one_thread if blas else contextlib.nullcontext
    if n <= 1:
        with hold():  # a block's matmuls are small: one BLAS thread wastes nothing
            return [fn(i0, i1) for i0, i1 in blocks]
    results = [None] * len(blocks)
    counter = itertools.count()

    def work():
        _local.inside = True
        try:
            for i in iter(counter.__next__, None):
                if i >= len(blocks):
                    return
                results[i] = fn(*blocks[i])
        finally:
            _local.inside = False

    pool = _executor(n - 1)
    with hold():
        futures = [pool.submit(work) for _ in range(n - 1)]
        try:
            work()  # the calling thread takes blocks too
        finally:
            errors = [f.exception() for f in futures]
    for e in errors:
        if e is not None:
            raise e
    return results


def run_serial(fn, blocks) -> list:
    """run() on the calling thread: for blocks whose ufunc calls are too short to share (they
    spend more time handing the GIL back and forth than a second core gives them)."""
    return [fn(i0, i1) for i0, i1 in blocks]


def sum_in_order(parts):
    """parts[0] + parts[1] + ... left to right: a sum over blocks whose bits do not depend on threads."""
    it = iter(parts)
    total = next(it).copy()
    for p in it:
        total += p
    return total


def scratch(xp, slot: str, shape, dtype):
    """A work array of `shape` for this thread, reused from block to block and call to call (a speed
    trick: a fresh temporary per pass costs an allocation and page faults, a reused one is already
    in cache). Two live work arrays need two slot names. On the GPU: a fresh array, no caching."""
    if not reuses_scratch(xp):
        return xp.empty(shape, dtype=dtype)
    shape = tuple(shape)
    n = 1
    for s in shape:
        n *= int(s)
    buffers = _local.__dict__.setdefault("scratch", {})
    key = (slot, xp.dtype(dtype).str)
    buf = buffers.get(key)
    if buf is None or buf.size < n:
        buf = buffers[key] = xp.empty(n, dtype=dtype)
    return buf[:n].reshape(shape)


def run_chains(fn, blocks, size: int | None = None) -> list:
    """run(), but each thread takes one contiguous run of the blocks (about len(blocks) / threads of
    them) and walks it alone, for blocks that are chains of ufunc calls (a speed trick: one pool
    hand-off per thread per op, and a worker's blocks are neighbours in memory). The blocks and the
    order of the results, so the bits, are the caller's, as in run(). With blocks of >= 64K
    elements each ufunc call is long enough that two threads seldom wait on each other for the GIL
    (baby GELU + gelu', tanh, 2 threads: 27.0 ms serial, 20.2 ms in chains; layernorm forward +
    backward: 12.3 vs 8.2 ms; the same at 1 thread)."""
    blocks = list(blocks)
    n = min(num_threads(), len(blocks))
    if size is not None:
        n = min(n, max(1, size // MIN_WORK))
    if n <= 1 or getattr(_local, "inside", False):
        return [fn(i0, i1) for i0, i1 in blocks]
    cuts = [len(blocks) * k // n for k in range(n + 1)]

    def chain(k0, k1):  # blocks[k0:k1], in order, on one thread
        return [fn(*blocks[k]) for k in range(k0, k1)]

    parts = run(chain, [(cuts[k], cuts[k + 1]) for k in range(n)])
    return [r for part in parts for r in part]
