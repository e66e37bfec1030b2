"""PCG64 jump arithmetic: how many draws lie between two states of numpy's PCG64, and a seek.

Data parallelism (npgpt/training/step.py) puts each rank's dropout generator at the position micro-
step j would reach in one process; advance() moves forward by a count, pcg64_distance finds it.
"""

from __future__ import annotations

# numpy's PCG64: the state moves by s -> M s + inc (mod 2^128), one step per 64-bit draw.
_PCG64_MULTIPLIER = 0x2360ED051FC65DA44385DF649FCCF645
_MASK128 = (1 << 128) - 1


def _pcg64_state(state: dict) -> tuple[int, int]:
    if state.get("bit_generator") != "PCG64" or state.get("has_uint32"):
        raise RuntimeError(f"data-parallel dropout needs a PCG64 generator with no buffered 32-bit draw, "
                           f"got {state.get('bit_generator')!r} (has_uint32={state.get('has_uint32')})")
    return state["state"]["state"], state["state"]["inc"]


def pcg64_distance(start: dict, end: dict) -> int:
    """How many 64-bit draws lead from PCG64 state `start` to state `end` (advance()'s inverse).

    The LCG f(s) = M s + c (mod 2^128) has full period (c odd, M = 1 mod 4), so f^(2^i) leaves the
    low i bits of a state alone and flips bit i. Build d from the bottom bit up: bit i of d is 1
    exactly when bit i of the current state differs from `end`'s, and then f^(2^i) is applied.
    f^(2^i) is s -> M_i s + c_i with M_0 = M, c_0 = c, M_{i+1} = M_i^2, c_{i+1} = (M_i + 1) c_i.
    """
    s, inc = _pcg64_state(start)
    target, inc_end = _pcg64_state(end)
    if inc != inc_end:
        raise RuntimeError("pcg64_distance: the two states belong to different PCG64 streams")
    mult, plus, d, bit = _PCG64_MULTIPLIER, inc, 0, 1
    while s != target:
        if (s ^ target) & bit:
            s = (mult * s + plus) & _MASK128
            d |= bit
        plus = ((mult + 1) * plus) & _MASK128
        mult = (mult * mult) & _MASK128
        bit <<= 1
    return d


def _seek(bit_generator, start: dict, draws: int) -> None:
    """Put the generator `draws` 64-bit draws past the state `start`."""
    bit_generator.state = start
    if draws:
        bit_generator.advance(draws)
