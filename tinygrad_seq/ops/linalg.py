"""Matrix multiplication with numpy's semantics: 1-D operands, 2-D, and batched (broadcast) stacks."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..autograd import ProductGrad
from ..tensor import Tensor
from .elementwise import SavedOperands, data_of, kept_for


def _swap_last(m: np.ndarray) -> np.ndarray:
    return np.swapaxes(m, -1, -2)


class _MatrixBackward(SavedOperands):
    """2-D @ 2-D: (g y^T, x^T g). b's gradient x^T g stays unevaluated: a weight used at every step
    gets a few large products when the engine reaches it, as in a hand-written BPTT, instead of T
    small ones and T sums. A slotted class, not a closure, as elementwise explains."""

    __slots__ = ()

    def __call__(self, g: np.ndarray) -> tuple:
        return (None if self.y_for_a is None else g @ self.y_for_a.T,
                None if self.x_for_b is None else ProductGrad(self.x_for_b, g))


def matmul(a: Any, b: Any) -> Tensor:
    x, y = data_of(a), data_of(b)
    if type(x) is not np.ndarray or type(y) is not np.ndarray:  # Python scalars, numpy scalars
        x, y = np.asarray(x), np.asarray(y)
    if x.ndim == 0 or y.ndim == 0:
        raise ValueError(f"matmul: both operands need at least 1 dimension, got shapes {x.shape} "
                         f"and {y.shape}")
    try:
        out = x @ y
    except ValueError:
        inner = y.shape[0] if y.ndim == 1 else y.shape[-2]
        if x.shape[-1] == inner:  # the contraction fits, so the batch dims are what clash
            raise ValueError(f"matmul: the batch dims of shapes {x.shape} and {y.shape} "
                             "do not broadcast together") from None
        raise ValueError(f"matmul: shapes {x.shape} and {y.shape} are not aligned: the last dimension of "
                         f"the first ({x.shape[-1]}) must equal the "
                         f"{'only' if y.ndim == 1 else 'second-to-last'} dimension of the second "
                         f"({inner})") from None
    y_for_a, x_for_b = kept_for(a, y), kept_for(b, x)
    if x.ndim == 2 and y.ndim == 2:  # every RNN step: no 1-D bookkeeping, .T rather than swapaxes
        return Tensor.from_op(out, "matmul", (a, b), _MatrixBackward(y_for_a, x_for_b))

    def backward(g: np.ndarray) -> tuple:
        # Treat 1-D operands as a row (first) or column (second) matrix, as numpy does; the column's
        # axis goes in first so that a 0-d g (1-D @ 1-D) becomes (1, 1).
        if y.ndim == 1:
            g = np.expand_dims(g, -1)
        if x.ndim == 1:
            g = np.expand_dims(g, -2)
        grad_a = grad_b = None
        if y_for_a is not None:
            grad_a = g @ _swap_last(y_for_a if y.ndim > 1 else y_for_a[:, None])
            if x.ndim == 1:
                grad_a = grad_a[..., 0, :]
        if x_for_b is not None:
            grad_b = _swap_last(x_for_b if x.ndim > 1 else x_for_b[None, :]) @ g
            if y.ndim == 1:
                grad_b = grad_b[..., 0]
        return grad_a, grad_b

    return Tensor.from_op(out, "matmul", (a, b), backward)
