"""Ops that move data without arithmetic: reshape, transpose, expand, indexing, concat, stack,
split.  Indexing's backward is an ``IndexGrad`` (zero outside the index) that the engine adds
into one buffer, so taking T slices of a sequence and backpropagating costs O(T), not O(T^2).
Indexing runs several times per time step, so its backward is a slotted class (see elementwise).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..autograd import IndexGrad, interned_shape
from ..checks import integer, is_integer, sizes, unpacked
from ..tensor import Tensor
from .elementwise import pass_through
from .reduce import normalize_dim, normalize_dims


def reshape(x: Tensor, *shape: Any) -> Tensor:
    shape = sizes(shape, "reshape", inferred=True)
    source = x._data.shape
    try:
        out = x._data.reshape(shape)
    except (ValueError, TypeError):
        raise ValueError(f"reshape: cannot reshape a tensor of shape {source} "
                         f"({x._data.size} elements) into {shape}") from None
    return Tensor.from_op(out, "reshape", (x,), lambda g: (g.reshape(source),))


def view(x: Tensor, *shape: Any) -> Tensor:
    """Same as reshape (arrays here are never mutated, so views and copies behave alike)."""
    return reshape(x, *shape)


def flatten(x: Tensor, start_dim: int = 0, end_dim: int = -1) -> Tensor:
    if x.ndim == 0:
        return reshape(x, 1)
    start, end = normalize_dims(x._data, (start_dim, end_dim), "flatten")
    if start > end:
        raise ValueError(f"flatten: start_dim {start_dim} comes after end_dim {end_dim} (tensor of shape "
                         f"{x.shape})")
    shape = x.shape
    return reshape(x, shape[:start] + (int(np.prod(shape[start:end + 1])),) + shape[end + 1:])


def permute(x: Tensor, *dims: Any) -> Tensor:
    dims = normalize_dims(x._data, unpacked(dims), "permute")
    if sorted(dims) != list(range(x.ndim)):
        raise ValueError(f"permute: {dims} is not a permutation of the {x.ndim} dims of shape {x.shape}")
    return _permuted(x, dims, tuple(sorted(range(len(dims)), key=dims.__getitem__)))


def _permuted(x: Tensor, dims: tuple[int, ...], inverse: tuple[int, ...]) -> Tensor:
    return Tensor.from_op(x._data.transpose(dims), "permute", (x,), lambda g: (g.transpose(inverse),))


def transpose(x: Tensor, dim0: int, dim1: int) -> Tensor:
    """Swap two dims (PyTorch's meaning of transpose: both are required, so ``x.transpose(1)`` of a
    matrix is an error, not a swap of dim 1 with a default that happens to be itself)."""
    d0, d1 = normalize_dims(x._data, (dim0, dim1), "transpose")
    if x.ndim == 0:  # its dim 0 with itself, as PyTorch allows
        return _permuted(x, (), ())
    return Tensor.from_op(np.swapaxes(x._data, d0, d1), "transpose", (x,),
                          lambda g: (np.swapaxes(g, d0, d1),))


def T(x: Tensor) -> Tensor:
    """All dims reversed (the matrix transpose for 2-D); a reversal is its own inverse."""
    dims = tuple(range(x._data.ndim - 1, -1, -1))
    return _permuted(x, dims, dims)


def broadcast_to(x: Tensor, *shape: Any) -> Tensor:
    shape = unpacked(shape)
    try:
        out = np.broadcast_to(x._data, shape)
    except ValueError:
        raise ValueError(f"expand: cannot broadcast a tensor of shape {x.shape} to {shape}") from None
    return Tensor.from_op(out, "expand", (x,), pass_through)  # the engine sums g back


def expand(x: Tensor, *sizes: Any) -> Tensor:
    """PyTorch's expand: -1 keeps a dim's size."""
    sizes = unpacked(sizes)
    lead = len(sizes) - x.ndim
    shape = tuple(x.shape[i - lead] if s == -1 and i >= lead else s for i, s in enumerate(sizes))
    return broadcast_to(x, shape)


def squeeze(x: Tensor, dim: int | tuple[int, ...] | None = None) -> Tensor:
    dims = normalize_dims(x._data, dim, "squeeze")
    if dims is None:
        dims = tuple(i for i, n in enumerate(x.shape) if n == 1)
    return reshape(x, tuple(n for i, n in enumerate(x.shape) if not (i in dims and n == 1)))


def unsqueeze(x: Tensor, dim: int) -> Tensor:
    dim = integer(dim, "unsqueeze", "dim")
    if not -x.ndim - 1 <= dim <= x.ndim:
        raise IndexError(f"unsqueeze: dim {dim} is out of range for a tensor of shape {x.shape}")
    dim = dim % (x.ndim + 1)
    return reshape(x, x.shape[:dim] + (1,) + x.shape[dim:])


# -- indexing ---------------------------------------------------------------------------------


_BASIC_INDEX_TYPES = frozenset((int, slice, type(None), type(Ellipsis)))
_KEPT_AS_THEY_ARE = (int, np.integer, slice, type(None), type(Ellipsis))  # (a bool is an int: numpy's mask)


def _normalize_index(index: Any) -> tuple[Any, bool | None]:
    """Tensors and sequences in an index (lists, ranges, a tuple inside the index) become arrays, as
    numpy reads them; also report whether the index may select an element twice, so that backward
    must add each repeat (``np.add.at``, ten times slower than ``+=``): only an integer array of more
    than one element can (a boolean mask never repeats). None instead: the index mixes ints with
    index arrays, which numpy and PyTorch read differently (``_ints_first``)."""
    parts = index if isinstance(index, tuple) else (index,)
    for part in parts:  # fast path: ints and slices (a time step of a sequence) need no conversion
        if type(part) not in _BASIC_INDEX_TYPES:
            break
    else:
        return index, False
    out, may_repeat = [], False
    for part in parts:
        if isinstance(part, Tensor):
            part = part._data
        elif not isinstance(part, _KEPT_AS_THEY_ARE):
            part = np.array(part)  # our own copy: the caller may mutate theirs before backward
            if part.size == 0:  # [] selects nothing (numpy would read it as a float array)
                part = part.astype(np.intp)
        if isinstance(part, np.ndarray):
            if part.ndim == 0 and part.dtype.kind in "iu":  # a 0-d integer tensor: an int, as in PyTorch
                part = int(part)
            elif part.dtype.kind in "iu":
                may_repeat = may_repeat or part.size > 1
            elif part.dtype != np.bool_:
                raise IndexError(f"getitem: index arrays must be integer or boolean, got {part.dtype}")
        out.append(part)
    if any(is_integer(part) for part in out) and any(isinstance(part, np.ndarray) for part in out):
        return tuple(out), None
    return tuple(out), may_repeat


def _ints_first(parts: tuple) -> tuple[tuple, tuple]:
    """An index mixing ints with index arrays, as two that apply one after the other: the ints, then
    the rest. numpy counts an int as one more index array, so that in ``x[0, :, [0, 1]]`` the index
    arrays are apart and their dim goes first: (2, 3) for x of shape (2, 3, 4). PyTorch selects with
    the ints first and indexes what remains: (3, 2), as the two steps give."""
    selected = []
    for part in parts:
        if is_integer(part) or part is Ellipsis:
            selected.append(part)
        elif isinstance(part, np.ndarray):  # a boolean mask spans as many dims as it has
            selected += [slice(None)] * (part.ndim if part.dtype == np.bool_ else 1)
        elif part is not None and not isinstance(part, (bool, np.bool_)):  # None and True consume no dim
            selected.append(slice(None))
    return tuple(selected), tuple(part for part in parts if not is_integer(part))


class _GetitemBackward:
    """g into the indexed part of a zero array of the input's shape, as an ``IndexGrad``."""

    __slots__ = ("index", "shape", "dtype", "may_repeat")

    def __init__(self, index: Any, shape: tuple, dtype: np.dtype, may_repeat: bool) -> None:
        self.index, self.shape, self.dtype, self.may_repeat = index, shape, dtype, may_repeat

    def __call__(self, g: np.ndarray) -> tuple[IndexGrad]:
        return (IndexGrad(self.index, g, self.shape, self.dtype, self.may_repeat),)


def getitem(x: Tensor, index: Any, *, copy: bool = False) -> Tensor:
    """``x[index]``. ``copy=True`` (internal): a copy even where numpy gives a view (ints and slices),
    so that the result does not keep x's buffer alive (a layer's final state, carried across
    truncated-BPTT windows, must not hold the whole sequence's states)."""
    index, may_repeat = _normalize_index(index)
    if may_repeat is None:  # ints beside index arrays: PyTorch takes the ints first
        selected, rest = _ints_first(index)
        return getitem(getitem(x, selected), rest, copy=copy)
    source = x._data
    try:
        out = source[index]
    except IndexError as err:
        raise IndexError(f"getitem: {err} (tensor of shape {source.shape})") from None
    if copy and out.base is not None:  # a view (cheaper to ask than np.may_share_memory)
        out = out.copy()
    return Tensor.from_op(out, "getitem", (x,),
                          _GetitemBackward(index, interned_shape(source.shape), source.dtype, may_repeat))


def narrow(x: Tensor, dim: int, start: int, length: int) -> Tensor:
    """PyTorch's narrow: ``length`` entries of ``dim`` from ``start`` (negative counts from the end), a
    view, drawn as a ``getitem``. Every narrow of the same part of the same shape and dtype shares one
    backward: a recurrent layer's gate slices, 4 per time step, then record no backward object each."""
    if type(dim) is not int or type(start) is not int or type(length) is not int:
        dim, start, length = (integer(value, "narrow", name) for name, value in
                              (("dim", dim), ("start", start), ("length", length)))
    source = x._data
    backward = _narrowing(dim, start, length, source.shape, source.dtype)
    return Tensor.from_op(source[backward.index], "getitem", (x,), backward)


@functools.lru_cache(maxsize=1024)  # a program narrows a few places of a few shapes
def _narrowing(dim: int, start: int, length: int, shape: tuple, dtype: np.dtype) -> _GetitemBackward:
    """The shared backward of ``narrow`` (which checks its arguments here, where a new case lands)."""
    if not shape:
        raise IndexError("narrow: a 0-d tensor has no dim to narrow")
    if not -len(shape) <= dim < len(shape):
        raise IndexError(f"narrow: dim {dim} is out of range for a tensor of shape {shape}")
    size = shape[dim]
    if not -size <= start <= size:
        raise IndexError(f"narrow: start {start} is out of range for dim {dim % len(shape)} of size {size} "
                         f"(tensor of shape {shape})")
    if dim < 0 or start < 0:  # the same object as the non-negative spelling's
        return _narrowing(dim % len(shape), start % size if start < 0 else start, length, shape, dtype)
    if length < 0 or start + length > size:
        raise ValueError(f"narrow: start {start} + length {length} does not fit in dim {dim} of size {size} "
                         f"(tensor of shape {shape}); expected 0 <= length <= {size - start}")
    index = (slice(None),) * dim + (slice(start, start + length),)
    return _GetitemBackward(index, interned_shape(shape), dtype, False)


# -- joining and splitting --------------------------------------------------------------------


def _join_inputs(op: str, tensors: Sequence[Tensor]) -> tuple[list[Tensor], np.dtype | None]:
    """``tensors`` as a list, each checked to be a Tensor, and the dtype to join them in: None if they
    share one, else PyTorch's, where an integer meeting a float takes the floats' dtype (numpy would
    make float64 of int64 with float32)."""
    tensors = list(tensors)
    dtypes = set()
    for position, tensor in enumerate(tensors):
        if not isinstance(tensor, Tensor):
            raise TypeError(f"{op}: expected a sequence of Tensors, got a {type(tensor).__name__} at "
                            f"position {position}")
        dtypes.add(tensor._data.dtype)
    if len(dtypes) < 2:
        return tensors, None
    floats = [dtype for dtype in dtypes if dtype.kind == "f"]
    return tensors, np.result_type(*(floats or dtypes))


def _check_join(op: str, tensors: Sequence[Tensor], dim: int, same_dim: bool) -> None:
    if len(tensors) == 0:
        raise ValueError(f"{op}: expected a non-empty sequence of tensors")
    shapes = [t._data.shape for t in tensors]
    first = shapes[0]
    if shapes.count(first) == len(shapes):  # all alike (a sequence's steps): nothing to compare
        return
    for shape in shapes[1:]:
        comparable = len(shape) == len(first) and all(
            a == b for i, (a, b) in enumerate(zip(shape, first, strict=True)) if not (same_dim and i == dim))
        if not comparable:
            rule = "all dims except dim " + str(dim) if same_dim else "the same shape"
            raise ValueError(f"{op}: tensors must match in {rule}, got shapes {shapes}")


def cat(tensors: Sequence[Tensor], dim: int = 0) -> Tensor:
    tensors, dtype = _join_inputs("cat", tensors)
    if tensors:  # normalize first: the shape check skips dim by its non-negative position
        dim = normalize_dim(tensors[0]._data, dim, "cat")
    _check_join("cat", tensors, dim, same_dim=True)
    return _cat_node(np.concatenate([t._data for t in tensors], axis=dim, dtype=dtype), tensors, dim)


def catted(tensors: Sequence[Tensor], out: np.ndarray, dim: int) -> Tensor:
    """``cat(tensors, dim)`` when its result is already made, as ``stacked``: the parts are ``out``'s
    consecutive blocks along ``dim`` (the directions of a bidirectional layer write into halves)."""
    return _cat_node(out, tensors, dim)


def _cat_node(out: np.ndarray, tensors: Sequence[Tensor], dim: int) -> Tensor:
    bounds = np.cumsum([t.shape[dim] for t in tensors])[:-1]
    return Tensor.from_op(out, "cat", tensors, lambda g: tuple(np.split(g, bounds, axis=dim)))


def stack(tensors: Sequence[Tensor], dim: int = 0) -> Tensor:
    tensors, dtype = _join_inputs("stack", tensors)
    _check_join("stack", tensors, -1, same_dim=False)
    ndim, dim = tensors[0].ndim + 1, integer(dim, "stack", "dim")
    if not -ndim <= dim < ndim:
        raise IndexError(f"stack: dim {dim} is out of range for stacking tensors of shape {tensors[0].shape}")
    dim %= ndim
    lead = (slice(None),) * dim
    # np.stack's own recipe, without its argument checks (done above): a new axis, then concatenate
    return _stack_node(np.concatenate([t._data[lead + (None,)] for t in tensors], axis=dim, dtype=dtype),
                       tensors, lead)


def stacked(tensors: Sequence[Tensor], out: np.ndarray) -> Tensor:
    """``stack(tensors)`` when its result is already made: ``out[i]`` holds the values of
    ``tensors[i]``, which the caller wrote there (a recurrent layer's steps write their states into
    its output's rows), so nothing is copied."""
    return _stack_node(out, tensors, ())


def _stack_node(out: np.ndarray, tensors: Sequence[Tensor], lead: tuple) -> Tensor:
    """The node of a stack along the dim after the ``lead`` (full slices) dims."""
    count = len(tensors)  # not the list: backward must not keep every input tensor alive
    return Tensor.from_op(out, "stack", tensors, lambda g: tuple(g[lead + (i,)] for i in range(count)))


def split(x: Tensor, split_size_or_sections: int | Sequence[int], dim: int = 0) -> list[Tensor]:
    """PyTorch's split: chunks of one size (the last may be smaller), or a list of sizes."""
    dim = normalize_dim(x._data, dim, "split")
    length = x.shape[dim]
    if is_integer(split_size_or_sections):
        if split_size_or_sections <= 0:
            raise ValueError(f"split: split size must be positive, got {split_size_or_sections}")
        sizes = [min(split_size_or_sections, length - s)
                 for s in range(0, length, split_size_or_sections)] or [0]  # an empty dim: one empty piece
    elif isinstance(split_size_or_sections, (list, tuple)):
        sizes = [integer(n, "split", "each size") for n in split_size_or_sections]
        if any(n < 0 for n in sizes):
            raise ValueError(f"split: sizes {sizes} must not be negative")
        if sum(sizes) != length:
            raise ValueError(f"split: sizes {sizes} sum to {sum(sizes)}, but dim {dim} has size {length}")
    else:
        raise TypeError(f"split: split_size_or_sections must be an int or a list of ints, got "
                        f"{split_size_or_sections!r}")
    starts = itertools.accumulate(sizes[:-1], initial=0)
    return [narrow(x, dim, start, n) for start, n in zip(starts, sizes, strict=True)]


def chunk(x: Tensor, chunks: int, dim: int = 0) -> list[Tensor]:
    if not is_integer(chunks) or chunks < 1:
        raise ValueError(f"chunk: chunks must be a positive integer, got {chunks!r}")
    dim = normalize_dim(x._data, dim, "chunk")
    if x.shape[dim] == 0:  # PyTorch's rule: as many (empty) pieces as asked for
        return [narrow(x, dim, 0, 0) for _ in range(chunks)]
    size = -(-x.shape[dim] // chunks)
    return split(x, max(size, 1), dim)


def unbind(x: Tensor, dim: int = 0) -> list[Tensor]:
    """The slices along ``dim``, each without that dim (e.g. the time steps of a sequence)."""
    dim = normalize_dim(x._data, dim, "unbind")
    lead = (slice(None),) * dim
    return [getitem(x, lead + (i,)) for i in range(x.shape[dim])]
