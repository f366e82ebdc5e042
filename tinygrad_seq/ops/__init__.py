"""Every differentiable op, as a function (``ts.tanh(x)``) and as a Tensor method (``x.tanh()``).

Primitives live in elementwise / reduce / linalg / shape, each forward beside its backward;
this module only attaches them to Tensor, so an op is defined in exactly one place.
"""

from __future__ import annotations

from typing import Any

from ..tensor import Tensor
from .elementwise import (
    abs,
    add,
    addcmul,
    cast,
    clip,
    div,
    eq,
    exp,
    ge,
    gt,
    le,
    log,
    lt,
    maximum,
    minimum,
    mul,
    ne,
    neg,
    pow,
    relu,
    sigmoid,
    sqrt,
    sub,
    tanh,
    where,
)
from .linalg import addmm, matmul
from .reduce import amax, amin, argmax, argmin, log_softmax, logsumexp, max, mean, min, softmax, sum
from .shape import (
    T,
    broadcast_to,
    cat,
    chunk,
    expand,
    flatten,
    getitem,
    narrow,
    permute,
    reshape,
    split,
    squeeze,
    stack,
    transpose,
    unbind,
    unsqueeze,
    view,
)

concatenate = cat
clamp = clip  # PyTorch's name


def _reflected(op: Any) -> Any:
    return lambda self, other: op(other, self)


_METHODS = {
    "__add__": add, "__radd__": _reflected(add), "__sub__": sub, "__rsub__": _reflected(sub),
    "__mul__": mul, "__rmul__": _reflected(mul), "__truediv__": div, "__rtruediv__": _reflected(div),
    "__pow__": pow, "__rpow__": _reflected(pow), "__matmul__": matmul, "__rmatmul__": _reflected(matmul),
    "__neg__": neg, "__abs__": abs, "__getitem__": getitem,
    "__eq__": eq, "__ne__": ne, "__lt__": lt, "__le__": le, "__gt__": gt, "__ge__": ge,
    "add": add, "addcmul": addcmul, "addmm": addmm, "sub": sub, "mul": mul, "div": div, "neg": neg,
    "pow": pow, "matmul": matmul,
    "exp": exp, "log": log, "sqrt": sqrt, "abs": abs, "tanh": tanh, "sigmoid": sigmoid, "relu": relu,
    "maximum": maximum, "minimum": minimum, "clip": clip, "clamp": clip,
    "sum": sum, "mean": mean, "max": max, "min": min, "amax": amax, "amin": amin,
    "argmax": argmax, "argmin": argmin,
    "logsumexp": logsumexp, "softmax": softmax, "log_softmax": log_softmax,
    "reshape": reshape, "view": view, "flatten": flatten, "permute": permute, "transpose": transpose,
    "expand": expand, "broadcast_to": broadcast_to, "squeeze": squeeze, "unsqueeze": unsqueeze,
    "narrow": narrow, "split": split, "chunk": chunk, "unbind": unbind,
    "astype": cast, "to": cast,
    "float": lambda self: cast(self, "float32"), "double": lambda self: cast(self, "float64"),
}
for _name, _fn in _METHODS.items():
    setattr(Tensor, _name, _fn)
Tensor.T = property(T, doc="All dims reversed (the matrix transpose for 2-D).")
Tensor.__hash__ = object.__hash__  # defining __eq__ above would otherwise unset it

__all__ = ["abs", "add", "addcmul", "addmm", "amax", "amin", "argmax", "argmin", "broadcast_to", "cast",
           "cat", "chunk", "clamp", "clip", "concatenate",
           "div", "eq", "exp", "expand", "flatten", "ge", "getitem", "gt", "le", "log", "log_softmax",
           "logsumexp", "lt", "matmul", "max", "maximum", "mean", "min", "minimum", "mul", "narrow", "ne",
           "neg", "permute", "pow", "relu", "reshape", "sigmoid", "softmax", "split", "sqrt", "squeeze",
           "stack", "sub", "sum", "tanh", "transpose", "unbind", "unsqueeze", "view", "where"]
