"""Matrix multiplication with numpy's semantics: 1-D operands, 2-D, and batched (broadcast) stacks."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..autograd import IndexGrad, ProductGrad, interned_shape
from ..tensor import Tensor
from .elementwise import SavedOperands, data_of, kept_for, operands


def _swap_last(m: np.ndarray) -> np.ndarray:
    return np.swapaxes(m, -1, -2)


class _MatrixBackward(SavedOperands):
    """2-D @ 2-D: (g y^T, x^T g). b's gradient x^T g stays unevaluated: a weight used at every step
    gets a few large products when the engine reaches it, as in a hand-written BPTT, instead of T
    small ones and T sums. A slotted class, not a closure, as elementwise explains."""

    __slots__ = ()

    def __call__(self, g: np.ndarray) -> tuple:
        return (None if self.y_for_a is None else g.dot(self.y_for_a.T),
                None if self.x_for_b is None else ProductGrad(self.x_for_b, g))


class _AddMatrixBackward(_MatrixBackward):
    """input + mat1 @ mat2: (g, g mat2^T, mat1^T g); the engine sums g back to a broadcast input."""

    __slots__ = ()

    def __call__(self, g: np.ndarray) -> tuple:
        return (g, *_MatrixBackward.__call__(self, g))


class _AddRowsMatrixBackward(_MatrixBackward):
    """input[rows] + mat1 @ mat2: g into the input's rows (an ``IndexGrad``, as a slice's backward
    gives), then the product's gradients."""

    __slots__ = ("rows", "shape", "dtype")

    def __init__(self, y_for_a: Any, x_for_b: Any, rows: slice, shape: tuple, dtype: np.dtype) -> None:
        super().__init__(y_for_a, x_for_b)
        self.rows, self.shape, self.dtype = rows, shape, dtype

    def __call__(self, g: np.ndarray) -> tuple:
        return (IndexGrad(self.rows, g, self.shape, self.dtype, False), *_MatrixBackward.__call__(self, g))


def _product(op: str, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """x @ y, or an error that names ``op`` and says which dimensions disagree. Two matrices go to
    the ``ndarray.dot`` method: the same BLAS call and the same bits as ``@`` (checked over shapes
    from (1, 1) to (256, 2048), both dtypes, transposed operands), for about half of numpy's per-call
    work: 5,100 machine instructions against 9,200 for a recurrent step's (1, 16) @ (16, 16), and
    6,700 for ``np.dot``, whose ``__array_function__`` dispatch runs a Python function per call."""
    if x.ndim == 0 or y.ndim == 0:
        raise ValueError(f"{op}: both operands need at least 1 dimension, got shapes {x.shape} "
                         f"and {y.shape}")
    try:
        return x.dot(y) if x.ndim == 2 and y.ndim == 2 else x @ y
    except ValueError:
        inner = y.shape[0] if y.ndim == 1 else y.shape[-2]
        if x.shape[-1] == inner:  # the contraction fits, so the batch dims are what clash
            raise ValueError(f"{op}: the batch dims of shapes {x.shape} and {y.shape} "
                             "do not broadcast together") from None
        raise ValueError(f"{op}: shapes {x.shape} and {y.shape} are not aligned: the last dimension of "
                         f"the first ({x.shape[-1]}) must equal the "
                         f"{'only' if y.ndim == 1 else 'second-to-last'} dimension of the second "
                         f"({inner})") from None


def _arrays(a: Any, b: Any) -> tuple[np.ndarray, np.ndarray]:
    x, y = operands(a, b)  # (an integer matrix meets a float one in the float's dtype, as elementwise)
    if type(x) is not np.ndarray or type(y) is not np.ndarray:  # Python scalars, numpy scalars
        x, y = np.asarray(x), np.asarray(y)
    return x, y


def addmm(input: Any, mat1: Any, mat2: Any, *, rows: slice | None = None) -> Tensor:  # noqa: A002
    """``input + mat1 @ mat2`` as one op, PyTorch's ``addmm`` (with beta = alpha = 1): mat1 (n, m),
    mat2 (m, p), and input broadcasting to (n, p), such as a bias. Why one op: a linear layer or a
    recurrent step records one node instead of two, and the sum is made in the product's buffer.
    ``rows`` (internal): add ``input[rows]``, recording no slice: a recurrent layer's step adds its
    rows of the projection of all steps' inputs, one node where a slice and an addmm would be two."""
    x, y = _arrays(mat1, mat2)
    if x.ndim != 2 or y.ndim != 2:
        raise ValueError(f"addmm: mat1 and mat2 must be matrices (2-D), got shapes {x.shape} and {y.shape}")
    out = _product("addmm", x, y)
    whole = bias = data_of(input)
    if rows is not None:  # rows of a matrix, of exactly the product's shape: backward adds g into them
        bias = whole[rows] if type(whole) is np.ndarray and whole.ndim == 2 else None
        if bias is None or bias.shape != out.shape:
            raise ValueError(f"addmm: rows {rows.start}:{rows.stop} of an input of shape {np.shape(whole)} "
                             f"must be a matrix of the product's shape {out.shape}")
    shape, (height, width) = bias.shape if type(bias) is np.ndarray else np.shape(bias), out.shape
    if shape != out.shape and shape not in ((width,), (1, width), (height, 1), (), (1,), (1, 1)):
        raise ValueError(f"addmm: input of shape {shape} does not broadcast to the product's shape "
                         f"{out.shape} (mat1 {x.shape} @ mat2 {y.shape})")
    if type(bias) is np.ndarray and bias.dtype is not out.dtype and bias.dtype.kind in "biu":
        bias = bias.astype(out.dtype)  # an integer input meets the float product in its dtype (operands)
    if (type(bias) is np.ndarray and bias.dtype is out.dtype) or np.result_type(bias, out) == out.dtype:
        out += bias  # the same bits as bias + out: one rounding of the same two numbers
    else:
        out = bias + out  # a wider input widens the result, as input + mat1 @ mat2 would
    if rows is None:
        backward = _AddMatrixBackward(kept_for(mat1, y), kept_for(mat2, x))
    else:
        backward = _AddRowsMatrixBackward(kept_for(mat1, y), kept_for(mat2, x), rows,
                                          interned_shape(whole.shape), whole.dtype)
    return Tensor.from_op(out, "addmm", (input, mat1, mat2), backward)


def matmul(a: Any, b: Any) -> Tensor:
    x, y = _arrays(a, b)
    out = _product("matmul", x, y)
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
