"""Function: one differentiable operation with a hand-written forward and backward.

A subclass writes `forward(self, *arrays, **options)` and `backward(self, dy)` on raw xp arrays;
`apply` wraps them into Tensors and links the result into the graph. Whatever backward needs is
saved as a named attribute in forward (`self.xhat = ...`), the least that suffices.

Every positional argument of `apply` is an input of the graph (arrays and numbers are wrapped as
constants), except None, which stands for an absent optional input (a layer without a bias): it
reaches forward as None, needs no gradient, and keeps the later inputs in their places. Keyword
arguments are options such as an axis or a probability. `backward` returns one gradient per
positional input, in order, or None for an input that gets none (integer ids, constants, absent
inputs). Only the inputs with `requires_grad` are asked for: `self.needs_grad[i]` says which.

`self.recording` tells forward whether its graph is recorded (grad enabled and some input needs a
gradient). When it is False backward will never run: forward saves nothing and skips the work
only backward needs (an MLP under no_grad does not compute gelu'). It is True for a Function
used outside `apply`.
"""

from __future__ import annotations

from .tensor import Tensor, is_grad_enabled


class Function:
    inputs: tuple[Tensor, ...]
    needs_grad: tuple[bool, ...]
    recording: bool = True
    released: bool = False  # set once backward has used it and its saved state is gone

    def forward(self, *arrays, **options):  # pragma: no cover - abstract
        raise NotImplementedError

    def backward(self, dy):  # pragma: no cover - abstract
        raise NotImplementedError

    @classmethod
    def apply(cls, *inputs, **options) -> Tensor:
        like = next((t for t in inputs if isinstance(t, Tensor)), None)
        tensors = tuple(t if t is None or isinstance(t, Tensor) else Tensor.constant(t, like=like) for t in inputs)
        fn = cls()
        fn.needs_grad = tuple(t is not None and t.requires_grad for t in tensors)
        track = is_grad_enabled() and any(fn.needs_grad)
        fn.recording = track
        if track:
            fn.inputs = tensors
        y = fn.forward(*(None if t is None else t.data for t in tensors), **options)
        return Tensor(y, requires_grad=track, _fn=fn if track else None)

    def release(self) -> None:
        """Drop the saved arrays and the links to the inputs: backward has used them."""
        self.__dict__.clear()
        self.released = True

    def __repr__(self) -> str:
        return f"<{type(self).__name__}>"
