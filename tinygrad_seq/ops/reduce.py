"""Reductions over dimensions (PyTorch's ``dim`` / ``keepdim``; numpy's ``axis`` / ``keepdims``
are accepted too), and the numerically stable softmax family, which reduces along one dim."""

from __future__ import annotations

import builtins
from typing import Any, NamedTuple

import numpy as np

from ..checks import integer, is_flag, is_integer
from ..tensor import Tensor
from .elementwise import as_float

Dims = int | tuple[int, ...] | None


def normalize_dims(x: np.ndarray, dim: Any, op: str) -> tuple[int, ...] | None:
    """Check ``dim`` (an int, or a tuple or list of ints) against ``x`` and return it as a tuple of
    non-negative ints (None = all). A 0-d tensor has dim 0 (or -1) as PyTorch's has."""
    if dim is None:
        return None
    dims = (dim,) if type(dim) is int or not isinstance(dim, (tuple, list)) else dim
    out = []
    for d in dims:
        if type(d) is not int and not is_integer(d):  # (the first test is the common case's shortcut)
            raise TypeError(f"{op}: dim must be an int or a tuple of ints, got {dim!r}")
        if not -builtins.max(x.ndim, 1) <= d < builtins.max(x.ndim, 1):
            raise IndexError(f"{op}: dim {d} is out of range for a tensor of shape {x.shape}")
        out.append(int(d) % builtins.max(x.ndim, 1))
    return tuple(out)


def normalize_dim(x: np.ndarray, dim: Any, op: str) -> int:
    """``normalize_dims`` for an op that takes exactly one dim (of a tensor that has one)."""
    if x.ndim == 0:
        raise IndexError(f"{op}: a 0-d tensor has no dim {dim} to {op} along")
    return normalize_dims(x, integer(dim, op, "dim"), op)[0]


def _one_element_row(x: Tensor, dim: Any, op: str) -> Tensor:
    """A 0-d ``x`` as shape (1,), once ``dim`` is 0 or -1: the one-dim ops that PyTorch defines on a
    0-d tensor (softmax, max(dim), argmax, ...) treat it as a row of one element."""
    normalize_dims(x._data, integer(dim, op, "dim"), op)
    return x.reshape(1)


def _reduced_dims(x: np.ndarray, dim: Any, op: str) -> tuple[int, ...] | None:
    """``normalize_dims``, refusing a dim named twice (numpy's own error would not name the op); a 0-d
    tensor's dim 0 leaves nothing to reduce (numpy's ``axis=()``)."""
    dims = normalize_dims(x, dim, op)
    if dims is not None and len(set(dims)) != len(dims):
        raise ValueError(f"{op}: dims {tuple(dim)} name the same dim twice (tensor of shape {x.shape})")
    return () if dims and x.ndim == 0 else dims


def _resolve(x: np.ndarray, dim: Any, keepdim: bool, axis: Any, keepdims: Any, op: str):
    """The dims to reduce and keepdim, from PyTorch's arguments or numpy's. ``dim=()`` reduces every
    dim, as in PyTorch; numpy's ``axis=()`` none."""
    if axis is not None:
        if dim is not None:
            raise TypeError(f"{op}: got dim={dim!r} and numpy's axis={axis!r}; give one of them")
        dim = axis
    elif dim is not None and type(dim) in (tuple, list) and not dim:
        dim = None
    if keepdims is not None:
        if keepdim and not keepdims:
            raise TypeError(f"{op}: got keepdim={keepdim!r} and keepdims={keepdims!r}; give one of them")
        keepdim = keepdims
    if keepdim is not False and keepdim is not True and not is_flag(keepdim):  # (the common values first)
        raise TypeError(f"{op}: keepdim must be True or False, got {keepdim!r}")
    return _reduced_dims(x, dim, op), bool(keepdim)


def _restore_dims(g: np.ndarray, dims: tuple[int, ...] | None, keepdim: bool) -> np.ndarray:
    """Put back the reduced dims as size 1, so ``g`` broadcasts against the input."""
    if keepdim or dims is None:  # with dims None and no keepdim, g is 0-d and broadcasts as is
        return g
    return np.expand_dims(g, dims)


def _spread(g: np.ndarray, dims: tuple[int, ...] | None, keepdim: bool, shape: tuple) -> np.ndarray:
    """A reduction's output gradient over its input's ``shape``, as a read-only broadcast view. A full
    reduction's (a loss's) 0-d g gets its zero-stride view directly: np.broadcast_to's argument
    handling costs several microseconds, as much as a small model's whole loss backward."""
    if dims is None and not keepdim:
        view = np.ndarray(shape, g.dtype, g, 0, (0,) * len(shape))  # g is 0-d: one element, a buffer
        view.setflags(False)
        return view
    return np.broadcast_to(_restore_dims(g, dims, keepdim), shape)


def sum(x: Tensor, dim: Dims = None, keepdim: bool = False, *, axis: Dims = None,  # noqa: A001
        keepdims: bool | None = None) -> Tensor:
    dims, keep = _resolve(x._data, dim, keepdim, axis, keepdims, "sum")
    shape = x._data.shape
    out = x._data.sum(axis=dims, keepdims=keep)
    return Tensor.from_op(out, "sum", (x,),
                          lambda g: (_spread(g, dims, keep, shape),))


def mean(x: Tensor, dim: Dims = None, keepdim: bool = False, *, axis: Dims = None,
         keepdims: bool | None = None) -> Tensor:
    dims, keep = _resolve(x._data, dim, keepdim, axis, keepdims, "mean")
    shape = x._data.shape
    count = x._data.size if dims is None else int(np.prod([shape[d] for d in dims]))
    out = x._data.mean(axis=dims, keepdims=keep)
    return Tensor.from_op(out, "mean", (x,),
                          lambda g: (_spread(g / count, dims, keep, shape),))


def _extreme(x: Tensor, dim: Any, keepdim: bool, axis: Any, keepdims: Any, op: str) -> Tensor:
    """amax / amin over dims; ties share the gradient evenly (as PyTorch's amax / amin)."""
    dims, keep = _resolve(x._data, dim, keepdim, axis, keepdims, op)
    data = x._data
    if dims is None and data.size == 0:
        raise ValueError(f"{op}: cannot reduce an empty tensor of shape {data.shape}")
    empty = [d for d in dims or () if data.shape[d] == 0]
    if empty:  # (reducing the other dims of an empty tensor is fine: the result is empty too)
        raise ValueError(f"{op}: cannot reduce dim {empty[0]} of size 0 (tensor of shape {data.shape})")
    reduce = np.max if op in ("max", "amax") else np.min
    kept = reduce(data, axis=dims, keepdims=True)
    out = kept if keep else (kept.reshape(()) if dims is None else np.squeeze(kept, dims))

    def backward(g: np.ndarray) -> tuple:
        chosen = data == kept
        if dims is None and op in ("max", "min"):  # PyTorch's max() of a tensor with nans: the nans share
            chosen |= np.isnan(data) & np.isnan(kept)
        share = chosen / chosen.sum(axis=dims, keepdims=True)
        return (_restore_dims(g, dims, keep) * share,)

    return Tensor.from_op(out, op, (x,), backward)


class ValuesAndIndices(NamedTuple):
    """What ``max(dim)`` / ``min(dim)`` return, as in PyTorch: ``x.max(1).values``, or unpack it."""

    values: Tensor
    indices: Tensor


def _along(x: Tensor, dim: Any, keepdim: bool, op: str) -> ValuesAndIndices:
    """PyTorch's max(dim) / min(dim): the extreme along one dim and where it is; the gradient
    goes to that position only (amax / amin share it between ties instead)."""
    if not is_integer(dim):
        raise TypeError(f"{op}: dim must be one int (the result is (values, indices)), got {dim!r}; "
                        f"use a{op}(dim=...) for the values over several dims")
    if x.ndim == 0:
        return _along(_one_element_row(x, dim, op), 0, False, op)
    axis = normalize_dim(x._data, dim, op)
    if x._data.shape[axis] == 0:
        raise ValueError(f"{op}: cannot reduce dim {dim} of size 0 (tensor of shape {x.shape})")
    find = np.argmax if op == "max" else np.argmin
    index = np.expand_dims(find(x._data, axis=axis), axis)
    values = np.take_along_axis(x._data, index, axis)
    shape, dtype = x._data.shape, x._data.dtype

    def backward(g: np.ndarray) -> tuple:
        grad = np.zeros(shape, dtype)
        np.put_along_axis(grad, index, g if keepdim else np.expand_dims(g, axis), axis)
        return (grad,)

    if keepdim:
        return ValuesAndIndices(Tensor.from_op(values, op, (x,), backward), Tensor.constant(index))
    return ValuesAndIndices(Tensor.from_op(np.squeeze(values, axis), op, (x,), backward),
                            Tensor.constant(np.squeeze(index, axis)))


def max(x: Tensor, dim: int | None = None, keepdim: bool = False, *, axis: Dims = None,  # noqa: A001
        keepdims: bool | None = None) -> Tensor | ValuesAndIndices:
    """The largest value; with ``dim``, PyTorch's ``(values, indices)`` along it. numpy's
    ``axis=`` keyword keeps numpy's meaning (values only, like ``amax``)."""
    if dim is None:
        return _extreme(x, None, keepdim, axis, keepdims, "max")
    return _along(x, dim, keepdim, "max")


def min(x: Tensor, dim: int | None = None, keepdim: bool = False, *, axis: Dims = None,  # noqa: A001
        keepdims: bool | None = None) -> Tensor | ValuesAndIndices:
    """The smallest value; with ``dim``, PyTorch's ``(values, indices)``; ``axis=`` as numpy."""
    if dim is None:
        return _extreme(x, None, keepdim, axis, keepdims, "min")
    return _along(x, dim, keepdim, "min")


def amax(x: Tensor, dim: Dims = None, keepdim: bool = False) -> Tensor:
    """The largest values over one or several dims (all if None); ties share the gradient."""
    return _extreme(x, dim, keepdim, None, None, "amax")


def amin(x: Tensor, dim: Dims = None, keepdim: bool = False) -> Tensor:
    """The smallest values over one or several dims (all if None); ties share the gradient."""
    return _extreme(x, dim, keepdim, None, None, "amin")


def _position_of_extreme(x: Tensor, dim: int | None, keepdim: bool, op: str) -> Tensor:
    if x.ndim == 0 and dim is not None:
        return _position_of_extreme(_one_element_row(x, dim, op), 0, False, op)
    axis = None if dim is None else normalize_dim(x._data, dim, op)
    find = np.argmax if op == "argmax" else np.argmin
    return Tensor.constant(np.asarray(find(x._data, axis=axis, keepdims=keepdim)))


def argmax(x: Tensor, dim: int | None = None, keepdim: bool = False) -> Tensor:
    return _position_of_extreme(x, dim, keepdim, "argmax")


def argmin(x: Tensor, dim: int | None = None, keepdim: bool = False) -> Tensor:
    return _position_of_extreme(x, dim, keepdim, "argmin")


# -- softmax family: one dim, stable for inputs of any magnitude ------------------------------


def _max(x: np.ndarray, dims: Any) -> np.ndarray:
    """The max over dims, kept as size-1 dims: subtracting it makes exp() unable to overflow. Over an
    empty dim it is -inf (numpy's max would refuse), and the result of the op is empty or -inf."""
    return np.max(x, axis=dims, keepdims=True, initial=-np.inf)


def _peak(x: np.ndarray, dims: Any) -> np.ndarray:
    """``_max`` with 0 where it is infinite, as PyTorch's logsumexp: an all -inf slice stays -inf
    instead of becoming nan (-inf - -inf), and one holding +inf gives +inf."""
    peak = _max(x, dims)
    if not np.isfinite(peak).all():
        peak = np.where(np.isfinite(peak), peak, 0)
    return peak


def logsumexp(x: Tensor, dim: Dims = -1, keepdim: bool = False) -> Tensor:
    dims = _reduced_dims(x._data, dim, "logsumexp")
    data = as_float(x._data)  # as exp's: integers in float32
    peak = _peak(data, dims)
    with np.errstate(divide="ignore"):  # an all -inf slice sums to 0: log gives the right -inf
        kept = np.log(np.exp(data - peak).sum(axis=dims, keepdims=True)) + peak
    out = kept if keepdim else (kept.reshape(()) if dims is None else np.squeeze(kept, dims))
    return Tensor.from_op(out, "logsumexp", (x,),
                          lambda g: (_restore_dims(g, dims, keepdim) * np.exp(data - kept),))


def softmax(x: Tensor, dim: int = -1) -> Tensor:
    if x.ndim == 0:
        return softmax(_one_element_row(x, dim, "softmax"), 0).reshape(())
    dim, data = normalize_dim(x._data, dim, "softmax"), as_float(x._data)
    e = np.exp(data - _max(data, dim))  # +inf or an all -inf slice: nan, as in PyTorch
    y = e / e.sum(axis=dim, keepdims=True)
    return Tensor.from_op(y, "softmax", (x,),
                          lambda g: (y * (g - (g * y).sum(axis=dim, keepdims=True)),))


def log_softmax(x: Tensor, dim: int = -1) -> Tensor:
    if x.ndim == 0:
        return log_softmax(_one_element_row(x, dim, "log_softmax"), 0).reshape(())
    dim, data = normalize_dim(x._data, dim, "log_softmax"), as_float(x._data)
    shifted = data - _max(data, dim)
    y = shifted - np.log(np.exp(shifted).sum(axis=dim, keepdims=True))
    return Tensor.from_op(y, "log_softmax", (x,),
                          lambda g: (g - np.exp(y) * g.sum(axis=dim, keepdims=True),))
