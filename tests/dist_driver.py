"""`npgpt train` for one MPI rank, with a failure injected for tests/test_dist.py.

    mpiexec -n 2 python tests/dist_driver.py train ...

The test-only hook lives here, not in npgpt: FAIL_RANK=r and FAIL_STEP=s make rank r fail in its
s-th optimizer step, as FAIL_HOW says: `raise` an unexpected exception, `value` a ValueError (a
user error), `die` (the process vanishes with no word, as when it is killed), or `drift` (its
weights silently change, as if its gradient sum had come out different).

STRICT_TRANSFERS=PREFIX registers the strict CuPy stand-in (tests/strict_device.py, so `--device
strict` works) and writes each rank's count of host transfers to PREFIX.RANK.json at the end.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import npgpt.training.loop  # noqa: E402
from npgpt.cli import main  # noqa: E402


class InjectedFailure(Exception):
    pass


def _inject(rank: int, step: int, how: str) -> None:
    real = npgpt.training.loop.accumulate_gradients
    calls = [0]

    def accumulate_gradients(model, data, cfg, batch_gen, world, draws):
        if world.rank == rank and calls[0] == step:
            if how == "die":
                os._exit(9)
            if how == "drift":
                model.parameters()[0].data[...] += 1e-3
            else:
                raise (ValueError if how == "value" else InjectedFailure)(f"injected failure on rank {rank} at step {step}")
        calls[0] += 1
        return real(model, data, cfg, batch_gen, world, draws)

    npgpt.training.loop.accumulate_gradients = accumulate_gradients


def _count_transfers(prefix: str, argv) -> int:
    import json  # noqa: PLC0415

    from npgpt.training import dist  # noqa: PLC0415
    from tests import strict_device  # noqa: PLC0415

    strict_device.enable()
    code = main(argv)
    t = strict_device.transfers
    with open(f"{prefix}.{dist.world().rank}.json", "w") as f:
        json.dump({"reads": t.reads, "writes": t.writes, "read_log": t.read_log}, f)
    return code


if __name__ == "__main__":
    if "FAIL_RANK" in os.environ:
        _inject(int(os.environ["FAIL_RANK"]), int(os.environ["FAIL_STEP"]), os.environ.get("FAIL_HOW", "raise"))
    if "STRICT_TRANSFERS" in os.environ:
        sys.exit(_count_transfers(os.environ["STRICT_TRANSFERS"], sys.argv[1:]))
    sys.exit(main(sys.argv[1:]))
