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

import numpy as np

from .autograd import LazyGrad
from .tensor import Tensor


def custom_op(fn: Callable | None = None, *, name: str | None = None) -> Callable:
    """Decorate ``fn(*arrays, **kwargs) -> (out, backward)``.

    Tensor arguments reach ``fn`` as their numpy arrays; ``backward(g)`` returns one gradient
    per positional argument (None for non-tensors or where none is needed), each in the
    argument's shape or a shape that broadcasting produced from it. Keyword arguments are settings,
    never Tensors (a Tensor there would get no gradient). An integer or bool output records nothing:
    as in PyTorch, it is not differentiable.
    """

    def wrap(fn: Callable) -> Callable:
        op_name = name or fn.__name__

        @functools.wraps(fn)
        def apply(*args: Any, **kwargs: Any) -> Tensor:
            for key, value in kwargs.items():
                if isinstance(value, Tensor):
                    raise TypeError(f"custom op '{op_name}': Tensor passed as keyword argument {key!r}; pass "
                                    "Tensors positionally, as the op's inputs, so that backward gives them a "
                                    "gradient")
            arrays = [a._data if isinstance(a, Tensor) else a for a in args]
            result = fn(*arrays, **kwargs)
            if not (isinstance(result, tuple) and len(result) == 2 and callable(result[1])):
                raise TypeError(f"custom op '{op_name}': must return (output, backward), with backward a "
                                f"function of the output's gradient; got {_described(result)}")
            out, backward = result
            out = np.asarray(out)
            if out.dtype.kind not in "biuf":
                raise TypeError(f"custom op '{op_name}': output of dtype {out.dtype}; expected numbers")
            if out.dtype.kind != "f":  # (rounding, argmax: no gradient, and no float to carry one)
                return Tensor.constant(out)
            shapes = [np.shape(array) for array in arrays]
            return Tensor.from_op(out, op_name, args, _checked(op_name, shapes, backward))

        return apply

    return wrap if fn is None else wrap(fn)


def _described(result: Any) -> str:
    if isinstance(result, tuple):
        return f"a tuple of {len(result)}: ({', '.join(type(item).__name__ for item in result)})"
    return f"a {type(result).__name__}"


def _checked(op: str, shapes: list[tuple], backward: Callable) -> Callable:
    """User backwards get friendly checks, naming the op: the number of gradients returned, and each
    one's type and shape (it may have a shape that broadcasting made from its input's)."""

    def checked(g: Any) -> tuple:
        grads = backward(g)
        grads = tuple(grads) if isinstance(grads, (tuple, list)) else (grads,)
        if len(grads) != len(shapes):
            raise ValueError(f"custom op '{op}': backward returned {len(grads)} gradients for "
                             f"{len(shapes)} inputs")
        checked_grads = []
        for i, (grad, shape) in enumerate(zip(grads, shapes, strict=True)):
            if grad is not None and not isinstance(grad, LazyGrad):  # (the engine's own pass as they are)
                grad = np.asarray(grad)
                if grad.dtype.kind not in "biuf":
                    raise TypeError(f"custom op '{op}': backward's gradient {i} is of dtype {grad.dtype}; "
                                    "expected numbers")
                if not _sums_back(grad.shape, shape):
                    raise ValueError(f"custom op '{op}': backward's gradient {i} has shape {grad.shape}, "
                                     f"which does not sum back to its input's shape {shape}")
            checked_grads.append(grad)
        return tuple(checked_grads)

    return checked


def _sums_back(grad_shape: tuple, shape: tuple) -> bool:
    """Whether the input's ``shape`` broadcasts up to ``grad_shape`` (the engine sums it back)."""
    try:
        return np.broadcast_shapes(grad_shape, shape) == grad_shape
    except ValueError:
        return False
