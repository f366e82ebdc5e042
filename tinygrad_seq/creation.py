"""Making tensors: from data, filled, or random (from one seedable generator)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .checks import integer, sizes
from .tensor import Tensor

DEFAULT_DTYPE = np.float32
_generator = np.random.default_rng()


def manual_seed(seed: int) -> None:
    """Seed the generator behind randn / rand / parameter init / dropout, for reproducible runs.
    PyTorch's range: a negative seed counts back from 2**64 (numpy alone refuses one)."""
    global _generator
    seed = integer(seed, "manual_seed", "seed")
    if not -2 ** 63 <= seed < 2 ** 64:
        raise ValueError(f"manual_seed: seed must be in [-2**63, 2**64), got {seed}")
    _generator = np.random.default_rng(seed % 2 ** 64)


def generator() -> np.random.Generator:
    return _generator


def tensor(data: Any, requires_grad: bool = False, dtype: Any = None, name: str | None = None) -> Tensor:
    """A new tensor holding a copy of ``data`` (Python floats become float32, arrays keep their dtype)."""
    return Tensor(data, requires_grad=requires_grad, dtype=dtype, name=name)


def _float(op: str, dtype: Any) -> np.dtype:
    """A random op's dtype: floating point (an integer one would truncate the samples)."""
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        raise TypeError(f"{op}: samples need a floating-point dtype, got {dtype}")
    return dtype


def _made(array: np.ndarray, requires_grad: bool, name: str | None) -> Tensor:
    if array.dtype.kind not in "biuf":
        raise TypeError(f"a tensor holds booleans, integers or floats, not {array.dtype}")
    out = Tensor.constant(array)
    out.name = name
    return out.requires_grad_(True) if requires_grad else out


def zeros(*shape: Any, dtype: Any = DEFAULT_DTYPE, requires_grad: bool = False,
          name: str | None = None) -> Tensor:
    return _made(np.zeros(sizes(shape, "zeros"), dtype), requires_grad, name)


def ones(*shape: Any, dtype: Any = DEFAULT_DTYPE, requires_grad: bool = False,
         name: str | None = None) -> Tensor:
    return _made(np.ones(sizes(shape, "ones"), dtype), requires_grad, name)


def full(shape: Any, fill_value: float, dtype: Any = DEFAULT_DTYPE, requires_grad: bool = False,
         name: str | None = None) -> Tensor:
    return _made(np.full(sizes((shape,), "full"), fill_value, dtype), requires_grad, name)


def zeros_like(x: Tensor, requires_grad: bool = False) -> Tensor:
    return _made(np.zeros_like(x.data), requires_grad, None)


def ones_like(x: Tensor, requires_grad: bool = False) -> Tensor:
    return _made(np.ones_like(x.data), requires_grad, None)


def arange(*args: Any, dtype: Any = None) -> Tensor:
    return Tensor.constant(np.arange(*args, dtype=dtype))


def randn(*shape: Any, dtype: Any = DEFAULT_DTYPE, requires_grad: bool = False,
          name: str | None = None) -> Tensor:
    samples = _generator.standard_normal(sizes(shape, "randn"))
    return _made(samples.astype(_float("randn", dtype)), requires_grad, name)


def rand(*shape: Any, dtype: Any = DEFAULT_DTYPE, requires_grad: bool = False,
         name: str | None = None) -> Tensor:
    return _made(_generator.random(sizes(shape, "rand")).astype(_float("rand", dtype)), requires_grad, name)
