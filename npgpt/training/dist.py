"""Data-parallel training over MPI (mpi4py): ranks, the gradient allreduce, launching, failing loudly.

N ranks each hold a replica built from the same seed. Every step each rank runs its share of the
micro-batches (see trainstep.py), then one Allreduce sums the gradients of all ranks in place in a
flat buffer, so every rank holds the same gradient and takes the same optimizer step.

    npgpt train --nproc N ...       re-launches itself as `mpiexec -n N python -m npgpt.cli train ...`
    mpiexec -n N npgpt train ...    the same, started by hand (or by a cluster's launcher)

Without an MPI launcher (no PMI_SIZE / OMPI_COMM_WORLD_SIZE in the environment, or a size of 1),
`world()` is a single process and mpi4py is never imported: plain training does not need it.

A rank that raises prints its error and calls MPI Abort, which ends every rank (mpiexec exits
nonzero); no rank is left waiting in a collective. Only rank 0 writes files.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
import traceback

import numpy as np

from ..backend import device_of, get_xp, to_device, to_numpy

# Environment variables through which MPI launchers tell a process the job's size.
SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
INSTALL_HINT = "pip install 'npgpt[dist]' (mpi4py and the mpich wheel, which brings mpiexec)"


def launched_size() -> int:
    """The job size an MPI launcher announced in the environment; 1 when started without one."""
    for name in SIZE_VARIABLES:
        value = os.environ.get(name)
        if value:
            try:
                return max(int(value), 1)
            except ValueError:
                raise RuntimeError(f"${name}={value!r} is not a number of processes") from None
    return 1


def cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def threads_per_rank(ranks_on_this_machine: int) -> int:
    """BLAS threads for each rank when ranks share this machine's cores evenly (at least 1)."""
    return max(1, cores() // max(ranks_on_this_machine, 1))


class World:
    """One process: rank 0 of 1. Every collective is the identity, so the training loop needs no
    special case for it."""

    rank, size, local_rank, local_size = 0, 1, 0, 1

    def allreduce_sum(self, buf: np.ndarray) -> np.ndarray:
        """Sum `buf` (a contiguous NumPy array) over all ranks, in place; returns it."""
        return buf

    def allgather(self, obj) -> list:
        """[obj of rank 0, obj of rank 1, ...] on every rank (obj: small picklable data)."""
        return [obj]

    def any(self, flag: bool) -> bool:
        """True on every rank when `flag` is true on any rank."""
        return bool(flag)

    def barrier(self) -> None:
        pass

    def abort(self, code: int) -> None:
        raise SystemExit(code)


class MPIWorld(World):
    """The ranks of MPI_COMM_WORLD, through mpi4py."""

    def __init__(self, comm):
        from mpi4py import MPI  # noqa: PLC0415

        self._mpi, self.comm = MPI, comm
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        node = comm.Split_type(MPI.COMM_TYPE_SHARED)  # the ranks sharing this machine
        self.local_rank, self.local_size = node.Get_rank(), node.Get_size()
        node.Free()

    def allreduce_sum(self, buf):
        self.comm.Allreduce(self._mpi.IN_PLACE, buf, op=self._mpi.SUM)
        return buf

    def allgather(self, obj):
        return self.comm.allgather(obj)

    def any(self, flag):
        return self.allreduce_sum(np.array([1.0 if flag else 0.0]))[0] > 0

    def barrier(self):
        self.comm.Barrier()

    def abort(self, code):
        """End every rank with exit status `code`. This rank's last words go first: mpiexec stops
        forwarding output once it tears the job down, so they get a moment to reach it."""
        sys.stdout.flush()
        sys.stderr.flush()
        time.sleep(0.5)
        self.comm.Abort(code)
        os._exit(code)  # Abort can return before mpiexec's kill arrives: say nothing more


_world: World | None = None


def world() -> World:
    """This process's world, set up on first use: MPI when a launcher started more than one rank."""
    global _world
    if _world is None:
        if launched_size() == 1:
            _world = World()
        else:
            try:
                from mpi4py import MPI  # noqa: PLC0415 - only data-parallel runs need mpi4py
            except ImportError as e:
                raise RuntimeError(f"started as one of {launched_size()} MPI processes, but mpi4py is not "
                                   f"installed: {INSTALL_HINT}") from e
            _world = MPIWorld(MPI.COMM_WORLD)
            _limit_blas_threads(_world.local_size)
    return _world


def _limit_blas_threads(ranks_on_this_machine: int) -> None:
    """Give each rank its share of the cores for BLAS, unless the user set a thread count. The
    environment only takes effect before NumPy loads (as `launch` does); after that, threadpoolctl."""
    if any(os.environ.get(v) for v in THREAD_VARIABLES):
        return
    try:
        from threadpoolctl import threadpool_limits  # noqa: PLC0415 - optional (in the dist extra)
    except ImportError:
        return
    threadpool_limits(threads_per_rank(ranks_on_this_machine), user_api="blas")


# --- the gradient allreduce ---------------------------------------------------------------------
class GradientSum:
    """Sums the parameters' gradients over all ranks: pack them into one flat array where they are,
    bring that to the host in one transfer, one Allreduce in place, and the gradients become views
    of the sum (on a GPU: of its one copy back on the device).

    A parameter that got no gradient on any rank keeps grad None (the optimizer skips it exactly
    as it would in one process); one that got none on some ranks counts as zeros there.
    """

    def __init__(self, params, world: World):
        self.params, self.world = list(params), world
        self.sizes = [int(p.data.size) for p in self.params]
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)]).astype(int)
        self.dtype = np.result_type(*[p.data.dtype for p in self.params])

    def __call__(self, scalars) -> np.ndarray:
        """Sum the gradients and `scalars` (float64 numbers, or 0-d arrays on the gradients' device,
        e.g. this rank's loss) over the ranks; return the summed scalars (float64, on the host)."""
        n, total = len(self.params), int(self.offsets[-1])
        meta = np.zeros(n + len(scalars))  # float64: [1 if p has a grad, per p..., scalars...]
        meta[:n] = [p.grad is not None for p in self.params]
        host = _pack_and_fetch(self.params, self.dtype, scalars)  # the one read from the device
        buf = host[:total]  # (total parameters,) contiguous
        meta[n:] = host[total:].copy().view(np.float64)
        self.world.allreduce_sum(buf)
        self.world.allreduce_sum(meta)
        summed = to_device(buf, device_of(self.params[0].data))  # one upload (none on the CPU)
        for i, p in enumerate(self.params):
            part = summed[self.offsets[i]:self.offsets[i + 1]].reshape(p.data.shape)
            p.grad = part if meta[i] else None
        return meta[n:]


def _pack_and_fetch(params, dtype, scalars) -> np.ndarray:
    """[every gradient flattened (zeros for None), then the float64 scalars' bytes seen as `dtype`]
    as one host array: packed on the gradients' device so a GPU is read once per step, not once
    per parameter plus once per scalar (a speed trick: each read waits for the device)."""
    xp = get_xp(*[p.data for p in params])
    parts = [(p.grad if p.grad is not None else xp.zeros(p.data.shape, dtype)).reshape(-1).astype(dtype, copy=False)
             for p in params]
    tail = xp.stack([xp.asarray(s, dtype=xp.float64) for s in scalars]) if scalars else xp.zeros(0, xp.float64)
    parts.append(tail.view(dtype))  # float64 bits carried in the buffer's dtype, split off on the host
    return to_numpy(xp.concatenate(parts))


# --- refusing ranks that would silently diverge ---------------------------------------------------
def file_digest(paths) -> str:
    """sha256 over the named files' bytes, in the order given."""
    h = hashlib.sha256()
    for path in paths:
        h.update(os.path.basename(path).encode() + b"\0")
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
    return h.hexdigest()


def array_digest(arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(to_numpy(a))
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def check_same(world: World, what: dict) -> None:
    """ValueError on every rank unless every rank passed equal values for each key of `what`
    (e.g. {"config": {...}, "data": sha256, ...}); the message names what differs and where."""
    every = world.allgather(what)
    problems = []
    for key, mine in every[0].items():
        others = [r for r in range(1, world.size) if every[r].get(key) != mine]
        if not others:
            continue
        r, theirs = others[0], every[others[0]].get(key)
        if isinstance(mine, dict) and isinstance(theirs, dict):
            detail = "; ".join(f"{k}: rank 0 has {mine.get(k)!r}, rank {r} has {theirs.get(k)!r}"
                               for k in sorted(set(mine) | set(theirs)) if mine.get(k) != theirs.get(k))
        else:
            detail = f"rank 0 has {str(mine)[:12]}..., rank {r} has {str(theirs)[:12]}..."
        problems.append(f"the {key} differs on rank(s) {', '.join(map(str, others))} ({detail})")
    if problems:
        raise ValueError(f"the {world.size} ranks disagree and would train different models: " + "; ".join(problems)
                         + ". Start every rank with the same flags, the same data files and the same checkpoint")


# --- starting N ranks and ending them all ---------------------------------------------------------
def mpiexec_path() -> str:
    """mpiexec beside this Python (a venv with the dist extra), else on PATH; RuntimeError if none."""
    here = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    if os.path.isfile(here) and os.access(here, os.X_OK):
        return here
    found = shutil.which("mpiexec")
    if found:
        return found
    raise RuntimeError(f"--nproc needs mpiexec, found neither beside {sys.executable} nor on PATH: {INSTALL_HINT}")


def launch(nproc: int, argv: list[str]) -> int:
    """Run `python -m npgpt.cli ARGV` as nproc MPI ranks and return mpiexec's exit status.

    Each rank's BLAS gets cores / nproc threads unless OMP_NUM_THREADS (or OPENBLAS_ / MKL_) is set.
    Ctrl-C (and SIGTERM, SIGHUP) reach the ranks through mpiexec as Ctrl-C: they stop after the step.
    A second one ends mpiexec and the ranks at once (SIGKILL to its process group) and returns 130,
    with one line instead of MPICH's page about killed ranks.
    """
    if nproc < 1:
        raise ValueError(f"--nproc must be >= 1, got {nproc}")
    env = dict(os.environ)
    if not any(env.get(v) for v in THREAD_VARIABLES):
        env.update(dict.fromkeys(THREAD_VARIABLES, str(threads_per_rank(nproc))))
    cmd = [mpiexec_path(), "-n", str(nproc), sys.executable, "-m", "npgpt.cli", *argv]
    # In a session of its own, mpiexec hears Ctrl-C once, from us (a terminal's Ctrl-C would reach it
    # too, and mpiexec takes a second one as "abort now"): the first passes on to the ranks, which
    # stop after the step and save; a second one ends them at once. SIGTERM and SIGHUP become Ctrl-C
    # too, since mpiexec itself would just exit on them and leave the ranks running.
    proc = subprocess.Popen(cmd, env=env, start_new_session=True)
    heard = []

    def forward(*_):
        heard.append(1)
        if len(heard) == 1:
            proc.send_signal(signal.SIGINT)
        else:  # "stop now": end mpiexec and the ranks at once, before MPICH can print its page about it
            _kill_session(proc)

    stop = (signal.SIGINT, signal.SIGTERM) + ((signal.SIGHUP,) if hasattr(signal, "SIGHUP") else ())
    old = {s: signal.signal(s, forward) for s in stop} if _main_thread() else {}
    try:
        code = proc.wait()
    except BaseException:
        proc.send_signal(signal.SIGINT)
        raise
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
    if len(heard) > 1:
        _kill_session(proc)  # any rank still alive
        print("npgpt train: interrupted again: stopped at once (the checkpoints hold the last saved state)",
              file=sys.stderr)
        return 130
    return 128 - code if code < 0 else code  # killed by signal k: 128 + k, as a shell reports it


def _kill_session(proc) -> None:
    """SIGKILL mpiexec's process group (itself, its proxies and the ranks it started)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _main_thread() -> bool:
    import threading  # noqa: PLC0415

    return threading.current_thread() is threading.main_thread()


def guard(w: World, fn) -> int:
    """Run fn() (which returns an exit status) on this rank; any exception it lets out ends the whole
    job through MPI Abort after printing which rank failed and why, so no rank waits forever for a
    dead one. A status fn returns is every rank's (0, or 130 after a Ctrl-C all ranks stopped at)."""
    try:
        return fn()
    except BaseException as e:  # noqa: BLE001 - any failure must end every rank
        print(f"npgpt: rank {w.rank} of {w.size} failed: {type(e).__name__}: {e}", file=sys.stderr)
        traceback.print_exc()
        w.abort(e.code if isinstance(e, SystemExit) and isinstance(e.code, int) and e.code else 1)
        raise  # not reached: abort ends this process
