"""Gradient clipping with PyTorch's exact numbers, and a report naming the parameter that exploded.

Gradients are replaced, never mutated (``p.grad = Tensor.constant(new)``): the arrays inside
tensors are read-only, and an old gradient someone kept a handle on must not change under them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...checks import is_number
from ...tensor import Tensor
from ..module import Module

ParamsArg = Tensor | Iterable[Tensor]


def _with_grad(parameters: ParamsArg, op: str) -> list[Tensor]:
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    elif isinstance(parameters, Module):
        raise TypeError(f"{op}: expected parameters, got a {type(parameters).__name__} module; pass its "
                        ".parameters()")
    params = list(parameters)
    for position, p in enumerate(params):
        if not isinstance(p, Tensor):
            raise TypeError(f"{op}: expected Tensors, got a {type(p).__name__} at position {position}")
    return [p for p in params if p.grad is not None]


def _number(op: str, name: str, value: Any) -> float:
    """``value`` as a float, or a TypeError naming the op and the argument."""
    if not is_number(value):
        raise TypeError(f"{op}: {name} must be a number, got {value!r}")
    return float(value)


def _check_norm_type(op: str, norm_type: float | str) -> float:
    norm_type = math.inf if norm_type == "inf" else _number(op, "norm_type", norm_type)  # PyTorch's 'inf' too
    if not norm_type > 0:
        raise ValueError(f"{op}: norm_type must be positive or inf, got {norm_type}")
    return norm_type


def _vector_norm(array: np.ndarray, norm_type: float) -> np.floating:
    """torch.linalg.vector_norm of the flattened array, computed in the array's dtype
    (inf: max |x|; p: (sum |x|^p)^(1/p)); 0 for an empty array."""
    flat = np.asarray(array).reshape(-1)
    if flat.size == 0:
        return flat.dtype.type(0)
    return np.linalg.norm(flat, ord=norm_type)


def _total_norm(grads: list[np.ndarray], norm_type: float) -> np.floating:
    """The norm of the per-parameter norms: the norm of all gradients as one long vector."""
    return _vector_norm(np.array([_vector_norm(g, norm_type) for g in grads]), norm_type)


def clip_grad_norm_(parameters: ParamsArg, max_norm: float, norm_type: float = 2.0,
                    error_if_nonfinite: bool = False) -> Tensor:
    """Scale all gradients by max_norm / (total_norm + 1e-6) when that is below 1; return the
    total norm from before clipping as a 0-d Tensor.  As in PyTorch, a nan total makes every
    gradient nan and an inf total zeroes the finite entries (unless ``error_if_nonfinite``)."""
    norm_type = _check_norm_type("clip_grad_norm_", norm_type)
    max_norm = _number("clip_grad_norm_", "max_norm", max_norm)
    params = _with_grad(parameters, "clip_grad_norm_")
    if not params:
        return Tensor(0.0)
    total = _total_norm([p.grad.data for p in params], norm_type)
    if error_if_nonfinite and not np.isfinite(total):
        raise RuntimeError(f"clip_grad_norm_: the total norm of order {norm_type} of the gradients is "
                           f"{total}, which is non-finite, so it cannot be clipped (see "
                           "grad_norm_report for the parameter responsible; error_if_nonfinite=False "
                           "clips anyway)")
    with np.errstate(invalid="ignore"):  # the non-finite cases above are PyTorch's behaviour, not errors
        coef = np.minimum(max_norm / (total + 1e-6), 1.0)  # minimum propagates nan, like torch.clamp
        if coef != 1.0:  # multiplying by exactly 1 would change nothing
            for p in params:
                p.grad = Tensor.constant((p.grad.data * coef).astype(p.grad.dtype, copy=False))  # as mul_
    return Tensor.constant(np.asarray(total))


def clip_grad_value_(parameters: ParamsArg, clip_value: float) -> None:
    """Clamp every gradient entry into [-clip_value, clip_value] (nan stays nan)."""
    clip_value = _number("clip_grad_value_", "clip_value", clip_value)
    if not clip_value >= 0:
        raise ValueError(f"clip_grad_value_: clip_value must be >= 0, got {clip_value}")
    for p in _with_grad(parameters, "clip_grad_value_"):
        p.grad = Tensor.constant(np.clip(p.grad.data, -clip_value, clip_value))


@dataclass(frozen=True)
class GradNorm:
    """One parameter's gradient norm and how many of its entries are nan or inf."""

    name: str
    shape: tuple[int, ...]
    norm: float
    nonfinite: int

    @property
    def finite(self) -> bool:
        return self.nonfinite == 0 and math.isfinite(self.norm)


class GradNormReport:
    """Per-parameter gradient norms, worst first (non-finite, then largest): ``report.worst`` is
    the name of the parameter that exploded, ``str(report)`` a table for the training log."""

    def __init__(self, entries: list[GradNorm], without_grad: list[str], norm_type: float) -> None:
        self.entries = sorted(entries, key=lambda e: (e.finite, -e.norm if e.finite else 0.0))
        self.without_grad = without_grad
        self.norm_type = norm_type
        self.total = (float(_total_norm([np.array(e.norm) for e in entries], norm_type))
                      if entries else 0.0)

    @property
    def worst(self) -> str | None:
        return self.entries[0].name if self.entries else None

    @property
    def norms(self) -> dict[str, float]:
        return {e.name: e.norm for e in self.entries}

    def __iter__(self) -> Any:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def __str__(self) -> str:
        order = "inf" if math.isinf(self.norm_type) else f"{self.norm_type:g}"
        head = (f"gradient norms (order {order}) of {len(self.entries)} parameters, total {self.total:.4g}"
                + (f", worst: {self.worst}" if self.entries else ""))
        rows = [("parameter", "shape", "norm", "non-finite")]
        rows += [(e.name, str(e.shape), f"{e.norm:.4g}", str(e.nonfinite) if e.nonfinite else "")
                 for e in self.entries]
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        lines = [head] + ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
                          for row in rows]
        if self.without_grad:
            lines.append("no gradient: " + ", ".join(self.without_grad))
        return "\n".join(line.rstrip() for line in lines)

    def __repr__(self) -> str:
        return f"<GradNormReport worst={self.worst!r} total={self.total:.4g}>"


def grad_norm_report(named_parameters: Module | Iterable[tuple[str, Tensor]],
                     norm_type: float = 2.0) -> GradNormReport:
    """Gradient norm of every parameter (a Module, or ``(name, tensor)`` pairs such as
    ``model.named_parameters()``), to find which one blew up before clipping hides it."""
    norm_type = _check_norm_type("grad_norm_report", norm_type)
    if isinstance(named_parameters, Module):
        named_parameters = named_parameters.named_parameters()
    entries, without_grad = [], []
    for name, param in named_parameters:
        if param.grad is None:
            without_grad.append(name)
            continue
        grad = param.grad.data
        entries.append(GradNorm(name, tuple(grad.shape), float(_vector_norm(grad, norm_type)),
                                int(grad.size - np.count_nonzero(np.isfinite(grad)))))
    return GradNormReport(entries, without_grad, norm_type)
