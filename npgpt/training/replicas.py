"""Data-parallel safety nets: every rank starts from the same config, data and state, and holds the
same weights after each evaluation's check."""

from __future__ import annotations

import dataclasses
import json
import os

from . import dist
from .dist import World


def refuse_mismatch(world: World, cfg, data, model, batch_gen, it: int) -> None:
    """ValueError on every rank unless all ranks have the same config, data files and starting state."""
    if world.size == 1:
        return
    files = getattr(data, "files", None) or [os.path.join(data.data_dir, n)  # SFTData names its own
                                              for n in ("meta.json", "tokenizer.json", "train.bin", "val.bin")]
    start = {"iter": it, "batches": batch_gen.bit_generator.state, "dropout": model.dropout_generator.bit_generator.state}
    dist.check_same(world, {
        "config": {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("data_dir", "out_dir")},
        "data files": dist.file_digest(files),
        "starting weights": dist.array_digest(p.data for p in model.parameters()),
        "starting step and generators": json.dumps(start, sort_keys=True),
    })


def check_replicas(world: World, model, it: int) -> None:
    """RuntimeError unless every rank holds the same weights: a safety net under the assumption that
    the Allreduce hands every rank the same bits (MPI advises it, and MPICH does it)."""
    if world.size == 1:
        return
    digests = world.allgather(dist.array_digest(p.data for p in model.parameters()))
    if len(set(digests)) > 1:
        differ = [r for r, d in enumerate(digests) if d != digests[0]]
        raise RuntimeError(f"at step {it} rank(s) {', '.join(map(str, differ))} hold weights that differ from rank 0's: "
                           "the gradient sum was not the same on every rank; the checkpoints hold the last good state")
