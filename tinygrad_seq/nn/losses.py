"""Loss functions with PyTorch's signatures and numbers, composed from differentiable Tensor ops.

Nothing here has a hand-written backward: every loss is log_softmax / getitem / mul / sum ...,
so its gradient is exactly the composition of ops already checked against finite differences.
Bad shapes raise instead of broadcasting: a [N, 1] prediction against an [N] target silently
becoming an [N, N] loss is the classic bug these checks exist to stop.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..ops import cat, exp, log, log_softmax, maximum
from ..ops.elementwise import data_of
from ..tensor import Tensor
from .module import Module

_REDUCTIONS = ("none", "mean", "sum")


def _check_reduction(loss: str, reduction: str) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{loss}: reduction must be 'none', 'mean' or 'sum', got {reduction!r}")


def _float_input(loss: str, input: Any) -> Tensor:  # noqa: A002 - PyTorch's argument name
    if not isinstance(input, Tensor):
        input = Tensor(input)
    if input.dtype.kind != "f":
        raise TypeError(f"{loss}: input must be floating point, got {input.dtype}")
    return input


def _reduce(losses: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return losses.mean()
    if reduction == "sum":
        return losses.sum()
    return losses


# -- classification over C classes -------------------------------------------------------------


def _class_rows(loss: str, input: Tensor, target: Any) -> tuple[Tensor, np.ndarray, tuple]:
    """Bring input [C] / [N, C] / [N, C, d1, ...] to rows [M, C] (classes last), the target to a
    flat [M] integer array, and return the target's shape (the shape of a 'none' reduction)."""
    if input.ndim == 0:
        raise ValueError(f"{loss}: input must have a class dim ([C], [N, C] or [N, C, d1, ...]), "
                         "got a scalar")
    labels = np.asarray(data_of(target))
    if labels.dtype.kind not in "iu":
        raise TypeError(f"{loss}: target must hold integer class indices, got dtype {labels.dtype} "
                        "(class-probability targets are not supported)")
    expected = () if input.ndim == 1 else (input.shape[0],) + input.shape[2:]
    if labels.shape != expected:
        raise ValueError(f"{loss}: target shape {labels.shape} does not match input shape {input.shape}; "
                         f"expected {expected} (the input's shape without its class dim "
                         f"{0 if input.ndim == 1 else 1})")
    classes = input.shape[-1] if input.ndim == 1 else input.shape[1]
    if input.ndim == 1:
        rows = input.reshape(1, classes)
    elif input.ndim == 2:
        rows = input
    else:
        rows = input.permute(0, *range(2, input.ndim), 1).reshape(-1, classes)
    return rows, labels.reshape(-1), expected


def _class_weights(loss: str, weight: Any, classes: int, dtype: np.dtype) -> np.ndarray:
    if weight is None:
        return np.ones(classes, dtype)
    weights = np.asarray(data_of(weight), dtype=dtype)
    if weights.shape != (classes,):
        raise ValueError(f"{loss}: weight must have shape ({classes},), one per class, got {weights.shape}")
    return weights


def _nll_rows(loss: str, log_probs: Tensor, labels: np.ndarray, target_shape: tuple, weight: Any,
              ignore_index: int, reduction: str, label_smoothing: float = 0.0) -> Tensor:
    """Negative log-likelihood of ``labels`` under rows of log-probabilities [M, C], PyTorch style:
    ignored targets contribute nothing (not even to the mean's denominator, which is the sum of
    the kept targets' class weights), and label smoothing mixes in the mean over all classes."""
    _check_reduction(loss, reduction)
    count, classes = log_probs.shape
    kept = labels != ignore_index
    out_of_range = kept & ((labels < 0) | (labels >= classes))
    if out_of_range.any():
        raise IndexError(f"{loss}: target class index {labels[out_of_range][0]} is out of range for "
                         f"{classes} classes (valid: 0..{classes - 1}, or ignore_index={ignore_index})")
    weights = _class_weights(loss, weight, classes, log_probs.dtype)
    kept_rows = np.flatnonzero(kept)
    kept_labels = labels[kept_rows]
    kept_weights = weights[kept_labels]
    # Only kept rows are touched: an ignored row may hold -inf (masked logits), and -inf * 0 is nan.
    losses = -(log_probs[kept_rows, kept_labels] * kept_weights)
    if label_smoothing:
        uniform = -(log_probs[kept_rows] * weights).sum(dim=1)
        losses = (1 - label_smoothing) * losses + (label_smoothing / classes) * uniform
    if reduction == "sum":
        return losses.sum()
    if reduction == "mean":
        with np.errstate(invalid="ignore", divide="ignore"):  # all ignored: 0/0 = nan, as in PyTorch
            return losses.sum() / kept_weights.sum()
    # 'none': scatter back to every target position, ignored ones reading the appended 0
    position = np.full(count, kept_rows.size)
    position[kept_rows] = np.arange(kept_rows.size)
    padded = cat([losses, Tensor.constant(np.zeros(1, losses.dtype))])
    return padded[position].reshape(target_shape)


def nll_loss(input: Tensor, target: Any, weight: Any = None, ignore_index: int = -100,  # noqa: A002
             reduction: str = "mean") -> Tensor:
    """Negative log-likelihood of integer ``target`` classes under log-probabilities ``input``
    ([C], [N, C] or [N, C, d1, ...], classes in dim 1)."""
    input = _float_input("nll_loss", input)
    rows, labels, target_shape = _class_rows("nll_loss", input, target)
    return _nll_rows("nll_loss", rows, labels, target_shape, weight, ignore_index, reduction)


def cross_entropy(input: Tensor, target: Any, weight: Any = None, ignore_index: int = -100,  # noqa: A002
                  reduction: str = "mean", label_smoothing: float = 0.0) -> Tensor:
    """log_softmax over the class dim followed by nll_loss; ``label_smoothing`` in [0, 1] blends
    the target with the uniform distribution (PyTorch's formula, class weights included)."""
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"cross_entropy: label_smoothing must be in [0, 1], got {label_smoothing}")
    input = _float_input("cross_entropy", input)
    rows, labels, target_shape = _class_rows("cross_entropy", input, target)
    return _nll_rows("cross_entropy", log_softmax(rows, dim=1), labels, target_shape, weight,
                     ignore_index, reduction, label_smoothing)


# -- binary and regression -----------------------------------------------------------------------


def _same_shape_target(loss: str, input: Tensor, target: Any) -> Any:
    """The target as a Tensor (gradient may flow into it) or float array of the input's exact shape."""
    if not isinstance(target, Tensor):
        target = np.asarray(target)
        if target.dtype.kind not in "fiub":
            raise TypeError(f"{loss}: target must be numeric, got dtype {target.dtype}")
        target = target.astype(input.dtype)
    elif target.dtype.kind != "f":
        raise TypeError(f"{loss}: target must be floating point, got {target.dtype}")
    if target.shape != input.shape:
        raise ValueError(f"{loss}: target shape {target.shape} must equal input shape {input.shape} "
                         "(no broadcasting: a mismatch here is almost always a bug)")
    return target


def _broadcastable_factor(loss: str, name: str, factor: Any, input: Tensor) -> Any:
    """A weight that must broadcast to the input's shape without enlarging it."""
    if not isinstance(factor, Tensor):
        factor = np.asarray(factor, dtype=input.dtype)
    try:
        fits = np.broadcast_shapes(factor.shape, input.shape) == input.shape
    except ValueError:
        fits = False
    if not fits:
        raise ValueError(f"{loss}: {name} of shape {factor.shape} does not broadcast to the input's "
                         f"shape {input.shape}")
    return factor


def binary_cross_entropy_with_logits(input: Tensor, target: Any, weight: Any = None,  # noqa: A002
                                     reduction: str = "mean", pos_weight: Any = None) -> Tensor:
    """Sigmoid + binary cross-entropy in one stable expression:
    (1 - y) x + l (max(-x, 0) + log(1 + exp(-|x|))) with l = 1 + (pos_weight - 1) y,
    which never overflows and has the exact gradient sigmoid(x) - y (x = 0 included)."""
    loss = "binary_cross_entropy_with_logits"
    _check_reduction(loss, reduction)
    input = _float_input(loss, input)
    target = _same_shape_target(loss, input, target)
    softplus_neg = maximum(-input, 0.0) + log(1 + exp(-abs(input)))  # -log(sigmoid(x))
    if pos_weight is not None:
        pos_weight = _broadcastable_factor(loss, "pos_weight", pos_weight, input)
        softplus_neg = (1 + (pos_weight - 1) * target) * softplus_neg
    losses = (1 - target) * input + softplus_neg
    if weight is not None:
        losses = losses * _broadcastable_factor(loss, "weight", weight, input)
    return _reduce(losses, reduction)


def mse_loss(input: Tensor, target: Any, reduction: str = "mean") -> Tensor:  # noqa: A002
    """Squared error; shapes must match exactly (PyTorch only warns and broadcasts)."""
    _check_reduction("mse_loss", reduction)
    input = _float_input("mse_loss", input)
    diff = input - _same_shape_target("mse_loss", input, target)
    return _reduce(diff * diff, reduction)


# -- module versions -----------------------------------------------------------------------------


class NLLLoss(Module):
    def __init__(self, weight: Any = None, ignore_index: int = -100, reduction: str = "mean") -> None:
        super().__init__()
        _check_reduction("NLLLoss", reduction)
        self.weight, self.ignore_index, self.reduction = weight, ignore_index, reduction

    def forward(self, input: Tensor, target: Any) -> Tensor:  # noqa: A002
        return nll_loss(input, target, self.weight, self.ignore_index, self.reduction)

    def extra_repr(self) -> str:
        return f"ignore_index={self.ignore_index}, reduction={self.reduction!r}"


class CrossEntropyLoss(Module):
    def __init__(self, weight: Any = None, ignore_index: int = -100, reduction: str = "mean",
                 label_smoothing: float = 0.0) -> None:
        super().__init__()
        _check_reduction("CrossEntropyLoss", reduction)
        self.weight, self.ignore_index, self.reduction = weight, ignore_index, reduction
        self.label_smoothing = label_smoothing

    def forward(self, input: Tensor, target: Any) -> Tensor:  # noqa: A002
        return cross_entropy(input, target, self.weight, self.ignore_index, self.reduction,
                             self.label_smoothing)

    def extra_repr(self) -> str:
        return (f"ignore_index={self.ignore_index}, reduction={self.reduction!r}, "
                f"label_smoothing={self.label_smoothing}")


class BCEWithLogitsLoss(Module):
    def __init__(self, weight: Any = None, reduction: str = "mean", pos_weight: Any = None) -> None:
        super().__init__()
        _check_reduction("BCEWithLogitsLoss", reduction)
        self.weight, self.reduction, self.pos_weight = weight, reduction, pos_weight

    def forward(self, input: Tensor, target: Any) -> Tensor:  # noqa: A002
        return binary_cross_entropy_with_logits(input, target, self.weight, self.reduction, self.pos_weight)

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}"


class MSELoss(Module):
    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        _check_reduction("MSELoss", reduction)
        self.reduction = reduction

    def forward(self, input: Tensor, target: Any) -> Tensor:  # noqa: A002
        return mse_loss(input, target, self.reduction)

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}"
