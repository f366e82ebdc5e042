"""Argument checks shared by ops and modules, defined once: integers (dims, sizes, indices), numbers,
dtypes and shapes."""

from __future__ import annotations

from typing import Any

import numpy as np


def is_integer(value: Any) -> bool:
    """An int or a numpy integer, not a bool: where PyTorch takes an int it refuses True (not a size
    or a dim, though Python calls it 1) and floats (which would be truncated silently)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def integer(value: Any, op: str, name: str) -> int:
    """``value`` (the argument ``name`` of ``op``: a dim, a size, an index) as an int, or a TypeError
    naming both; its range is the op's to check."""
    if not is_integer(value):
        raise TypeError(f"{op}: {name} must be an integer, got {value!r}")
    return int(value)


def dtype_or_cpu(dtype: Any, op: str) -> np.dtype | None:
    """A ``.to()`` argument as a numpy dtype, or None for ``"cpu"``: code ported from PyTorch moves
    things to the CPU, where everything here already is. Anything else is named."""
    if isinstance(dtype, str) and dtype == "cpu":
        return None
    try:
        return np.dtype(dtype)
    except TypeError:
        raise TypeError(f"{op}: expected a dtype such as np.float32 or 'float64' (or 'cpu', where everything "
                        f"already runs), got {dtype!r}") from None


def unpacked(shape: tuple) -> tuple:
    """The sizes (or dims) an op took as ``f(2, 3)`` or ``f((2, 3))``, PyTorch's two spellings."""
    return tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape


def sizes(shape: tuple, op: str, inferred: bool = False) -> tuple[int, ...]:
    """A new tensor's shape, given either way (``unpacked``): integers >= 0, or -1 where ``inferred``
    (reshape). numpy would take -2 as -1, and fail on 2.5 or -1 with its own message."""
    shape = unpacked(shape)
    lowest = -1 if inferred else 0
    for size in shape:
        if not is_integer(size):
            raise TypeError(f"{op}: sizes must be integers, got {shape}")
        if size < lowest:
            raise ValueError(f"{op}: sizes must be >= {lowest}{' (-1: inferred)' if inferred else ''}, "
                             f"got {shape}")
    return tuple(int(size) for size in shape)


def is_number(value: Any) -> bool:
    """A real number (Python's or numpy's), not a bool: a hyper-parameter or a clipping bound."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def is_flag(value: Any) -> bool:
    """True or False (numpy's too): a string such as 'no' would be truthy where a flag is read."""
    return isinstance(value, (bool, np.bool_))
