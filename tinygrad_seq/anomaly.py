"""detect_anomaly(): stop at the first op whose output or incoming gradient is not finite.

Outside this mode nothing here runs: ops test one flag.  Inside it, each node also records the
source line that created it, so the error can point at the user's code.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

from . import autograd

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


class AnomalyError(FloatingPointError):
    """A non-finite value appeared; the message names the op, where it ran, and the source line."""


def _creating_line() -> str | None:
    """The first stack frame outside this package: the user's line that made the op."""
    frame = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        frame = frame.f_back
    if frame is None:
        return None
    import linecache

    code = linecache.getline(frame.f_code.co_filename, frame.f_lineno).strip()
    return f"{frame.f_code.co_filename}:{frame.f_lineno}: {code}"


def describe(op: str | None, node: autograd.Node | None, shape: tuple, dtype: object) -> str:
    prov, name = (node.prov, node.name) if node is not None else (autograd.provenance.current, None)
    where = f" in {prov}" if prov is not None and str(prov) else ""
    label = f" (tensor '{name}')" if name else ""
    return f"'{op or 'leaf'}'{label}{where} (output shape {shape}, dtype {dtype})"


def _created_at(source: str | None) -> str:
    return f"\n  created at {source}" if source else ""


def _count_bad(array: np.ndarray) -> str:
    return f"{int(np.isnan(array).sum())} nan, {int(np.isinf(array).sum())} inf of {array.size}"


def check_forward(op: str, out: np.ndarray, node: autograd.Node | None, inputs: Sequence[Any]) -> None:
    """Record the creating line on the node; raise if the op's output is not finite, blaming the op
    only if its inputs were finite (else the values came in: from a parameter, a tensor made outside
    this mode, or a number)."""
    source = _creating_line()
    if node is not None:
        node.source = source
    if out.dtype.kind == "f" and not np.isfinite(out).all():
        what = describe(op, node, out.shape, out.dtype)
        for position, value in enumerate(inputs):
            array = np.asarray(getattr(value, "_data", value))
            if array.dtype.kind == "f" and not np.isfinite(array).all():
                raise AnomalyError(
                    f"forward of {what} received non-finite values in its input {position} (shape "
                    f"{array.shape}, {_count_bad(array)}): they were there before the op, in a parameter, a "
                    f"tensor made outside detect_anomaly() or a number{_created_at(source)}")
        raise AnomalyError(f"forward of {what} produced non-finite values ({_count_bad(out)})"
                           f"{_created_at(source)}")


def check_incoming(node: autograd.Node, grad: np.ndarray) -> None:
    """Raise if the gradient reaching ``node`` is not finite. Every backward that fed it returned
    finite values (``check_backward`` saw each): so they overflowed when the walk added them up, or
    the gradient backward() started from was not finite."""
    if grad.dtype.kind == "f" and not np.isfinite(grad).all():
        raise AnomalyError(f"the gradient reaching {describe(node.op, node, node.shape, node.dtype)} is not "
                           f"finite ({_count_bad(grad)}), though each gradient added into it was: their sum "
                           f"overflowed (or backward() was given it){_created_at(node.source)}")


def check_backward(node: autograd.Node, parent_grads: tuple) -> None:
    """Blame the op whose backward *produced* a non-finite gradient, as PyTorch does."""
    for position, grad in enumerate(parent_grads):
        if grad is None:
            continue
        # an IndexGrad's values are all it adds (its dense form is sequence-sized: O(T^2) over T steps)
        values = (grad.values if isinstance(grad, autograd.IndexGrad)
                  else grad.dense() if isinstance(grad, autograd.LazyGrad) else grad)
        if not np.isfinite(values).all():
            what = describe(node.op, node, node.shape, node.dtype)
            raise AnomalyError(f"backward of {what} returned a non-finite gradient for its input {position} "
                               f"({_count_bad(np.asarray(values))}){_created_at(node.source)}")


@contextmanager
def detect_anomaly() -> Iterator[None]:
    """Inside: the first non-finite op output or gradient raises ``AnomalyError`` naming the op,
    its provenance (module, time step, gate), its shape and the line of code that created it."""
    saved = autograd.state.anomaly
    autograd.state.anomaly = True
    try:
        yield
    finally:
        autograd.state.anomaly = saved
