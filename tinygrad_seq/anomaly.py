"""detect_anomaly(): stop at the first op whose output or incoming gradient is not finite.

Outside this mode nothing here runs: ops test one flag.  Inside it, each node also records the
source line that created it, so the error can point at the user's code.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

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


def describe(node: autograd.Node) -> str:
    where = f" in {node.prov}" if node.prov is not None and str(node.prov) else ""
    name = f" (tensor '{node.name}')" if node.name else ""
    line = f"\n  created at {node.source}" if node.source else ""
    return f"'{node.op or 'leaf'}'{name}{where}, output shape {node.shape}, dtype {node.dtype}{line}"


def _count_bad(array: np.ndarray) -> str:
    return f"{int(np.isnan(array).sum())} nan, {int(np.isinf(array).sum())} inf of {array.size}"


def check_forward(node: autograd.Node, out: np.ndarray) -> None:
    node.source = _creating_line()
    if out.dtype.kind == "f" and not np.isfinite(out).all():
        raise AnomalyError(f"forward of {describe(node)} produced non-finite values "
                           f"({_count_bad(out)})")


def _check_gradient(node: autograd.Node, grad: np.ndarray) -> None:
    if not np.isfinite(grad).all():
        raise AnomalyError(f"backward: the gradient flowing into {describe(node)} is non-finite "
                           f"({_count_bad(grad)})")


@contextmanager
def checking_backward() -> Iterator[None]:
    with autograd.observe_backward(_check_gradient):
        yield


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
