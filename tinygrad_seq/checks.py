"""What counts as an integer argument, defined once for every op and module that takes one."""

from __future__ import annotations

from typing import Any

import numpy as np


def is_integer(value: Any) -> bool:
    """An int or a numpy integer, not a bool: where PyTorch takes an int it refuses True (not a size
    or a dim, though Python calls it 1) and floats (which would be truncated silently)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def one_dim(dim: Any, op: str) -> int:
    """``dim`` of an op that takes exactly one, as an int; its range is the op's to check."""
    if not is_integer(dim):
        raise TypeError(f"{op}: dim must be an int, got {dim!r}")
    return int(dim)


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
