"""Elementwise ops. Each backward returns gradients in the broadcast shape of the output; the
engine sums them back to each input's shape (``autograd.unbroadcast``), so no op repeats that.

Formulas follow PyTorch's derivatives (tanh: 1 - y^2, sigmoid: y(1 - y), ties of maximum split
the gradient in half, clip passes it where lo <= x <= hi) so float64 results agree with it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..checks import dtype_or_cpu
from ..tensor import Tensor, to_array


def data_of(x: Any) -> Any:
    """The array behind a Tensor; Python scalars stay Python scalars (numpy's weak typing); other
    data is copied (backward may use it after the caller mutated theirs) with the constructor's
    dtype rule, so ``t + [1.0, 2.0]`` stays float32 as ``t + ts.tensor([1.0, 2.0])`` would."""
    if isinstance(x, Tensor):
        return x._data
    if isinstance(x, (int, float, bool, np.generic)):
        return x
    if isinstance(x, (tuple, list)) and any(isinstance(item, Tensor) for item in x):
        raise TypeError(f"expected a Tensor, a number or an array as an operand, got a {type(x).__name__} "
                        "holding Tensors (for max(dim) / min(dim), use the result's .values; to combine "
                        "several tensors, use ts.stack or ts.cat)")
    return to_array(x)


def operands(a: Any, b: Any) -> tuple[Any, Any]:
    """The data of a binary op's operands (``data_of``), promoted by PyTorch's rule where an integer
    or bool meets a float: to the float tensor's dtype, or to float32 (the default) when the float is
    a number. numpy alone makes float64 of int64 with float32 and of int64 with 0.5, which would
    silently turn a float32 model's arithmetic into float64 (int targets in a loss, say)."""
    x = a._data if isinstance(a, Tensor) else data_of(a)  # (data_of's own first test, without its call)
    y = b._data if isinstance(b, Tensor) else data_of(b)
    if type(x) is np.ndarray:  # the usual cases first: arrays of one dtype, a float array with a number
        if type(y) is np.ndarray:
            if x.dtype is y.dtype:
                return x, y
        elif (type(y) is float or type(y) is int) and x.dtype.kind == "f":
            return x, y
    return promoted(x, y)


def promoted(x: Any, y: Any) -> tuple[Any, Any]:
    """``operands``' rule on data: a numpy scalar beside an array counts as a Python number (numpy 2
    would let np.float64(2.5) make a float32 array float64; PyTorch does not), and so does a 0-d array
    beside an array of the same category (float64 0-d with float32 stays float32); then an integer or
    bool array meeting a float takes the float array's dtype, or float32."""
    if isinstance(y, np.generic) and type(x) is np.ndarray:
        y = y.item()
    elif isinstance(x, np.generic) and type(y) is np.ndarray:
        x = x.item()
    elif type(x) is np.ndarray and type(y) is np.ndarray and (x.ndim == 0) != (y.ndim == 0):
        zero_d, other = (x, y) if x.ndim == 0 else (y, x)  # PyTorch: of one category, a 0-d tensor defers
        if _CATEGORY[zero_d.dtype.kind] == _CATEGORY[other.dtype.kind]:
            zero_d = zero_d.astype(other.dtype)
            x, y = (zero_d, other) if x.ndim == 0 else (other, zero_d)
    if type(x) is np.ndarray and x.dtype.kind in "biu":
        if _is_float(y):
            x = x.astype(y.dtype if type(y) is np.ndarray else np.float32)
    elif type(y) is np.ndarray and y.dtype.kind in "biu" and _is_float(x):
        y = y.astype(x.dtype if type(x) is np.ndarray else np.float32)
    return x, y


_CATEGORY = {"b": 0, "i": 1, "u": 1, "f": 2, "c": 3}  # bool < integer < float < complex


def _is_float(x: Any) -> bool:
    return x.dtype.kind == "f" if isinstance(x, (np.ndarray, np.generic)) else isinstance(x, float)


def as_float(x: np.ndarray) -> np.ndarray:
    """``x``, or for integers and bools x in float32: what PyTorch's float-valued ops (exp, true
    division, ...) make of an integer tensor, where numpy makes float64."""
    return x if x.dtype.kind == "f" else x.astype(np.float32)


def kept_for(tensor: Any, array: Any) -> Any:
    """``array`` if ``tensor`` will need it for its gradient, else None: save only what backward uses."""
    return array if getattr(tensor, "_node", None) is not None else None


def _broadcasting(op: str, ufunc: Callable, x: Any, y: Any, into: np.ndarray | None = None) -> np.ndarray:
    try:
        return ufunc(x, y) if into is None else ufunc(x, y, out=_fitting(into, x, y))
    except ValueError as err:
        try:
            np.broadcast_shapes(np.shape(x), np.shape(y))
        except ValueError:
            raise ValueError(f"{op}: shapes {np.shape(x)} and {np.shape(y)} do not broadcast together "
                             "(numpy rules: trailing dimensions must be equal or 1)") from None
        raise ValueError(f"{op}: {err}") from None  # another of numpy's complaints, e.g. 2 ** -1


def _times(g: np.ndarray, factor: Any) -> np.ndarray | None:
    return None if factor is None else g * factor


# Backwards that save nothing are shared functions: a lambda would allocate a function object
# per op, kept by the graph until backward (a tenth of a long sequence's graph memory). The ops
# every recurrent step makes (mul, addcmul, tanh, sigmoid; addmm, getitem) keep what they save in a small
# class with __slots__ whose call is the backward: one object of 56-72 bytes per op, where a
# closure takes a function and a cell per saved value, and functools.partial an object and an
# argument tuple (160 bytes). A long sequence's graph is mostly these, and the garbage collector
# traverses every such object each time it runs while a graph is alive.


def pass_through(g: np.ndarray) -> tuple[np.ndarray]:
    return (g,)


def _pass_both(g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return g, g


def _pass_and_negate(g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return g, -g


def _negate(g: np.ndarray) -> tuple[np.ndarray]:
    return (-g,)


# -- arithmetic ------------------------------------------------------------------------------


# ``into`` (add, mul, tanh, relu; keyword-only): where the caller would like the result, an array it
# hands over and does not write again. A hint: used only if every operand is an array of its exact
# shape and dtype (nothing to broadcast or cast), else the result is a new array as without it. The
# recurrent layers pass the rows of their output, so that stacking the steps' states copies nothing.


def _fitting(into: np.ndarray, *operands: Any) -> np.ndarray | None:
    for x in operands:
        if type(x) is not np.ndarray or x.shape != into.shape or x.dtype != into.dtype:
            return None
    return into


def add(a: Any, b: Any, *, into: np.ndarray | None = None) -> Tensor:
    x, y = operands(a, b)
    out = _broadcasting("add", np.add, x, y, into)
    return Tensor.from_op(out, "add", (a, b), _pass_both)


def sub(a: Any, b: Any) -> Tensor:
    x, y = operands(a, b)
    out = _broadcasting("sub", np.subtract, x, y)
    return Tensor.from_op(out, "sub", (a, b), _pass_and_negate)


class SavedOperands:
    """What a two-input product's backward keeps (mul, matmul): each input's gradient is g times
    the other input, so the first's partner is kept only if the first needs a gradient, and so on
    (``kept_for``: None where not needed)."""

    __slots__ = ("y_for_a", "x_for_b")

    def __init__(self, y_for_a: Any, x_for_b: Any) -> None:
        self.y_for_a, self.x_for_b = y_for_a, x_for_b


class _SavedOutput:
    """What a backward written in terms of the op's own output y keeps (tanh, sigmoid)."""

    __slots__ = ("y",)

    def __init__(self, y: np.ndarray) -> None:
        self.y = y


class _MulBackward(SavedOperands):
    """(g y, g x)."""

    __slots__ = ()

    def __call__(self, g: np.ndarray) -> tuple:
        return _times(g, self.y_for_a), _times(g, self.x_for_b)


def mul(a: Any, b: Any, *, into: np.ndarray | None = None) -> Tensor:
    x, y = operands(a, b)
    return Tensor.from_op(_broadcasting("mul", np.multiply, x, y, into), "mul", (a, b),
                          _MulBackward(kept_for(a, y), kept_for(b, x)))


class _AddcmulBackward(_MulBackward):
    """(g, g t2 value, g t1 value): the add's gradient, then the product's (value is in the partners)."""

    __slots__ = ()

    def __call__(self, g: np.ndarray) -> tuple:
        return (g, *_MulBackward.__call__(self, g))


def addcmul(input: Any, tensor1: Any, tensor2: Any, *, value: float = 1,  # noqa: A002 - PyTorch's name
            into: np.ndarray | None = None) -> Tensor:
    """``input + value * tensor1 * tensor2`` as one op, PyTorch's ``addcmul``: a GRU's or LSTM's step
    (``f c + i g``, ``n + z (h - n)``) records one node where a mul and an add would record two, with
    the same bits (the product is formed first, as PyTorch does: ``(value * t1) * t2``)."""
    x, t1, t2 = data_of(input), data_of(tensor1), data_of(tensor2)
    scaled = t1 if value == 1 else value * t1
    try:
        product = np.multiply(scaled, t2)
        out = np.add(x, product) if into is None else np.add(x, product, out=_fitting(into, x, product))
    except ValueError:
        raise ValueError(f"addcmul: shapes {np.shape(x)}, {np.shape(t1)} and {np.shape(t2)} do not broadcast "
                         "together (numpy rules: trailing dimensions must be equal or 1)") from None
    t2_for_t1 = kept_for(tensor1, t2)
    if value != 1 and t2_for_t1 is not None:
        t2_for_t1 = t2 * value  # PyTorch's grad * (t2 * value)
    return Tensor.from_op(out, "addcmul", (input, tensor1, tensor2),
                          _AddcmulBackward(t2_for_t1, kept_for(tensor2, scaled)))


def div(a: Any, b: Any) -> Tensor:
    x, y = operands(a, b)
    if not (type(x) is np.ndarray and x.dtype.kind == "f") and not (_is_float(x) or _is_float(y)):
        x, y = as_float(np.asarray(x)), as_float(y) if type(y) is np.ndarray else y  # int / int: float32
    x_for_b = kept_for(b, x)

    def backward(g: np.ndarray) -> tuple:
        grad_b = None if x_for_b is None else -g * ((x_for_b / y) / y)
        return g / y, grad_b

    return Tensor.from_op(_broadcasting("div", np.divide, x, y), "div", (a, b), backward)


def neg(a: Tensor) -> Tensor:
    return Tensor.from_op(np.negative(a._data), "neg", (a,), _negate)


def pow(a: Any, b: Any) -> Tensor:  # noqa: A001 - the operator's name
    """a ** b for a scalar or tensor exponent (and a scalar or tensor base)."""
    x, y = operands(a, b)
    out = _broadcasting("pow", np.power, x, y)
    x_for_a, x_for_b = kept_for(a, x), kept_for(b, x)

    def backward(g: np.ndarray) -> tuple:
        grad_a = grad_b = None
        with np.errstate(divide="ignore", invalid="ignore"):  # where() discards the inf/nan entries
            if x_for_a is not None:  # d/dx x^y = y x^(y-1), and exactly 0 where y == 0
                grad_a = np.where(y == 0, 0.0, g * (y * np.power(x_for_a, y - 1)))
            if x_for_b is not None:  # d/dy x^y = x^y log x, taken as 0 at x == 0 (y >= 0)
                grad_b = np.where((x_for_b == 0) & (y >= 0), 0.0, g * (out * np.log(x_for_b)))
        return grad_a, grad_b

    return Tensor.from_op(out, "pow", (a, b), backward)


# -- transcendental and activations ----------------------------------------------------------


def exp(a: Tensor) -> Tensor:
    y = np.exp(as_float(a._data))
    return Tensor.from_op(y, "exp", (a,), lambda g: (g * y,))


def log(a: Tensor) -> Tensor:
    x = as_float(a._data)
    return Tensor.from_op(np.log(x), "log", (a,), lambda g: (g / x,))


def sqrt(a: Tensor) -> Tensor:
    y = np.sqrt(as_float(a._data))
    return Tensor.from_op(y, "sqrt", (a,), lambda g: (g / (2 * y),))


def abs(a: Tensor) -> Tensor:  # noqa: A001
    x = a._data
    return Tensor.from_op(np.abs(x), "abs", (a,), lambda g: (g * np.nan_to_num(np.sign(x)),))  # 0 at nan


class _TanhBackward(_SavedOutput):
    """g (1 - y^2)."""

    __slots__ = ()

    def __call__(self, g: np.ndarray) -> tuple[np.ndarray]:
        return (g * (1 - self.y * self.y),)


def tanh(a: Tensor, *, into: np.ndarray | None = None) -> Tensor:
    x = a._data
    if x.dtype.kind != "f":  # (as_float's test inline: every recurrent step makes one or two)
        x = as_float(x)
    y = np.tanh(x) if into is None else np.tanh(x, out=_fitting(into, x))
    return Tensor.from_op(y, "tanh", (a,), _TanhBackward(y))


def logistic_into(out: np.ndarray, x: np.ndarray) -> np.ndarray:
    """out = sigmoid(x), PyTorch's formula 1 / (1 + exp(-x)), so float64 results match its bits; in
    place, with no temporaries (``out`` may be x). exp(-x) overflows to inf for x << 0, giving the
    right 0: callers silence that warning (fused layers once per sequence, not per step)."""
    np.negative(x, out=out)
    np.exp(out, out=out)
    out += 1
    return np.reciprocal(out, out=out)


def logistic(x: np.ndarray) -> np.ndarray:
    """sigmoid on an array, in a new array of its float dtype (integers in float32, as in PyTorch;
    converted first: negating an int8 -128 would wrap)."""
    if x.dtype.kind != "f":  # (as tanh: the test inline)
        x = as_float(x)
    with np.errstate(over="ignore"):  # see logistic_into
        return logistic_into(np.empty(x.shape, x.dtype), x)


class _SigmoidBackward(_SavedOutput):
    """g (1 - y) y."""

    __slots__ = ()

    def __call__(self, g: np.ndarray) -> tuple[np.ndarray]:
        return (g * (1 - self.y) * self.y,)


def sigmoid(a: Tensor) -> Tensor:
    y = logistic(a._data)
    return Tensor.from_op(y, "sigmoid", (a,), _SigmoidBackward(y))


def relu(a: Tensor, *, into: np.ndarray | None = None) -> Tensor:
    y = np.maximum(a._data, 0) if into is None else np.maximum(a._data, 0, out=_fitting(into, a._data))
    return Tensor.from_op(y, "relu", (a,), lambda g: (np.where(y <= 0, 0, g),))  # g at nan, as PyTorch


def _tie_split(op: str, ufunc: Callable, loses: Callable, a: Any, b: Any) -> Tensor:
    """maximum / minimum: the gradient goes to the chosen input, half to each on a tie, and all of
    it to both where either is nan (PyTorch's rule: an input gets none only where it ``loses``)."""
    x, y = operands(a, b)
    out = _broadcasting(op, ufunc, x, y)

    def backward(g: np.ndarray) -> tuple:
        half_on_tie = np.where(x == y, g / 2, g)
        return np.where(loses(x, y), 0, half_on_tie), np.where(loses(y, x), 0, half_on_tie)

    return Tensor.from_op(out, op, (a, b), backward)


def maximum(a: Any, b: Any) -> Tensor:
    return _tie_split("maximum", np.maximum, np.less, a, b)


def minimum(a: Any, b: Any) -> Tensor:
    return _tie_split("minimum", np.minimum, np.greater, a, b)


def where(condition: Any, a: Any, b: Any) -> Tensor:
    """Elementwise ``a if condition else b``; the condition gets no gradient."""
    c = np.asarray(data_of(condition))
    if c.dtype != np.bool_:
        raise TypeError(f"where: condition must be boolean, got {c.dtype}")
    x, y = operands(a, b)
    if type(x) is not np.ndarray and type(y) is not np.ndarray:  # two numbers (numpy's too), as PyTorch
        x, y = (v.item() if isinstance(v, np.generic) else v for v in (x, y))  # takes them:
        if isinstance(x, float) or isinstance(y, float):  # with a float, float32 (numpy: float64)
            x, y = np.float32(x), np.float32(y)
    try:
        out = np.where(c, x, y)
    except ValueError:
        raise ValueError(f"where: shapes {c.shape}, {np.shape(data_of(a))} and {np.shape(data_of(b))} "
                         "do not broadcast together") from None
    return Tensor.from_op(out, "where", (a, b), lambda g: (np.where(c, g, 0), np.where(c, 0, g)))


def clip(a: Tensor, min: Any = None, max: Any = None) -> Tensor:  # noqa: A002
    """Clamp into [min, max], PyTorch's clamp: the bounds are numbers or tensors (broadcasting), and
    where min > max the result is max. The gradient passes to x where min <= x <= max, to min where
    x < min < max, and to max where x > max or min > max (PyTorch's rules, ties included)."""
    if min is None and max is None:
        raise ValueError("clip: give at least one of min and max")
    x = a._data
    lo, hi = (None if bound is None else data_of(bound) for bound in (min, max))
    if lo is not None:  # the binary ops' dtype rule, between x and each bound
        x, lo = promoted(x, lo)
    if hi is not None:
        x, hi = promoted(x, hi)
        if lo is not None:
            x, lo = promoted(x, lo)  # (a float max may have made x float: min follows)
    try:
        out = np.clip(x, lo, hi)
    except ValueError:
        given = " and ".join(f"{np.shape(bound)} ({name})" for name, bound in (("min", lo), ("max", hi))
                             if bound is not None)
        raise ValueError(f"clip: shapes {x.shape} and {given} do not broadcast together") from None
    inside = np.ones(x.shape, bool) if lo is None else x >= lo  # what x's gradient needs: a mask
    if hi is not None:
        inside = inside & (x <= hi)  # (not &=: a bound may broadcast x up)
    wants_min, wants_max = kept_for(min, lo) is not None, kept_for(max, hi) is not None
    saved = x if wants_min or wants_max else None  # the bounds' gradients need x itself

    def backward(g: np.ndarray) -> tuple:
        grad_min = grad_max = None
        if wants_min:
            grad_min = np.where((saved < lo) & (True if hi is None else lo < hi), g, 0)
        if wants_max:
            grad_max = np.where((saved > hi) | (False if lo is None else lo > hi), g, 0)
        return np.where(inside, g, 0), grad_min, grad_max

    return Tensor.from_op(out, "clip", (a, min, max), backward)


def cast(a: Tensor, dtype: Any) -> Tensor:
    """Convert dtype; between float types the gradient flows (the engine casts it back). ``"cpu"``
    returns the tensor itself, as PyTorch's ``.to("cpu")`` of a CPU tensor does."""
    dtype = dtype_or_cpu(dtype, "Tensor.to")
    if dtype is None or dtype == a._data.dtype:
        return a
    out = a._data.astype(dtype)
    if dtype.kind != "f":
        return Tensor.constant(out)
    return Tensor.from_op(out, "cast", (a,), pass_through)


# -- comparisons (no gradient) --------------------------------------------------------------


def _comparison(ufunc: Callable, op: str) -> Callable[[Any, Any], Tensor]:
    def compare(a: Any, b: Any) -> Tensor:
        return Tensor.constant(_broadcasting(op, ufunc, data_of(a), data_of(b)))

    compare.__name__ = op
    compare.__doc__ = f"Elementwise {op}, as a boolean tensor (not differentiable)."
    return compare


eq = _comparison(np.equal, "eq")
ne = _comparison(np.not_equal, "ne")
lt = _comparison(np.less, "lt")
le = _comparison(np.less_equal, "le")
gt = _comparison(np.greater, "gt")
ge = _comparison(np.greater_equal, "ge")
