"""Defining a new differentiable op: forward and backward in one place, on numpy arrays.

    @ts.custom_op
    def cube(x):
        def backward(g):
            return (3 * x**2 * g,)
        return x**3, backward

The op then works like a built-in: it records a node named "cube" (with the current
provenance), appears in graph pictures, and gradcheck can check and localise it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from .tensor import Tensor


def custom_op(fn: Callable | None = None, *, name: str | None = None) -> Callable:
    """Decorate ``fn(*arrays, **kwargs) -> (out, backward)``.

    Tensor arguments reach ``fn`` as their numpy arrays; ``backward(g)`` returns one gradient
    per positional argument (None for non-tensors or where none is needed), each in the
    argument's shape or a shape that broadcasting produced from it.
    """

    def wrap(fn: Callable) -> Callable:
        op_name = name or fn.__name__

        @functools.wraps(fn)
        def apply(*args: Any, **kwargs: Any) -> Tensor:
            arrays = [a._data if isinstance(a, Tensor) else a for a in args]
            out, backward = fn(*arrays, **kwargs)
            return Tensor.from_op(out, op_name, args, _checked(op_name, len(args), backward))

        return apply

    return wrap if fn is None else wrap(fn)


def _checked(op: str, n_inputs: int, backward: Callable) -> Callable:
    """User backwards get one friendly check: the number of gradients returned."""

    def checked(g: Any) -> tuple:
        grads = backward(g)
        grads = tuple(grads) if isinstance(grads, (tuple, list)) else (grads,)
        if len(grads) != n_inputs:
            raise ValueError(f"custom op '{op}': backward returned {len(grads)} gradients for "
                             f"{n_inputs} inputs")
        return grads

    return checked
